/**
 * TLS interception and credential injection, end to end: a real sandgate in the host
 * namespace, clients in the sandbox namespace trusting sandgate's CA, fake upstreams that check
 * the real credential and echo what they received. Every byte a client received is scanned for
 * the secrets, and so is everything sandgate printed.
 *
 * Tests are serial: they share one sandgate, and audit lines are matched by unique paths.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, ROOT, CLI, type World, type Gate, type Upstream, type Line } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

const CURL = '/usr/bin/curl';
const hex = (): string => randomBytes(12).toString('hex');
// Per-run secrets, so a hit in captured bytes can only come from sandgate.
const LLM = `sk-real-llm-${hex()}`;
const BASIC = `ghp_real${hex()}`;
const QKEY = `qk-real-${hex()}`;
const HDR = `hdr-real-${hex()}`;
const PLACEHOLDER = 'sk-sandgate-placeholder';
const BASIC_USER = 'x-token';
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const FORBIDDEN = [LLM, BASIC, QKEY, HDR, b64(LLM), b64(BASIC), b64(`${BASIC_USER}:${BASIC}`), encodeURIComponent(QKEY)];

const MY_NAMES = ['llm.example.test', 'paths.example.test', 'basic.example.test', 'query.example.test', 'hdr.example.test'];

let w: World;
let g: Gate;
const up: Record<string, Upstream> = {};

function noSecret(t: ExecutionContext, text: string, where: string): void {
  for (const f of FORBIDDEN) t.false(text.includes(f), `a secret appears in ${where}`);
}

const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue([...MY_NAMES, 'evil.example.test'], { tag: 'icpt' });
  const tlsArgs = ['--tls', cert.cert, cert.key];
  const [llm, basic, query, hdr, evil] = await Promise.all([
    startUpstream(w.topo, 'a', ['--name', 'llm', '--port', '8443', ...tlsArgs, '--expect-auth', `Bearer ${LLM}`, '--echo-headers']),
    startUpstream(w.topo, 'a', ['--name', 'basic', '--port', '8444', ...tlsArgs, '--expect-auth', `Basic ${b64(`${BASIC_USER}:${BASIC}`)}`, '--echo-headers']),
    startUpstream(w.topo, 'a', ['--name', 'query', '--port', '8445', ...tlsArgs, '--expect-query', `key=${QKEY}`]),
    startUpstream(w.topo, 'a', ['--name', 'hdr', '--port', '8446', ...tlsArgs, '--expect-header', 'x-api-key', '--expect-auth', HDR, '--echo-headers']),
    startUpstream(w.topo, 'b', ['--name', 'evil', '--port', '8443', ...tlsArgs]),
  ]);
  Object.assign(up, { llm, basic, query, hdr, evil });
  const qFile = join(w.dir, 'q.key');
  writeFileSync(qFile, `${QKEY}\n`, { mode: 0o600 });
  const hosts: Record<string, string> = Object.fromEntries([...NAMES, ...MY_NAMES].map((n) => [n, w.a]));
  hosts['evil.example.test'] = w.b;
  const config = {
    ...baseConfig(w, {
      allow: [
        { host: 'llm.example.test', ports: [8443], inject: 'llm' },
        { host: 'paths.example.test', ports: [8443], inject: 'llm', methods: ['GET', 'POST'], paths: ['/v1/**', '/_sg/*', '/files/*.json'] },
        { host: 'basic.example.test', ports: [8444], inject: 'basic' },
        { host: 'query.example.test', ports: [8445], inject: 'q' },
        { host: 'hdr.example.test', ports: [8446], inject: 'hdr' },
        // plainHttp: http://api.example.test/ (port 80) goes upstream as TLS to port 443.
        { host: 'api.example.test', inject: 'llm', plainHttp: true },
        { host: 'plain.example.test', ports: [80] },
      ],
      upstream: { hosts, allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    }),
    credentials: {
      llm: { secret: { env: 'SG_TEST_LLM' }, placeholder: PLACEHOLDER },
      basic: { secret: { env: 'SG_TEST_BASIC' }, basic: { username: BASIC_USER } },
      q: { secret: { file: qFile }, query: 'key' },
      hdr: { secret: { env: 'SG_TEST_HDR' }, header: 'X-Api-Key', format: '{secret}' },
    },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_LLM: LLM, SG_TEST_BASIC: BASIC, SG_TEST_HDR: HDR } });
  // The sandbox resolves every name to the upstream's address (sandgate's own DNS is not under test here).
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, [...NAMES, ...MY_NAMES].map((n) => `${w.a}\t${n}\n`).join('') + `${w.b}\tevil.example.test\n`);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** curl in the sandbox trusting sandgate's CA; -i so headers are part of what we scan. */
function curl(args: string[], timeoutMs = 8000): Promise<ExecResult> {
  return w.topo.exec(w.sandbox, CURL, ['-sS', '-i', '--max-time', String(timeoutMs / 1000), '--cacert', caPem(), ...args], { timeoutMs: timeoutMs + 2000 });
}

/** Split `curl -i` output: the last response's status, headers (lower-case) and body. */
function parse(r: ExecResult): { status: number; headers: Record<string, string>; body: string } {
  const parts = r.stdout.split('\r\n\r\n');
  // Skip interim responses (100 Continue) and earlier responses in a redirect chain.
  let i = 0;
  while (i < parts.length - 2 && /^HTTP\/(1\.1|2) \d/.test(parts[i + 1] ?? '')) i++;
  const [statusLine = '', ...lines] = (parts[i] ?? '').split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: parts.slice(i + 1).join('\r\n\r\n') };
}

function json(s: string): Record<string, unknown> {
  try {
    return JSON.parse(s) as Record<string, unknown>;
  } catch {
    throw new Error(`not JSON: ${s.slice(0, 500)}`);
  }
}

const httpLine = (path: string): Promise<Line> => g.log.waitFor((l) => l.event === 'http' && l.path === path, 5000, `http line for ${path}`);
const upLine = (u: Upstream, path: string): Promise<Line> =>
  u.log.waitFor((l) => (l.request as Line | undefined)?.path === path, 5000, `upstream request ${path}`);

test.serial('curl with a placeholder key: the upstream gets the real one, the echo the sandbox sees is scrubbed', async (t) => {
  const r = await curl(['-H', `Authorization: Bearer ${PLACEHOLDER}`, 'https://llm.example.test:8443/t1/echo?x=1']);
  t.is(r.code, 0, r.stderr);
  noSecret(t, r.stdout + r.stderr, 'what curl received');
  const res = parse(r);
  t.is(res.status, 200);
  const body = json(res.body);
  t.is(body.server, 'llm');
  // The upstream echoed the header it got; sandgate masked the secret with a same-length mask.
  const echoed = (body.headers as Record<string, string>).authorization ?? '';
  t.regex(echoed, /^\[redacted\]\**$/);
  t.is(echoed.length, `Bearer ${LLM}`.length);
  t.regex(res.headers['x-echo-headers'] ?? '', /\[redacted\]/);
  const u = await upLine(up.llm!, '/t1/echo');
  t.deepEqual((u.request as Line).auth, 'ok');
  t.is((u.request as Line).authHeaders, 1);
  const a = await httpLine('/t1/echo');
  t.like(a, {
    decision: 'allow',
    proto: 'tls',
    alpn: 'h2',
    host: 'llm.example.test',
    method: 'GET',
    status: 200,
    credential: 'llm',
    rule: 'policies.default.allow[0]',
    sandbox: 'agent',
  });
  t.true((a.bytesIn as number) > 0);
  t.is(typeof a.ms, 'number');
  // The interception itself is audited once per connection.
  t.truthy(g.log.find((l) => l.event === 'conn' && l.host === 'llm.example.test' && l.intercept === true && l.decision === 'allow'));
});

test.serial('no key at all: injected; a key the sandbox sent is replaced, never duplicated', async (t) => {
  const none = await curl(['https://llm.example.test:8443/t2/none']);
  t.is(parse(none).status, 200, none.stdout);
  t.is(((await upLine(up.llm!, '/t2/none')).request as Line).auth, 'ok');
  const two = await curl(['-H', 'Authorization: Bearer sandbox-own-key', '-H', 'authorization: Bearer another', 'https://llm.example.test:8443/t2/two']);
  t.is(parse(two).status, 200, two.stdout);
  const u = (await upLine(up.llm!, '/t2/two')).request as Line;
  t.is(u.auth, 'ok');
  t.is(u.authHeaders, 1);
  noSecret(t, none.stdout + two.stdout, 'responses');
});

test.serial('Basic form: Authorization: Basic base64(user:secret), scrubbed from the echo', async (t) => {
  const r = await curl(['-u', `${BASIC_USER}:junk`, 'https://basic.example.test:8444/t3/basic']);
  t.is(parse(r).status, 200, r.stdout);
  noSecret(t, r.stdout + r.stderr, 'the Basic response');
  t.is(((await upLine(up.basic!, '/t3/basic')).request as Line).auth, 'ok');
  // curl's default on https is h2: the Basic form went into an HTTP/2 stream's fields.
  t.like(await httpLine('/t3/basic'), { credential: 'basic', status: 200, alpn: 'h2' });
});

test.serial("query form: the parameter is set (replacing the sandbox's), the audit path has no query", async (t) => {
  const r = await curl(['https://query.example.test:8445/t4/q?key=junk&a=1&key=more']);
  t.is(parse(r).status, 200, r.stdout);
  noSecret(t, r.stdout + r.stderr, 'the query response');
  const body = json(parse(r).body);
  t.regex(String(body.path), /^\/t4\/q\?a=1&key=\[redacted\]/);
  t.is(((await upLine(up.query!, '/t4/q')).request as Line).auth, 'ok');
  const a = await httpLine('/t4/q');
  t.is(a.credential, 'q');
  t.is(a.alpn, 'h2', 'the query form on an HTTP/2 stream (:path)');
});

test.serial('custom header with a bare {secret} format', async (t) => {
  const r = await curl(['-H', 'X-Api-Key: mine', 'https://hdr.example.test:8446/t5/h']);
  t.is(parse(r).status, 200, r.stdout);
  noSecret(t, r.stdout, 'the header response');
  const u = (await upLine(up.hdr!, '/t5/h')).request as Line;
  t.is(u.auth, 'ok');
  t.is(u.authHeaders, 1);
  t.like(await httpLine('/t5/h'), { credential: 'hdr', alpn: 'h2' });
});

test.serial('Node fetch (NODE_EXTRA_CA_CERTS) and python3 urllib (SSL_CERT_FILE) get the key injected', async (t) => {
  const node = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    fetch('https://llm.example.test:8443/t6/node', { headers: { authorization: 'Bearer ${PLACEHOLDER}' } })
      .then(async (r) => console.log(r.status, await r.text()), (e) => { console.log('error', String(e.cause ?? e)); });`,
    ],
    { env: { PATH: '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: caPem() }, timeoutMs: 10000 },
  );
  t.regex(node.stdout, /^200 /, node.stdout + node.stderr);
  noSecret(t, node.stdout + node.stderr, 'node fetch output');
  t.is(((await upLine(up.llm!, '/t6/node')).request as Line).auth, 'ok');
  const py = await w.topo.exec(
    w.sandbox,
    '/usr/bin/python3',
    [
      '-c',
      ['import urllib.request', 'r = urllib.request.urlopen("https://llm.example.test:8443/t6/python", timeout=8)', 'print(r.status, r.read().decode())'].join(
        '\n',
      ),
    ],
    { env: { PATH: '/usr/bin:/bin', SSL_CERT_FILE: caPem() }, timeoutMs: 10000 },
  );
  t.regex(py.stdout, /^200 /, py.stdout + py.stderr);
  noSecret(t, py.stdout + py.stderr, 'python output');
  t.is(((await upLine(up.llm!, '/t6/python')).request as Line).auth, 'ok');
});

test.serial('methods and paths: globs allow, everything else is a 403 JSON an agent can read', async (t) => {
  const ok = await curl(['https://paths.example.test:8443/v1/models/abc']);
  t.is(parse(ok).status, 200, ok.stdout);
  t.is(parse(await curl(['https://paths.example.test:8443/files/report.json'])).status, 200);
  t.is(parse(await curl(['https://paths.example.test:8443/v1'])).status, 200);

  const del = parse(await curl(['-X', 'DELETE', 'https://paths.example.test:8443/v1/models/abc']));
  t.is(del.status, 403);
  t.like(json(del.body), { error: 'denied', by: 'sandgate' });
  t.regex(String(json(del.body).reason), /method DELETE is not allowed/);

  const admin = parse(await curl(['https://paths.example.test:8443/admin/users']));
  t.is(admin.status, 403);
  t.regex(String(json(admin.body).reason), /path \/admin\/users is not allowed/);
  t.is(parse(await curl(['https://paths.example.test:8443/files/a/b.json'])).status, 403, '* is one segment');

  // Ambiguous paths are refused, not guessed at.
  for (const p of ['/v1/../admin', '/v1/%2e%2e/admin', '/v1/a%2fb', '/v1//x']) {
    const r = parse(await curl(['--path-as-is', `https://paths.example.test:8443${p}`]));
    t.is(r.status, 400, p);
  }
  // Encoded unreserved characters are normalised before matching: %76 is "v".
  t.is(parse(await curl(['https://paths.example.test:8443/%761/models'])).status, 200);
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/admin/users');
  t.like(line, { decision: 'deny', status: 403, host: 'paths.example.test' });
  t.is(
    up.llm!.log.lines.filter((l) => ['/admin/users', '/v1/../admin'].includes(String((l.request as Line | undefined)?.path))).length,
    0,
    'denied requests never reached the upstream',
  );
});

test.serial('domain fronting: a Host other than the SNI is refused with 403', async (t) => {
  const other = parse(await curl(['-H', 'Host: basic.example.test', 'https://llm.example.test:8443/t8/front']));
  t.is(other.status, 403);
  t.regex(String(json(other.body).reason), /domain fronting/);
  const unlisted = parse(await curl(['-H', 'Host: evil.example.test', 'https://llm.example.test:8443/t8/front2']));
  t.is(unlisted.status, 403);
  t.is(up.evil!.log.lines.filter((l) => l.request).length, 0);
  const line = await httpLine('/t8/front');
  t.like(line, { decision: 'deny', status: 403 });
});

test.serial("a redirect is relayed, never followed; the client's follow-up to an unlisted host is denied without a credential", async (t) => {
  const target = 'https://evil.example.test:8443/t9/steal';
  const no = parse(await curl([`https://llm.example.test:8443/_sg/redirect?to=${encodeURIComponent(target)}`]));
  t.is(no.status, 302);
  t.is(no.headers.location, target);
  const follow = await curl(['-L', `https://llm.example.test:8443/_sg/redirect?to=${encodeURIComponent(target)}`]);
  t.not(follow.code, 0, 'the follow-up connection is reset');
  noSecret(t, follow.stdout + follow.stderr, 'the redirect chain');
  await g.log.waitFor((l) => l.event === 'conn' && l.host === 'evil.example.test' && l.decision === 'deny');
  t.is(up.evil!.log.lines.filter((l) => l.request).length, 0, 'the unlisted upstream saw nothing');
});

test.serial('a gzip-encoded echo is decoded and scrubbed', async (t) => {
  const r = await curl(['https://llm.example.test:8443/_sg/gzip']);
  const res = parse(r);
  t.is(res.status, 200, r.stdout);
  t.is(res.headers['content-encoding'], undefined);
  noSecret(t, r.stdout, 'the decoded gzip echo');
  t.regex(String((json(res.body).headers as Record<string, string>).authorization), /^\[redacted\]/);
});

test.serial('SSE: each event reaches the sandbox as it is sent', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    (async () => {
      const res = await fetch('https://llm.example.test:8443/_sg/sse?n=5&interval=400');
      const dec = new TextDecoder(); let buf = ''; const out = [];
      for await (const c of res.body) {
        buf += dec.decode(c);
        let i; while ((i = buf.indexOf('\\n\\n')) >= 0) { const ev = JSON.parse(buf.slice(6, i)); buf = buf.slice(i + 2); out.push({ ...ev, got: Date.now() }); }
      }
      console.log(JSON.stringify({ status: res.status, type: res.headers.get('content-type'), out }));
    })().catch((e) => console.log(JSON.stringify({ error: String(e.cause ?? e) })));`,
    ],
    { env: { PATH: '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: caPem() }, timeoutMs: 10000 },
  );
  const res = json(r.stdout.trim()) as { status: number; type: string; out: { i: number; t: number; got: number }[] };
  t.is(res.status, 200, r.stdout + r.stderr);
  t.is(res.type, 'text/event-stream');
  t.is(res.out.length, 5);
  // Not batched: each event reached the client before the upstream sent the next one (same
  // clock; a causal check, not a speed bound: events are 400 ms apart).
  for (let i = 0; i + 1 < res.out.length; i++) {
    t.true(res.out[i]!.got <= res.out[i + 1]!.t, `event ${i} arrived at ${res.out[i]!.got}, after event ${i + 1} was sent at ${res.out[i + 1]!.t}`);
  }
});

test.serial('keep-alive and pipelining: several requests on one TLS connection, each checked and injected', async (t) => {
  const seq = await curl(
    [
      'https://llm.example.test:8443/t12/a',
      'https://llm.example.test:8443/t12/b',
      '-o',
      '/dev/null',
      '-o',
      '/dev/null',
      '-w',
      '%{num_connects} %{http_code}\n',
    ],
    8000,
  );
  t.deepEqual(seq.stdout.trim().split('\n'), ['1 200', '0 200']);
  // Three requests in one write; the third names another Host (fronting): refused, and the
  // connection closes after it.
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('tls').connect({ host: 'llm.example.test', port: 8443, servername: 'llm.example.test', ca: require('fs').readFileSync(${JSON.stringify(caPem())}), ALPNProtocols: ['http/1.1'] }, () => {
      const req = (p, h) => 'GET ' + p + ' HTTP/1.1\\r\\nHost: ' + h + '\\r\\n\\r\\n';
      s.write(req('/t12/p1', 'llm.example.test') + req('/t12/p2', 'llm.example.test') + req('/t12/p3', 'basic.example.test'));
    });
    let buf = ''; s.on('data', (d) => { buf += d; });
    s.on('close', () => console.log(JSON.stringify({ alpn: s.alpnProtocol, codes: [...buf.matchAll(/HTTP\\/1\\.1 (\\d{3}) /g)].map((m) => m[1]), buf })));`,
    ],
    { timeoutMs: 10000 },
  );
  const out = json(r.stdout.trim());
  t.is(out.alpn, 'http/1.1');
  t.deepEqual(out.codes, ['200', '200', '403']);
  noSecret(t, String(out.buf), 'pipelined responses');
  t.is(((await upLine(up.llm!, '/t12/p2')).request as Line).auth, 'ok');
});

// BUG (src/tls/intercept.ts): a handshake that ended without an error event (the client hung up,
// as a Node client that rejects the certificate does, or stalled past the timer) left no line.
test.serial(
  'the handshake: TLS version audited; h2 chosen when offered; a client offering neither h2 nor http/1.1, not trusting the CA, or stalling gets one error line',
  async (t) => {
    const hello = (opts: string): Promise<ExecResult> =>
      w.topo.exec(
        w.sandbox,
        process.execPath,
        [
          '-e',
          `
    const s = require('tls').connect({ host: 'llm.example.test', port: 8443, servername: 'llm.example.test', ${opts} }, () => { console.log('connected', s.alpnProtocol); s.end(); });
    s.on('error', (e) => console.log('error', e.code));`,
        ],
        { timeoutMs: 8000 },
      );
    const before = g.log.lines.length;
    const since = (): Line[] => g.log.lines.slice(before).filter((l) => l.event === 'conn' && l.host === 'llm.example.test');
    const ok = await hello(`ca: require('fs').readFileSync(${JSON.stringify(caPem())}), ALPNProtocols: ['h2', 'http/1.1']`);
    t.regex(ok.stdout, /connected h2/, ok.stdout + ok.stderr);
    const secured = (): Line | undefined => since().find((l) => l.tlsVersion !== undefined);
    await g.log.waitFor(() => secured() !== undefined, 5000, 'the conn line of the completed handshake');
    t.like(secured(), { decision: 'allow', intercept: true });
    t.regex(String(secured()?.tlsVersion), /^TLSv1\.[23]$/);

    const h2 = await hello(`ca: require('fs').readFileSync(${JSON.stringify(caPem())}), ALPNProtocols: ['spdy/3.1']`);
    t.regex(h2.stdout, /error ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL/, h2.stdout + h2.stderr);
    // Node rejects the certificate after its side of the handshake and hangs up without an alert.
    const node = await hello('');
    t.regex(node.stdout, /error SELF_SIGNED_CERT_IN_CHAIN/, node.stdout + node.stderr);
    // curl (OpenSSL) sends an "unknown ca" alert.
    const c = await w.topo.exec(w.sandbox, CURL, ['-sS', '--max-time', '5', 'https://llm.example.test:8443/t16/untrusted'], { timeoutMs: 8000 });
    t.not(c.code, 0);
    // A client whose bytes after the ClientHello never arrive: the handshake timer (10 s) ends it.
    const stall = await w.topo.exec(
      w.sandbox,
      process.execPath,
      [
        '-e',
        `
    const { Duplex } = require('stream');
    const raw = require('net').connect(8443, 'llm.example.test');
    let writes = 0;
    const lossy = new Duplex({ read() {}, write(c, e, cb) { if (writes++ === 0) raw.write(c); cb(); } });
    raw.on('data', (d) => lossy.push(d));
    raw.on('close', () => { console.log('closed'); lossy.push(null); });
    raw.on('error', () => {});
    const s = require('tls').connect({ socket: lossy, servername: 'llm.example.test', rejectUnauthorized: false });
    s.on('error', () => {});`,
      ],
      { timeoutMs: 20000 },
    );
    t.regex(stall.stdout, /closed/, 'sandgate closed the stalled handshake');
    const failed = (): Line[] => since().filter((l) => l.error !== undefined);
    await g.log.waitFor(() => failed().length >= 4, 5000, 'four handshake error lines');
    t.deepEqual(
      failed().map((l) => l.error),
      [
        'TLS handshake with the sandbox failed (ERR_SSL_NO_APPLICATION_PROTOCOL)',
        'TLS handshake with the sandbox failed (the sandbox closed the connection)',
        'TLS handshake with the sandbox failed (ERR_SSL_TLSV1_ALERT_UNKNOWN_CA)',
        'TLS handshake with the sandbox failed (not completed within 10000 ms)',
      ],
    );
    noSecret(t, h2.stdout + node.stdout + c.stdout + c.stderr, 'the failed handshakes');
  },
);

test.serial('Expect: 100-continue: admitted requests get 100 then the body goes up; denied ones never send it (HTTP/1.1 and HTTP/2)', async (t) => {
  const body = join(w.dir, 'body.bin');
  writeFileSync(body, randomBytes(256 * 1024));
  for (const [proto, interim] of [
    ['--http1.1', /HTTP\/1\.1 100 Continue/],
    ['--http2', /< HTTP\/2 100/],
  ] as const) {
    const ok = await curl([proto, '-v', '-H', 'Expect: 100-continue', '--data-binary', `@${body}`, 'https://llm.example.test:8443/_sg/upload']);
    t.regex(ok.stderr, interim, proto);
    const res = parse(ok);
    t.is(res.status, 200, ok.stdout);
    t.is(json(res.body).bytes, 256 * 1024);
    const denied = await curl([proto, '-v', '-H', 'Expect: 100-continue', '--data-binary', `@${body}`, 'https://paths.example.test:8443/upload/not-allowed']);
    t.is(parse(denied).status, 403, proto);
    t.notRegex(denied.stderr, /100 Continue|HTTP\/2 100/);
    t.notRegex(denied.stderr, /upload completely sent/);
  }
});

test.serial('malformed requests get 400, oversized headers 431, Content-Length with Transfer-Encoding 400', async (t) => {
  const raw = (payload: string): Promise<ExecResult> =>
    w.topo.exec(
      w.sandbox,
      process.execPath,
      [
        '-e',
        `
    const s = require('tls').connect({ host: 'llm.example.test', port: 8443, servername: 'llm.example.test', ca: require('fs').readFileSync(${JSON.stringify(caPem())}) }, () => s.write(${JSON.stringify(payload)}));
    let buf = ''; s.on('data', (d) => { buf += d; }); s.on('error', () => {});
    s.on('close', () => console.log(JSON.stringify(buf)));`,
      ],
      { timeoutMs: 8000 },
    );
  const first = async (payload: string): Promise<string> => JSON.parse((await raw(payload)).stdout.trim() || '""') as string;
  t.regex(await first('GET / HTTP/1.1\r\nHost: llm.example.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.regex(await first(`GET / HTTP/1.1\r\nHost: llm.example.test\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
  t.regex(await first('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.regex(await first('GET / HTTP/1.1\r\nHost: llm.example.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'), /^HTTP\/1\.1 400 /);
  await g.log.waitFor((l) => l.event === 'http' && l.status === 431);
  // A chunked body on a GET stays a body upstream: it is re-framed, never sent raw (where its
  // bytes would parse as a second request on a pooled connection).
  const inner = 'GET /t13/smuggled HTTP/1.1\r\nHost: llm.example.test\r\n\r\n';
  const smuggle = await first(
    `GET /t13/carrier HTTP/1.1\r\nHost: llm.example.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`,
  );
  t.regex(smuggle, /^HTTP\/1\.1 200 /);
  t.is(json(smuggle.slice(smuggle.indexOf('\r\n\r\n') + 4)).body, inner);
  await upLine(up.llm!, '/t13/carrier');
  await new Promise((r) => setTimeout(r, 200));
  t.false(
    up.llm!.log.lines.some((l) => (l.request as Line | undefined)?.path === '/t13/smuggled'),
    'the upstream saw only one request',
  );
});

test.serial('WebSocket (ws package): the token is injected on the upgrade, frames relayed, nothing leaks', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const WebSocket = require(${JSON.stringify(join(ROOT, 'node_modules/ws'))});
    const raw = [];
    const ws = new WebSocket('wss://llm.example.test:8443/t14/ws', {
      headers: { authorization: 'Bearer ${PLACEHOLDER}' },
      createConnection: (o) => { const s = require('tls').connect({ ...o, servername: 'llm.example.test' }); s.on('data', (d) => raw.push(d)); return s; },
    });
    const got = [];
    ws.on('message', (d, bin) => {
      got.push(bin ? 'bin:' + d.length : String(d));
      if (got.length === 1) { ws.send('ping ' + 'x'.repeat(100)); ws.send(Buffer.alloc(70000, 7)); }
      if (got.length === 3) ws.close();
    });
    ws.on('close', () => console.log(JSON.stringify({ got, ext: ws.extensions, raw: Buffer.concat(raw).toString('latin1') })));
    ws.on('error', (e) => console.log(JSON.stringify({ error: String(e) })));`,
    ],
    { env: { PATH: '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: caPem() }, timeoutMs: 10000 },
  );
  const out = json(r.stdout.trim()) as { got: string[]; ext: string; raw: string; error?: string };
  t.is(out.error, undefined);
  t.is(out.got.length, 3, r.stdout);
  const hello = json(out.got[0]!);
  t.regex(String(hello.authorization), /^\[redacted\]\**$/, 'the upstream got (and echoed) the real token; the sandbox sees it masked');
  t.is(hello.extensions, null, 'permessage-deflate is not negotiated when a credential is injected');
  t.is(out.got[1], 'ping ' + 'x'.repeat(100));
  t.is(out.got[2], 'bin:70000');
  noSecret(t, out.raw, 'the WebSocket byte stream');
  t.is(((await up.llm!.log.waitFor((l) => (l.upgrade as Line | undefined)?.path === '/t14/ws')).upgrade as Line).auth, 'ok');
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/t14/ws');
  t.like(line, { status: 101, credential: 'llm', websocket: true });
});

test.serial('WebSocket: a token the upstream splits across two fragments of one message is masked too', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const WebSocket = require(${JSON.stringify(join(ROOT, 'node_modules/ws'))});
    const raw = [];
    const ws = new WebSocket('wss://llm.example.test:8443/t14/fragmented', {
      headers: { authorization: 'Bearer ${PLACEHOLDER}' },
      createConnection: (o) => { const s = require('tls').connect({ ...o, servername: 'llm.example.test' }); s.on('data', (d) => raw.push(d)); return s; },
    });
    const got = [];
    ws.on('message', (d) => { got.push(String(d)); ws.close(); });
    ws.on('close', () => console.log(JSON.stringify({ got, raw: Buffer.concat(raw).toString('latin1') })));
    ws.on('error', (e) => console.log(JSON.stringify({ error: String(e) })));`,
    ],
    { env: { PATH: '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: caPem() }, timeoutMs: 10000 },
  );
  const out = json(r.stdout.trim()) as { got: string[]; raw: string; error?: string };
  t.is(out.error, undefined);
  t.is(out.got.length, 1, r.stdout);
  t.regex(String(json(out.got[0]!).authorization), /^\[redacted\]\**$/, 'the message reassembled from two fragments carries the mask');
  noSecret(t, out.raw, 'the WebSocket byte stream');
});

test.serial('plainHttp: http:// to the host goes upstream over verified TLS with the credential; without it, 403', async (t) => {
  const r = await curl(['-H', `Authorization: Bearer ${PLACEHOLDER}`, 'http://api.example.test/t15/plain']);
  const res = parse(r);
  t.is(res.status, 200, r.stdout + r.stderr);
  noSecret(t, r.stdout, 'the plainHttp response');
  const body = json(res.body);
  t.is(body.server, 'a', 'the TLS upstream on 443 answered');
  t.is(body.host, 'api.example.test');
  t.regex(String((body.headers as Record<string, string>).authorization), /^\[redacted\]/);
  t.like(await httpLine('/t15/plain'), { proto: 'http', credential: 'llm', status: 200, upstream: 'https://api.example.test:443' });
  const no = parse(await curl(['http://llm.example.test:8443/t15/refused']));
  t.is(no.status, 403);
  t.regex(String(json(no.body).reason), /requires TLS/);
});

test.serial('a missing secret is a config error (exit 2) naming credentials.ID.secret', async (t) => {
  const cfg = join(w.dir, 'missing.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      ...baseConfig(w, { allow: [{ host: 'llm.example.test', inject: 'llm' }] }),
      listen: { port: 15101, dnsPort: 15153 },
      credentials: { llm: { secret: { env: 'SG_TEST_NOT_SET' } } },
    }),
  );
  const r = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'run', '-c', cfg], { env: { PATH: '/usr/bin:/bin' }, timeoutMs: 8000 });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /credentials\.llm\.secret: environment variable SG_TEST_NOT_SET is not set/);
});

test.serial('nothing sandgate printed carries a secret; every intercepted request line names its credential', (t) => {
  noSecret(t, g.log.raw.join('\n'), "sandgate's audit log");
  noSecret(t, g.stderr(), "sandgate's stderr");
  const lines = g.log.lines.filter(
    (l) => l.event === 'http' && l.decision === 'allow' && String(l.host).endsWith('example.test') && l.host !== 'plain.example.test',
  );
  t.true(lines.length > 10);
  for (const l of lines) t.truthy(l.credential, JSON.stringify(l));
  for (const l of g.log.lines.filter((x) => x.event === 'http')) t.false(String(l.path).includes('?'), 'audit paths carry no query');
});
