/**
 * Keeps `packet` audit lines readable under a flood. Two layers, both per sandbox:
 *  - repeats: the same (proto, dst, port, decision) within one window (1 s) is written once;
 *    later ones are only counted;
 *  - volume: distinct lines are written while the sandbox's token bucket lasts
 *    (`packets.auditSampling`), then only counted.
 * flush() (once per window) turns the counts into one summary line per sandbox and decision:
 * {event:'packet', summary:true, count, top:{"udp 10.0.0.9:123": n, ...}}, so a flood of a
 * million datagrams costs the log a bounded number of lines and still says where they went.
 * Bounded memory: at most MAX_KEYS distinct keys per window and MAX_TOP destinations per summary.
 * Pure: the caller passes the clock.
 */
import type { AuditFields, Decision } from '../audit/logger.js';
import { TokenBucket, type BucketSpec } from '../dns/rate-limit.js';

const MAX_KEYS = 4096;
const MAX_TOP = 8;
const OTHER = '(other)';

export interface PacketLine extends Omit<AuditFields, 'event'> {
  readonly decision: Decision;
  readonly sandbox?: string;
}

interface Pending {
  count: number;
  top: Map<string, number>;
}

export class PacketAuditSampler {
  private readonly buckets = new Map<string, TokenBucket>();
  private seen = new Set<string>();
  private pending = new Map<string, Pending>();
  /** Every verdict ever offered, by decision: for summaries and measurements. */
  readonly totals: Record<Decision, number> = { allow: 0, deny: 0, 'would-deny': 0 };

  /**
   * Whether `line` should be written now. `what` names the flow for summaries ("udp 10.0.0.9:123").
   */
  admit(line: PacketLine, what: string, spec: BucketSpec, now: number): boolean {
    this.totals[line.decision]++;
    const sandbox = line.sandbox ?? '(unknown)';
    const key = `${sandbox}\u0000${line.decision}\u0000${what}`;
    if (!this.seen.has(key) && this.seen.size < MAX_KEYS) {
      let b = this.buckets.get(sandbox);
      if (!b) {
        if (this.buckets.size >= MAX_KEYS) this.buckets.clear();
        b = new TokenBucket(spec, now);
        this.buckets.set(sandbox, b);
      }
      if (b.take(spec, now)) {
        this.seen.add(key);
        return true;
      }
    }
    const pkey = `${sandbox}\u0000${line.decision}`;
    let p = this.pending.get(pkey);
    if (!p) {
      if (this.pending.size >= MAX_KEYS) return false; // counted in totals only
      p = { count: 0, top: new Map() };
      this.pending.set(pkey, p);
    }
    p.count++;
    const label = p.top.has(what) || p.top.size < MAX_TOP ? what : OTHER;
    p.top.set(label, (p.top.get(label) ?? 0) + 1);
    return false;
  }

  /** Summary lines for everything counted but not written since the last flush; starts a new window. */
  flush(): (Omit<AuditFields, 'event'> & { summary: true; count: number; top: Record<string, number> })[] {
    const out: (Omit<AuditFields, 'event'> & { summary: true; count: number; top: Record<string, number> })[] = [];
    for (const [pkey, p] of this.pending) {
      const [sandbox, decision] = pkey.split('\u0000') as [string, Decision];
      out.push({ summary: true, sandbox, decision, count: p.count, top: Object.fromEntries(p.top) });
    }
    this.pending = new Map();
    this.seen = new Set();
    return out;
  }
}
