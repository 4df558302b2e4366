/**
 * `unlisted: ask` with `workers: 2` (docs/approvals.md, "Workers"): the held connection lives in
 * a worker process, the pending decision in the primary beside the control API; the decision goes
 * back to the worker, and what `sandbox`/`policy` approvals add reaches every worker.
 *
 * Serial: one sandgate; each test uses its own names.
 */
import test from 'ava';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, type World, type Gate, type Line } from '../helpers/gate.js';
import { controlRequest } from '../../src/control/client.js';
import type { ExecResult } from '../../src/demo/topology.js';

let w: World;
let g: Gate;
let sock: string;

const NAMES = ['w1.example.test', 'w2.example.test', 'w3.example.test', 'w4.example.test'];

test.before(async () => {
  w = await createWorld({
    sandboxes: [
      { name: 'sbx', subnet: 1 },
      { name: 'two', subnet: 4 },
    ],
  });
  sock = join(w.dir, 'run', 'control.sock');
  const base = baseConfig(w);
  g = await startGate(w.topo, w.dir, {
    ...base,
    workers: 2,
    listen: { port: 15001, dnsPort: 15053, control: sock },
    upstream: { ...(base.upstream as Record<string, unknown>), hosts: Object.fromEntries(NAMES.map((n) => [n, w.a])) },
    sandboxes: [
      { name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      { name: 'two', interface: 'sbx-two', cidr: '10.77.4.0/24', policy: 'default' },
    ],
    policies: { default: { unlisted: 'ask', askTimeoutMs: 30_000, allow: [] } },
  });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

function curl(node: string, host: string, port: number, path = '/'): Promise<ExecResult> {
  const url = port === 443 ? `https://${host}${path}` : `http://${host}${path}`;
  return w.topo.exec(w.topo.ns(node), 'curl', ['-sS', '-k', '--max-time', '25', '--resolve', `${host}:${port}:${w.a}`, '-w', '\n%{http_code}', url], {
    timeoutMs: 30_000,
  });
}

function pending(host: string, sandbox = 'agent'): Promise<Line> {
  return g.log.waitFor(
    (l) => l.event === 'approval' && l.action === 'pending' && l.host === host && l.sandbox === sandbox,
    15_000,
    `pending ${host} (${sandbox})`,
  );
}

const decide = (id: unknown, action: string) => controlRequest(sock, 'POST', `/approvals/${String(id)}`, { action });

test.serial('a connection held in a worker is decided in the primary and goes on in the worker', async (t) => {
  const req = curl('sbx', 'w1.example.test', 443, '/held');
  const p = await pending('w1.example.test');
  t.like(p, { via: 'tls', port: 443 });
  t.is(p.worker, undefined, 'the pending decision is the primary’s');
  t.is((await decide(p.id, 'once')).status, 200);
  const r = await req;
  t.is(r.stdout.split('\n')[1], '200', r.stderr);
  const conn = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'w1.example.test' && l.decision === 'allow');
  t.like(conn, { rule: `approvals.once.${String(p.id)}` });
  t.is(typeof conn.worker, 'number', 'served by a worker');
});

test.serial('a sandbox approval reaches both workers; another sandbox is still asked; plain HTTP deny from a worker', async (t) => {
  const first = curl('sbx', 'w2.example.test', 80, '/0');
  const p = await pending('w2.example.test');
  t.is((await decide(p.id, 'sandbox')).status, 200);
  t.is((await first).stdout.split('\n')[1], '200');
  // Round robin: four more connections land on both workers, none asks.
  for (let i = 1; i <= 4; i++) t.is((await curl('sbx', 'w2.example.test', 80, `/${i}`)).stdout.split('\n')[1], '200');
  const served = await Promise.all([1, 2, 3, 4].map((i) => g.log.waitFor((l) => l.event === 'http' && l.host === 'w2.example.test' && l.path === `/${i}`)));
  t.is(new Set(served.map((l) => l.worker)).size, 2, 'both workers served it without asking');
  t.is(g.log.lines.filter((l) => l.event === 'approval' && l.action === 'pending' && l.host === 'w2.example.test').length, 1);
  const other = curl('two', 'w2.example.test', 80);
  const q = await pending('w2.example.test', 'two');
  t.is((await decide(q.id, 'deny')).status, 200);
  t.is((await other).stdout.split('\n')[1], '403');
});

test.serial('a policy approval reaches both workers: the second sandbox gets the name without asking', async (t) => {
  const first = curl('sbx', 'w3.example.test', 443);
  const p = await pending('w3.example.test');
  t.is((await decide(p.id, 'policy')).status, 200);
  t.is((await first).stdout.split('\n')[1], '200');
  for (let i = 1; i <= 4; i++) t.is((await curl('two', 'w3.example.test', 443, `/${i}`)).stdout.split('\n')[1], '200');
  const conns = await g.log.waitFor(() => g.log.lines.filter((l) => l.event === 'conn' && l.host === 'w3.example.test' && l.sandbox === 'two').length >= 4);
  void conns;
  const lines = g.log.lines.filter((l) => l.event === 'conn' && l.host === 'w3.example.test' && l.sandbox === 'two');
  t.true(lines.every((l) => l.decision === 'allow' && l.rule === `approvals.policy.${String(p.id)}`));
  t.is(new Set(lines.map((l) => l.worker)).size, 2);
  t.false(g.log.lines.some((l) => l.event === 'approval' && l.action === 'pending' && l.host === 'w3.example.test' && l.sandbox === 'two'));
});
