import type { Config } from './config/types.js';
import type { Audit } from './audit/logger.js';
import { compilePolicies, type CompiledPolicies, type Policy } from './policy/policy.js';
import { SandboxTable, type SandboxSpec } from './policy/sandboxes.js';
import { DnsAnswerLog } from './dns/answer-log.js';
import type { CredentialSource, TokenNet } from './creds/credential.js';
import { loadCredentialSources } from './creds/secrets.js';
import { buildUpstream, tokenNetOf, type Upstream } from './upstream/upstream.js';
import { Tripwire } from './creds/tripwire.js';
import { Quarantine } from './control/quarantine.js';

/**
 * Everything the data path reads, built once per config load and never mutated. SIGHUP builds a
 * new Runtime and swaps one reference; connections keep the Runtime they started with.
 */
export interface Runtime {
  readonly config: Config;
  readonly policies: CompiledPolicies;
  /** The config's sandboxes and the registered ones (`dynamic`), indexed for identification. */
  readonly sandboxes: SandboxTable;
  /**
   * Per sandbox name, its policy with the names approved for it alone (src/approvals/grants.ts);
   * absent: none. Kept when the registered sandboxes change.
   */
  readonly sandboxPolicies?: ReadonlyMap<string, Policy>;
  /**
   * Sandboxes registered through the control API, in registration order. Held in memory only:
   * a reload keeps them (buildRuntime hands them on), a restart forgets them.
   */
  readonly dynamic: readonly SandboxSpec[];
  /** Resolver, SSRF guard, guarded lookup, upstream TLS trust and the relay's pool (src/upstream/). */
  readonly upstream: Upstream;
  /** How token sources reach their services under this Runtime (built from `upstream`). */
  readonly tokenNet: TokenNet;
  readonly audit: Audit;
  /**
   * Addresses the DNS responder gave each sandbox per name (raw TCP rules accept those). Mutable
   * and carried across reloads, like the resolver's cache: it records what sandboxes were told.
   */
  readonly dnsAnswers: DnsAnswerLog;
  /**
   * Credentials with their secrets resolved (at load: a missing one is a config error): static
   * ones compiled, authService/oauth2 ones as token sources with their caches (kept across
   * reloads that leave them unchanged).
   */
  readonly credentials: ReadonlyMap<string, CredentialSource>;
  /** How long a connection may take to show its first bytes (ClientHello / request head). */
  readonly peekTimeoutMs: number;
  /** The matcher over every credential's placeholder; undefined when no credential has one. */
  readonly tripwire: Tripwire | undefined;
  /** Quarantined sandboxes: mutable, one per process, carried across reloads (src/control/quarantine.ts). */
  readonly quarantine: Quarantine;
}

export interface RuntimeOptions {
  /**
   * Replaces the loaded credential sources (a worker process routes token sources to the
   * primary, src/cluster/worker.ts); static credentials are kept as loaded.
   */
  readonly credentials?: (loaded: ReadonlyMap<string, CredentialSource>) => ReadonlyMap<string, CredentialSource>;
}

/**
 * `previous`: the runtime being replaced (reload): caches and registered sandboxes carry over.
 * A registered sandbox whose policy the new config no longer has makes this throw (the
 * reload is rejected; src/control/registry.ts checks names and overlaps before that).
 */
export function buildRuntime(config: Config, audit: Audit, previous?: Runtime, opts: RuntimeOptions = {}): Runtime {
  const policies = compilePolicies(config);
  const dynamic = previous?.dynamic ?? [];
  // The resolver (and its cache) carries over when `upstream` is unchanged; TLS trust and pool
  // are rebuilt, so a SIGHUP picks up a rotated upstream.caFile (src/upstream/upstream.ts).
  const upstream = buildUpstream(config.upstream, previous && { cfg: previous.config.upstream, upstream: previous.upstream });
  const loaded = loadCredentialSources(config, undefined, previous?.credentials);
  const credentials = opts.credentials ? opts.credentials(loaded) : loaded;
  return {
    config,
    policies,
    sandboxes: new SandboxTable(config.sandboxes, policies.byName, dynamic),
    dynamic,
    upstream,
    tokenNet: tokenNetOf(upstream),
    audit,
    dnsAnswers: previous?.dnsAnswers ?? new DnsAnswerLog(),
    credentials,
    peekTimeoutMs: 10_000,
    tripwire: Tripwire.compile(config.credentials),
    quarantine: previous?.quarantine ?? new Quarantine(),
  };
}

/**
 * The same runtime with another set of registered sandboxes: a new SandboxTable, everything
 * else shared. The daemon swaps it in with one assignment, so every reader (TCP listener, DNS
 * responder, packet gate, interception) sees either the old set or the new one.
 */
export function withDynamicSandboxes(rt: Runtime, dynamic: readonly SandboxSpec[]): Runtime {
  return { ...rt, dynamic, sandboxes: new SandboxTable(rt.config.sandboxes, rt.policies.byName, dynamic, rt.sandboxPolicies) };
}
