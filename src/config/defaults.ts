/**
 * Every default of the config file, in one place: the validator fills them in, and the CLI, the
 * firewall plan and the docs' tables read them from here (docs/policy.md lists them).
 */
import { availableParallelism } from 'node:os';

/** `workers` upper bound: more processes than this only add IPC and memory on any host we know. */
export const MAX_WORKERS = 64;

/** Where the control API listens unless listen.control says otherwise (docs/control-api.md). */
export const DEFAULT_CONTROL_SOCKET = '/run/sandgate/control.sock';

/** Where the interception CA lives unless tls.caDir says otherwise. */
export const DEFAULT_CA_DIR = '/var/lib/sandgate';

export const DEFAULTS = {
  listen: { port: 15001, dnsPort: 15053, address: '0.0.0.0', control: DEFAULT_CONTROL_SOCKET },
  log: { level: 'info' },
  /** Session ticket keys are replaced this often (forward secrecy for resumed sessions). */
  tls: { caDir: DEFAULT_CA_DIR, ech: 'allow', ticketKeyRotationMs: 3_600_000 },
  upstream: { connectTimeoutMs: 5000 },
  /** 0x5347 is "SG" in ASCII: easy to spot in `ip rule` and `nft list` output. */
  firewall: {
    table: 'sandgate',
    mark: 0x5347,
    routeTable: 5347,
    backend: 'auto',
    queue: 5347,
    flowMark: 0x5348,
    queueMark: 0x5349,
  },
  packets: { rateLimit: { pps: 100, burst: 200 }, auditSampling: { linesPerSecond: 20, burst: 50 } },
  dns: {
    rateLimit: { qps: 200, burst: 400 },
    /** Unset, dns.sourceRateLimit follows dns.rateLimit: sourceRateFor() (so 1000/2000 by default). */
    sourceRateLimit: { pps: 1000, burst: 2000 },
    tcp: { idleTimeoutMs: 10_000, maxConnections: 16 },
    auditSampling: { linesPerSecond: 50, burst: 200 },
  },
  /** authService and oauth2 token requests. */
  tokenTimeoutMs: 2000,
  /** `unlisted: ask` (docs/approvals.md). */
  askTimeoutMs: 30_000,
  approvals: { webhookTimeoutMs: 5000, maxPendingPerSandbox: 16 },
  workers: 1,
} as const;

/**
 * The firewall's per-source DNS limit when dns.sourceRateLimit is unset: five times the
 * responder's, so a sandbox somewhat over its budget still gets REFUSED (and an audit line) rather
 * than silence, and DNS over TCP (a few packets per query) fits. 1,000,000 is the most iptables'
 * hashlimit takes ("Rate too fast" above it).
 */
export function sourceRateFor(rateLimit: { readonly qps: number; readonly burst: number }): { pps: number; burst: number } {
  return { pps: Math.min(1_000_000, 5 * rateLimit.qps), burst: Math.min(1_000_000, 5 * rateLimit.burst) };
}

/** `workers: auto`: one worker per core the process may use (cgroup/affinity aware), capped. */
export function autoWorkers(): number {
  return Math.min(MAX_WORKERS, Math.max(1, availableParallelism()));
}
