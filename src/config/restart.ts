/**
 * The keys a reload cannot apply, declared beside the schema: each is read once at start-up
 * (listeners, the firewall's identity, processes, files). A reload whose config changes one of them
 * is refused, naming the key and what to do instead.
 */
import type { Config } from './types.js';

interface RestartKey {
  readonly path: string;
  readonly get: (c: Config) => unknown;
  readonly hint: string;
}

const RESTART = 'restart sandgate';
// A new table/mark/route table would be installed beside the old one, which nothing then removes.
const FIREWALL = 'run "sandgate firewall down" with the old config, then restart';

export const RESTART_KEYS: readonly RestartKey[] = [
  ...(['port', 'dnsPort', 'address', 'control'] as const).map((k) => ({ path: `listen.${k}`, get: (c: Config) => c.listen[k], hint: RESTART })),
  ...(['table', 'mark', 'routeTable', 'backend', 'queue', 'flowMark', 'queueMark'] as const).map((k) => ({
    path: `firewall.${k}`,
    get: (c: Config) => c.firewall[k],
    hint: FIREWALL,
  })),
  { path: 'workers', get: (c) => c.workers, hint: RESTART },
  { path: 'metrics', get: (c) => (c.metrics ? `${c.metrics.address}:${c.metrics.port}` : undefined), hint: RESTART },
  { path: 'log.file', get: (c) => c.log.file, hint: RESTART },
  { path: 'tls.caDir', get: (c) => c.tls.caDir, hint: RESTART },
  { path: 'tls.ticketKeyRotationMs', get: (c) => c.tls.ticketKeyRotationMs, hint: RESTART },
  { path: 'stateDir', get: (c) => c.stateDir, hint: RESTART },
];

/** Why `next` cannot be applied by a reload of `prev` ("KEY cannot change on reload (HINT)"), or undefined. */
export function restartNeeded(prev: Config, next: Config): string | undefined {
  for (const k of RESTART_KEYS) if (k.get(next) !== k.get(prev)) return `${k.path} cannot change on reload (${k.hint})`;
  return undefined;
}
