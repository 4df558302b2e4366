/**
 * Schema validation of the parsed YAML, by hand: every message names what is wrong in words an
 * operator can act on, unknown keys are errors (a typo must never silently widen or narrow a
 * policy), and defaults (./defaults.ts) are filled in here, once. One file per section under
 * ./schema/; this module assembles them in the file's order of dependence (credentials before the
 * policies that name them, policies before the sandboxes that use them).
 */
import type { Config, SandboxConfig } from './types.js';
import { dns, firewall, listen, log, metrics, packets, tls, workers } from './schema/basics.js';
import { credentials } from './schema/credentials.js';
import { policies } from './schema/policies.js';
import { Reader, type PathPart, type Problem } from './schema/reader.js';
import { sandboxEntry, sandboxes } from './schema/sandboxes.js';
import { upstream } from './schema/upstream.js';
import { approvals } from './schema/approvals.js';

export type { PathPart, Problem } from './schema/reader.js';
export { DEFAULT_CONTROL_SOCKET, MAX_WORKERS } from './defaults.js';

const SECTIONS = [
  'listen',
  'dns',
  'packets',
  'log',
  'tls',
  'upstream',
  'firewall',
  'sandboxes',
  'policies',
  'credentials',
  'workers',
  'metrics',
  'stateDir',
  'approvals',
  'onTripwire',
];

/** Returns the config only when there are no problems. */
export function validateConfig(raw: unknown): { config?: Config; problems: Problem[] } {
  const v = new Reader();
  const config = root(v, raw);
  return v.problems.length === 0 ? { config, problems: [] } : { problems: v.problems };
}

function root(v: Reader, raw: unknown): Config {
  const r = v.obj(raw ?? {}, [], SECTIONS, ['sandboxes', 'policies']) ?? {};
  const up = upstream(v, r.upstream);
  const creds = credentials(v, r.credentials, up);
  const pols = policies(v, r.policies, creds);
  const ports = listen(v, r.listen);
  const m = metrics(v, r.metrics, ports);
  const t = tls(v, r.tls);
  const w = workers(v, r.workers);
  return {
    onTripwire: r.onTripwire === undefined ? 'deny' : (v.oneOf(r.onTripwire, ['onTripwire'], ['deny', 'quarantine'] as const) ?? 'deny'),
    listen: ports,
    dns: dns(v, r.dns),
    packets: packets(v, r.packets),
    log: log(v, r.log),
    tls: t,
    // Where registered sandboxes are kept across restarts; beside the CA unless said otherwise.
    stateDir: r.stateDir === undefined ? t.caDir : (v.str(r.stateDir, ['stateDir']) ?? ''),
    upstream: up,
    firewall: firewall(v, r.firewall),
    sandboxes: sandboxes(v, r.sandboxes, pols),
    policies: pols,
    credentials: creds,
    workers: w,
    approvals: approvals(v, r.approvals),
    ...(m ? { metrics: m } : {}),
  };
}

/**
 * Checks one sandbox as the config would (name, interface glob, IPv4 CIDR, policy among
 * `policies`, user): the control API registers sandboxes by the same rules as the file.
 * Problem paths are relative to the entry ("cidr", "policy", ...).
 */
export function validateSandboxEntry(raw: unknown, policies: Readonly<Record<string, unknown>>): { sandbox?: SandboxConfig; problems: Problem[] } {
  const v = new Reader();
  const sandbox = sandboxEntry(v, raw, [] as PathPart[], policies);
  return v.problems.length === 0 && sandbox ? { sandbox, problems: [] } : { problems: v.problems };
}
