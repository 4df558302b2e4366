/**
 * The control API (including "a removed sandbox loses access at once"), end to
 * end: a real sandgate in the host namespace with its control socket in the world's directory;
 * a second sandbox namespace "two" (host interface sbx-two) that the config does not name but
 * for a catch-all `sbx-*` whose policy allows nothing. Registering "two" carves it out of the
 * catch-all; removing it puts it back, and resets whatever it had open.
 *
 * Serial: one sandgate, and each test leaves the registry as it found it.
 */
import test from 'ava';
import http from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, bodyOf, LineLog, CLI, ROOT, TEST_BACKEND, type World, type Gate, type Line } from '../helpers/gate.js';
import { controlRequest } from '../../src/control/client.js';
import type { ExecResult } from '../../src/demo/topology.js';
import { recorder, type Recorder } from '../helpers/packet-tools.js';

const NFT = '/usr/sbin/nft';
const HOLD = join(ROOT, 'test/helpers/hold-client.mjs');
const LLM = 'sk-control-test-secret';

let w: World;
let g: Gate;
let sock: string;
let config: Record<string, unknown>;
let echo: Recorder | undefined;

const TWO = { name: 'two', interface: 'sbx-two', policy: 'two', user: 'bob' };

test.before(async () => {
  w = await createWorld({
    sandboxes: [
      { name: 'sbx', subnet: 1 },
      { name: 'two', subnet: 4 },
    ],
  });
  sock = join(w.dir, 'run', 'control.sock');
  const base = baseConfig(w, { upstream: { caFile: w.pki.caFile } });
  config = {
    ...base,
    listen: { port: 15001, dnsPort: 15053, control: sock },
    sandboxes: [
      // The first sandbox, as usual; its interface exactly, so "two" is not it.
      { name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      // The fallback for every sandbox interface nobody registered: nothing is allowed.
      { name: 'unregistered', interface: 'sbx-*', policy: 'none' },
    ],
    policies: {
      ...(base.policies as Record<string, unknown>),
      none: { mode: 'enforce' },
      two: {
        allow: [
          { host: 'x.wild.example.test' }, // passthrough
          { host: 'api.example.test', inject: 'llm' }, // intercepted
          { protocol: 'udp', cidr: `${w.a}/32`, ports: [5301] }, // the packet path
        ],
      },
    },
    credentials: { llm: { secret: { env: 'SG_TEST_LLM' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_LLM: LLM } });
});

test.after.always(async () => {
  echo?.proc.kill('SIGKILL');
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** curl from sandbox "two", resolving every name to upstream a. */
function curlTwo(url: string, extra: string[] = [], timeoutMs = 5000): Promise<ExecResult> {
  const host = new URL(url).hostname;
  return w.topo.exec(
    w.topo.ns('two'),
    'curl',
    ['-sS', '--max-time', String(timeoutMs / 1000), '--cacert', w.pki.caFile, '--resolve', `${host}:443:${w.a}`, ...extra, url],
    { timeoutMs: timeoutMs + 2000 },
  );
}

function cli(args: string[]): Promise<ExecResult> {
  return w.topo.exec(w.topo.hostNs, process.execPath, [CLI, ...args], { timeoutMs: 15_000 });
}

/** A raw request to the control socket (for bodies that are not JSON). */
function raw(method: string, path: string, body?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function nft(args: string[]): Promise<string> {
  const r = await w.topo.exec(w.topo.hostNs, NFT, args);
  if (r.code !== 0) throw new Error(`nft ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const IPSET = '/usr/sbin/ipset';
const IPTABLES = TEST_BACKEND === 'iptables';

async function ipset(args: string[]): Promise<string> {
  const r = await w.topo.exec(w.topo.hostNs, IPSET, args);
  if (r.code !== 0) throw new Error(`ipset ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The registered sandboxes as the firewall holds them: the sets' listings (nft sets, or ipsets). */
async function dynSets(): Promise<string> {
  const out: string[] = [];
  if (IPTABLES) for (const set of ['PAIR4', 'PAIRIF4', 'IF4', 'ADDR4', 'PAIRIF6', 'IF6']) out.push(await ipset(['save', `SANDGATE-${set}`]));
  else for (const set of ['dyn_pair', 'dyn_pair_iface', 'dyn_iface', 'dyn_addr4']) out.push(await nft(['list', 'set', 'inet', 'sandgate', set]));
  return out.join('');
}

type Kind = 'iface' | 'pair' | 'addr4';
/** One kind's elements, the same way for both backends: "sbx-two", "sbx-two . 10.77.4.0/24", "10.200.0.1/32". */
async function elements(kind: Kind): Promise<string[]> {
  if (IPTABLES) {
    const set = { iface: 'IF4', pair: 'PAIR4', addr4: 'ADDR4' }[kind];
    return (await ipset(['save', `SANDGATE-${set}`]))
      .split('\n')
      .filter((l) => l.startsWith('add '))
      .map((l) => {
        const e = l.split(' ')[2] ?? '';
        if (kind === 'addr4') return e;
        const [net, iface] = e.split(',');
        const dev = / wildcard$/.test(l) ? `${iface}*` : iface; // a glob is a prefix with the wildcard flag
        return kind === 'iface' ? `${dev}` : `${dev} . ${net}`;
      })
      .sort();
  }
  const set = { iface: 'dyn_iface', pair: 'dyn_pair', addr4: 'dyn_addr4' }[kind];
  const m = /elements = \{([^}]*)\}/.exec(await nft(['list', 'set', 'inet', 'sandgate', set]));
  if (!m) return [];
  return (m[1] ?? '')
    .split(',')
    .map((e) => e.trim().replace(/"/g, '').replace(/\\\*/g, '*'))
    .filter((e) => e !== '')
    .sort();
}

async function names(): Promise<string[]> {
  const r = await controlRequest(sock, 'GET', '/sandboxes');
  return (r.body.sandboxes as { name: string }[]).map((s) => s.name);
}

const configLine =
  (action: string, sandbox: string) =>
  (l: Line): boolean =>
    l.event === 'config' && l.action === action && l.sandbox === sandbox;

/** A hold-client in sandbox "two"; its JSON lines in a LineLog. */
function hold(args: string[]): { log: LineLog; done: Promise<void> } {
  const proc = w.topo.spawn(w.topo.ns('two'), process.execPath, [HOLD, '--connect', w.a, ...args]);
  const log = new LineLog();
  log.attach(proc);
  return { log, done: new Promise((r) => proc.once('exit', () => r())) };
}

test.serial("the control socket is created 0600 in a 0700 directory; ls shows the config's sandboxes", async (t) => {
  const ready = g.log.find((l) => l.event === 'ready');
  t.is(ready?.control, sock);
  const st = statSync(sock);
  t.true(st.isSocket());
  t.is(st.mode & 0o777, 0o600);
  t.is(statSync(join(w.dir, 'run')).mode & 0o777, 0o700);

  const ls = await cli(['sandbox', 'ls', '--socket', sock]);
  t.is(ls.code, 0, ls.stderr);
  t.regex(ls.stdout, /^NAME\s+SOURCE\s+POLICY/);
  t.regex(ls.stdout, /\nagent\s+config\s+default\s+alice\s+sbx-sbx\s+10\.77\.1\.0\/24/);
  t.regex(ls.stdout, /\nunregistered\s+config\s+none/);
  // -c FILE reads listen.control from the config.
  const json = await cli(['sandbox', 'ls', '--json', '-c', g.configPath]);
  t.is(json.code, 0, json.stderr);
  t.deepEqual(
    (JSON.parse(json.stdout) as { name: string }[]).map((s) => s.name),
    ['agent', 'unregistered'],
  );
});

test.serial('unregistered, "two" is reset by the catch-all; registered, it talks as soon as `sandbox add` returns', async (t) => {
  const before = await curlTwo('https://x.wild.example.test/before');
  t.not(before.code, 0, 'reset before registration');
  const deny = await g.log.waitFor((l) => l.event === 'conn' && l.sandbox === 'unregistered' && l.decision === 'deny');
  t.regex(String(deny.reason), /port 443 is not allowed/);

  const add = await cli([
    'sandbox',
    'add',
    'two',
    '--policy',
    'two',
    '--interface',
    'sbx-two',
    '--user',
    'bob',
    '--label',
    'team=research',
    '--label',
    'run=42',
    '--socket',
    sock,
  ]);
  const returned = performance.now();
  t.is(add.code, 0, add.stderr);
  t.is(add.stdout, 'registered sandbox two: policy two, interface sbx-two, user bob\n');
  // First attempt, no retry: the sets and the runtime changed before the answer was sent.
  const r = await curlTwo('https://x.wild.example.test/after');
  const ms = performance.now() - returned;
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
  t.log(`first request from the registered sandbox answered ${ms.toFixed(0)} ms after \`sandbox add\` returned (curl start-up in the namespace included)`);
  const conn = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'x.wild.example.test' && l.decision === 'allow' && l.sandbox === 'two');
  t.is(conn.user, 'bob');
  t.is(conn.rule, 'policies.two.allow[0]');
  const added = await g.log.waitFor(configLine('sandbox-added', 'two'));
  t.like(added, { policy: 'two', user: 'bob', match: { name: 'two', interface: 'sbx-two' }, labels: { team: 'research', run: '42' } });
  t.deepEqual(await elements('iface'), ['sbx-two']);

  // DNS from the registered sandbox is its own policy's: listed name answered, others NXDOMAIN.
  const dig = await w.topo.exec(w.topo.ns('two'), 'dig', ['+short', '+time=2', '+tries=1', '@10.77.4.1', 'x.wild.example.test']);
  t.is(dig.stdout.trim(), w.a);
  const nx = await w.topo.exec(w.topo.ns('two'), 'dig', ['+time=2', '+tries=1', '@10.77.4.1', 'plain.example.test']);
  t.regex(nx.stdout, /NXDOMAIN/);

  const ls = await controlRequest(sock, 'GET', '/sandboxes/two');
  t.is(ls.status, 200);
  t.like(ls.body.sandbox as Record<string, unknown>, {
    name: 'two',
    source: 'api',
    policy: 'two',
    user: 'bob',
    interface: 'sbx-two',
    labels: { team: 'research', run: '42' },
  });
});

test.serial('misuse gets one clear sentence and a 4xx, and changes nothing', async (t) => {
  const sets = await dynSets();
  const list = await controlRequest(sock, 'GET', '/sandboxes');
  const cases: [string, () => Promise<{ status: number; body: Record<string, unknown> }>, number, RegExp][] = [
    ['bad JSON', () => raw('POST', '/sandboxes', '{"name": "x",'), 400, /^the request body is not valid JSON \(/],
    ['not an object', () => raw('POST', '/sandboxes', '[1, 2]'), 400, /must be a JSON object/],
    [
      'duplicate of a config name',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'agent', address: '10.77.9.2', policy: 'default' }),
      409,
      /a sandbox named "agent" already exists \(from the config\)/,
    ],
    [
      'duplicate of a registered name',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'two', address: '10.77.9.2', policy: 'default' }),
      409,
      /a sandbox named "two" is already registered/,
    ],
    [
      'overlapping cidr',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', cidr: '10.77.1.0/25', policy: 'default' }),
      409,
      /cidr 10\.77\.1\.0\/25 overlaps cidr 10\.77\.1\.0\/24 of sandbox "agent" \(from the config\)/,
    ],
    [
      'overlapping address',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', address: '10.77.1.7', policy: 'default' }),
      409,
      /cidr 10\.77\.1\.7\/32 overlaps/,
    ],
    [
      'same interface as a registered one',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', interface: 'sbx-two', policy: 'default' }),
      409,
      /interface "sbx-two" overlaps interface "sbx-two" of sandbox "two"/,
    ],
    [
      'a config interface taken over',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', interface: 'sbx-s*', policy: 'default' }),
      409,
      /interface "sbx-s\*" overlaps interface "sbx-sbx" of sandbox "agent" \(from the config\)/,
    ],
    [
      'unknown policy',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', address: '10.77.9.2', policy: 'nope' }),
      400,
      /^policy: unknown policy "nope"/,
    ],
    [
      'bad cidr',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', cidr: '10.77.9.0/33', policy: 'default' }),
      400,
      /^cidr: .*invalid prefix length/,
    ],
    [
      'bad interface',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', interface: 'much-too-long-name0', policy: 'default' }),
      400,
      /^interface: /,
    ],
    ['bad name', () => controlRequest(sock, 'POST', '/sandboxes', { name: 'a b', address: '10.77.9.2', policy: 'default' }), 400, /^name: /],
    ['no match', () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', policy: 'default' }), 400, /needs "interface" or "cidr"/],
    [
      'address and cidr',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', address: '10.77.9.2', cidr: '10.77.9.0/24', policy: 'default' }),
      400,
      /"address" or "cidr", not both/,
    ],
    [
      'unknown key',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', address: '10.77.9.2', policy: 'default', polcy: 'x' }),
      400,
      /unknown key "polcy"/,
    ],
    [
      'bad label',
      () => controlRequest(sock, 'POST', '/sandboxes', { name: 'x', address: '10.77.9.2', policy: 'default', labels: { 'a b': 'c' } }),
      400,
      /^labels: key "a b"/,
    ],
    ['unknown sandbox on rm', () => controlRequest(sock, 'DELETE', '/sandboxes/ghost'), 404, /no sandbox named "ghost"/],
    ['removing a config sandbox', () => controlRequest(sock, 'DELETE', '/sandboxes/agent'), 409, /comes from the config file/],
    ['updating a config sandbox', () => controlRequest(sock, 'PUT', '/sandboxes/agent', { policy: 'none' }), 409, /comes from the config file/],
    ['renaming', () => controlRequest(sock, 'PUT', '/sandboxes/two', { name: 'three' }), 400, /cannot be renamed/],
    [
      'update into an overlap',
      () => controlRequest(sock, 'PUT', '/sandboxes/two', { interface: 'sbx-sbx' }),
      409,
      /overlaps interface "sbx-sbx" of sandbox "agent"/,
    ],
    ['unknown path', () => controlRequest(sock, 'GET', '/nope'), 404, /no such path/],
    ['wrong method', () => controlRequest(sock, 'PATCH', '/sandboxes'), 405, /PATCH is not allowed/],
  ];
  for (const [what, call, status, error] of cases) {
    const r = await call();
    t.is(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
    t.regex(String(r.body.error), error, what);
    t.is(String(r.body.error).split('\n').length, 1, `${what}: one line`);
  }
  t.is(await dynSets(), sets, 'the firewall sets are unchanged');
  t.deepEqual((await controlRequest(sock, 'GET', '/sandboxes')).body, list.body, 'the registry is unchanged');
  t.truthy(g.log.find((l) => l.event === 'config' && l.action === 'sandbox-rejected' && l.status === 409 && /overlaps cidr/.test(String(l.reason))));

  // The CLI: a refused request is exit 2, a daemon that is not there exit 1; one line each.
  const dup = await cli(['sandbox', 'add', 'agent', '--policy', 'default', '--address', '10.77.9.2', '--socket', sock]);
  t.is(dup.code, 2);
  t.is(dup.stderr, 'sandgate: a sandbox named "agent" already exists (from the config)\n');
  // rm of an unknown name: the wanted state already holds (exit 0, said so); --strict: exit 2.
  const ghost = await cli(['sandbox', 'rm', 'ghost', '--socket', sock]);
  t.is(ghost.code, 0, ghost.stderr);
  t.is(ghost.stdout, 'no sandbox named ghost is registered; nothing to remove\n');
  const strict = await cli(['sandbox', 'rm', 'ghost', '--strict', '--socket', sock]);
  t.is(strict.code, 2);
  t.is(strict.stderr, 'sandgate: no sandbox named "ghost"\n');
  // A config sandbox is still refused: it is there, and rm cannot remove it.
  const cfgRm = await cli(['sandbox', 'rm', 'agent', '--socket', sock]);
  t.is(cfgRm.code, 2);
  t.regex(cfgRm.stderr, /comes from the config file/);
  const down = await cli(['sandbox', 'ls', '--socket', join(w.dir, 'nobody.sock')]);
  t.is(down.code, 1);
  t.regex(down.stderr, /^sandgate: cannot reach sandgate's control socket .*nobody\.sock \(ENOENT\): is sandgate running/);
  t.is(down.stderr.split('\n').length, 2);
  const usage = await cli(['sandbox', 'add', 'x', '--socket', sock]);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /^sandgate: sandbox add: missing --policy P/);
  t.deepEqual(await names(), ['agent', 'unregistered', 'two']);
});

test.serial('a labels-only update keeps connections; a policy update applies at once', async (t) => {
  const labels = await controlRequest(sock, 'PUT', '/sandboxes/two', { labels: { team: 'ops' } });
  t.is(labels.status, 200, JSON.stringify(labels.body));
  t.is(labels.body.closed, 0);
  t.like(labels.body.sandbox as Record<string, unknown>, { policy: 'two', user: 'bob', interface: 'sbx-two', labels: { team: 'ops' } });
  const set = await cli(['sandbox', 'set', 'two', '--policy', 'none', '--socket', sock]);
  t.is(set.code, 0, set.stderr);
  t.regex(set.stdout, /^updated sandbox two: policy none, interface sbx-two, user bob/);
  t.not((await curlTwo('https://x.wild.example.test/none')).code, 0);
  await g.log.waitFor((l) => l.event === 'conn' && l.sandbox === 'two' && l.decision === 'deny');
  t.is((await controlRequest(sock, 'PUT', '/sandboxes/two', { policy: 'two' })).status, 200);
  t.is((await curlTwo('https://x.wild.example.test/two-again')).code, 0);
  t.truthy(g.log.find(configLine('sandbox-updated', 'two')));
});

test.serial('sandbox rm resets its open connections at once (passthrough stream, intercepted keep-alive), and new ones', async (t) => {
  // A passthrough TLS stream that would run for 20 s, and an intercepted connection idling in
  // keep-alive (sandgate's front keeps those 60 s): only the removal can end them now.
  const stream = hold(['--host', 'x.wild.example.test', '--ca', w.pki.caFile, '--path', '/_sg/sse?n=200&interval=100', '--stream']);
  const idle = hold(['--host', 'api.example.test', '--ca', join(w.dir, 'ca', 'ca.pem'), '--path', '/kept-alive']);
  await stream.log.waitFor((l) => l.event === 'chunk', 5000, 'the stream flowing');
  const first = await idle.log.waitFor((l) => l.event === 'response', 5000, 'the intercepted response');
  t.is(first.status, 200);
  const injected = await g.log.waitFor((l) => l.event === 'http' && l.path === '/kept-alive');
  t.like(injected, { sandbox: 'two', user: 'bob', credential: 'llm', status: 200 });
  await new Promise((r) => setTimeout(r, 300));
  t.falsy(
    stream.log.find((l) => l.event === 'closed'),
    'the stream is still open before the removal',
  );
  t.falsy(
    idle.log.find((l) => l.event === 'closed'),
    'the keep-alive connection is still open before the removal',
  );
  const listed = await controlRequest(sock, 'GET', '/sandboxes/two');
  // Two connections, each counted once (the intercepted one is its TLS socket, not also the TCP one under it).
  t.is((listed.body.sandbox as { connections: number }).connections, 2, JSON.stringify(listed.body));

  const started = performance.now();
  const rm = await cli(['sandbox', 'rm', 'two', '--socket', sock]);
  const returned = performance.now();
  t.is(rm.code, 0, rm.stderr);
  t.is(rm.stdout, 'removed sandbox two (2 open connections reset)\n');
  const [s, i] = await Promise.all([
    stream.log.waitFor((l) => l.event === 'closed', 3000, 'the stream closed'),
    idle.log.waitFor((l) => l.event === 'closed', 3000, 'the keep-alive connection closed'),
  ]);
  const closedAt = performance.now();
  t.true((s.chunks as number) < 200, `the stream was cut (${String(s.chunks)} chunks of 200)`);
  t.is(i.responses, 1);
  t.log(
    `rm took ${(returned - started).toFixed(0)} ms (CLI start-up included); both connections closed within ${(closedAt - started).toFixed(0)} ms of it starting`,
  );
  await Promise.all([stream.done, idle.done]);
  const removed = await g.log.waitFor(configLine('sandbox-removed', 'two'));
  t.is(removed.closed, 2, JSON.stringify(removed));
  t.like(removed, { policy: 'two', user: 'bob', match: { name: 'two', interface: 'sbx-two' } });

  // A new connection lands on the catch-all again: reset, and no byte reaches the upstream.
  const seen = w.upstreams[0]!.log.lines.length;
  const after = await curlTwo('https://x.wild.example.test/after-rm');
  t.not(after.code, 0);
  t.is(w.upstreams[0]!.log.lines.length, seen, 'upstream a saw nothing');
  t.deepEqual(await elements('iface'), []);
  t.deepEqual(await names(), ['agent', 'unregistered']);
});

test.serial('sandbox rm ends its accepted UDP flows too: the next datagram is a new flow, denied', async (t) => {
  // Accepted flows are forwarded, so forwarding is on in this test's host namespace, for this test only.
  const sysctl = (v: number) => w.topo.exec(w.topo.hostNs, '/usr/sbin/sysctl', ['-q', '-w', `net.ipv4.ip_forward=${v}`]);
  t.is((await sysctl(1)).code, 0);
  echo = await recorder(w.topo, w.topo.ns('a'), 4, [5301]);
  const sender = w.topo.spawn(w.topo.ns('two'), process.execPath, [
    '-e',
    `
    const s = require('dgram').createSocket('udp4');
    let n = 0;
    s.on('message', (m) => console.log(JSON.stringify({ echo: String(m) })));
    s.bind(0, () => { const tick = () => { s.send('u' + (n++), 5301, '${w.a}'); }; tick(); setInterval(tick, 100); });
    setTimeout(() => process.exit(0), 20000);`,
  ]);
  const echoes = new LineLog();
  echoes.attach(sender);
  try {
    t.is((await controlRequest(sock, 'POST', '/sandboxes', { ...TWO })).status, 201);
    await echoes.waitFor(() => echoes.lines.filter((l) => typeof l.echo === 'string').length >= 3, 5000, 'echoes through the accepted flow');
    const accepted = g.log.lines.filter((l) => l.event === 'packet' && l.sandbox === 'two' && l.decision === 'allow');
    t.is(accepted.length, 1, "one verdict: later datagrams passed on the flow's conntrack mark");
    const rm = await controlRequest(sock, 'DELETE', '/sandboxes/two');
    t.is(rm.status, 200);
    await new Promise((r) => setTimeout(r, 300)); // echoes already in flight
    const n = echoes.lines.length;
    // The flow is gone: its next datagram is a new flow, judged under the catch-all.
    const denied = await g.log.waitFor(
      (l) => l.event === 'packet' && l.sandbox === 'unregistered' && l.decision === 'deny',
      3000,
      'a verdict under the catch-all',
    );
    t.is(denied.proto, 'udp');
    await new Promise((r) => setTimeout(r, 700));
    t.is(echoes.lines.length, n, 'no echo after the removal');
  } finally {
    sender.kill('SIGKILL');
    await sysctl(0);
  }
});

test.serial('a reload keeps registered sandboxes; without the catch-all an unregistered sandbox reaches nothing; a clashing config is rejected', async (t) => {
  t.is((await controlRequest(sock, 'POST', '/sandboxes', { ...TWO, cidr: '10.77.4.0/24' })).status, 201);
  const noCatchAll = { ...config, sandboxes: (config.sandboxes as unknown[]).slice(0, 1) };
  t.is((await g.reload(noCatchAll)).registered, 1);
  t.deepEqual(await elements('pair'), ['sbx-two . 10.77.4.0/24']);
  const r = await curlTwo('https://x.wild.example.test/after-reload');
  t.is(r.code, 0, r.stderr);

  const clash = await g.reload({
    ...noCatchAll,
    sandboxes: [...(noCatchAll.sandboxes as unknown[]), { name: 'two', interface: 'sbx-zzz', policy: 'default' }],
  });
  t.is(clash.action, 'rejected');
  t.regex(String(clash.reason), /names a sandbox "two", which is already registered/);
  const overlap = await g.reload({
    ...noCatchAll,
    sandboxes: [...(noCatchAll.sandboxes as unknown[]), { name: 'wide', cidr: '10.77.0.0/16', policy: 'default' }],
  });
  t.is(overlap.action, 'rejected');
  t.regex(String(overlap.reason), /registered sandbox "two": cidr 10\.77\.4\.0\/24 overlaps cidr 10\.77\.0\.0\/16 of sandbox "wide"/);

  t.is((await controlRequest(sock, 'DELETE', '/sandboxes/two')).status, 200);
  // Nothing of sandgate's matches "two" now, and the host does not forward: no way out at all.
  const seen = w.upstreams[0]!.log.lines.length;
  const gone = await curlTwo('https://x.wild.example.test/unknown', [], 2000);
  t.not(gone.code, 0);
  t.is(w.upstreams[0]!.log.lines.length, seen);
  t.is((await g.reload(config)).action, 'reloaded');
});

test.serial('1,000 registered sandboxes: the ruleset stays the same size; add and remove latency', async (t) => {
  /** The ruleset's size: nft's table without set elements, or sandgate's iptables chains (both families). */
  const table = async (): Promise<{ lines: number; rules: number }> => {
    if (IPTABLES) {
      const saved: string[] = [];
      for (const tool of ['/usr/sbin/iptables-save', '/usr/sbin/ip6tables-save']) saved.push((await w.topo.exec(w.topo.hostNs, tool, [])).stdout);
      const ours = saved
        .join('\n')
        .split('\n')
        .filter((l) => /^(:|-A )SANDGATE-|^-A \S+ -j SANDGATE-/.test(l));
      return { lines: ours.length, rules: ours.filter((l) => l.startsWith('-A ')).length };
    }
    const text = await nft(['-t', '-a', 'list', 'table', 'inet', 'sandgate']);
    return {
      lines: text.trimEnd().split('\n').length,
      rules: text.split('\n').filter((l) => /# handle \d+$/.test(l) && !/^\s*(chain|set|table) /.test(l)).length,
    };
  };
  const N = 1000;
  /** The first SEQ one at a time (a change alone), the rest from CONC clients at once (group commit). */
  const SEQ = 100;
  const CONC = 32;
  const addr = (i: number): string => `10.200.${Math.floor(i / 250)}.${(i % 250) + 1}`;
  const timed = async (call: () => Promise<{ status: number; body: Record<string, unknown> }>, want: number): Promise<number> => {
    const t0 = performance.now();
    const r = await call();
    const ms = performance.now() - t0;
    if (r.status !== want) throw new Error(`status ${r.status}, wanted ${want}: ${JSON.stringify(r.body)}`);
    return ms;
  };
  const add = (i: number) => () =>
    controlRequest(sock, 'POST', '/sandboxes', { name: `bulk-${i}`, address: addr(i), policy: 'default', labels: { batch: 'b' } });
  const rm = (i: number) => () => controlRequest(sock, 'DELETE', `/sandboxes/bulk-${i}`);
  /** Runs op(i) for i in [from, to) from `clients` concurrent clients; the latencies and the wall time. */
  const run = async (
    op: (i: number) => () => Promise<{ status: number; body: Record<string, unknown> }>,
    want: number,
    from: number,
    to: number,
    clients: number,
  ): Promise<{ ms: number[]; wall: number }> => {
    const ms: number[] = [];
    let next = from;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (next < to) {
          const i = next++;
          ms.push(await timed(op(i), want));
        }
      }),
    );
    return { ms, wall: performance.now() - t0 };
  };

  const first = await run(add, 201, 0, 1, 1);
  const one = await table();
  const seqAdd = await run(add, 201, 1, SEQ + 1, 1);
  const concAdd = await run(add, 201, SEQ + 1, N, CONC);
  const full = await table();
  t.deepEqual(full, one, `the ruleset with 1 and ${N} registered sandboxes`);
  t.is((await elements('addr4')).length, N);
  t.is((await names()).length, N + 2);
  // Identification with a thousand registered: a sandbox still talks (the config's here).
  const r = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/with-1000']);
  t.is(r.code, 0, r.stderr);

  const seqRm = await run(rm, 200, 0, SEQ, 1);
  const concRm = await run(rm, 200, SEQ, N, CONC);
  t.deepEqual(await names(), ['agent', 'unregistered']);
  t.deepEqual(await elements('addr4'), []);
  t.deepEqual(await table(), one);

  const pct = (xs: number[], p: number): string => {
    const s = [...xs].sort((a, b) => a - b);
    return (s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? 0).toFixed(1);
  };
  const stats = (what: string, x: { ms: number[]; wall: number }): string =>
    `${what}: median ${pct(x.ms, 50)} ms, p99 ${pct(x.ms, 99)} ms, max ${pct(x.ms, 100)} ms (${x.ms.length} in ${(x.wall / 1000).toFixed(2)} s = ${Math.round((x.ms.length * 1000) / x.wall)}/s)`;
  t.log(
    `${IPTABLES ? "iptables-save (sandgate's chains)" : 'nft -t list table'}: ${full.lines} lines, ${full.rules} rules with 1 registered sandbox and with ${N}`,
  );
  t.log(stats('add, one at a time', { ms: [...first.ms, ...seqAdd.ms], wall: first.wall + seqAdd.wall }));
  t.log(stats(`add, ${CONC} clients at once (up to ${N})`, concAdd));
  t.log(stats(`remove, one at a time (from ${N})`, seqRm));
  t.log(stats(`remove, ${CONC} clients at once`, concRm));
});

// Both backends: an ipset element with the wildcard flag; under nft, a prefix element, which nft
// 1.0.6 cannot delete ("element does not exist"), so its set is flushed and refilled.
test.serial('an interface glob registers and is removed', async (t) => {
  t.not((await curlTwo('https://x.wild.example.test/glob-before')).code, 0, 'under the catch-all first');
  t.is((await controlRequest(sock, 'POST', '/sandboxes', { ...TWO, interface: 'sbx-tw*' })).status, 201);
  t.deepEqual(await elements('iface'), ['sbx-tw*']);
  const r = await curlTwo('https://x.wild.example.test/glob');
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
  t.is((await controlRequest(sock, 'DELETE', '/sandboxes/two')).status, 200);
  t.deepEqual(await elements('iface'), []);
  t.not((await curlTwo('https://x.wild.example.test/glob-after')).code, 0, 'under the catch-all again');
});

test.serial('a restart keeps registrations (the state file) and replaces the stale socket a killed sandgate left', async (t) => {
  const state = join(w.dir, 'ca', 'registered.json');
  t.is((await controlRequest(sock, 'POST', '/sandboxes', { ...TWO, labels: { run: '7' } })).status, 201);
  const saved = JSON.parse(readFileSync(state, 'utf8')) as { version: number; sandboxes: unknown[] };
  t.deepEqual(saved, { version: 1, sandboxes: [{ name: 'two', policy: 'two', interface: 'sbx-two', user: 'bob', labels: { run: '7' } }] });
  t.is(statSync(state).mode & 0o777, 0o600);
  g.proc.kill('SIGKILL');
  await new Promise((r) => g.proc.once('exit', r));
  t.true(statSync(sock).isSocket(), 'the killed sandgate left its socket file');
  g = await startGate(w.topo, w.dir, config, 'restarted.json', { env: { SG_TEST_LLM: LLM } });
  t.is(statSync(sock).mode & 0o777, 0o600);
  // Restored before the firewall opened: listed, in the sets, and served on the first request.
  t.deepEqual(await names(), ['agent', 'unregistered', 'two']);
  const restored = g.log.find((l) => l.event === 'config' && l.action === 'restored');
  t.like(restored, { file: state, registered: 1 });
  t.true(g.log.lines.indexOf(restored!) < g.log.lines.findIndex((l) => l.event === 'ready'));
  t.deepEqual(await elements('iface'), ['sbx-two']);
  const r = await curlTwo('https://x.wild.example.test/restarted');
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
  t.like((await controlRequest(sock, 'GET', '/sandboxes/two')).body.sandbox as Record<string, unknown>, { user: 'bob', labels: { run: '7' } });

  // Removed, then restarted: gone for good (the file says so too).
  t.is((await controlRequest(sock, 'DELETE', '/sandboxes/two')).status, 200);
  t.deepEqual(JSON.parse(readFileSync(state, 'utf8')), { version: 1, sandboxes: [] });
  g.proc.kill('SIGKILL');
  await new Promise((r2) => g.proc.once('exit', r2));
  g = await startGate(w.topo, w.dir, config, 'restarted-again.json', { env: { SG_TEST_LLM: LLM } });
  t.deepEqual(await names(), ['agent', 'unregistered']);
  t.not((await curlTwo('https://x.wild.example.test/removed')).code, 0, 'under the catch-all again');
});
