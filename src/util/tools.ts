import { existsSync } from 'node:fs';

/**
 * Absolute paths of the system tools sandgate runs. Never rely on PATH: under `npm run`,
 * node_modules/.bin comes first and holds an unrelated `nft` (from @vercel/nft).
 */
const DIRS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
const found = new Map<string, string>();

export function tool(name: 'ip' | 'nft' | 'iptables' | 'iptables-restore' | 'sysctl' | 'curl' | 'conntrack'): string {
  let p = found.get(name);
  if (!p) {
    p = DIRS.map((d) => `${d}/${name}`).find((c) => existsSync(c)) ?? `/usr/sbin/${name}`;
    found.set(name, p);
  }
  return p;
}
