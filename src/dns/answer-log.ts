/**
 * Which addresses sandgate's DNS responder gave each sandbox for which name, until the answer's
 * TTL (plus a grace period) runs out. Raw TCP rules (`protocol: tcp`) have no SNI or Host to go
 * by: the destination address is all there is, so a connection is accepted when it goes to an
 * address this sandbox was told the rule's name has (src/net/connection.ts matchTcpRule).
 *
 * Bounded everywhere: a sandbox with a wildcard rule can ask for unboundedly many distinct
 * allowed names, so each sandbox keeps at most `maxNames` names (least recently answered
 * dropped first) with at most `maxAddrs` addresses each, and at most `maxSandboxes` sandboxes are
 * tracked. Lives across config reloads (the Runtime hands it on), keyed by sandbox name.
 */
export interface AnswerLogLimits {
  readonly maxSandboxes: number;
  readonly maxNames: number;
  readonly maxAddrs: number;
  /**
   * Added to the TTL: stub resolvers and language runtimes cache a little past the TTL, and a
   * connection opened right at expiry must still match. Short, so a rotated address stops
   * being reachable soon after sandgate stops handing it out.
   */
  readonly graceMs: number;
}

export const ANSWER_LOG_DEFAULTS: AnswerLogLimits = { maxSandboxes: 1024, maxNames: 4096, maxAddrs: 16, graceMs: 30_000 };

/** address -> expiry (monotonic ms) */
type Addrs = Map<string, number>;

export class DnsAnswerLog {
  private readonly bySandbox = new Map<string, Map<string, Addrs>>();
  private readonly limits: AnswerLogLimits;
  private readonly now: () => number;

  constructor(limits: Partial<AnswerLogLimits> = {}, now: () => number = () => performance.now()) {
    this.limits = { ...ANSWER_LOG_DEFAULTS, ...limits };
    this.now = now;
  }

  /** Notes that `sandbox` was told `host` has `addrs`, valid for ttlS seconds. */
  record(sandbox: string, host: string, addrs: readonly string[], ttlS: number): void {
    if (addrs.length === 0) return;
    const now = this.now();
    const expires = now + ttlS * 1000 + this.limits.graceMs;
    let names = this.bySandbox.get(sandbox);
    if (!names) {
      if (this.bySandbox.size >= this.limits.maxSandboxes) {
        // Sandboxes come from the config, so this only trips after many reloads renaming them:
        // forget the longest-known one.
        const first = this.bySandbox.keys().next();
        if (!first.done) this.bySandbox.delete(first.value);
      }
      names = new Map();
      this.bySandbox.set(sandbox, names);
    }
    let entry = names.get(host);
    if (entry)
      names.delete(host); // re-inserted below: Map order is then least recently answered first
    else entry = new Map();
    for (const [a, exp] of entry) if (exp <= now) entry.delete(a);
    for (const a of addrs) {
      entry.delete(a);
      entry.set(a, expires);
    }
    while (entry.size > this.limits.maxAddrs) {
      const oldest = entry.keys().next();
      if (oldest.done) break;
      entry.delete(oldest.value);
    }
    names.set(host, entry);
    // Least recently answered first: O(1), and that name is the likeliest to have expired anyway.
    while (names.size > this.limits.maxNames) {
      const oldest = names.keys().next();
      if (oldest.done) break;
      names.delete(oldest.value);
    }
  }

  /** Whether `sandbox` was given `ip` for `host` and the answer has not expired. */
  has(sandbox: string, host: string, ip: string): boolean {
    const exp = this.bySandbox.get(sandbox)?.get(host)?.get(ip);
    return exp !== undefined && exp > this.now();
  }

  /**
   * Forgets what a sandbox was told (it was removed): a sandbox registered later under the
   * same name must not inherit raw-TCP reachability from its predecessor's answers.
   */
  forget(sandbox: string): void {
    this.bySandbox.delete(sandbox);
  }

  /** Names currently held for a sandbox (for tests and diagnostics). */
  size(sandbox: string): number {
    return this.bySandbox.get(sandbox)?.size ?? 0;
  }
}
