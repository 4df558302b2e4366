/**
 * `workers: 2` end to end: the primary keeps the listener, firewall, DNS,
 * control API, token caches and the audit stream; two worker processes run the TCP data path.
 * One sandgate for the file; tests are serial and match audit lines by unique paths or names.
 *
 * World: the token world (test/helpers/auth-world.ts: sandboxes "sbx" = alice and "bob", a fake
 * auth service, a fake API on a:443 accepting only minted tokens) plus, on upstream a, an HTTPS
 * server for passthrough (8443), one that demands a static credential (8444), plain HTTP (80);
 * upstream b serves the unlisted host.
 */
import test from 'ava';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGate, startUpstream, type Gate, type Line, type Upstream } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';
import { controlRequest, controlStream } from '../../src/control/client.js';
import { LineLog, ROOT } from '../helpers/gate.js';
import { apiRequests, authConfig, authUrl, calls, createAuthWorld, load, NEVER_LOGGED, secretEnv, type AuthWorld } from '../helpers/auth-world.js';

const CURL = '/usr/bin/curl';
const HOLD = join(ROOT, 'test/helpers/hold-client.mjs');
const LLM = 'sk-workers-test-secret-0123';
const H = {
  pass: 'pass.example.test',
  llm: 'llm.example.test',
  plain: 'plain.example.test',
  evil: 'evil.example.test',
  later: 'later.example.test',
  burst: 'burst.svc.example.test',
  r401: 'r401.svc.example.test',
};
const NAMES = Object.values(H);

let aw: AuthWorld;
let g: Gate;
let config: Record<string, unknown>;
let sock: string;
let bundle: string;
const ups: Upstream[] = [];

const allow = [
  { host: H.pass, ports: [8443] },
  { host: H.llm, ports: [8444], inject: 'llm' },
  { host: H.plain, ports: [80] },
  { host: '*.svc.example.test', inject: 'svc' },
  { host: 'db.example.test', ports: [5432], protocol: 'tcp' },
];

test.before(async () => {
  aw = await createAuthWorld(NAMES, { ttl: 30 });
  const { w } = aw;
  const cert = w.pki.issue(NAMES, { tag: 'workers' });
  ups.push(
    ...(await Promise.all([
      startUpstream(w.topo, 'a', ['--name', 'a', '--port', '8443', '--tls', cert.cert, cert.key]),
      startUpstream(w.topo, 'a', ['--name', 'llm', '--port', '8444', '--tls', cert.cert, cert.key, '--expect-auth', `Bearer ${LLM}`]),
      startUpstream(w.topo, 'a', ['--name', 'a-plain', '--port', '80']),
      startUpstream(w.topo, 'b', ['--name', 'b', '--port', '8443', '--tls', cert.cert, cert.key]),
      startUpstream(w.topo, 'a', ['--name', 'a-db', '--port', '5432', '--banner', 'db-on-a']),
    ])),
  );
  const base = authConfig(aw, NAMES, allow, {
    svc: { authService: { url: authUrl('?ttl=30'), timeoutMs: 3000, secret: { env: 'SG_AUTH_KEY' } } },
    llm: { secret: { env: 'SG_TEST_LLM' } },
  });
  sock = join(w.dir, 'control.sock');
  const upstream = base.upstream as { hosts: Record<string, string> };
  upstream.hosts[H.evil] = w.b;
  config = {
    ...base,
    workers: 2,
    // Only alice's sandbox is in the config; bob's is registered through the control API below.
    sandboxes: [(base.sandboxes as unknown[])[0]],
    // AWS instance metadata (docs/metadata.md): its session tokens must work on every worker.
    policies: { default: { allow, metadata: { aws: {} } } },
    log: { level: 'info' },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { ...secretEnv, SG_TEST_LLM: LLM } });
  // curl takes one --cacert: sandgate's CA (intercepted hosts) and the test PKI (passthrough) in one file.
  bundle = join(w.dir, 'bundle.pem');
  writeFileSync(bundle, readFileSync(join(w.dir, 'ca', 'ca.pem'), 'utf8') + readFileSync(w.pki.caFile, 'utf8'));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await aw?.w.cleanup();
});

function curl(host: string, port: number, path: string, extra: string[] = [], ns = aw.ns.alice): Promise<ExecResult> {
  const scheme = port === 80 ? 'http' : 'https';
  const ip = host === H.evil ? aw.w.b : aw.w.a;
  return aw.w.topo.exec(
    ns,
    CURL,
    [
      '-sS',
      '--max-time',
      '5',
      '--cacert',
      bundle,
      '--resolve',
      `${host}:${port}:${ip}`,
      '-w',
      '\n%{http_code}',
      ...extra,
      `${scheme}://${host}:${port}${path}`,
    ],
    { timeoutMs: 7000 },
  );
}

const status = (r: ExecResult): number => Number(r.stdout.slice(r.stdout.lastIndexOf('\n') + 1));
const body = (r: ExecResult): Record<string, unknown> => {
  try {
    return JSON.parse(r.stdout.slice(0, r.stdout.lastIndexOf('\n'))) as Record<string, unknown>;
  } catch {
    return {};
  }
};

/** The worker processes: children of sandgate's process (which `ip netns exec` replaced in place). */
function workerPids(): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === g.proc.pid) out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test.serial('ready with two workers; TLS passthrough keeps the original destination', async (t) => {
  const ready = g.log.find((l) => l.event === 'ready');
  t.is(ready?.workers, 2);
  t.is(workerPids().length, 2);
  const r = await curl(H.pass, 8443, '/pass');
  t.is(status(r), 200, r.stderr);
  t.is(body(r).server, 'a');
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === H.pass && l.decision === 'allow');
  // The worker saw the destination the sandbox dialled: the fd it got is the TPROXY'd socket.
  t.is(line.dst, `${aw.w.a}:8443`);
  t.is(typeof line.worker, 'number');
  t.like(line, { sandbox: 'agent-a', user: 'alice', proto: 'tls', upstream: `${aw.w.a}:8443` });
});

test.serial('an unlisted SNI is reset; plain HTTP is decided per request on Host', async (t) => {
  const before = ups[3]!.log.lines.length;
  const r = await curl(H.evil, 8443, '/no');
  t.not(r.code, 0);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === H.evil);
  t.is(line.decision, 'deny');
  t.is(ups[3]!.log.lines.length, before, 'upstream b saw nothing');
  const p = await curl(H.plain, 80, '/plain');
  t.is(status(p), 200, p.stderr);
  t.is(body(p).server, 'a-plain');
  t.like(await g.log.waitFor((l) => l.event === 'http' && l.path === '/plain'), { decision: 'allow', host: H.plain });
});

test.serial('interception injects the static credential; the sandbox never sees it', async (t) => {
  const r = await curl(H.llm, 8444, '/v1/chat', ['-H', 'Authorization: Bearer sk-fake']);
  t.is(status(r), 200, r.stdout + r.stderr);
  t.is(body(r).server, 'llm');
  t.false(r.stdout.includes(LLM));
  t.like(await g.log.waitFor((l) => l.event === 'http' && l.path === '/v1/chat'), { decision: 'allow', credential: 'llm', status: 200 });
});

test.serial('a TLS session ticket from one worker resumes on the other (shared ticket keys)', async (t) => {
  const sess = join(aw.w.dir, 'llm.sess');
  const ca = join(aw.w.dir, 'ca', 'ca.pem');
  // The request and a short wait let the TLS 1.3 tickets (sent after the handshake) arrive.
  const connect = (flag: '-sess_out' | '-sess_in', path: string): Promise<ExecResult> =>
    aw.w.topo.exec(
      aw.ns.alice,
      '/bin/sh',
      [
        '-c',
        `(printf 'GET ${path} HTTP/1.1\\r\\nHost: ${H.llm}:8444\\r\\n\\r\\n'; sleep 0.3) | /usr/bin/openssl s_client -connect ${aw.w.a}:8444 -servername ${H.llm} -CAfile ${ca} ${flag} ${sess} 2>&1`,
      ],
      { timeoutMs: 10_000 },
    );
  const first = await connect('-sess_out', '/ticket-0');
  t.regex(first.stdout, /^New,/m, first.stdout);
  const reused: boolean[] = [];
  for (let i = 1; i <= 4; i++) reused.push(/^Reused,/m.test((await connect('-sess_in', `/ticket-${i}`)).stdout));
  t.deepEqual(reused, [true, true, true, true]);
  // Round robin: the five connections were served by both workers.
  await until(() => g.log.lines.filter((l) => l.event === 'http' && String(l.path).startsWith('/ticket-')).length >= 5, 5000, 'five http lines');
  const by = new Set(
    g.log.lines
      .filter((l) => l.event === 'conn' && l.host === H.llm && l.intercept === true)
      .slice(-5)
      .map((l) => l.worker),
  );
  t.is(by.size, 2, `workers seen: ${[...by].join(',')}`);
});

test.serial('parallel connections are spread over both workers', async (t) => {
  const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => curl(H.pass, 8443, `/spread-${i}`)));
  t.true(
    rs.every((r) => status(r) === 200),
    rs.map((r) => r.stderr).join(''),
  );
  await until(() => g.log.lines.filter((l) => l.event === 'close' && l.host === H.pass).length >= 12, 5000, 'close lines');
  const lines = g.log.lines.filter((l) => l.event === 'conn' && l.host === H.pass && l.decision === 'allow');
  const by = new Set(lines.slice(-12).map((l) => l.worker));
  t.is(by.size, 2, `workers seen: ${[...by].join(',')}`);
});

test.serial('an IMDSv2 session token from one worker is accepted by the other (one key for the run)', async (t) => {
  const imds = (args: string[]): Promise<ExecResult> =>
    aw.w.topo.exec(aw.ns.alice, CURL, ['-sS', '--max-time', '5', '-w', '\n%{http_code}', ...args], { timeoutMs: 7000 });
  const codes: number[] = [];
  // Each curl is a connection of its own, dealt round robin to the workers.
  for (let i = 0; i < 4; i++) {
    const put = await imds(['-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 60', 'http://169.254.169.254/latest/api/token']);
    const token = put.stdout.slice(0, put.stdout.lastIndexOf('\n'));
    const get = await imds(['-H', `X-aws-ec2-metadata-token: ${token}`, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/']);
    codes.push(status(put), status(get));
  }
  t.deepEqual(codes, [200, 200, 200, 200, 200, 200, 200, 200]);
  await until(() => g.log.lines.filter((l) => l.event === 'metadata').length >= 8, 5000, 'metadata lines');
  // In order: token, role, token, role... Some role request went to another worker than the
  // one that issued its token (round robin makes it every one).
  const lines = g.log.lines.filter((l) => l.event === 'metadata').slice(-8);
  const crossed = [0, 2, 4, 6].filter((i) => lines[i]?.worker !== lines[i + 1]?.worker);
  t.true(crossed.length > 0, JSON.stringify(lines.map((l) => [l.answer, l.worker])));
});

test.serial("GET /events carries the workers' lines, as the log has them, filtered", async (t) => {
  const all: Record<string, unknown>[] = [];
  const denied: Record<string, unknown>[] = [];
  const streams = await Promise.all([
    controlStream(sock, `/events?sandbox=agent-a&host=${H.plain}`, (l) => all.push(l)),
    controlStream(sock, '/events?decision=deny', (l) => denied.push(l)),
  ]);
  // Connections go to the workers in turn: two requests, two workers.
  for (const path of ['/events-1', '/events-2']) t.is(status(await curl(H.plain, 80, path)), 200);
  t.not((await curl(H.evil, 8443, '/events-no')).code, 0);
  const mine = (l: Record<string, unknown>): boolean => l.event === 'http' && typeof l.path === 'string' && l.path.startsWith('/events-');
  await until(() => all.filter(mine).length === 2 && denied.some((l) => l.host === H.evil), 20_000, 'the lines on the streams');
  const lines = all.filter(mine);
  t.is(new Set(lines.map((l) => l.worker)).size, 2, "both workers' lines");
  for (const l of lines) t.deepEqual(l, await g.log.waitFor((x) => x.path === l.path));
  t.true(all.every((l) => l.sandbox === 'agent-a' && l.host === H.plain));
  t.true(denied.every((l) => l.decision === 'deny'));
  t.is(typeof denied.find((l) => l.host === H.evil)?.worker, 'number');
  for (const s of streams) if (s.ok) s.stream.close();
});

test.serial('an authService credential under 50 concurrent requests across workers: one auth-service call', async (t) => {
  const before = calls(aw, (x) => x.host === H.burst).length;
  const r = await load(aw, aw.ns.alice, `https://${H.burst}/u/alice/burst`, { n: 50, concurrency: 50 });
  t.deepEqual(r.statuses, { 200: 50 }, JSON.stringify(r));
  t.is(r.leaked, 0);
  t.is(calls(aw, (x) => x.host === H.burst).length - before, 1, 'single-flight across workers');
  await until(() => g.log.lines.filter((l) => l.event === 'http' && l.path === '/u/alice/burst').length >= 50, 5000, '50 http lines');
  const by = new Set(g.log.lines.filter((l) => l.event === 'http' && l.path === '/u/alice/burst').map((l) => l.worker));
  t.is(by.size, 2, 'the requests were served by both workers');
});

/** Tell the fake API to refuse (and revoke) the next valid token it sees; resolves once it has the order. */
async function rejectNext(): Promise<void> {
  const acks = (): number => aw.api.log.lines.filter((l) => l.ack !== undefined).length;
  const before = acks();
  aw.api.proc.stdin?.write(JSON.stringify({ rejectNext: 1 }) + '\n');
  await aw.api.log.waitFor(() => acks() > before, 5000, "the fake API's ack");
}

test.serial('an upstream 401 in one worker invalidates the token for every worker', async (t) => {
  const get = (path: string): Promise<ExecResult> =>
    aw.w.topo.exec(aw.ns.alice, CURL, ['-sS', '--max-time', '5', '--cacert', bundle, '-w', '\n%{http_code}', `https://${H.r401}${path}`], { timeoutMs: 7000 });
  t.is(status(await get('/u/alice/warm')), 200);
  const before = calls(aw, (x) => x.host === H.r401).length;
  await rejectNext();
  const r = await get('/u/alice/refused');
  t.is(status(r), 200, r.stdout);
  t.deepEqual(
    apiRequests(aw, (x) => x.path === '/u/alice/refused').map((x) => x.status),
    [401, 200],
  );
  // Two more connections, one per worker: both carry the new token at once (no second 401).
  for (const p of ['/u/alice/next-1', '/u/alice/next-2']) {
    t.is(status(await get(p)), 200);
    t.deepEqual(
      apiRequests(aw, (x) => x.path === p).map((x) => x.status),
      [200],
      p,
    );
  }
  t.is(calls(aw, (x) => x.host === H.r401).length - before, 1, 'one new token for all workers');
  const lines = await Promise.all(
    ['/u/alice/refused', '/u/alice/next-1', '/u/alice/next-2'].map((p) => g.log.waitFor((l) => l.event === 'http' && l.path === p)),
  );
  t.like(lines[0], { status: 200, tokenRejected: 'retried' });
  t.is(new Set(lines.map((l) => l.worker)).size, 2, 'the three connections went to both workers');
});

test.serial('SIGHUP reaches the workers: a newly allowed host works on every worker', async (t) => {
  const denied = await curl(H.later, 8443, '/before');
  t.not(denied.code, 0);
  const reloaded = await g.reload({ ...config, policies: { default: { allow: [...allow, { host: H.later, ports: [8443] }] } } });
  t.is(reloaded.action, 'reloaded', String(reloaded.reason));
  // Four connections in a row: round-robin puts two on each worker.
  for (let i = 0; i < 4; i++) {
    const r = await curl(H.later, 8443, `/after-${i}`);
    t.is(status(r), 200, r.stderr);
  }
  const by = new Set(g.log.lines.filter((l) => l.event === 'conn' && l.host === H.later && l.decision === 'allow').map((l) => l.worker));
  t.is(by.size, 2);
});

test.serial("raw TCP: a worker asks the primary's DNS answer log (the name has moved since the answer)", async (t) => {
  const inSandbox = async (code: string): Promise<unknown> => {
    const r = await aw.w.topo.exec(aw.ns.alice, process.execPath, ['--input-type=module', '-e', code], { timeoutMs: 10_000 });
    return JSON.parse(r.stdout || 'null');
  };
  const hosts = (db: string): Record<string, unknown> => ({
    ...config,
    upstream: { ...(config.upstream as object), hosts: { ...(config.upstream as { hosts: object }).hosts, 'db.example.test': db } },
  });
  t.is((await g.reload(hosts(aw.w.a))).action, 'reloaded');
  // The sandbox asks sandgate's responder (not its hosts file) and is told a.
  t.deepEqual(await inSandbox(`const dns = await import('node:dns'); console.log(JSON.stringify(await dns.promises.resolve4('db.example.test')));`), [aw.w.a]);
  // sandgate itself now resolves the name to b: only the answer log says a is fine.
  t.is((await g.reload(hosts(aw.w.b))).action, 'reloaded');
  const connect = (): Promise<unknown> =>
    inSandbox(`
    const net = await import('node:net');
    const s = net.connect(5432, ${JSON.stringify(aw.w.a)});
    let data = '';
    s.on('data', (d) => { data += d; s.end(); });
    s.on('error', (e) => { data = data || e.code; });
    s.on('close', () => console.log(JSON.stringify(data.trim())));
    setTimeout(() => s.destroy(), 3000).unref();`);
  t.is(await connect(), 'db-on-a');
  t.is(await connect(), 'db-on-a');
  const allowed = (): Line[] => g.log.lines.filter((l) => l.event === 'conn' && l.dst === `${aw.w.a}:5432` && l.decision === 'allow');
  await until(() => allowed().length >= 2, 3000, 'two allow lines');
  const lines = allowed();
  t.is(new Set(lines.map((l) => l.worker)).size, 2, 'both workers asked');
});

test.serial('sandbox rm through the control API closes an open connection a worker holds', async (t) => {
  const add = await controlRequest(sock, 'POST', '/sandboxes', {
    name: 'two',
    interface: aw.w.topo.hostIface('bob'),
    cidr: '10.77.8.0/24',
    policy: 'default',
    user: 'bob',
  });
  t.is(add.status, 201, JSON.stringify(add.body));
  // An intercepted connection idling in keep-alive: only the removal can end it now.
  const proc = aw.w.topo.spawn(aw.ns.bob, process.execPath, [
    HOLD,
    '--connect',
    aw.w.a,
    '--port',
    '8444',
    '--host',
    H.llm,
    '--ca',
    join(aw.w.dir, 'ca', 'ca.pem'),
    '--path',
    '/held',
  ]);
  const log = new LineLog();
  log.attach(proc);
  const first = await log.waitFor((l) => l.event === 'response', 5000, 'the held response');
  t.is(first.status, 200);
  const held = await g.log.waitFor((l) => l.event === 'http' && l.path === '/held');
  t.like(held, { sandbox: 'two', user: 'bob' });
  t.is(typeof held.worker, 'number');
  await new Promise((r) => setTimeout(r, 200));
  t.falsy(
    log.find((l) => l.event === 'closed'),
    'still open before the removal',
  );
  const rm = await controlRequest(sock, 'DELETE', '/sandboxes/two');
  t.is(rm.status, 200, JSON.stringify(rm.body));
  const closed = await log.waitFor((l) => l.event === 'closed', 3000, 'the held connection closed');
  t.is(closed.responses, 1);
  // No sandbox matches bob's interface any more: the firewall drops the attempt (hence the short wait).
  const after = await curl(H.pass, 8443, '/after-rm', ['--max-time', '1'], aw.ns.bob);
  t.not(after.code, 0);
});

test.serial('kill -9 of a worker: it is replaced and new connections work', async (t) => {
  const pids = workerPids();
  t.is(pids.length, 2);
  const victim = pids[0]!;
  process.kill(victim, 'SIGKILL');
  const died = await g.log.waitFor((l) => l.event === 'error' && l.pid === victim, 5000, 'the worker exit line');
  t.regex(String(died.reason), /SIGKILL.*connections it held are lost/);
  // Meanwhile the other worker serves everything.
  t.is(status(await curl(H.pass, 8443, '/during')), 200);
  await until(
    () => {
      const p = workerPids();
      return p.length === 2 && !p.includes(victim);
    },
    8000,
    'a replacement worker',
  );
  // Once the replacement is ready it takes its turn: connections reach a worker id not seen before.
  const old = new Set(g.log.lines.filter((l) => l.worker !== undefined).map((l) => l.worker));
  const fresh = (): Line | undefined => g.log.lines.find((l) => l.event === 'conn' && l.worker !== undefined && !old.has(l.worker));
  for (let i = 0; i < 40 && !fresh(); i++) {
    const r = await curl(H.pass, 8443, `/replaced-${i}`);
    t.is(status(r), 200, r.stderr);
  }
  t.truthy(fresh(), 'the replacement worker handled a connection');
});

test.serial('the audit stream holds whole JSON lines only, and no secret', (t) => {
  t.true(g.log.raw.length > 100, `${g.log.raw.length} lines`);
  for (const raw of g.log.raw) t.notThrows(() => JSON.parse(raw), raw.slice(0, 200));
  const all = g.log.raw.join('\n') + g.stderr();
  for (const s of [...NEVER_LOGGED, LLM]) t.false(all.includes(s), 'a secret in the audit stream');
});

test.serial('SIGTERM stops the workers and exits 0', async (t) => {
  const pids = workerPids();
  const code = await new Promise<number | null>((resolve) => {
    g.proc.once('exit', (c) => resolve(c));
    g.proc.kill('SIGTERM');
  });
  t.is(code, 0);
  t.truthy(g.log.find((l) => l.event === 'stop'));
  await until(
    () =>
      pids.every((p) => {
        try {
          process.kill(p, 0);
          return false;
        } catch {
          return true;
        }
      }),
    3000,
    'workers gone',
  );
});
