/**
 * The token cache behind every authService/oauth2 credential: bounded (LRU), expiring, refreshed
 * ahead of expiry, and single-flight (at most one call to the token service in flight per key, no
 * matter how many requests wait for it). Pure apart from the injected clock, so the unit tests
 * drive time by hand.
 */
import type { TokenCacheStats } from './credential.js';
import { TokenError } from './token-error.js';

export interface Clock {
  /** Milliseconds on a monotonic clock (wall-clock steps must not expire or revive tokens). */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) =>
    new Promise((resolve) => {
      setTimeout(resolve, ms);
    }),
};

/** A token as the service issued it: the value and how long it lives from when it was asked for. */
export interface Issued<T> {
  readonly value: T;
  readonly lifetimeMs: number;
}

/** Tokens never live longer than this here, whatever the service says (a typo of "expiresIn" in ms, say). */
export const MAX_LIFETIME_MS = 24 * 3600_000;

/**
 * When to refresh, and until when a token may still be sent, for a lifetime L:
 * - usable until L - min(5 s, 10% L): a request takes a moment to reach the upstream, so a token
 *   is not sent in its last moments;
 * - refreshed (in the background, the old one still served) from L - max(20% L, min(30 s, 50% L)):
 *   at 80% of the lifetime, or 30 s before expiry if that is earlier, but never before half of it.
 *   1 s tokens refresh at 0.5 s, 60 s tokens at 30 s, 1 h tokens at 48 min.
 */
export function schedule(lifetimeMs: number): { refreshAfterMs: number; usableForMs: number } {
  const l = Math.min(Math.max(lifetimeMs, 0), MAX_LIFETIME_MS);
  return {
    refreshAfterMs: l - Math.max(0.2 * l, Math.min(30_000, 0.5 * l)),
    usableForMs: l - Math.min(5_000, 0.1 * l),
  };
}

interface Entry<T> {
  value: T | undefined;
  usableUntil: number;
  refreshAt: number;
  lifetimeMs: number;
  inflight: Promise<T> | undefined;
}

export interface TokenCacheOptions {
  /** Keys kept at most; the least recently used goes first. */
  readonly maxEntries: number;
  readonly clock?: Clock;
}

export class TokenCache<T> {
  readonly #map = new Map<string, Entry<T>>();
  readonly #max: number;
  readonly #clock: Clock;
  #hits = 0;
  #misses = 0;
  #coalesced = 0;
  #fetches = 0;
  #refreshes = 0;
  #failures = 0;
  #invalidations = 0;
  #evictions = 0;

  constructor(opts: TokenCacheOptions) {
    this.#max = Math.max(1, opts.maxEntries);
    this.#clock = opts.clock ?? realClock;
  }

  /**
   * The value for `key`: synchronously when a usable one is cached (starting a background refresh
   * when it is due), else a promise of the call in flight for that key, started by this request if
   * there is none. `fetch` is only called when a call is needed.
   */
  get(key: string, fetch: () => Promise<Issued<T>>): T | Promise<T> {
    const now = this.#clock.now();
    const e = this.#map.get(key);
    if (e !== undefined && e.value !== undefined && now < e.usableUntil) {
      this.#hits++;
      // Least recently used first: a hit moves the key to the end of the Map's order.
      this.#map.delete(key);
      this.#map.set(key, e);
      if (now >= e.refreshAt && e.inflight === undefined) this.#start(key, e, fetch, true);
      return e.value;
    }
    this.#misses++;
    if (e?.inflight !== undefined) {
      this.#coalesced++;
      return e.inflight;
    }
    const entry = e ?? { value: undefined, usableUntil: 0, refreshAt: 0, lifetimeMs: 0, inflight: undefined };
    if (e === undefined) this.#insert(key, entry);
    return this.#start(key, entry, fetch, false);
  }

  /**
   * A request carrying `value` was refused (upstream 401): drop it so the next request fetches a
   * new one. Compare-and-invalidate: when many requests fail with the same token at once, the first
   * drops it and the rest find it already gone, so they share one new call instead of each
   * throwing away the replacement.
   */
  invalidate(key: string, value: T): boolean {
    const e = this.#map.get(key);
    if (e === undefined || e.value !== value) return false;
    e.value = undefined;
    e.usableUntil = 0;
    this.#invalidations++;
    return true;
  }

  stats(): TokenCacheStats {
    return {
      entries: this.#map.size,
      hits: this.#hits,
      misses: this.#misses,
      coalesced: this.#coalesced,
      fetches: this.#fetches,
      refreshes: this.#refreshes,
      failures: this.#failures,
      invalidations: this.#invalidations,
      evictions: this.#evictions,
    };
  }

  #insert(key: string, e: Entry<T>): void {
    while (this.#map.size >= this.#max) {
      const oldest = this.#map.keys().next();
      if (oldest.done === true) break;
      this.#map.delete(oldest.value);
      this.#evictions++;
    }
    this.#map.set(key, e);
  }

  #start(key: string, e: Entry<T>, fetch: () => Promise<Issued<T>>, background: boolean): Promise<T> {
    this.#fetches++;
    if (background) this.#refreshes++;
    // The lifetime counts from when the call started, not from when it came back: the service
    // started the token's clock no earlier than that, so this errs on the early side.
    const started = this.#clock.now();
    let p: Promise<Issued<T>>;
    try {
      p = fetch();
    } catch (err) {
      p = Promise.reject(err);
    }
    const done = p.then(
      (issued) => {
        const s = schedule(issued.lifetimeMs);
        e.value = issued.value;
        e.lifetimeMs = issued.lifetimeMs;
        e.usableUntil = started + s.usableForMs;
        e.refreshAt = started + s.refreshAfterMs;
        e.inflight = undefined;
        // Evicted while the call was in flight (the cache was full of other keys): put it back, so
        // the next request for this key finds what this one waited for.
        if (this.#map.get(key) !== e) {
          this.#map.delete(key);
          this.#insert(key, e);
        }
        return issued.value;
      },
      (err: unknown) => {
        e.inflight = undefined;
        this.#failures++;
        if (background && e.value !== undefined) {
          // The old token is still good until usableUntil: retry the refresh a little later rather
          // than on every hit, so a struggling service is not hammered by the hot path.
          e.refreshAt = this.#clock.now() + Math.min(10_000, Math.max(100, 0.05 * e.lifetimeMs));
        } else if (e.value === undefined && this.#map.get(key) === e) {
          this.#map.delete(key);
        }
        throw err;
      },
    );
    e.inflight = done;
    // A background refresh has no waiter; its failure is counted above and must not surface as
    // an unhandled rejection. Waiters that join it later get its outcome through `inflight`.
    if (background) done.catch(() => undefined);
    return done;
  }
}

export interface RetryPolicy {
  /** Pause before each further try: [100, 200] means three tries at most. */
  readonly delaysMs: readonly number[];
  /** Everything, tries and pauses, ends within this. */
  readonly timeoutMs: number;
}

export const DEFAULT_DELAYS_MS: readonly number[] = [100, 200];

/**
 * Call `attempt` (given the time left) until it succeeds, fails with a non-retryable TokenError,
 * the pauses run out, or the next pause would pass the deadline. The error thrown is the last
 * one, its message saying how many tries were made.
 */
export async function withRetries<T>(attempt: (timeoutMs: number) => Promise<T>, policy: RetryPolicy, clock: Clock = realClock): Promise<T> {
  const deadline = clock.now() + policy.timeoutMs;
  for (let i = 0; ; i++) {
    const left = deadline - clock.now();
    try {
      return await attempt(Math.max(1, Math.round(left)));
    } catch (err) {
      const e = err instanceof TokenError ? err : new TokenError('token request failed', false);
      const pause = policy.delaysMs[i];
      const tries = i + 1;
      if (!e.retryable || pause === undefined || clock.now() + pause >= deadline) {
        throw tries > 1 ? new TokenError(`${e.message} (after ${tries} tries)`, false, e.short) : e;
      }
      await clock.sleep(pause);
    }
  }
}
