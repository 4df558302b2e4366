import type { Config } from './config/types.js';
import type { Audit } from './audit/logger.js';
import { compilePolicies, type CompiledPolicies } from './policy/policy.js';
import { SandboxTable } from './policy/sandboxes.js';
import { AddressGuard, UpstreamResolver } from './net/upstream.js';

/**
 * Everything the data path reads, built once per config load and never mutated. SIGHUP builds a
 * new Runtime and swaps one reference; connections keep the Runtime they started with.
 */
export interface Runtime {
  readonly config: Config;
  readonly policies: CompiledPolicies;
  readonly sandboxes: SandboxTable;
  readonly resolver: UpstreamResolver;
  readonly guard: AddressGuard;
  readonly audit: Audit;
  /** How long a connection may take to show its first bytes (ClientHello / request head). */
  readonly peekTimeoutMs: number;
}

export function buildRuntime(config: Config, audit: Audit, previous?: Runtime): Runtime {
  const policies = compilePolicies(config);
  const sameUpstream = previous && JSON.stringify(previous.config.upstream) === JSON.stringify(config.upstream);
  return {
    config,
    policies,
    sandboxes: new SandboxTable(config.sandboxes, policies.byName),
    // Keep the resolver's cache across reloads that do not change how names resolve.
    resolver: sameUpstream && previous ? previous.resolver : new UpstreamResolver(config.upstream),
    guard: new AddressGuard(config.upstream.allowPrivate),
    audit,
    peekTimeoutMs: 10_000,
  };
}
