/**
 * The token cache and the retry helper, on a fake clock: single-flight, expiry, refresh ahead of
 * expiry, compare-and-invalidate, LRU bounds, bounded retries with backoff.
 */
import test from 'ava';
import { schedule, TokenCache, withRetries, MAX_LIFETIME_MS, type Clock, type Issued } from '../../src/creds/token-cache.js';
import { TokenError } from '../../src/creds/token-error.js';

class FakeClock implements Clock {
  t = 1000;
  private timers: { at: number; resolve: () => void }[] = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.timers.push({ at: this.t + ms, resolve });
    });
  }
  /** Move time forward, firing sleeps in order and letting their continuations run. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      await flush(); // let pending continuations register their sleeps first
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > target) break;
      this.timers.shift();
      this.t = next.at;
      next.resolve();
      await flush();
    }
    this.t = target;
    await flush();
  }
  get pending(): number {
    return this.timers.length;
  }
}

const flush = (): Promise<void> =>
  new Promise((r) => {
    setImmediate(r);
  });

/** A fetch whose calls the test resolves or rejects by hand. */
function manualFetch<T>(): { fetch: () => Promise<Issued<T>>; calls: { resolve: (v: Issued<T>) => void; reject: (e: unknown) => void }[] } {
  const calls: { resolve: (v: Issued<T>) => void; reject: (e: unknown) => void }[] = [];
  return {
    calls,
    fetch: () =>
      new Promise<Issued<T>>((resolve, reject) => {
        calls.push({ resolve, reject });
      }),
  };
}

test('schedule: refresh at 80% or 30 s before expiry (never before half), stop using in the last 10% (at most 5 s)', (t) => {
  t.deepEqual(schedule(1000), { refreshAfterMs: 500, usableForMs: 900 });
  t.deepEqual(schedule(60_000), { refreshAfterMs: 30_000, usableForMs: 55_000 });
  t.deepEqual(schedule(3600_000), { refreshAfterMs: 2880_000, usableForMs: 3595_000 });
  t.is(schedule(10 * MAX_LIFETIME_MS).usableForMs, MAX_LIFETIME_MS - 5000, 'absurd lifetimes are capped');
});

test('single-flight: 50 waiters for one key cause one fetch and all get its value', async (t) => {
  const clock = new FakeClock();
  const c = new TokenCache<string>({ maxEntries: 10, clock });
  const f = manualFetch<string>();
  const waits = Array.from({ length: 50 }, () => c.get('k', f.fetch));
  t.is(f.calls.length, 1);
  t.true(waits.every((w) => w instanceof Promise));
  f.calls[0]!.resolve({ value: 'tok-1', lifetimeMs: 1000 });
  t.deepEqual(new Set(await Promise.all(waits)), new Set(['tok-1']));
  // Now cached: a plain value, synchronously, no promise.
  t.is(c.get('k', f.fetch), 'tok-1');
  t.like(c.stats(), { hits: 1, misses: 50, coalesced: 49, fetches: 1, entries: 1 });
});

test('different keys (users, hosts) never share a fetch or a value', async (t) => {
  const clock = new FakeClock();
  const c = new TokenCache<string>({ maxEntries: 10, clock });
  const a = c.get('u:alice\nh', () => Promise.resolve({ value: 'alice-tok', lifetimeMs: 1000 }));
  const b = c.get('u:bob\nh', () => Promise.resolve({ value: 'bob-tok', lifetimeMs: 1000 }));
  t.deepEqual(await Promise.all([a, b]), ['alice-tok', 'bob-tok']);
  t.is(
    c.get('u:alice\nh', () => Promise.reject(new Error('no'))),
    'alice-tok',
  );
  t.is(
    c.get('u:bob\nh', () => Promise.reject(new Error('no'))),
    'bob-tok',
  );
});

test('refresh ahead of expiry: the old token is served while one background fetch runs; expiry forces a wait', async (t) => {
  const clock = new FakeClock();
  const c = new TokenCache<string>({ maxEntries: 10, clock });
  const f = manualFetch<string>();
  const first = c.get('k', f.fetch);
  f.calls[0]!.resolve({ value: 'v1', lifetimeMs: 1000 });
  t.is(await first, 'v1');
  await clock.advance(499);
  t.is(c.get('k', f.fetch), 'v1');
  t.is(f.calls.length, 1, 'not yet due');
  await clock.advance(1);
  t.is(c.get('k', f.fetch), 'v1', 'due: still served...');
  t.is(f.calls.length, 2, '...while a refresh starts');
  t.is(c.get('k', f.fetch), 'v1');
  t.is(f.calls.length, 2, 'one refresh in flight, not one per hit');
  f.calls[1]!.resolve({ value: 'v2', lifetimeMs: 1000 });
  await flush();
  t.is(c.get('k', f.fetch), 'v2');
  t.like(c.stats(), { fetches: 2, refreshes: 1, misses: 1 });
  // No more hits: past usableUntil (90% of the lifetime) the token is not handed out any more.
  await clock.advance(901);
  const w = c.get('k', f.fetch);
  t.true(w instanceof Promise, 'expired: the request waits for a new token');
  f.calls[2]!.resolve({ value: 'v3', lifetimeMs: 1000 });
  t.is(await w, 'v3');
});

test('a failed background refresh keeps the old token until it expires and backs off before trying again', async (t) => {
  const clock = new FakeClock();
  const c = new TokenCache<string>({ maxEntries: 10, clock });
  const f = manualFetch<string>();
  const first = c.get('k', f.fetch);
  f.calls[0]!.resolve({ value: 'v1', lifetimeMs: 10_000 });
  await first;
  await clock.advance(5000);
  t.is(c.get('k', f.fetch), 'v1');
  f.calls[1]!.reject(new TokenError('down', true));
  await flush();
  t.is(c.get('k', f.fetch), 'v1', 'still served');
  t.is(f.calls.length, 2, 'no new call on every hit right after a failure');
  await clock.advance(500); // 5% of the lifetime
  t.is(c.get('k', f.fetch), 'v1');
  t.is(f.calls.length, 3, 'tried again after the pause');
  t.is(c.stats().failures, 1);
});

test('a failed fetch rejects every waiter and caches nothing; the next request tries again', async (t) => {
  const c = new TokenCache<string>({ maxEntries: 10, clock: new FakeClock() });
  const f = manualFetch<string>();
  const ws = [c.get('k', f.fetch), c.get('k', f.fetch)];
  f.calls[0]!.reject(new TokenError('service down', true));
  for (const w of ws) await t.throwsAsync(w as Promise<string>, { message: 'service down' });
  t.is(c.stats().entries, 0);
  const again = c.get('k', f.fetch);
  t.is(f.calls.length, 2);
  f.calls[1]!.resolve({ value: 'v', lifetimeMs: 1000 });
  t.is(await again, 'v');
});

test('invalidate is compare-and-set: many 401s with one token cause one new fetch', async (t) => {
  const c = new TokenCache<string>({ maxEntries: 10, clock: new FakeClock() });
  const f = manualFetch<string>();
  const w = c.get('k', f.fetch);
  f.calls[0]!.resolve({ value: 'old', lifetimeMs: 60_000 });
  await w;
  t.true(c.invalidate('k', 'old'));
  const retry1 = c.get('k', f.fetch);
  // A second request that failed with the same old token: nothing to drop, it joins the call.
  t.false(c.invalidate('k', 'old'));
  const retry2 = c.get('k', f.fetch);
  t.is(f.calls.length, 2);
  f.calls[1]!.resolve({ value: 'new', lifetimeMs: 60_000 });
  t.deepEqual(await Promise.all([retry1, retry2]), ['new', 'new']);
  t.false(c.invalidate('k', 'old'), 'the replacement is never thrown away by a late 401 of the old token');
  t.is(c.get('k', f.fetch), 'new');
  t.is(c.stats().invalidations, 1);
});

test('LRU: the least recently used key is evicted when the cache is full; a hit refreshes recency', async (t) => {
  const c = new TokenCache<string>({ maxEntries: 3, clock: new FakeClock() });
  const put = async (k: string): Promise<void> => {
    await c.get(k, () => Promise.resolve({ value: `v-${k}`, lifetimeMs: 60_000 }));
  };
  await put('a');
  await put('b');
  await put('c');
  t.is(
    c.get('a', () => Promise.reject(new Error('x'))),
    'v-a',
  ); // a is now the most recent
  await put('d'); // evicts b
  t.is(c.stats().entries, 3);
  t.is(c.stats().evictions, 1);
  let fetched = 0;
  const probe = (k: string): unknown =>
    c.get(k, () => {
      fetched++;
      return Promise.resolve({ value: `again-${k}`, lifetimeMs: 60_000 });
    });
  t.is(probe('a'), 'v-a');
  t.is(probe('c'), 'v-c');
  t.is(probe('d'), 'v-d');
  t.true(probe('b') instanceof Promise, 'b was evicted');
  t.is(fetched, 1);
});

test('a key evicted while its fetch is in flight is put back when the fetch completes', async (t) => {
  const c = new TokenCache<string>({ maxEntries: 1, clock: new FakeClock() });
  const f = manualFetch<string>();
  const wa = c.get('a', f.fetch);
  const wb = c.get('b', () => Promise.resolve({ value: 'vb', lifetimeMs: 60_000 })); // evicts a's entry
  await wb;
  f.calls[0]!.resolve({ value: 'va', lifetimeMs: 60_000 });
  t.is(await wa, 'va');
  t.is(c.get('a', f.fetch), 'va');
  t.is(c.stats().entries, 1);
});

test('withRetries: retryable failures are tried 3 times with 100 and 200 ms pauses, then the last error, saying so', async (t) => {
  const clock = new FakeClock();
  const times: number[] = [];
  const p = withRetries(
    async (left) => {
      times.push(clock.now());
      t.true(left > 0);
      throw new TokenError('auth service unreachable (ECONNREFUSED)', true);
    },
    { delaysMs: [100, 200], timeoutMs: 2000 },
    clock,
  );
  const done = t.throwsAsync(p, { instanceOf: TokenError, message: 'auth service unreachable (ECONNREFUSED) (after 3 tries)' });
  await clock.advance(1000);
  await done;
  t.deepEqual(
    times.map((x) => x - 1000),
    [0, 100, 300],
  );
});

test('withRetries: a non-retryable failure is not retried; a success ends the loop', async (t) => {
  const clock = new FakeClock();
  let n = 0;
  await t.throwsAsync(
    withRetries(
      async () => {
        n++;
        throw new TokenError('auth service answered 403', false);
      },
      { delaysMs: [100, 200], timeoutMs: 2000 },
      clock,
    ),
    { message: 'auth service answered 403' },
  );
  t.is(n, 1);
  let m = 0;
  const ok = withRetries(
    async () => {
      if (++m < 2) throw new TokenError('503', true);
      return 'tok';
    },
    { delaysMs: [100, 200], timeoutMs: 2000 },
    clock,
  );
  await clock.advance(100);
  t.is(await ok, 'tok');
  t.is(m, 2);
});

test('withRetries: every attempt gets only the time left, and no pause runs past the deadline', async (t) => {
  const clock = new FakeClock();
  const given: number[] = [];
  const p = withRetries(
    async (left) => {
      given.push(left);
      clock.t += 200; // each attempt takes 200 ms before failing
      throw new TokenError('timeout', true);
    },
    { delaysMs: [100, 200], timeoutMs: 450 },
    clock,
  );
  const done = t.throwsAsync(p, { message: 'timeout (after 2 tries)' });
  await clock.advance(1000);
  await done;
  // 0: 450 left; fails at 200; pause 100 -> 300: 150 left; fails at 500: past the deadline.
  t.deepEqual(given, [450, 150]);
  t.is(clock.pending, 0);
});
