import test from 'ava';
import { DnsAnswerLog } from '../../src/dns/answer-log.js';
import { KeyedRateLimiter, TokenBucket } from '../../src/dns/rate-limit.js';
import { AuditSampler, parentDomain } from '../../src/dns/audit-sampler.js';
import { validateConfig } from '../../src/config/validate.js';

// ---------------------------------------------------------------------------------------------
// Answer log

test('answer log: per sandbox, per name, expires after TTL + grace', (t) => {
  const clock = { t: 0 };
  const log = new DnsAnswerLog({ graceMs: 1000 }, () => clock.t);
  log.record('agent', 'db.example.test', ['10.0.0.1', '10.0.0.2'], 10);
  t.true(log.has('agent', 'db.example.test', '10.0.0.1'));
  t.true(log.has('agent', 'db.example.test', '10.0.0.2'));
  t.false(log.has('agent', 'db.example.test', '10.0.0.3'));
  t.false(log.has('agent', 'other.example.test', '10.0.0.1'));
  t.false(log.has('other', 'db.example.test', '10.0.0.1'));
  clock.t = 10_999;
  t.true(log.has('agent', 'db.example.test', '10.0.0.1'));
  clock.t = 11_000;
  t.false(log.has('agent', 'db.example.test', '10.0.0.1'));
});

test('answer log: a new answer refreshes an address and keeps others until they expire', (t) => {
  const clock = { t: 0 };
  const log = new DnsAnswerLog({ graceMs: 0 }, () => clock.t);
  log.record('s', 'h', ['10.0.0.1'], 10);
  clock.t = 5000;
  log.record('s', 'h', ['10.0.0.2'], 10); // the name rotated upstream
  clock.t = 9000;
  t.true(log.has('s', 'h', '10.0.0.1'), 'the sandbox may still hold the first answer');
  t.true(log.has('s', 'h', '10.0.0.2'));
  clock.t = 12_000;
  t.false(log.has('s', 'h', '10.0.0.1'));
  t.true(log.has('s', 'h', '10.0.0.2'));
});

test('answer log: bounded names per sandbox (least recently answered dropped), addresses per name, sandboxes', (t) => {
  const log = new DnsAnswerLog({ maxNames: 100, maxAddrs: 4, maxSandboxes: 3 }, () => 0);
  for (let i = 0; i < 1000; i++) log.record('s', `n${i}.wild.test`, ['10.0.0.1'], 60);
  t.is(log.size('s'), 100);
  t.true(log.has('s', 'n999.wild.test', '10.0.0.1'));
  t.false(log.has('s', 'n0.wild.test', '10.0.0.1'));
  log.record(
    's',
    'many',
    Array.from({ length: 10 }, (_, i) => `10.0.1.${i}`),
    60,
  );
  t.false(log.has('s', 'many', '10.0.1.0'));
  t.true(log.has('s', 'many', '10.0.1.9'));
  for (const s of ['a', 'b', 'c']) log.record(s, 'h', ['10.0.0.1'], 60);
  t.is(log.size('s'), 0, 'the oldest sandbox was forgotten');
  t.true(log.has('c', 'h', '10.0.0.1'));
});

// ---------------------------------------------------------------------------------------------
// Token bucket, rate limiter, sampler

test('token bucket: burst at once, then the rate', (t) => {
  const spec = { rate: 10, burst: 5 };
  const b = new TokenBucket(spec, 0);
  let ok = 0;
  for (let i = 0; i < 20; i++) if (b.take(spec, 0)) ok++;
  t.is(ok, 5);
  t.false(b.take(spec, 50));
  t.true(b.take(spec, 100)); // 10/s -> one token per 100 ms
  t.false(b.take(spec, 100));
  // A long pause refills to the burst, not beyond.
  ok = 0;
  for (let i = 0; i < 20; i++) if (b.take(spec, 60_000)) ok++;
  t.is(ok, 5);
  // A clock that goes backwards adds nothing.
  t.false(b.take(spec, 0));
});

test("rate limiter: one report per burst, keyed, with the first query's description", (t) => {
  const rl = new KeyedRateLimiter<string>({ quietMs: 1000, maxBurstMs: 10_000 });
  const spec = { rate: 1, burst: 2 };
  let n = 0;
  for (let i = 0; i < 10; i++) if (rl.take('a', spec, 0, () => `a${i}`)) n++;
  for (let i = 0; i < 3; i++) rl.take('b', spec, 0, () => `b${i}`);
  t.is(n, 2);
  t.deepEqual(rl.due(500), []);
  const due = rl.due(1000);
  t.deepEqual(
    due.map((d) => [d.key, d.meta, d.refused, d.ongoing]),
    [
      ['a', 'a2', 8, false],
      ['b', 'b2', 1, false],
    ],
  );
  t.deepEqual(rl.due(5000), []);
});

test('rate limiter: keys are bounded', (t) => {
  const rl = new KeyedRateLimiter<number>({ maxKeys: 10 });
  for (let i = 0; i < 1000; i++) {
    rl.take(`k${i}`, { rate: 1, burst: 1 }, 0, () => i);
    rl.take(`k${i}`, { rate: 1, burst: 1 }, 0, () => i); // refused: opens a burst for the key
  }
  // Every key opened a burst; only the last 10 keys are still held.
  t.deepEqual(
    rl.due(0, true).map((d) => d.meta),
    [990, 991, 992, 993, 994, 995, 996, 997, 998, 999],
  );
});

test('sampler: parent domains and the lumping of many domains', (t) => {
  t.is(parentDomain('a.b.evil.test'), 'evil.test');
  t.is(parentDomain('evil.test'), 'evil.test');
  t.is(parentDomain('localhost'), 'localhost');
  t.is(parentDomain(undefined), '(no name)');
  const s = new AuditSampler();
  const spec = { rate: 1, burst: 1 };
  t.true(s.admit('k', spec, 0, 'deny', 'x.a.test'));
  for (let i = 0; i < 100; i++) t.false(s.admit('k', spec, 0, 'deny', `x.d${i}.test`));
  t.false(s.admit('k', spec, 0, 'allow', 'api.example.test'));
  const out = s.drain();
  t.is(out.length, 2);
  const deny = out.find((o) => o.decision === 'deny')!;
  t.is(deny.count, 100);
  t.is(Object.keys(deny.domains).length, 17);
  t.is(deny.domains['(other)'], 84);
  t.deepEqual(s.drain(), []);
});

// ---------------------------------------------------------------------------------------------
// Config keys

const MIN = { sandboxes: [{ name: 'a', cidr: '10.77.1.0/24', policy: 'p' }], policies: { p: { allow: [] } } };

test('dns config: documented defaults', (t) => {
  const { config } = validateConfig(MIN);
  t.deepEqual(config?.dns, {
    rateLimit: { qps: 200, burst: 400 },
    sourceRateLimit: { pps: 1000, burst: 2000 },
    tcp: { idleTimeoutMs: 10_000, maxConnections: 16 },
    auditSampling: { linesPerSecond: 50, burst: 200 },
  });
});

test('dns config: values are taken, bad ones and unknown keys are reported by path', (t) => {
  const ok = validateConfig({ ...MIN, dns: { rateLimit: { qps: 5, burst: 7 }, tcp: { idleTimeoutMs: 500 } } });
  t.deepEqual(ok.config?.dns.rateLimit, { qps: 5, burst: 7 });
  t.is(ok.config?.dns.tcp.idleTimeoutMs, 500);
  t.is(ok.config?.dns.tcp.maxConnections, 16);
  const bad = validateConfig({ ...MIN, dns: { rateLimit: { qps: 0, burts: 3 }, tcp: { idleTimeoutMs: 'x' }, forward: true } });
  const paths = bad.problems.map((p) => p.path.join('.')).sort();
  t.deepEqual(paths, ['dns.forward', 'dns.rateLimit.burts', 'dns.rateLimit.qps', 'dns.tcp.idleTimeoutMs']);
});
