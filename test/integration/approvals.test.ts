/**
 * `unlisted: ask` end to end (docs/approvals.md): a real sandgate in the host namespace, three
 * sandbox namespaces ("sbx" and "two" on policy `default`, "three" on policy `short` with a
 * one-second askTimeoutMs), names t1..t10.example.test that no rule lists, answered by upstream "a".
 * Each test uses its own names: `sandbox` and `policy` approvals stay until the reload at the end.
 *
 * Serial: one sandgate, and the tests read its audit stream in order.
 */
import test from 'ava';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, CLI, ROOT, LineLog, type World, type Gate, type Line, type Fake } from '../helpers/gate.js';
import { controlRequest } from '../../src/control/client.js';
import { parseConfig } from '../../src/config/load.js';
import type { ExecResult } from '../../src/demo/topology.js';

let w: World;
let g: Gate;
let sock: string;
let config: Record<string, unknown>;
const fakes: Fake[] = [];

const NAMES = Array.from({ length: 10 }, (_, i) => `t${i + 1}.example.test`);
const PH_K = 'ph-approvals-k-0001';

test.before(async () => {
  w = await createWorld({
    sandboxes: [
      { name: 'sbx', subnet: 1 },
      { name: 'two', subnet: 4 },
      { name: 'three', subnet: 5 },
    ],
  });
  sock = join(w.dir, 'run', 'control.sock');
  const base = baseConfig(w);
  config = {
    ...base,
    listen: { port: 15001, dnsPort: 15053, control: sock },
    upstream: { ...(base.upstream as Record<string, unknown>), hosts: Object.fromEntries([...NAMES, 'api.example.test'].map((n) => [n, w.a])) },
    sandboxes: [
      { name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      { name: 'two', interface: 'sbx-two', cidr: '10.77.4.0/24', policy: 'default', user: 'bob' },
      { name: 'three', interface: 'sbx-three', cidr: '10.77.5.0/24', policy: 'short' },
    ],
    policies: {
      default: { unlisted: 'ask', askTimeoutMs: 30_000, allow: [{ host: 'api.example.test' }] },
      short: { unlisted: 'ask', askTimeoutMs: 1000, allow: [] },
    },
    // A placeholder no rule injects: only the tripwire test below uses it.
    credentials: { k: { secret: { env: 'SG_TEST_APPROVALS_K' }, placeholder: PH_K } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_APPROVALS_K: 'secret-approvals-k-0123456789' } });
});

test.after.always(async () => {
  for (const f of fakes) f.proc.kill('SIGKILL');
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** curl in sandbox `node` (sbx, two, three); -k: the test names are not in the upstream's certificate. */
function curl(node: string, args: string[]): Promise<ExecResult> {
  return w.topo.exec(w.topo.ns(node), 'curl', ['-sS', '-k', '--max-time', '25', ...args], { timeoutMs: 30_000 });
}

const resolveTo = (host: string, port: number): string[] => ['--resolve', `${host}:${port}:${w.a}`];

/** The `approval` audit line announcing a pending decision about `host` from `sandbox`. */
function pending(host: string, sandbox = 'agent', seen: readonly unknown[] = []): Promise<Line> {
  return g.log.waitFor(
    (l) => l.event === 'approval' && l.action === 'pending' && l.host === host && l.sandbox === sandbox && !seen.includes(l.id),
    15_000,
    `pending ${host} (${sandbox})`,
  );
}

/** The fake webhook approver, in sandgate's own (host) namespace on 127.0.0.1: no sandbox path. */
async function startApprover(args: string[]): Promise<Fake> {
  const proc = w.topo.spawn(w.topo.hostNs, process.execPath, [join(ROOT, 'test/helpers/fake-approver.mjs'), ...args]);
  const log = new LineLog();
  log.attach(proc);
  const l = await log.waitFor((x) => typeof x.listening === 'number', 10_000, 'fake approver');
  const f = { proc, log, port: l.listening as number };
  fakes.push(f);
  return f;
}

async function decide(id: unknown, action: string, approver?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return controlRequest(sock, 'POST', `/approvals/${String(id)}`, { action, ...(approver !== undefined ? { approver } : {}) });
}

async function settled<T>(p: Promise<T>): Promise<boolean> {
  let done = false;
  void p.then(() => {
    done = true;
  });
  await new Promise((r) => setImmediate(r));
  return done;
}

/** GET /approvals?watch=1 collected line by line until stop(). */
function watchStream(): Promise<{
  lines: Record<string, unknown>[];
  contentType: string;
  next: (pred: (l: Record<string, unknown>) => boolean) => Promise<void>;
  stop: () => void;
}> {
  return new Promise((resolve, reject) => {
    const lines: Record<string, unknown>[] = [];
    const waiters: { pred: (l: Record<string, unknown>) => boolean; done: () => void }[] = [];
    const req = http.request({ socketPath: sock, path: '/approvals?watch=1' }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i = buf.indexOf('\n');
        while (i >= 0) {
          const l = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
          buf = buf.slice(i + 1);
          lines.push(l);
          for (const wt of [...waiters]) if (wt.pred(l)) wt.done();
          i = buf.indexOf('\n');
        }
      });
      res.on('error', () => undefined);
      resolve({
        lines,
        contentType: String(res.headers['content-type']),
        next: (pred) =>
          lines.some(pred)
            ? Promise.resolve()
            : new Promise<void>((done, fail) => {
                const timer = setTimeout(() => fail(new Error('watch: no such line')), 15_000);
                waiters.push({
                  pred,
                  done: () => {
                    clearTimeout(timer);
                    done();
                  },
                });
              }),
        stop: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end();
  });
}

test.serial('DNS: a query for an unlisted name is held, then answered after POST /approvals/ID once; the watch stream shows both', async (t) => {
  const watch = await watchStream();
  t.is(watch.contentType, 'application/x-ndjson');
  const dig = w.topo.exec(w.sandbox, 'dig', ['+tries=1', '+time=25', '+short', 't1.example.test'], { timeoutMs: 30_000 });
  const p = await pending('t1.example.test');
  t.like(p, { via: 'dns', port: 443, user: 'alice', policy: 'default' });
  const list = await controlRequest(sock, 'GET', '/approvals');
  const items = list.body.pending as Record<string, unknown>[];
  const item = items.find((i) => i.id === p.id) as Record<string, unknown>;
  t.deepEqual(Object.keys(item).sort(), ['expires', 'host', 'id', 'port', 'sandbox', 'since', 'user', 'via']);
  t.like(item, { sandbox: 'agent', user: 'alice', host: 't1.example.test', port: 443, via: 'dns' });
  t.is(Date.parse(String(item.expires)) - Date.parse(String(item.since)), 30_000);
  await watch.next((l) => l.event === 'pending' && l.id === p.id);
  t.false(await settled(dig), 'no answer while the decision is pending');

  t.deepEqual(await decide(p.id, 'once', 'test-suite'), { status: 200, body: { id: p.id, action: 'once' } });
  const answer = await dig;
  t.is(answer.stdout.trim(), w.a, answer.stderr);
  await watch.next((l) => l.event === 'decided' && l.id === p.id);
  t.deepEqual(
    watch.lines.find((l) => l.event === 'decided' && l.id === p.id),
    { event: 'decided', id: p.id, action: 'once', approver: 'test-suite' },
  );
  watch.stop();
  t.like(await g.log.waitFor((l) => l.event === 'approval' && l.action === 'decided' && l.id === p.id), {
    decision: 'allow',
    scope: 'once',
    approver: 'test-suite',
    host: 't1.example.test',
  });
  t.like(await g.log.waitFor((l) => l.event === 'dns' && l.host === 't1.example.test' && l.decision === 'allow'), {
    rule: `approvals.once.${String(p.id)}`,
    answers: [w.a],
  });
  // Decided: it is gone; an unknown id, a bad body.
  t.is((await decide(p.id, 'once')).status, 404);
  t.is((await decide('no-such-id', 'once')).status, 404);
  t.is((await decide(p.id, 'forever')).status, 400);
});

test.serial('DNS then TLS: curl resolving through sandgate needs one approval; once on the DNS question admits the connection that follows', async (t) => {
  // No --resolve: curl asks sandgate's DNS, which holds the query; the TLS connection comes after.
  const req = curl('sbx', ['https://t10.example.test/one-approval']);
  const p = await pending('t10.example.test');
  t.like(p, { via: 'dns', port: 443 });
  t.is((await decide(p.id, 'once', 'test-suite')).status, 200);
  const r = await req;
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { server: 'a', path: '/one-approval' });
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.host === 't10.example.test' && l.decision === 'allow'), {
    rule: `approvals.once.${String(p.id)}`,
  });
  t.is(g.log.lines.filter((l) => l.event === 'approval' && l.action === 'pending' && l.host === 't10.example.test').length, 1, 'asked once');
});

test.serial('TLS: an HTTPS request is held at its ClientHello, nothing goes upstream meanwhile, and it passes after approval', async (t) => {
  const up = w.upstreams[0]!; // "a" on 443
  const seen = () => up.log.lines.filter((l) => (l.request as { host?: string } | undefined)?.host === 't2.example.test').length;
  const req = curl('sbx', [...resolveTo('t2.example.test', 443), 'https://t2.example.test/held']);
  const p = await pending('t2.example.test');
  t.like(p, { via: 'tls', port: 443 });
  t.false(await settled(req));
  t.is(seen(), 0, 'the upstream heard nothing while the decision was pending');
  t.is((await decide(p.id, 'once')).status, 200);
  const r = await req;
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { server: 'a', path: '/held' });
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.host === 't2.example.test' && l.decision === 'allow'), {
    rule: `approvals.once.${String(p.id)}`,
    sandbox: 'agent',
  });
  // `once` was for that decision only: the next connection asks again (and is denied here).
  const again = curl('sbx', [...resolveTo('t2.example.test', 443), 'https://t2.example.test/']);
  const q = await pending('t2.example.test', 'agent', [p.id]);
  t.is((await decide(q.id, 'deny')).status, 200);
  const denied = await again;
  t.not(denied.code, 0);
  t.regex(denied.stderr, /alert access denied/i, 'a denied held ClientHello gets a TLS access_denied alert');
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.host === 't2.example.test' && l.decision === 'deny'), {
    reason: 'denied by approver (control-api)',
    approval: q.id,
  });
});

test.serial('plain HTTP: held at the request; deny answers 403 with the reason, and the audit names the approver', async (t) => {
  const req = curl('sbx', [...resolveTo('t3.example.test', 80), '-w', '\n%{http_code}', 'http://t3.example.test/x']);
  const p = await pending('t3.example.test');
  t.like(p, { via: 'http', port: 80 });
  t.false(await settled(req));
  t.is((await decide(p.id, 'deny', 'carol')).status, 200);
  const r = await req;
  const [body, code] = r.stdout.split('\n');
  t.is(code, '403');
  t.deepEqual(JSON.parse(body ?? ''), { error: 'denied', reason: 'not approved', by: 'sandgate' });
  t.like(await g.log.waitFor((l) => l.event === 'approval' && l.action === 'decided' && l.id === p.id), { decision: 'deny', scope: 'deny', approver: 'carol' });
});

test.serial('a placeholder in an unlisted name is the tripwire, never put to an approver: plain HTTP 403, TLS access_denied, no pending item', async (t) => {
  const name = `${PH_K}.example.test`;
  const plain = await curl('sbx', [...resolveTo(name, 80), '-w', '\n%{http_code}', `http://${name}/x`]);
  t.is(plain.stdout.split('\n').at(-1), '403', plain.stdout + plain.stderr);
  t.regex(plain.stdout, /tripwire/);
  const tls = await curl('sbx', [...resolveTo(name, 443), `https://${name}/`]);
  t.regex(tls.stderr, /alert access denied/);
  t.like(await g.log.waitFor((l) => l.event === 'tripwire' && l.proto === 'http' && l.host === name, 5000, 'plain tripwire line'), { credential: 'k' });
  t.like(await g.log.waitFor((l) => l.event === 'tripwire' && l.proto === 'tls' && l.host === name, 5000, 'tls tripwire line'), { credential: 'k' });
  t.false(
    g.log.lines.some((l) => l.event === 'approval' && l.host === name),
    'nobody was asked',
  );
});

test.serial('timeout: no decision within askTimeoutMs is a denial with reason ask-timeout', async (t) => {
  const req = curl('three', [...resolveTo('t4.example.test', 443), 'https://t4.example.test/']);
  const p = await pending('t4.example.test', 'three');
  // A query for the name, held too (it joins that decision, or opens its own if it comes late).
  const dig = w.topo.exec(w.topo.ns('three'), 'dig', ['+tries=1', '+time=10', 't4.example.test'], { timeoutMs: 15_000 });
  const timeout = await g.log.waitFor((l) => l.event === 'approval' && l.action === 'timeout' && l.id === p.id, 15_000, 'timeout line');
  t.like(timeout, { decision: 'deny', reason: 'ask-timeout', sandbox: 'three' });
  const r = await req;
  t.not(r.code, 0);
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.host === 't4.example.test' && l.decision === 'deny'), { reason: 'ask-timeout', sandbox: 'three' });
  t.is((await decide(p.id, 'once')).status, 404, 'a timed-out decision cannot be approved afterwards');
  t.regex((await dig).stdout, /status: NXDOMAIN/);
  t.like(await g.log.waitFor((l) => l.event === 'dns' && l.host === 't4.example.test'), {
    decision: 'deny',
    reason: 'ask-timeout',
    rcode: 'NXDOMAIN',
    sandbox: 'three',
  });
});

test.serial('sandbox scope: the name is allowed for that sandbox from then on, and still asked about for another sandbox', async (t) => {
  const first = curl('sbx', [...resolveTo('t5.example.test', 80), 'http://t5.example.test/one']);
  const p = await pending('t5.example.test');
  t.is((await decide(p.id, 'sandbox', 'ops')).status, 200);
  const r = await first;
  t.like(JSON.parse(r.stdout), { server: 'a-plain', path: '/one' });
  // Again from the same sandbox: no question.
  const again = await curl('sbx', [...resolveTo('t5.example.test', 80), 'http://t5.example.test/two']);
  t.like(JSON.parse(again.stdout), { server: 'a-plain', path: '/two' });
  await g.log.waitFor((l) => l.event === 'http' && l.host === 't5.example.test' && l.path === '/two', 15_000, 'the second request');
  t.is(g.log.lines.filter((l) => l.event === 'approval' && l.action === 'pending' && l.host === 't5.example.test').length, 1);
  // Sandbox "two" is on the same policy, and is asked about it: A's approval is not B's.
  const other = curl('two', [...resolveTo('t5.example.test', 80), '-w', '\n%{http_code}', 'http://t5.example.test/']);
  const q = await pending('t5.example.test', 'two');
  t.like(q, { user: 'bob' });
  t.is((await decide(q.id, 'deny')).status, 200);
  t.is((await other).stdout.split('\n')[1], '403');
  const added = await controlRequest(sock, 'GET', '/approvals/added');
  t.like(
    (added.body.added as Record<string, unknown>[]).find((a) => a.host === 't5.example.test'),
    {
      scope: 'sandbox',
      sandbox: 'agent',
      policy: 'default',
      port: 80,
      approver: 'ops',
    },
  );
  t.deepEqual(added.body.policies, {}, 'a sandbox approval changes no policy');
});

test.serial('policy scope: a second sandbox on the same policy gets the name without asking; /approvals/added is config the loader reads', async (t) => {
  const first = curl('sbx', [...resolveTo('t6.example.test', 443), 'https://t6.example.test/']);
  const p = await pending('t6.example.test');
  t.is((await decide(p.id, 'policy', 'ops')).status, 200);
  t.is((await first).code, 0);
  const other = await curl('two', [...resolveTo('t6.example.test', 443), 'https://t6.example.test/from-two']);
  t.is(other.code, 0, other.stderr);
  t.like(JSON.parse(other.stdout), { server: 'a', path: '/from-two' });
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.host === 't6.example.test' && l.sandbox === 'two' && l.decision === 'allow'), {
    rule: `approvals.policy.${String(p.id)}`,
  });
  // A pending line would have come before that conn line.
  t.false(g.log.lines.some((l) => l.event === 'approval' && l.action === 'pending' && l.host === 't6.example.test' && l.sandbox === 'two'));
  // DNS answers it too, for every sandbox on the policy.
  const dig = await w.topo.exec(w.topo.ns('two'), 'dig', ['+tries=1', '+time=5', '+short', 't6.example.test'], { timeoutMs: 10_000 });
  t.is(dig.stdout.trim(), w.a);

  const added = await controlRequest(sock, 'GET', '/approvals/added');
  const policies = added.body.policies as Record<string, unknown>;
  const file = JSON.parse(readFileSync(g.configPath, 'utf8')) as Record<string, unknown>;
  const merged = { ...file, policies: { ...(file.policies as Record<string, unknown>), ...policies } };
  const c = parseConfig(JSON.stringify(merged), 'merged.json');
  t.deepEqual(
    c.policies.default?.allow.map((r) => `${r.host}:${r.ports.join(',')}`),
    ['api.example.test:443', 't6.example.test:443'],
  );
  t.is(c.policies.default?.unlisted, 'ask');
});

test.serial('CLI: sandgate approvals (list), allow --for once, deny of an unknown ID', async (t) => {
  const req = curl('sbx', [...resolveTo('t7.example.test', 443), 'https://t7.example.test/']);
  const p = await pending('t7.example.test');
  const list = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'approvals', '--socket', sock]); // no action: list
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, new RegExp(`^${String(p.id)}  agent \\(alice\\)  t7\\.example\\.test:443  via tls  until `, 'm'));
  const allow = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'approvals', 'allow', String(p.id), '--for', 'once', '--socket', sock]);
  t.is(allow.code, 0, allow.stderr);
  t.is(allow.stdout, `${String(p.id)}: once\n`);
  t.is((await req).code, 0);
  const deny = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'approvals', 'deny', 'nope', '--socket', sock]);
  t.is(deny.code, 2);
  t.regex(deny.stderr, /no pending approval "nope"/);
});

test.serial('the sandbox cannot approve itself: no TCP listener was added, and the socket refuses a non-root process in the sandbox namespace', async (t) => {
  const req = curl('sbx', [...resolveTo('t8.example.test', 443), 'https://t8.example.test/']);
  const p = await pending('t8.example.test');
  // sandgate's TCP listeners in its namespace are the two it always had.
  const ss = await w.topo.exec(w.topo.hostNs, 'ss', ['-ltnpH']);
  const ports = ss.stdout
    .split('\n')
    .filter((l) => l.includes(`pid=${g.proc.pid}`) || l.includes('"node"'))
    .map((l) => Number(/:(\d+)\s/.exec(l)?.[1]))
    .sort((a, b) => a - b);
  t.deepEqual(ports, [15001, 15053], ss.stdout);
  // From the sandbox's network, as an unprivileged user: the socket file (0600, root, in a 0700
  // directory) cannot be opened.
  const self = await w.topo.exec(w.sandbox, 'setpriv', [
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    'curl',
    '-sS',
    '--unix-socket',
    sock,
    '-X',
    'POST',
    '-d',
    '{"action":"policy"}',
    `http://control/approvals/${String(p.id)}`,
  ]);
  t.not(self.code, 0);
  t.regex(self.stderr, /Couldn't connect|Permission denied|Failed to connect/i);
  // Nor over TCP to the gate's address: the transparent listener is not the control API.
  const tcp = await w.topo.exec(w.sandbox, 'curl', [
    '-sS',
    '--max-time',
    '5',
    '-X',
    'POST',
    '-d',
    '{"action":"policy"}',
    `http://10.77.1.1:15001/approvals/${String(p.id)}`,
  ]);
  t.false(tcp.stdout.includes('"action"'), tcp.stdout);
  const still = await controlRequest(sock, 'GET', '/approvals');
  t.true(
    (still.body.pending as { id: string }[]).some((i) => i.id === p.id),
    'still pending',
  );
  t.is((await decide(p.id, 'deny')).status, 200);
  t.not((await req).code, 0);
});

test.serial('webhook: the pending item is POSTed from the host, its answer decides; a failing webhook leaves it pending', async (t) => {
  const approver = await startApprover(['--action', 'once']);
  const reloaded = await g.reload({ ...config, approvals: { webhook: `http://127.0.0.1:${approver.port}/approve`, webhookTimeoutMs: 2000 } });
  t.is(reloaded.action, 'reloaded', JSON.stringify(reloaded));
  const r = await curl('sbx', [...resolveTo('t9.example.test', 443), 'https://t9.example.test/']);
  t.is(r.code, 0, r.stderr);
  const asked = await approver.log.waitFor((l) => (l.asked as { host?: string } | null)?.host === 't9.example.test');
  t.like(asked, { method: 'POST', contentType: 'application/json', asked: { sandbox: 'agent', user: 'alice', port: 443, via: 'tls' } });
  t.like(await g.log.waitFor((l) => l.event === 'approval' && l.action === 'decided' && l.host === 't9.example.test'), {
    approver: 'webhook',
    scope: 'once',
    decision: 'allow',
  });

  // A webhook answering 500: the item stays pending (an error line says why) until another approver.
  const failing = await startApprover(['--status', '500']);
  t.is((await g.reload({ ...config, approvals: { webhook: `http://127.0.0.1:${failing.port}/approve` } })).action, 'reloaded');
  const req = curl('sbx', [...resolveTo('t9.example.test', 80), 'http://t9.example.test/']);
  const first = (await g.log.waitFor((l) => l.event === 'approval' && l.action === 'pending' && l.host === 't9.example.test')).id;
  const p = await pending('t9.example.test', 'agent', [first]);
  await failing.log.waitFor((l) => (l.asked as { id?: string } | null)?.id === p.id);
  t.like(await g.log.waitFor((l) => l.event === 'error' && String(l.reason).includes(String(p.id))), {
    reason: `approvals webhook failed for ${String(p.id)} (HTTP 500); it stays pending`,
  });
  t.true(((await controlRequest(sock, 'GET', '/approvals')).body.pending as { id: string }[]).some((i) => i.id === p.id));
  t.is((await decide(p.id, 'once')).status, 200);
  t.like(JSON.parse((await req).stdout), { server: 'a-plain' });
});
