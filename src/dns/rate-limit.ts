/**
 * Per-sandbox query rate limiting for the DNS responder, and the bookkeeping that turns a
 * flood of refusals into one audit line per burst.
 *
 * DNS tunnelling needs volume (a few dozen bytes per query), and a flood from one sandbox must
 * not starve the others, so every datagram or TCP frame costs one token from its sandbox's
 * bucket, before it is even parsed. Pure: the caller passes the clock.
 */

export interface BucketSpec {
  /** Tokens added per second. */
  readonly rate: number;
  /** Bucket size: how many may be spent at once after a quiet period. */
  readonly burst: number;
}

/** Classic token bucket; the spec is passed per call so a config reload takes effect at once. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(spec: BucketSpec, now: number) {
    this.tokens = spec.burst;
    this.last = now;
  }

  take(spec: BucketSpec, now: number): boolean {
    const elapsed = Math.max(0, now - this.last);
    this.tokens = Math.min(spec.burst, this.tokens + (elapsed / 1000) * spec.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }
}

/** A run of refusals, reported as one line. `meta` describes its first refused query. */
export interface BurstReport<M> {
  readonly key: string;
  readonly meta: M;
  /** Queries refused in this report's span. */
  readonly refused: number;
  /** From the first refusal to the last one in this span. */
  readonly ms: number;
  /** True when the burst is still going on (a long burst is reported every maxBurstMs). */
  readonly ongoing: boolean;
}

interface KeyState<M> {
  bucket: TokenBucket;
  burst?: { meta: M; started: number; last: number; refused: number };
}

export interface RateLimiterOptions {
  /** A burst ends once no query has been refused for this long. */
  readonly quietMs: number;
  /** A burst that lasts longer is reported every this often, so a sustained flood still shows up. */
  readonly maxBurstMs: number;
  /** Keys tracked at most (keys are sandbox names; this only guards against unbounded growth). */
  readonly maxKeys: number;
}

const DEFAULTS: RateLimiterOptions = { quietMs: 1000, maxBurstMs: 10_000, maxKeys: 4096 };

export class KeyedRateLimiter<M> {
  private readonly keys = new Map<string, KeyState<M>>();
  private readonly opts: RateLimiterOptions;

  constructor(opts: Partial<RateLimiterOptions> = {}) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  /**
   * Spends one token for `key`. On refusal the query joins the key's current burst (opening one,
   * described by meta(), if none is open). Returns whether the query may proceed.
   */
  take(key: string, spec: BucketSpec, now: number, meta: () => M): boolean {
    let st = this.keys.get(key);
    if (!st) {
      if (this.keys.size >= this.opts.maxKeys) {
        // Forget an idle key (full bucket, no open burst); failing that, the oldest.
        let victim: string | undefined;
        for (const [k, s] of this.keys)
          if (!s.burst) {
            victim = k;
            break;
          }
        victim ??= this.keys.keys().next().value;
        if (victim !== undefined) this.keys.delete(victim);
      }
      st = { bucket: new TokenBucket(spec, now) };
      this.keys.set(key, st);
    }
    if (st.bucket.take(spec, now)) return true;
    if (st.burst) {
      st.burst.refused++;
      st.burst.last = now;
    } else {
      st.burst = { meta: meta(), started: now, last: now, refused: 1 };
    }
    return false;
  }

  /**
   * Bursts to report now: those that went quiet (closed), and those open longer than maxBurstMs
   * (reported, then continued with a fresh count). With force, every open burst is closed.
   */
  due(now: number, force = false): BurstReport<M>[] {
    const out: BurstReport<M>[] = [];
    for (const [key, st] of this.keys) {
      const b = st.burst;
      if (!b) continue;
      if (force || now - b.last >= this.opts.quietMs) {
        // refused is 0 only for the tail of a long burst that stopped right after being reported.
        if (b.refused > 0) out.push({ key, meta: b.meta, refused: b.refused, ms: Math.round(b.last - b.started), ongoing: false });
        st.burst = undefined;
      } else if (now - b.started >= this.opts.maxBurstMs) {
        out.push({ key, meta: b.meta, refused: b.refused, ms: Math.round(b.last - b.started), ongoing: true });
        st.burst = { meta: b.meta, started: now, last: now, refused: 0 };
      }
    }
    return out;
  }
}
