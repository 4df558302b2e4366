import { execFile } from 'node:child_process';
import { tool } from '../util/tools.js';

/**
 * Which host interface does `src` route through? Used to identify interface-matched sandboxes:
 * the firewall's strict reverse-path check drops packets whose source does not route back
 * through the interface they came in on, so the route lookup names the arrival interface.
 * Results are cached briefly (a sandbox's address does not move between interfaces in seconds),
 * and concurrent lookups for one address share one `ip route get`.
 */
export class RouteIfaceCache {
  private readonly cache = new Map<string, { iface: string | undefined; expires: number }>();
  private readonly inflight = new Map<string, Promise<string | undefined>>();
  constructor(
    private readonly ttlMs = 5000,
    private readonly max = 65536,
  ) {}

  peek(src: string): string | undefined | null {
    const hit = this.cache.get(src);
    if (hit && hit.expires > Date.now()) return hit.iface;
    return null;
  }

  async lookup(src: string): Promise<string | undefined> {
    const hit = this.peek(src);
    if (hit !== null) return hit;
    let p = this.inflight.get(src);
    if (!p) {
      p = routeGet(src).finally(() => this.inflight.delete(src));
      this.inflight.set(src, p);
      const iface = await p;
      if (this.cache.size >= this.max) this.cache.clear();
      this.cache.set(src, { iface, expires: Date.now() + this.ttlMs });
      return iface;
    }
    return p;
  }

  clear(): void {
    this.cache.clear();
  }
}

function routeGet(src: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(tool('ip'), ['-j', 'route', 'get', src], { timeout: 2000 }, (err, stdout) => {
      if (err) return resolve(undefined);
      try {
        const routes = JSON.parse(stdout) as { dev?: string }[];
        resolve(routes[0]?.dev);
      } catch {
        resolve(undefined);
      }
    });
  });
}
