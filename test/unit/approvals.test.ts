import test from 'ava';
import { ApprovalBroker, MAX_WAITERS_PER_SANDBOX, ONCE_AFTER_DNS_MS, type BrokerEvent, type Outcome, type PendingItem } from '../../src/approvals/broker.js';
import { Grants, addedView } from '../../src/approvals/grants.js';
import { parseDecision } from '../../src/approvals/api.js';
import { requestHost } from '../../src/net/request-host.js';
import { parseConfig, ConfigError } from '../../src/config/load.js';
import { buildRuntime, withDynamicSandboxes } from '../../src/runtime.js';
import { createLineAudit } from '../../src/audit/logger.js';
import { SandboxTable } from '../../src/policy/sandboxes.js';

/** A broker on a hand-turned clock: timers fire only when the test says so. */
function broker(opts: { max?: number } = {}) {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const timers = new Map<number, { fn: () => void; at: number }>();
  let n = 0;
  const audit: Record<string, unknown>[] = [];
  const events: BrokerEvent[] = [];
  const grants: { item: PendingItem; policy: string; scope: string; approver: string }[] = [];
  const b = new ApprovalBroker({
    now: () => now,
    setTimer: (fn, ms) => {
      timers.set(++n, { fn, at: now + ms });
      return n;
    },
    clearTimer: (t) => timers.delete(t as number),
    maxPendingPerSandbox: () => opts.max ?? 16,
    grant: (item, policy, scope, approver) => grants.push({ item, policy, scope, approver }),
    audit: (f) => audit.push(f),
  });
  b.subscribe((e) => events.push(e));
  const advance = (ms: number): void => {
    now += ms;
    for (const [k, t] of [...timers]) {
      if (t.at <= now) {
        timers.delete(k);
        t.fn();
      }
    }
  };
  return { b, audit, events, grants, advance, timers };
}

const A = { sandbox: 'a', user: 'alice', policy: 'default' };
const B = { sandbox: 'b', policy: 'default' };

/** Whether a promise has settled by now (microtasks drained). */
async function settled<T>(p: Promise<T>): Promise<boolean> {
  let done = false;
  void p.then(() => {
    done = true;
  });
  await new Promise((r) => setImmediate(r));
  return done;
}

test('one pending decision per (sandbox, name, port): every asker waits on it and gets its answer', async (t) => {
  const { b, events, audit } = broker();
  const dns = b.ask(A, 'x.test', 443, 'dns', 30_000);
  const tls = b.ask(A, 'x.test', 443, 'tls', 30_000);
  const other = b.ask(B, 'x.test', 443, 'tls', 30_000);
  t.is(b.list().length, 2, 'sandbox b has its own decision');
  const item = b.list().find((i) => i.sandbox === 'a') as PendingItem;
  t.like(item, { sandbox: 'a', user: 'alice', host: 'x.test', port: 443, via: 'dns', since: '2026-01-01T00:00:00.000Z', expires: '2026-01-01T00:00:30.000Z' });
  t.false(await settled(dns));
  t.deepEqual(b.decide(item.id, 'once', 'ops')?.id, item.id);
  const want: Outcome = { allow: true, action: 'once', id: item.id };
  t.deepEqual(await dns, want);
  t.deepEqual(await tls, want);
  t.false(await settled(other), "a's approval does not answer b");
  t.is(b.decide(item.id, 'deny', 'ops'), undefined, 'already decided');
  t.deepEqual(
    events.filter((e) => e.event === 'decided'),
    [{ event: 'decided', id: item.id, action: 'once', approver: 'ops' }],
  );
  t.like(
    audit.find((l) => l.action === 'decided'),
    { id: item.id, decision: 'allow', scope: 'once', approver: 'ops', waiters: 2 },
  );
});

test('once on a DNS question: the same sandbox, name and port pass for ONCE_AFTER_DNS_MS under that approval; nothing else does', async (t) => {
  const { b, audit, advance } = broker();
  const dns = b.ask(A, 'x.test', 443, 'dns', 30_000);
  const id = b.list()[0]!.id;
  b.decide(id, 'once', 'ops');
  const want: Outcome = { allow: true, action: 'once', id };
  t.deepEqual(await dns, want);
  // The connection that follows, and a retry, are admitted at once under the same approval.
  t.deepEqual(await b.ask(A, 'x.test', 443, 'tls', 30_000), want);
  advance(ONCE_AFTER_DNS_MS - 1);
  t.deepEqual(await b.ask(A, 'x.test', 443, 'tls', 30_000), want);
  t.is(audit.filter((l) => l.action === 'pending').length, 1, 'no new question');
  // Another port, another name, another sandbox: questions of their own.
  void b.ask(A, 'x.test', 80, 'http', 30_000);
  void b.ask(A, 'y.test', 443, 'tls', 30_000);
  void b.ask(B, 'x.test', 443, 'tls', 30_000);
  t.is(b.list().length, 3);
  // Past the window: asked again.
  advance(1);
  const late = b.ask(A, 'x.test', 443, 'tls', 30_000);
  t.false(await settled(late));
  t.is(b.list().length, 4);
});

test('once without a DNS query, or deny: no pass; a DNS query that joined a TLS question makes one; endPasses ends them', async (t) => {
  const { b } = broker();
  const tls = b.ask(A, 'tls.test', 443, 'tls', 30_000);
  b.decide(b.list()[0]!.id, 'once', 'ops');
  t.like(await tls, { allow: true });
  t.false(await settled(b.ask(A, 'tls.test', 443, 'tls', 30_000)), 'a once on a TLS question admits that connection only');
  b.close('cleanup');

  const denied = b.ask(A, 'no.test', 443, 'dns', 30_000);
  b.decide(b.list()[0]!.id, 'deny', 'ops');
  t.like(await denied, { allow: false });
  t.false(await settled(b.ask(A, 'no.test', 443, 'tls', 30_000)), 'a denial leaves no pass');
  b.close('cleanup');

  const conn = b.ask(A, 'joined.test', 443, 'tls', 30_000);
  const query = b.ask(A, 'joined.test', 443, 'dns', 30_000);
  const id = b.list()[0]!.id;
  b.decide(id, 'once', 'ops');
  t.like(await conn, { allow: true });
  t.like(await query, { allow: true });
  t.deepEqual(await b.ask(A, 'joined.test', 443, 'tls', 30_000), { allow: true, action: 'once', id });

  // A removed sandbox's passes end (keep says no), another's stay; a reload ends all.
  const other = b.ask(B, 'joined.test', 443, 'dns', 30_000);
  b.decide(b.list()[0]!.id, 'once', 'ops');
  await other;
  b.endPasses((s) => s !== 'a');
  t.false(await settled(b.ask(A, 'joined.test', 443, 'tls', 30_000)));
  t.like(await b.ask(B, 'joined.test', 443, 'tls', 30_000), { allow: true });
  b.endPasses();
  t.false(await settled(b.ask(B, 'joined.test', 443, 'tls', 30_000)));
});

test('a timeout is a denial with reason ask-timeout, and an audit line; deny carries the approver', async (t) => {
  const { b, audit, advance } = broker();
  const p = b.ask(A, 'late.test', 443, 'tls', 1000);
  advance(999);
  t.false(await settled(p));
  advance(1);
  t.like(await p, { allow: false, reason: 'ask-timeout' });
  t.like(
    audit.find((l) => l.action === 'timeout'),
    { host: 'late.test', decision: 'deny', reason: 'ask-timeout' },
  );
  t.is(b.list().length, 0);
  const q = b.ask(A, 'no.test', 80, 'http', 1000);
  b.decide(b.list()[0]!.id, 'deny', 'carol');
  t.like(await q, { allow: false, reason: 'denied by approver (carol)' });
});

test('bounded: past approvals.maxPendingPerSandbox a new name is denied at once; other sandboxes are not affected', async (t) => {
  const { b, audit } = broker({ max: 2 });
  void b.ask(A, 'one.test', 443, 'dns', 30_000);
  void b.ask(A, 'two.test', 443, 'dns', 30_000);
  t.deepEqual(await b.ask(A, 'three.test', 443, 'dns', 30_000), {
    allow: false,
    reason: 'too many pending approvals for this sandbox (approvals.maxPendingPerSandbox: 2)',
  });
  t.like(
    audit.find((l) => l.action === 'refused'),
    { sandbox: 'a', host: 'three.test' },
  );
  t.false(await settled(b.ask(B, 'three.test', 443, 'dns', 30_000)));
  t.is(b.list().length, 3);
});

test('bounded: at most MAX_WAITERS_PER_SANDBOX held connections and queries per sandbox', async (t) => {
  const { b } = broker();
  for (let i = 0; i < MAX_WAITERS_PER_SANDBOX; i++) void b.ask(A, 'x.test', 443, 'dns', 30_000);
  t.deepEqual(await b.ask(A, 'x.test', 443, 'dns', 30_000), {
    allow: false,
    reason: `too many connections and queries waiting for approval (${MAX_WAITERS_PER_SANDBOX})`,
  });
  b.decide(b.list()[0]!.id, 'deny', 'ops');
  t.false(await settled(b.ask(A, 'x.test', 443, 'dns', 30_000)), 'released slots can be used again');
});

test('sandbox and policy decisions grant before the waiters go on', async (t) => {
  const { b, grants } = broker();
  const p = b.ask(A, 'g.test', 443, 'tls', 30_000);
  let grantedFirst = false;
  void p.then(() => {
    grantedFirst = grants.length === 1;
  });
  b.decide(b.list()[0]!.id, 'sandbox', 'ops');
  await p;
  t.true(grantedFirst);
  t.like(grants[0], { policy: 'default', scope: 'sandbox', approver: 'ops', item: { host: 'g.test' } });
});

const CONFIG = `sandboxes:
  - { name: a, cidr: 10.77.1.0/24, policy: default }
  - { name: b, cidr: 10.77.4.0/24, policy: default }
policies:
  default:
    unlisted: ask
    askTimeoutMs: 5000
    allow:
      - host: api.example.test
      - { protocol: udp, cidr: 192.0.2.0/28, ports: [3478] }
`;

function runtime() {
  const config = parseConfig(CONFIG, 'sg.yaml');
  return buildRuntime(
    config,
    createLineAudit('info', {}, () => undefined),
  );
}

test('grants: a sandbox grant is for that sandbox alone; a policy grant for every sandbox on the policy', (t) => {
  const rt = runtime();
  const grants = new Grants();
  const item = (host: string): PendingItem => ({ id: host, sandbox: 'a', host, port: 443, via: 'tls', since: '', expires: '' });
  grants.add(item('mine.test'), 'default', 'sandbox', 'ops', 0);
  const one = grants.apply(rt);
  const a = one.sandboxes.byName('a')!.policy;
  const b = one.sandboxes.byName('b')!.policy;
  t.is(a.find('mine.test', 443, 'tls')?.id, 'approvals.sandbox.mine.test');
  t.is(a.find('mine.test', 80, 'tls'), undefined, 'only the port asked about');
  t.true(a.coversName('mine.test'), 'DNS answers it for a');
  t.is(b.find('mine.test', 443, 'tls'), undefined, 'not for b');
  t.false(b.coversName('mine.test'));
  t.is(rt.sandboxes.byName('a')!.policy.find('mine.test', 443, 'tls'), undefined, 'the runtime it was applied to is unchanged');
  // Registered sandboxes coming and going keep the grant (withDynamicSandboxes carries it).
  t.truthy(withDynamicSandboxes(one, []).sandboxes.byName('a')!.policy.find('mine.test', 443, 'tls'));

  grants.add(item('ours.test'), 'default', 'policy', 'ops', 0);
  const two = grants.apply(rt);
  t.is(two.sandboxes.byName('b')!.policy.find('ours.test', 443, 'tls')?.id, 'approvals.policy.ours.test');
  t.truthy(two.sandboxes.byName('a')!.policy.find('ours.test', 443, 'tls'));
  t.truthy(two.sandboxes.byName('a')!.policy.find('mine.test', 443, 'tls'), 'a keeps its own');

  grants.reloaded(rt.config);
  t.deepEqual(
    grants.all().map((g) => g.host),
    ['ours.test'],
    'a reload ends sandbox grants, keeps policy ones',
  );
});

test('grants: a removed sandbox loses its own approvals (a later sandbox of the same name starts without them); policy ones stay', (t) => {
  const rt = runtime();
  const grants = new Grants();
  const item = (sandbox: string, host: string): PendingItem => ({ id: host, sandbox, host, port: 443, via: 'tls', since: '', expires: '' });
  grants.add(item('a', 'mine.test'), 'default', 'sandbox', 'ops', 0);
  grants.add(item('a', 'ours.test'), 'default', 'policy', 'ops', 0);
  t.false(grants.prune(rt), 'a is still there');
  const withoutA = {
    ...rt,
    sandboxes: new SandboxTable(
      rt.config.sandboxes.filter((s) => s.name !== 'a'),
      rt.policies.byName,
    ),
  };
  t.true(grants.prune(withoutA));
  t.deepEqual(
    grants.all().map((g) => g.host),
    ['ours.test'],
  );
  t.is(grants.apply(rt).sandboxes.byName('a')!.policy.find('mine.test', 443, 'tls'), undefined);
});

test('GET /approvals/added: the changed policy in config form, which the config loader reads back with the rule', (t) => {
  const rt = runtime();
  const grants = new Grants();
  grants.add({ id: 'i1', sandbox: 'a', host: 'new.example.test', port: 443, via: 'dns', since: '', expires: '' }, 'default', 'policy', 'ops', 0);
  grants.add({ id: 'i2', sandbox: 'b', host: 'only-b.example.test', port: 80, via: 'http', since: '', expires: '' }, 'default', 'sandbox', 'ops', 0);
  const view = addedView(rt.config, grants.all());
  t.deepEqual(Object.keys(view.policies), ['default']);
  t.is(view.added.length, 2);
  const text = `${CONFIG.split('policies:')[0]}policies: ${JSON.stringify(view.policies)}\n`;
  const c = parseConfig(text, 'added.yaml');
  const p = c.policies.default!;
  t.is(p.unlisted, 'ask');
  t.is(p.askTimeoutMs, 5000);
  t.deepEqual(
    p.allow.map((r) => `${r.host}:${r.ports.join(',')}`),
    ['api.example.test:443', 'new.example.test:443'],
  );
  t.deepEqual(
    p.udp?.map((u) => u.cidr),
    ['192.0.2.0/28'],
    'udp rules survive the round trip',
  );
});

test('config: unlisted and askTimeoutMs; askTimeoutMs only with ask; approvals section', (t) => {
  const bad = (text: string): string[] => {
    try {
      parseConfig(text, 'sg.yaml');
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
      throw err;
    }
    return [];
  };
  t.deepEqual(bad(CONFIG.replace('unlisted: ask', 'unlisted: maybe')), ['policies.default.unlisted: must be one of: deny, ask']);
  t.deepEqual(bad(CONFIG.replace('unlisted: ask', 'unlisted: deny')), ['policies.default.askTimeoutMs: only applies with unlisted: ask']);
  t.deepEqual(bad(CONFIG.replace('askTimeoutMs: 5000', 'askTimeoutMs: 5')), ['policies.default.askTimeoutMs: must be a whole number from 1000 to 3600000']);
  t.deepEqual(bad(`${CONFIG}workers: 2\n`), [], 'workers: held connections in workers ask the primary');
  t.deepEqual(bad(`${CONFIG}approvals: { webhook: "ftp://x" }\n`), ['approvals.webhook: must be an http:// or https:// URL']);
  t.deepEqual(bad(`${CONFIG}approvals: { maxPendingPerSandbox: 0 }\n`), ['approvals.maxPendingPerSandbox: must be a whole number from 1 to 1024']);
  const ok = parseConfig(`${CONFIG}approvals: { webhook: "http://127.0.0.1:9/x", maxPendingPerSandbox: 4 }\n`, 'sg.yaml');
  t.deepEqual(ok.approvals, { webhook: 'http://127.0.0.1:9/x', webhookTimeoutMs: 5000, maxPendingPerSandbox: 4 });
});

test('policy: only enforce-mode ask policies ask, only on 443 and 80, and those ports are peeked', (t) => {
  const rt = runtime();
  const p = rt.sandboxes.byName('a')!.policy;
  t.true(p.asks('x.test', 443));
  t.true(p.asks('x.test', 80));
  t.false(p.asks('x.test', 22));
  t.false(p.asks(undefined, 443), 'no SNI: nothing to ask about');
  t.false(p.asks('10.77.2.2', 80), 'an IP literal Host is denied, never asked about');
  t.false(p.asks('evil\x1b[2J.test', 443), 'nor a name with control bytes (the approver reads it in a terminal)');
  t.false(p.asks('a b.test', 80));
  t.true(p.namedPorts.has(80), 'port 80 is peeked although no rule lists it');
  const deny = buildRuntime(
    parseConfig(CONFIG.replace('unlisted: ask', 'unlisted: deny').replace('    askTimeoutMs: 5000\n', ''), 'sg.yaml'),
    createLineAudit('info', {}, () => undefined),
  );
  t.false(deny.sandboxes.byName('a')!.policy.asks('x.test', 443));
  t.false(deny.sandboxes.byName('a')!.policy.namedPorts.has(80));
  const report = buildRuntime(
    parseConfig(CONFIG.replace('unlisted: ask', 'mode: report\n    unlisted: ask'), 'sg.yaml'),
    createLineAudit('info', {}, () => undefined),
  );
  t.false(report.sandboxes.byName('a')!.policy.asks('x.test', 443), 'report mode lets it through instead');
});

test('POST /approvals/ID body: action required and known; approver free text, bounded', (t) => {
  t.deepEqual(parseDecision({ action: 'once' }), { ok: true, value: { action: 'once', approver: 'control-api' } });
  t.deepEqual(parseDecision({ action: 'policy', approver: 'alice via top' }), { ok: true, value: { action: 'policy', approver: 'alice via top' } });
  t.like(parseDecision({ action: 'always' }), { ok: false, status: 400 });
  t.like(parseDecision({}), { ok: false, status: 400 });
  t.like(parseDecision({ action: 'deny', approver: 'a\nb' }), { ok: false, status: 400 });
  t.like(parseDecision({ action: 'deny', extra: 1 }), { ok: false, status: 400 });
});

test('the Host of a held plain-HTTP request: one Host field, normalised; none, two or an incomplete head give nothing', (t) => {
  t.is(requestHost(Buffer.from('GET / HTTP/1.1\r\nHost: Plain.Example.TEST:80\r\nAccept: */*\r\n\r\n')), 'plain.example.test');
  t.is(requestHost(Buffer.from('GET / HTTP/1.1\r\nAccept: */*\r\n\r\n')), undefined);
  t.is(requestHost(Buffer.from('GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n')), undefined);
  t.is(requestHost(Buffer.from('GET / HTTP/1.1\r\nHost: a.test\r\n')), undefined);
});
