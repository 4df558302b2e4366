/**
 * Interface index -> name, for the queue's `indev`. The binding's own names come from a
 * table it reads once at start (libnfnetlink nlif_query), so interfaces created later (a new
 * sandbox's veth) would be unnamed; /sys/class/net is re-read instead, at most every
 * REFRESH_MS, and only on a miss. `ip netns exec` mounts the namespace's own sysfs, so this is
 * the namespace sandgate runs in.
 */
import { readdirSync, readFileSync } from 'node:fs';

const REFRESH_MS = 500;
const SYS = '/sys/class/net';

export class IfNames {
  private byIndex = new Map<number, string>();
  private loadedAt = -Infinity;

  constructor(private readonly now: () => number = () => performance.now()) {}

  name(index: number): string | undefined {
    const hit = this.byIndex.get(index);
    if (hit !== undefined) return hit;
    if (this.now() - this.loadedAt < REFRESH_MS) return undefined;
    this.reload();
    return this.byIndex.get(index);
  }

  private reload(): void {
    this.loadedAt = this.now();
    const next = new Map<number, string>();
    try {
      for (const name of readdirSync(SYS)) {
        try {
          const index = Number(readFileSync(`${SYS}/${name}/ifindex`, 'utf8').trim());
          if (Number.isInteger(index)) next.set(index, name);
        } catch {
          /* vanished between readdir and read */
        }
      }
    } catch {
      return; // no sysfs: keep what we had
    }
    this.byIndex = next;
  }
}
