/**
 * authService credentials end to end: a real sandgate, two sandboxes
 * acting for two users, a fake auth service in its own namespace minting tokens that live 1 s
 * (and counting its calls, with who asked), and a fake API that accepts only live tokens of the
 * right user. Each test uses its own API host name, so its cache key is its own.
 *
 * After every exchange the bytes the sandbox received are checked for tokens ("tk_"), and at the
 * end everything sandgate printed is checked for tokens and for the service key.
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { ROOT, startGate, type Gate, type Line } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';
import { apiRequests, authConfig, authUrl, calls, createAuthWorld, load, NEVER_LOGGED, secretEnv, SERVICE_KEY, type AuthWorld } from '../helpers/auth-world.js';

const CURL = '/usr/bin/curl';
const H = {
  refresh: 'refresh.svc.example.test',
  burst: 'burst.svc.example.test',
  iso: 'iso.svc.example.test',
  r401: 'r401.svc.example.test',
  post: 'post.svc.example.test',
  big: 'big.svc.example.test',
  ws: 'ws.svc.example.test',
  hdr: 'x.hdr.example.test',
  down: 'down.example.test',
  slow: 'slow.example.test',
  e500: 'e500.example.test',
  e403: 'e403.example.test',
  bad: 'badjson.example.test',
  h2burst: 'h2burst.example.test',
};
const NAMES = Object.values(H);
const key = { env: 'SG_AUTH_KEY' };

let aw: AuthWorld;
let g: Gate;

test.before(async () => {
  aw = await createAuthWorld(NAMES, { ttl: 1 });
  const config = authConfig(
    aw,
    NAMES,
    [
      // Its own credential with long-lived tokens: with 1 s tokens (svc), a refresh ahead of expiry
      // (from 0.5 s on) is legitimate whenever 50 concurrent requests take longer than that.
      { host: H.burst, inject: 'burst' },
      { host: '*.svc.example.test', inject: 'svc' },
      { host: H.hdr, inject: 'hdr' },
      { host: H.down, inject: 'down' },
      { host: H.slow, inject: 'slow' },
      { host: H.e500, inject: 'e500' },
      { host: H.e403, inject: 'e403' },
      { host: H.bad, inject: 'bad' },
      { host: H.h2burst, inject: 'h2burst' },
    ],
    {
      svc: { authService: { url: authUrl('?ttl=1'), timeoutMs: 1500, secret: key } },
      burst: { authService: { url: authUrl('?ttl=60'), timeoutMs: 1500, secret: key } },
      hdr: { authService: { url: authUrl('?mode=headers&ttl=30'), secret: key } },
      // Nothing listens on 8444 in the auth namespace: connection refused, as a service that is down.
      down: { authService: { url: `https://auth.internal.test:8444/token`, secret: key } },
      slow: { authService: { url: authUrl('?delayMs=3000'), timeoutMs: 800, secret: key } },
      e500: { authService: { url: authUrl('?status=500'), secret: key } },
      e403: { authService: { url: authUrl('?status=403'), secret: key } },
      bad: { authService: { url: authUrl('?badJson=1'), secret: key } },
      h2burst: { authService: { url: authUrl('?ttl=60'), timeoutMs: 1500, secret: key } },
    },
  );
  g = await startGate(aw.w.topo, aw.w.dir, config, 'sandgate.json', { env: secretEnv });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await aw?.w.cleanup();
});

function curl(ns: string, args: string[], timeoutMs = 8000): Promise<ExecResult> {
  return aw.w.topo.exec(
    ns,
    CURL,
    ['-sS', '--max-time', String(timeoutMs / 1000), '--cacert', join(aw.w.dir, 'ca', 'ca.pem'), '-w', '\n%{http_code}', ...args],
    { timeoutMs: timeoutMs + 2000 },
  );
}

/** curl output split into the body and the status code. */
function res(r: ExecResult): { status: number; body: string; json: Record<string, unknown> | undefined } {
  const i = r.stdout.lastIndexOf('\n');
  const body = r.stdout.slice(0, i);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(body) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: Number(r.stdout.slice(i + 1)), body, json };
}

const httpLine = (host: string, path: string): Promise<Line> =>
  g.log.waitFor((l) => l.event === 'http' && l.host === host && l.path === path, 5000, `http line for ${host}${path}`);

/** Tell the fake API to refuse (and revoke) the next valid token it sees; resolves once it has the order. */
async function rejectNext(): Promise<void> {
  const acks = (): number => aw.api.log.lines.filter((l) => l.ack !== undefined).length;
  const before = acks();
  aw.api.proc.stdin?.write(JSON.stringify({ rejectNext: 1 }) + '\n');
  await aw.api.log.waitFor(() => acks() > before, 5000, "the fake API's ack");
}

function noToken(t: ExecutionContext, text: string, where: string): void {
  t.false(text.includes('tk_'), `a token appears in ${where}`);
  t.false(text.includes(SERVICE_KEY), `the service key appears in ${where}`);
}

test.serial('a token is fetched with the service key, injected, and scrubbed from the echo', async (t) => {
  const r = await curl(aw.ns.alice, [`https://${H.burst}/u/alice/first`]);
  const out = res(r);
  t.is(out.status, 200, r.stdout + r.stderr);
  noToken(t, r.stdout + r.stderr, 'what curl received');
  t.is(out.json?.subject, 'alice');
  // The API echoed "Bearer <token>"; sandgate masked it with a mask of the same length.
  t.regex(String(out.json?.authorization), /^\[redacted\]\**$/);
  const c = calls(aw, (x) => x.host === H.burst);
  t.is(c.length, 1);
  t.like(c[0], {
    kind: 'auth',
    keyOk: true,
    sandbox: 'agent-a',
    user: 'alice',
    credential: 'burst',
    host: H.burst,
    port: 443,
    method: 'GET',
    path: '/u/alice/first',
  });
  const a = await httpLine(H.burst, '/u/alice/first');
  t.like(a, { decision: 'allow', status: 200, credential: 'burst', sandbox: 'agent-a', user: 'alice' });
});

test.serial('50 concurrent requests for a key with nothing cached cause exactly one call', async (t) => {
  const before = calls(aw, (x) => x.host === H.burst).length;
  const r = await load(aw, aw.ns.bob, `https://${H.burst}/u/bob/burst`, { n: 50, concurrency: 50 });
  t.deepEqual(r.statuses, { 200: 50 }, JSON.stringify(r));
  t.is(r.leaked, 0);
  t.is(r.redacted, 50);
  const c = calls(aw, (x) => x.host === H.burst).slice(before);
  t.is(c.length, 1, 'single-flight: one call for all 50 waiting requests');
  t.like(c[0], { user: 'bob', sandbox: 'agent-b' });
});

test.serial('30 concurrent HTTP/2 streams on one session with nothing cached cause exactly one call', async (t) => {
  const plan = Array.from({ length: 30 }, (_, i) => ({ path: `/u/alice/h2-${i}` }));
  const r = await aw.w.topo.exec(
    aw.ns.alice,
    process.execPath,
    [join(ROOT, 'test/helpers/h2-client.mjs'), join(aw.w.dir, 'ca', 'ca.pem'), `https://${H.h2burst}`, JSON.stringify(plan)],
    { timeoutMs: 15000 },
  );
  const out = JSON.parse(r.stdout.trim() || '{}') as { alpn?: string; results?: { status: number; body: string }[] };
  t.is(out.alpn, 'h2', r.stdout + r.stderr);
  t.deepEqual(
    out.results?.map((x) => x.status),
    plan.map(() => 200),
  );
  noToken(t, r.stdout, 'what the h2 client received');
  t.is(calls(aw, (x) => x.host === H.h2burst).length, 1, 'single-flight across the streams');
  t.like(await httpLine(H.h2burst, '/u/alice/h2-29'), { alpn: 'h2', status: 200, credential: 'h2burst', user: 'alice' });
});

test.serial('tokens are refreshed before they expire: ~4 s of continuous requests with 1 s tokens, none fails', async (t) => {
  const r = await load(aw, aw.ns.alice, `https://${H.refresh}/u/alice/refresh`, { n: 400, concurrency: 4, durationMs: 4000 });
  t.deepEqual(r.statuses, { 200: 400 }, JSON.stringify(r));
  t.is(r.leaked, 0);
  const c = calls(aw, (x) => x.host === H.refresh);
  // 1 s tokens are refreshed from 0.5 s on: about 8 calls in 4 s, never one per request.
  t.true(c.length >= 4 && c.length <= 12, `${c.length} calls`);
  t.true(c.every((x) => x.user === 'alice'));
  // The API never saw an expired (or any refused) token: refresh happened ahead of expiry, and no
  // request needed the 401 retry to succeed.
  t.is(apiRequests(aw, (x) => String(x.path).startsWith('/u/alice/refresh') && x.status !== 200).length, 0);
  t.log(`refresh: ${r.n} requests in ${r.ms} ms, ${c.length} auth-service calls`);
});

test.serial('user isolation: two sandboxes acting for alice and bob, hammering the same host at once', async (t) => {
  const [ra, rb] = await Promise.all([
    load(aw, aw.ns.alice, `https://${H.iso}/u/alice/iso`, { n: 300, concurrency: 12, durationMs: 2500 }),
    load(aw, aw.ns.bob, `https://${H.iso}/u/bob/iso`, { n: 300, concurrency: 12, durationMs: 2500 }),
  ]);
  // The API answers 403 to a token of another user: every request got its own user's token.
  t.deepEqual(ra.statuses, { 200: 300 }, JSON.stringify(ra));
  t.deepEqual(rb.statuses, { 200: 300 }, JSON.stringify(rb));
  t.deepEqual(ra.subjects, { alice: 300 });
  t.deepEqual(rb.subjects, { bob: 300 });
  t.is(ra.leaked + rb.leaked, 0);
  t.is(apiRequests(aw, (x) => String(x.path).endsWith('/iso') && x.status === 403).length, 0);
  // Each user's tokens were asked for by that user's sandbox only.
  const c = calls(aw, (x) => x.host === H.iso);
  t.true(c.length >= 4, `${c.length} calls`);
  t.true(c.every((x) => (x.user === 'alice' && x.sandbox === 'agent-a') || (x.user === 'bob' && x.sandbox === 'agent-b')));
  t.true(c.some((x) => x.user === 'alice') && c.some((x) => x.user === 'bob'));
});

test.serial('service down: 503 with a JSON reason, an audit reason, and the upstream sees nothing', async (t) => {
  const started = Date.now();
  const r = await curl(aw.ns.alice, [`https://${H.down}/u/alice/down`]);
  const out = res(r);
  t.is(out.status, 503, r.stdout + r.stderr);
  t.like(out.json, { error: 'credential unavailable', by: 'sandgate' });
  t.true(Date.now() - started < 10000, 'bounded: three tries, then 503 (a hang detector, not a speed bound)');
  const a = await httpLine(H.down, '/u/alice/down');
  t.is(a.status, 503);
  t.is(a.credential, 'down');
  t.regex(String(a.reason), /credential down unavailable: auth service https:\/\/auth\.internal\.test:8444 unreachable \(ECONNREFUSED\) \(after 3 tries\)/);
  t.is(apiRequests(aw, (x) => x.path === '/u/alice/down').length, 0);
});

test.serial('a service slower than timeoutMs: 503 once the timeout is spent, not after the slow answer', async (t) => {
  const started = Date.now();
  const r = await curl(aw.ns.alice, [`https://${H.slow}/u/alice/slow`]);
  const elapsed = Date.now() - started;
  t.is(res(r).status, 503, r.stdout + r.stderr);
  // The 503 itself proves the timeout fired (a late answer would have been a 200); the lower bound
  // shows sandgate waited its timeoutMs first.
  t.true(elapsed >= 700, `${elapsed} ms (timeoutMs 800, the service answers after 3000)`);
  const a = await httpLine(H.slow, '/u/alice/slow');
  t.regex(String(a.reason), /did not answer within \d+ ms/);
  t.is(apiRequests(aw, (x) => x.path === '/u/alice/slow').length, 0);
});

test.serial('non-2xx and bad JSON: 503; a 500 is retried (3 calls), a 403 is not (1 call)', async (t) => {
  const [r500, r403, rbad] = await Promise.all([
    curl(aw.ns.alice, [`https://${H.e500}/u/alice/e500`]),
    curl(aw.ns.alice, [`https://${H.e403}/u/alice/e403`]),
    curl(aw.ns.alice, [`https://${H.bad}/u/alice/bad`]),
  ]);
  for (const r of [r500, r403, rbad]) {
    t.is(res(r).status, 503, r.stdout);
    t.like(res(r).json, { error: 'credential unavailable' });
    noToken(t, r.stdout, 'a 503 body');
  }
  t.is(calls(aw, (x) => x.host === H.e500).length, 3);
  t.is(calls(aw, (x) => x.host === H.e403).length, 1);
  t.regex(String((await httpLine(H.e500, '/u/alice/e500')).reason), /answered 500 \(after 3 tries\)/);
  t.regex(String((await httpLine(H.e403, '/u/alice/e403')).reason), /answered 403$/);
  t.regex(String((await httpLine(H.bad, '/u/alice/bad')).reason), /answered 200 with a body that is not JSON/);
  t.is(apiRequests(aw, (x) => ['/u/alice/e500', '/u/alice/e403', '/u/alice/bad'].includes(String(x.path))).length, 0);
});

test.serial('{headers} answers: each header is set upstream and the token in it is scrubbed', async (t) => {
  const r = await curl(aw.ns.bob, ['-H', 'X-Tenant: spoofed', `https://${H.hdr}/u/bob/hdr`]);
  const out = res(r);
  t.is(out.status, 200, r.stdout + r.stderr);
  t.is(out.json?.subject, 'bob');
  // The service's X-Tenant replaced the one the sandbox sent; it is short, so not scrubbed.
  t.is(out.json?.tenant, 'bob');
  t.regex(String(out.json?.authorization), /^\[redacted\]\**$/);
  noToken(t, r.stdout, 'the headers-form response');
});

test.serial('upstream 401: the token is dropped, refreshed, and a GET and a small POST are retried once', async (t) => {
  // Warm the cache, then have the API revoke the next token it sees.
  t.is(res(await curl(aw.ns.alice, [`https://${H.r401}/u/alice/warm`])).status, 200);
  const warmCalls = calls(aw, (x) => x.host === H.r401).length;
  await rejectNext();
  const get = await curl(aw.ns.alice, [`https://${H.r401}/u/alice/get`]);
  t.is(res(get).status, 200, get.stdout);
  const seen = apiRequests(aw, (x) => x.path === '/u/alice/get');
  t.deepEqual(
    seen.map((x) => x.status),
    [401, 200],
  );
  t.not(seen[0]?.serial, seen[1]?.serial, 'the retry carried a new token');
  // One call for the retry (two if the warm token had run out before the GET: then that GET's
  // own fresh token was the one revoked).
  const n = calls(aw, (x) => x.host === H.r401).length - warmCalls;
  t.true(n === 1 || n === 2, `${n} calls`);
  // curl speaks h2 to sandgate: the refusal, the refresh and the retry happened on one stream.
  t.like(await httpLine(H.r401, '/u/alice/get'), { status: 200, tokenRejected: 'retried', alpn: 'h2' });

  // A small POST body was kept while it streamed, and is replayed whole.
  await rejectNext();
  const body = 'x'.repeat(20_000);
  const post = await curl(aw.ns.alice, ['-X', 'POST', '--data-binary', body, `https://${H.post}/u/alice/post`]);
  const p = res(post);
  t.is(p.status, 200, post.stdout);
  t.is(p.json?.bodyBytes, 20_000);
  t.deepEqual(
    apiRequests(aw, (x) => x.path === '/u/alice/post').map((x) => x.status),
    [401, 200],
  );
});

test.serial('upstream 401 to a body too big to keep (> 64 KiB): relayed, and the next request gets a fresh token', async (t) => {
  t.is(res(await curl(aw.ns.alice, [`https://${H.big}/u/alice/warm`])).status, 200);
  await rejectNext();
  const r = await load(aw, aw.ns.alice, `https://${H.big}/u/alice/big`, { n: 1, concurrency: 1, method: 'POST', bodyBytes: 200_000 });
  t.deepEqual(r.statuses, { 401: 1 });
  t.like(await httpLine(H.big, '/u/alice/big'), { status: 401, tokenRejected: 'relayed' });
  const after = await curl(aw.ns.alice, [`https://${H.big}/u/alice/after`]);
  t.is(res(after).status, 200, after.stdout);
  t.is(apiRequests(aw, (x) => x.path === '/u/alice/after').length, 1, 'no 401 on the next request: the revoked token was dropped');
});

test.serial('WebSocket upgrade: the token is injected and scrubbed from frames; a 401 to the upgrade is retried with a fresh one', async (t) => {
  const ws = async (): Promise<{ ok: boolean; messages: { text: string }[]; raw: string; error?: string }> => {
    const r = await aw.w.topo.exec(aw.ns.bob, process.execPath, [join(ROOT, 'test/helpers/ws-client.mjs'), '--url', `wss://${H.ws}/u/bob/ws`], {
      timeoutMs: 12_000,
      env: { PATH: '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: join(aw.w.dir, 'ca', 'ca.pem') },
    });
    try {
      return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { ok: boolean; messages: { text: string }[]; raw: string };
    } catch {
      throw new Error(`ws client: ${r.stdout}\n${r.stderr}`);
    }
  };
  const first = await ws();
  t.true(first.ok, JSON.stringify(first));
  const hello = JSON.parse(first.messages[0]?.text ?? '{}') as Record<string, unknown>;
  t.is(hello.subject, 'bob');
  t.regex(String(hello.authorization), /^\[redacted\]\**$/);
  noToken(t, first.raw, 'the WebSocket bytes');

  await rejectNext();
  const second = await ws();
  t.true(second.ok, JSON.stringify(second));
  noToken(t, second.raw, 'the WebSocket bytes');
  const ups = apiRequests(aw, (x) => x.upgrade === true && x.path === '/u/bob/ws');
  t.deepEqual(
    ups.map((x) => x.status),
    [101, 401, 101],
  );
  const wsLines = (): Line[] => g.log.lines.filter((l) => l.event === 'http' && l.host === H.ws && l.websocket === true);
  // One line per upgrade, written when its tunnel closes; the refused first attempt adds none.
  await g.log.waitFor(() => wsLines().length >= 2, 5000, 'two websocket lines');
  t.is(wsLines().length, 2);
  t.truthy(g.log.find((l) => l.event === 'http' && l.host === H.ws && l.tokenRejected === 'retried' && l.status === 101));
});

test.serial('nothing sandgate printed carries a token or the service key', (t) => {
  const all = g.log.raw.join('\n') + g.stderr();
  for (const s of NEVER_LOGGED) t.false(all.includes(s), `sandgate printed ${s.slice(0, 5)}...`);
  t.true(g.log.lines.filter((l) => l.event === 'http').length > 1000);
});
