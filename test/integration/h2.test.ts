/**
 * HTTP/2 through TLS interception, end to end: clients in the sandbox namespace speaking h2 to
 * sandgate, every stream one exchange of the relay's core (admission against the SNI, method and
 * path rules, the credential, scrubbing, one audit line), toward HTTP/1.1 and HTTP/2 upstreams.
 *
 * Tests are serial: they share one sandgate, and audit lines are matched by unique paths.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startFake, startGate, startUpstream, baseConfig, NAMES, ROOT, type World, type Gate, type Upstream, type Line } from '../helpers/gate.js';

const hex = (): string => randomBytes(12).toString('hex');
const LLM = `sk-real-llm-${hex()}`;
const PLACEHOLDER = 'sk-sandgate-placeholder';
const FORBIDDEN = [LLM, Buffer.from(LLM).toString('base64')];
const MY_NAMES = ['h1up.example.test', 'h2up.example.test', 'other.example.test', 'grpc.example.test'];
const H2_CLIENT = join(ROOT, 'test/helpers/h2-client.mjs');

let w: World;
let g: Gate;
const up: Record<string, Upstream> = {};
const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

function noSecret(t: ExecutionContext, text: string, where: string): void {
  for (const f of FORBIDDEN) t.false(text.includes(f), `a secret appears in ${where}`);
}

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue(MY_NAMES, { tag: 'h2' });
  const tlsArgs = ['--tls', cert.cert, cert.key];
  const auth = ['--expect-auth', `Bearer ${LLM}`, '--echo-headers'];
  const [h1up, h2up] = await Promise.all([
    startUpstream(w.topo, 'a', ['--name', 'h1up', '--port', '8443', ...tlsArgs, ...auth]),
    startUpstream(w.topo, 'a', ['--name', 'h2up', '--port', '8447', ...tlsArgs, '--h2', ...auth]),
  ]);
  const grpcUp = await startFake(w, 'a', 'fake-grpc-server.mjs', ['--port', '8448', ...tlsArgs, '--expect-auth', `Bearer ${LLM}`]);
  Object.assign(up, { h1up, h2up, grpc: grpcUp });
  const hosts: Record<string, string> = Object.fromEntries([...NAMES, ...MY_NAMES].map((n) => [n, w.a]));
  const config = {
    ...baseConfig(w, {
      allow: [
        { host: 'h1up.example.test', ports: [8443], inject: 'llm', methods: ['GET', 'POST'], paths: ['/ok/**', '/_sg/*'] },
        { host: 'h2up.example.test', ports: [8447], inject: 'llm', methods: ['GET', 'POST'], paths: ['/ok/**', '/_sg/*'] },
        { host: 'other.example.test', ports: [8443], inject: 'llm' },
        // gRPC: the credential goes as `authorization` metadata; only two of the service's methods are listed.
        { host: 'grpc.example.test', ports: [8448], inject: 'llm', methods: ['POST'], paths: ['/sg.Echo/Unary', '/sg.Echo/Stream', '/sg.Echo/Chat'] },
      ],
      upstream: { hosts, allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    }),
    credentials: { llm: { secret: { env: 'SG_TEST_LLM' }, placeholder: PLACEHOLDER } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_LLM: LLM } });
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, MY_NAMES.map((n) => `${w.a}\t${n}\n`).join(''));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

interface H2Result {
  status: number;
  headers: Record<string, unknown>;
  body: string;
  trailers?: Record<string, unknown>;
  error?: string;
}

/** node:http2 in the sandbox: every request of `plan` a stream of one session, all at once. */
async function h2(origin: string, plan: unknown[]): Promise<{ alpn: string; results: H2Result[]; raw: string }> {
  const r = await w.topo.exec(w.sandbox, process.execPath, [H2_CLIENT, caPem(), origin, JSON.stringify(plan)], { timeoutMs: 15000 });
  try {
    return { ...(JSON.parse(r.stdout.trim()) as { alpn: string; results: H2Result[] }), raw: r.stdout + r.stderr };
  } catch {
    throw new Error(`h2 client (${r.code}): ${r.stdout} ${r.stderr}\n${g.log.raw.slice(-6).join('\n')}\n${g.stderr().slice(-2000)}`);
  }
}

const httpLine = (path: string): Promise<Line> => g.log.waitFor((l) => l.event === 'http' && l.path === path, 5000, `http line for ${path}`);
const upLine = (u: Upstream, path: string): Promise<Line> =>
  u.log.waitFor((l) => (l.request as Line | undefined)?.path === path, 5000, `upstream request ${path}`);

test.serial('h2 streams on one session: each admitted on its own, the credential injected, echoes scrubbed, denials answered per stream', async (t) => {
  const { alpn, results, raw } = await h2('https://h1up.example.test:8443', [
    { path: '/ok/s1?x=1', headers: { authorization: `Bearer ${PLACEHOLDER}` } },
    { path: '/denied/s2' },
    { path: '/denied/s3', method: 'POST', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: 'x' },
    { path: '/ok/s4', headers: { ':authority': 'other.example.test:8443' } },
    { path: '/ok/s5', method: 'POST', headers: { 'content-type': 'text/plain' }, body: `hello ${PLACEHOLDER}` },
    { path: '/ok/s6', method: 'DELETE' },
  ]);
  t.is(alpn, 'h2');
  const [s1, s2, s3, s4, s5, s6] = results as [H2Result, H2Result, H2Result, H2Result, H2Result, H2Result];
  // Allowed: the upstream got the real key; what it echoed back reaches the sandbox masked.
  t.is(s1.status, 200, raw);
  t.is(((await upLine(up.h1up!, '/ok/s1')).request as Line).auth, 'ok');
  t.regex(s1.body, /\[redacted\]/);
  t.regex(String(s1.headers['x-echo-headers']), /\[redacted\]/);
  // A path the rule does not list: 403 JSON with the reason, on that stream alone.
  t.is(s2.status, 403);
  t.like(JSON.parse(s2.body), { error: 'denied', by: 'sandgate' });
  t.regex(JSON.parse(s2.body).reason, /path/);
  // The same denial to a gRPC request: trailers-only, HTTP 200, grpc-status 7 with the reason.
  t.is(s3.status, 200);
  t.is(s3.headers['grpc-status'], '7');
  t.regex(decodeURIComponent(String(s3.headers['grpc-message'])), /path/);
  t.is(s3.body, '');
  // A stream naming another host than the SNI: refused (domain fronting), the others unaffected.
  t.is(s4.status, 403);
  t.regex(JSON.parse(s4.body).reason, /does not match the TLS server name/);
  // A body without Content-Length goes to the HTTP/1.1 upstream chunked; the placeholder in a body is not replaced.
  t.is(s5.status, 200);
  t.is(JSON.parse(s5.body).body, `hello ${PLACEHOLDER}`);
  t.is(s6.status, 403, 'DELETE is not among the rule methods');
  for (const p of ['/ok/s1', '/denied/s2', '/denied/s3', '/ok/s4', '/ok/s5', '/ok/s6']) {
    const l = await httpLine(p);
    t.is(l.alpn, 'h2', p);
    t.is(l.proto, 'tls', p);
  }
  t.like(await httpLine('/ok/s1'), { decision: 'allow', status: 200, credential: 'llm', host: 'h1up.example.test' });
  t.like(await httpLine('/denied/s3'), { decision: 'deny', status: 403 });
  t.is(g.log.lines.filter((l) => l.event === 'http' && l.path === '/ok/s1').length, 1, 'one line per stream');
  t.is(
    up.h1up!.log.lines.filter((l) => String((l.request as Line | undefined)?.path).startsWith('/denied/')).length,
    0,
    'denied streams never reach the upstream',
  );
  noSecret(t, raw, 'the h2 client output');
  noSecret(t, g.log.raw.join('\n'), "sandgate's log");
});

test.serial('curl --http2: h2 to sandgate, the audit line says so', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    '/usr/bin/curl',
    ['-sS', '--http2', '-w', '\\n%{http_version}', '--cacert', caPem(), '-H', `Authorization: Bearer ${PLACEHOLDER}`, 'https://h1up.example.test:8443/ok/curl'],
    { timeoutMs: 10000 },
  );
  const [body = '', version] = r.stdout.split('\n');
  t.is(version, '2', r.stdout + r.stderr);
  t.is(JSON.parse(body).path, '/ok/curl');
  t.like(await httpLine('/ok/curl'), { alpn: 'h2', status: 200, decision: 'allow' });
  t.is(((await upLine(up.h1up!, '/ok/curl')).request as Line).auth, 'ok');
  noSecret(t, r.stdout + r.stderr, 'curl output');
});

test.serial('an HTTP/2 upstream: h2 end to end, trailers relayed and scrubbed; HTTP/1.1 sandboxes reach it too', async (t) => {
  const { results, raw } = await h2('https://h2up.example.test:8447', [
    { path: '/_sg/trailers', headers: { authorization: `Bearer ${PLACEHOLDER}`, te: 'trailers' } },
    { path: '/ok/h2a' },
    { path: '/_sg/upload', method: 'POST', bodyBytes: 200_000 },
  ]);
  const [tr, a, upl] = results as [H2Result, H2Result, H2Result];
  // A request body crosses as DATA frames both ways, whole.
  t.is(JSON.parse(upl.body).bytes, 200_000, raw);
  t.is(tr.status, 200, raw);
  t.is(tr.trailers?.['x-done'], 'yes', raw);
  t.regex(String(tr.trailers?.['x-echo-auth']), /^\[redacted\]\*+$/);
  t.is(a.status, 200, JSON.stringify(await httpLine('/ok/h2a')));
  t.is(((await upLine(up.h2up!, '/ok/h2a')).request as Line).proto, '2.0');
  t.is(((await upLine(up.h2up!, '/ok/h2a')).request as Line).auth, 'ok');
  // HTTP/1.1 from the sandbox, HTTP/2 upstream.
  const r = await w.topo.exec(w.sandbox, '/usr/bin/curl', ['-sS', '--http1.1', '--cacert', caPem(), 'https://h2up.example.test:8447/ok/h1-to-h2'], {
    timeoutMs: 10000,
  });
  t.is(JSON.parse(r.stdout).path, '/ok/h1-to-h2', r.stdout + r.stderr);
  t.is(((await upLine(up.h2up!, '/ok/h1-to-h2')).request as Line).proto, '2.0');
  // A chunked HTTP/1.1 body, de-chunked by the parser, goes upstream as DATA frames.
  const file = join(w.dir, 'chunked.bin');
  writeFileSync(file, 'c'.repeat(70_000));
  const c = await w.topo.exec(
    w.sandbox,
    '/usr/bin/curl',
    ['-sS', '--http1.1', '--cacert', caPem(), '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, 'https://h2up.example.test:8447/_sg/upload'],
    { timeoutMs: 10000 },
  );
  t.is(JSON.parse(c.stdout).bytes, 70_000, c.stdout + c.stderr);
  t.like(await httpLine('/ok/h1-to-h2'), { status: 200, alpn: undefined });
  noSecret(t, raw + r.stdout, 'client output');
  noSecret(t, g.log.raw.join('\n'), "sandgate's log");
});

test.serial(
  '@grpc/grpc-js through interception: unary, server-streaming and bidirectional calls get the credential as metadata; an unlisted method gets PERMISSION_DENIED',
  async (t) => {
    const r = await w.topo.exec(w.sandbox, process.execPath, [join(ROOT, 'test/helpers/grpc-client.mjs'), caPem(), 'grpc.example.test:8448', PLACEHOLDER], {
      timeoutMs: 20000,
    });
    const out = JSON.parse(r.stdout.trim() || '{}') as Record<
      string,
      { ok: boolean; value?: string; code?: number; details?: string; trailer?: string; got?: unknown[] }
    >;
    const { unary, stream, chat, secret } = out;
    t.true(unary?.ok, r.stdout + r.stderr);
    const echoed = JSON.parse(unary?.value ?? '{}') as Record<string, string>;
    t.is(echoed.auth, 'ok');
    t.is(echoed.got, 'hello');
    // The upstream echoed the real key in a DATA frame and in its trailers: masked in both.
    t.regex(String(echoed.authorization), /^\[redacted\]\*+$/);
    t.regex(String(unary?.trailer), /^\[redacted\]\*+$/);
    t.true(stream?.ok, JSON.stringify(stream));
    t.deepEqual(stream?.got, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    // Bidirectional: each message sent only after the previous answer came back through sandgate.
    t.true(chat?.ok, JSON.stringify(chat));
    t.deepEqual(chat?.got, [{ echo: 'm0' }, { echo: 'm1' }, { echo: 'm2' }]);
    // PERMISSION_DENIED (7) with sandgate's reason, and the upstream never heard of the call.
    t.false(secret?.ok);
    t.is(secret?.code, 7);
    t.regex(String(secret?.details), /path \/sg\.Echo\/Secret/);
    t.is(up.grpc!.log.lines.filter((l) => (l.call as Line | undefined)?.method === 'Secret').length, 0);
    t.like(await httpLine('/sg.Echo/Unary'), { alpn: 'h2', status: 200, decision: 'allow', credential: 'llm' });
    t.like(await httpLine('/sg.Echo/Stream'), { alpn: 'h2', status: 200, decision: 'allow' });
    t.like(await httpLine('/sg.Echo/Secret'), { alpn: 'h2', status: 403, decision: 'deny' });
    noSecret(t, r.stdout + r.stderr, 'the gRPC client output');
    noSecret(t, g.log.raw.join('\n'), "sandgate's log");
  },
);

test.serial("Debian's python3-httpx with python3-h2 (http2=True): h2 to sandgate, the credential injected", async (t) => {
  const script = [
    'import httpx, json, sys',
    `with httpx.Client(http2=True, verify=${JSON.stringify(caPem())}) as c:`,
    `    r = c.get("https://h1up.example.test:8443/ok/httpx", headers={"authorization": "Bearer ${PLACEHOLDER}"})`,
    '    print(json.dumps({"version": r.http_version, "status": r.status_code, "body": r.text}))',
  ].join('\n');
  // Debian's interpreter, where python3-httpx is installed (not whatever python3 is first on PATH).
  const r = await w.topo.exec(w.sandbox, '/usr/bin/python3', ['-c', script], { timeoutMs: 20000 });
  const out = JSON.parse(r.stdout.trim() || '{}') as { version?: string; status?: number; body?: string };
  t.is(out.version, 'HTTP/2', r.stdout + r.stderr);
  t.is(out.status, 200);
  t.regex(String(out.body), /\[redacted\]/);
  t.like(await httpLine('/ok/httpx'), { alpn: 'h2', status: 200, credential: 'llm' });
  t.is(((await upLine(up.h1up!, '/ok/httpx')).request as Line).auth, 'ok');
  noSecret(t, r.stdout + r.stderr, 'httpx output');
});
