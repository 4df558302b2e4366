/**
 * Keeps `dns` audit lines from flooding the log. Each sandbox may write `linesPerSecond` lines
 * individually (token bucket, `burst` at once); past that, lines are not written but counted,
 * per decision and per parent domain (the name's last two labels), and drain() turns the counts
 * into one summary line per sandbox and decision. A tunnelling attempt through 100,000 random
 * subdomains of evil.test therefore costs the log a few hundred lines plus one summary a second
 * saying "100,000 more denials, under evil.test", and the summary still names where they went.
 * Pure: the caller passes the clock.
 */
import type { Decision } from '../audit/logger.js';
import { TokenBucket, type BucketSpec } from './rate-limit.js';

/** Distinct parent domains counted per summary; the rest are lumped under OTHER. */
const MAX_DOMAINS = 16;
const OTHER = '(other)';
/** Queries too malformed to have a name. */
export const NO_NAME = '(no name)';
const MAX_KEYS = 4096;

export interface Suppressed {
  readonly key: string;
  readonly decision: Decision;
  readonly count: number;
  /** parent domain -> count, at most MAX_DOMAINS + 1 entries. */
  readonly domains: Readonly<Record<string, number>>;
}

interface Pending {
  count: number;
  domains: Map<string, number>;
}

/** "a.b.evil.test" -> "evil.test": a cheap stand-in for the registrable domain, for summaries only. */
export function parentDomain(host: string | undefined): string {
  if (host === undefined || host === '') return NO_NAME;
  const last = host.lastIndexOf('.');
  if (last < 0) return host;
  const prev = host.lastIndexOf('.', last - 1);
  return prev < 0 ? host : host.slice(prev + 1);
}

export class AuditSampler {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly pending = new Map<string, Map<Decision, Pending>>();

  /** Whether this line may be written now; if not, it is counted for the next summary. */
  admit(key: string, spec: BucketSpec, now: number, decision: Decision, host: string | undefined): boolean {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= MAX_KEYS) this.buckets.clear();
      b = new TokenBucket(spec, now);
      this.buckets.set(key, b);
    }
    if (b.take(spec, now)) return true;
    let byDecision = this.pending.get(key);
    if (!byDecision) {
      byDecision = new Map();
      this.pending.set(key, byDecision);
    }
    let p = byDecision.get(decision);
    if (!p) {
      p = { count: 0, domains: new Map() };
      byDecision.set(decision, p);
    }
    p.count++;
    let d = parentDomain(host);
    if (!p.domains.has(d) && p.domains.size >= MAX_DOMAINS) d = OTHER;
    p.domains.set(d, (p.domains.get(d) ?? 0) + 1);
    return false;
  }

  /** The counts since the last drain (empty when nothing was suppressed), then resets them. */
  drain(): Suppressed[] {
    const out: Suppressed[] = [];
    for (const [key, byDecision] of this.pending) {
      for (const [decision, p] of byDecision) {
        out.push({ key, decision, count: p.count, domains: Object.fromEntries(p.domains) });
      }
    }
    this.pending.clear();
    return out;
  }
}
