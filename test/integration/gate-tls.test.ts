import test from 'ava';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { createWorld, startGate, baseConfig, bodyOf, NAMES, type World, type Gate, type Line } from '../helpers/gate.js';

// One world and one sandgate for this file; the tests below are independent requests into it.
let w: World;
let g: Gate;

/**
 * The standard allow list plus what the ECH tests need: an intercepted host and a host whose
 * rule refuses ECH. `echDefault` is the global tls.ech (one serial test switches it).
 */
function config(echDefault?: 'allow' | 'refuse'): Record<string, unknown> {
  const base = baseConfig(w, {
    allow: [
      { host: 'api.example.test' },
      { host: 'plain.example.test', ports: [80] },
      { host: '*.wild.example.test' },
      { host: 'icpt.example.test', inject: 'k' },
      { host: 'strict.example.test', ech: 'refuse' },
    ],
    upstream: { hosts: Object.fromEntries([...NAMES, 'icpt.example.test', 'strict.example.test'].map((n) => [n, w.a])) },
  });
  return {
    ...base,
    tls: { ...(base.tls as Record<string, unknown>), ...(echDefault ? { ech: echDefault } : {}) },
    credentials: { k: { secret: { env: 'SG_TEST_K' } } },
  };
}

test.before(async () => {
  w = await createWorld();
  g = await startGate(w.topo, w.dir, config(), 'sandgate.json', { env: { SG_TEST_K: `k-${randomBytes(8).toString('hex')}` } });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test("allowed SNI passes through undecrypted: the client verifies the upstream's own certificate", async (t) => {
  const r = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/v1/x', '-w', '\n%{ssl_verify_result} %{http_code}']);
  t.is(r.code, 0, r.stderr);
  const [body, tail] = r.stdout.split('\n');
  t.is(JSON.parse(body ?? '{}').server, 'a');
  t.is(tail, '0 200'); // verify result 0: the chain is the test PKI's, not sandgate's CA
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'api.example.test' && l.decision === 'allow' && l.dst === `${w.a}:443`);
  t.is(line.sandbox, 'agent');
  t.is(line.user, 'alice');
  t.is(line.proto, 'tls');
  t.is(line.rule, 'policies.default.allow[0]');
  t.is(line.dst, `${w.a}:443`);
});

test('an unlisted SNI is refused with a TLS access_denied alert (curl reads it) before any byte reaches an upstream', async (t) => {
  const before = w.upstreams[1]!.log.lines.length;
  const r = await w.curl(['--resolve', `evil.example.test:443:${w.b}`, 'https://evil.example.test/']);
  t.is(r.code, 35, r.stderr); // CURLE_SSL_CONNECT_ERROR
  t.regex(r.stderr, /tlsv1 alert access denied/);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'evil.example.test');
  t.is(line.decision, 'deny');
  t.regex(String(line.reason), /not allowed/);
  t.is(w.upstreams[1]!.log.lines.length, before, 'upstream b saw no request');
});

test('a Node tls client sees the refusal as ERR_SSL_TLSV1_ALERT_ACCESS_DENIED; nothing reaches the upstream', async (t) => {
  const before = w.upstreams[1]!.log.lines.length;
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('tls').connect({ host: '${w.b}', port: 443, servername: 'evil.example.test', ca: require('fs').readFileSync('${w.pki.caFile}') });
    s.on('secureConnect', () => { console.log('connected'); s.destroy(); });
    s.on('error', (e) => console.log('error', e.code));`,
    ],
    { timeoutMs: 8000 },
  );
  t.is(r.stdout.trim(), 'error ERR_SSL_TLSV1_ALERT_ACCESS_DENIED', r.stderr);
  t.is(w.upstreams[1]!.log.lines.length, before, 'upstream b saw no request');
});

test("the listed SNI sent to the unlisted upstream's address reaches the listed host instead", async (t) => {
  const r = await w.curl(['--resolve', `api.example.test:443:${w.b}`, 'https://api.example.test/steer']);
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
});

test('TLS to an IP literal (no SNI) is refused with an unrecognized_name alert', async (t) => {
  const r = await w.curl(['-k', `https://${w.a}/`]);
  t.is(r.code, 35, r.stderr);
  t.regex(r.stderr, /tlsv1 unrecognized name/);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:443` && l.reason === 'no SNI');
  t.is(line.decision, 'deny');
});

test('wildcard rules cover subdomains at any depth but not the apex', async (t) => {
  const sub = await w.curl(['--resolve', `x.wild.example.test:443:${w.a}`, 'https://x.wild.example.test/']);
  t.is(sub.code, 0, sub.stderr);
  const deep = await w.curl(['--resolve', `deep.x.wild.example.test:443:${w.a}`, 'https://deep.x.wild.example.test/']);
  t.is(deep.code, 0, deep.stderr);
  const apex = await w.curl(['--resolve', `wild.example.test:443:${w.a}`, 'https://wild.example.test/']);
  t.not(apex.code, 0);
});

test('SNI matching is case-insensitive and ignores one trailing dot', async (t) => {
  const r = await w.curl(['--resolve', `API.Example.TEST.:443:${w.a}`, 'https://API.Example.TEST./up']);
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
});

test('plain HTTP: Host decides, every request on a keep-alive connection is checked', async (t) => {
  const ok = await w.curl(['--resolve', `plain.example.test:80:${w.b}`, 'http://plain.example.test/hello']);
  t.is(ok.code, 0, ok.stderr);
  t.is(bodyOf(ok)?.server, 'a-plain', 'sandgate chose the upstream from Host, not the dialled address');
  const bad = await w.curl(['-H', 'Host: evil.example.test', `http://${w.a}/`, '-w', '\n%{http_code}']);
  t.regex(bad.stdout, /403$/);
  t.regex(bad.stdout, /not allowed/);
  // Second request on the same connection names another host: it gets its own verdict.
  const two = await w.curl([
    '--resolve',
    `plain.example.test:80:${w.a}`,
    '--resolve',
    `evil.example.test:80:${w.a}`,
    'http://plain.example.test/one',
    '--next',
    'http://plain.example.test/two',
    '-H',
    'Host: evil.example.test',
    '-w',
    '%{http_code}\n',
  ]);
  t.regex(two.stdout, /"server":"a-plain".*"path":"\/one"/);
  t.regex(two.stdout, /not allowed by policy.*403\s*$/s);
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/hello');
  t.is(line.decision, 'allow');
  t.is(line.status, 200);
});

test('plain HTTP with an absolute-form target or two Host headers is refused', async (t) => {
  const abs = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(80, '${w.a}', () => s.write('GET http://evil.example.test/ HTTP/1.1\\r\\nHost: plain.example.test\\r\\n\\r\\n'));
    s.on('data', d => { process.stdout.write(d); s.destroy(); });`,
    ],
    { timeoutMs: 5000 },
  );
  t.regex(abs.stdout, /^HTTP\/1.1 400/);
  const dup = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(80, '${w.a}', () => s.write('GET / HTTP/1.1\\r\\nHost: plain.example.test\\r\\nHost: evil.example.test\\r\\n\\r\\n'));
    s.on('data', d => { process.stdout.write(d); s.destroy(); });`,
    ],
    { timeoutMs: 5000 },
  );
  t.regex(dup.stdout, /^HTTP\/1.1 400/);
});

test('a port no rule lists is reset without reading', async (t) => {
  const r = await w.curl([`http://${w.a}:8080/`]);
  t.not(r.code, 0);
  await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:8080` && l.decision === 'deny');
  t.pass();
});

test('a Node https client in the sandbox works through the gate', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const https = require('https');
    https.get({ host: '${w.b}', servername: 'api.example.test', path: '/node', headers: { host: 'api.example.test' }, ca: require('fs').readFileSync('${w.pki.caFile}') }, (res) => {
      let b = ''; res.on('data', (c) => b += c); res.on('end', () => { console.log(res.statusCode, JSON.parse(b).server); });
    }).on('error', (e) => { console.log('error', e.code); });`,
    ],
    { timeoutMs: 8000 },
  );
  t.is(r.stdout.trim(), '200 a', r.stderr);
});

test("the host's own addresses and sandgate's ports are unreachable from the sandbox", async (t) => {
  const hostAddr = w.topo.hostAddr('sbx');
  // A service on the host (in the host namespace), on a port no rule lists.
  const svc = w.topo.spawn(w.topo.hostNs, process.execPath, [
    '-e',
    `require('net').createServer(c => c.end('host-secret\\n')).listen(8081, '0.0.0.0', () => console.log('up'))`,
  ]);
  await new Promise((r) => svc.stdout?.once('data', r));
  try {
    for (const port of [8081, 15001, 15053, 22]) {
      const r = await w.topo.exec(
        w.sandbox,
        process.execPath,
        [
          '-e',
          `
        const s = require('net').connect(${port}, '${hostAddr}');
        s.setTimeout(1500, () => { console.log('timeout'); s.destroy(); });
        s.on('data', d => { console.log('DATA', String(d).trim()); s.destroy(); });
        s.on('error', e => console.log('error', e.code));
        s.on('close', () => console.log('closed'));`,
        ],
        { timeoutMs: 5000 },
      );
      t.notRegex(r.stdout, /DATA/, `port ${port}: ${r.stdout}`);
    }
  } finally {
    svc.kill('SIGKILL');
  }
});

test('raw TCP bytes that are neither TLS nor HTTP are reset on a listed port', async (t) => {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(443, '${w.a}', () => s.write('\\x00\\x01garbage'));
    s.on('data', () => console.log('DATA'));
    s.on('error', e => console.log('error', e.code));
    s.on('close', () => console.log('closed'));`,
    ],
    { timeoutMs: 5000 },
  );
  t.regex(r.stdout, /ECONNRESET|closed/);
  t.notRegex(r.stdout, /DATA/);
  t.truthy(await g.log.waitFor((l) => l.event === 'conn' && l.reason === 'neither TLS nor HTTP'));
});

test('a socket that connects and says nothing does not hold anything open forever: it gets a verdict', async (t) => {
  // The peek timeout is 10 s; just check that an idle connection is not allowed through meanwhile.
  const s = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(443, '${w.a}');
    s.on('data', () => console.log('DATA'));
    setTimeout(() => { console.log('alive'); s.destroy(); }, 500);`,
    ],
    { timeoutMs: 5000 },
  );
  t.regex(s.stdout, /alive/);
  t.notRegex(s.stdout, /DATA/);
});

// ---------------------------------------------------------------------------------------------
// Encrypted ClientHello. A crafted TLS 1.2 ClientHello (ECDHE-ECDSA, P-256: what the test PKI and
// sandgate's CA issue) that an OpenSSL server answers up to ServerHelloDone, so the test sees which
// certificate answered (in TLS 1.2 it is sent in clear) without completing a handshake.

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)]);

/**
 * encrypted_client_hello as a client without an ECH config sends it (GREASE, draft-ietf-tls-esni
 * §6.2): ECHClientHello type outer(0), HPKE KDF/AEAD, a config_id, a 32-byte enc, a random payload.
 */
const ECH_GREASE = ext(0xfe0d, Buffer.concat([Buffer.from([0]), u16(1), u16(1), randomBytes(1), vec16(randomBytes(32)), vec16(randomBytes(144))]));
const ESNI = ext(0xffce, randomBytes(64));

function tls12Hello(sni: string, extra: Buffer[]): Buffer {
  const exts = Buffer.concat([
    ext(0, vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from(sni))]))), // RFC 6066 §3 server_name
    ext(10, vec16(u16(0x0017))), // supported_groups: secp256r1
    ext(11, Buffer.from([1, 0])), // ec_point_formats: uncompressed
    ext(13, vec16(u16(0x0403))), // signature_algorithms: ecdsa_secp256r1_sha256
    ...extra,
  ]);
  const body = Buffer.concat([u16(0x0303), randomBytes(32), Buffer.from([0]), vec16(Buffer.from([0xc0, 0x2b, 0xc0, 0x2c])), Buffer.from([1, 0]), vec16(exts)]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
}

/**
 * Sends `hello` from the sandbox to (addr, 443) and reads handshake records up to ServerHelloDone.
 * how: "hello-done", or what ended it first (an error code, "closed"; "timeout" is a hang detector).
 */
async function sendHello(addr: string, hello: Buffer): Promise<{ how: string; types: number[]; bytes: Buffer; src: string }> {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(443, '${addr}', () => s.write(Buffer.from('${hello.toString('base64')}', 'base64')));
    let got = Buffer.alloc(0), hs = Buffer.alloc(0), types = [], done = false, port = 0;
    s.on('connect', () => { port = s.localPort; });
    const timer = setTimeout(() => end('timeout'), 4000);
    const end = (how) => { if (done) return; done = true; clearTimeout(timer); console.log(JSON.stringify({ how, types, port, bytes: got.toString('base64') })); s.destroy(); };
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      // Records (RFC 5246 §6.2.1): handshake ones (22) carry messages (type u8, length u24).
      hs = Buffer.alloc(0);
      for (let i = 0; i + 5 <= got.length; ) { const n = got.readUInt16BE(i + 3); if (got[i] === 22) hs = Buffer.concat([hs, got.subarray(i + 5, i + 5 + n)]); i += 5 + n; }
      types = [];
      for (let j = 0; j + 4 <= hs.length; ) { types.push(hs[j]); j += 4 + hs.readUIntBE(j + 1, 3); }
      if (types.includes(14)) end('hello-done');
    });
    s.on('error', (e) => end(e.code));
    s.on('close', () => end('closed'));`,
    ],
    { timeoutMs: 8000 },
  );
  const out = JSON.parse(r.stdout.trim() || '{}') as { how?: string; types?: number[]; bytes?: string; port?: number };
  return {
    how: out.how ?? `no output: ${r.stderr}`,
    types: out.types ?? [],
    bytes: Buffer.from(out.bytes ?? '', 'base64'),
    src: `${w.topo.addr('sbx')}:${out.port ?? 0}`,
  };
}

/** A fatal access_denied alert as a plaintext record (RFC 8446 §6): what a refused hello gets. */
const ACCESS_DENIED = [21, 3, 3, 0, 2, 2, 49];

/** The conn line of the connection sendHello made (its source port tells it from every other). */
const connLine = (r: { src: string }, pred: (l: Line) => boolean = () => true): Promise<Line> =>
  g.log.waitFor((l) => l.event === 'conn' && l.src === r.src && pred(l), 5000, `conn line for ${r.src}`);

test("an ECH (GREASE) hello to an allowed name passes through to that name's upstream; the audit says ech: true", async (t) => {
  const r = await sendHello(w.b, tls12Hello('api.example.test', [ECH_GREASE]));
  t.is(r.how, 'hello-done');
  t.deepEqual(r.types.slice(0, 2), [2, 11], 'ServerHello, Certificate');
  t.true(r.bytes.includes('sandgate test root'), "the upstream's own certificate (test PKI), not sandgate's");
  const line = await connLine(r, (l) => l.decision === 'allow');
  t.is(line.host, 'api.example.test');
  t.is(line.dst, `${w.b}:443`);
  t.is(line.ech, true);
  t.is(line.rule, 'policies.default.allow[0]');
  t.is(line.upstream, `${w.a}:443`, "the name's upstream, not the dialled address");
});

test('a hello without ECH has no ech field in its audit line', async (t) => {
  const r = await sendHello(w.a, tls12Hello('x.wild.example.test', []));
  t.is(r.how, 'hello-done');
  const line = await connLine(r, (l) => l.decision === 'allow');
  t.false('ech' in line);
});

test('an ECH (GREASE) hello to an intercepted name is terminated by sandgate as any other (the extension is ignored)', async (t) => {
  const r = await sendHello(w.a, tls12Hello('icpt.example.test', [ECH_GREASE]));
  t.is(r.how, 'hello-done');
  t.true(r.bytes.includes('sandgate interception CA'), "sandgate's leaf for the outer name");
  t.false(r.bytes.includes('sandgate test root'));
  // The interception line is written once the handshake completes; a denial would come at once.
  t.falsy(g.log.find((l) => l.event === 'conn' && l.src === r.src && l.decision === 'deny'));
});

test('an ECH hello to an unlisted name is denied on its outer SNI, with ech: true', async (t) => {
  const r = await sendHello(w.b, tls12Hello('evil.example.test', [ECH_GREASE]));
  t.is(r.how, 'closed');
  t.deepEqual([...r.bytes], ACCESS_DENIED, 'a fatal access_denied alert, then the close');
  const line = await connLine(r);
  t.like(line, { decision: 'deny', host: 'evil.example.test', ech: true });
  t.is(line.reason, 'evil.example.test:443 is not allowed');
});

test('a rule with ech: refuse denies an ECH hello (and allows the same name without ECH)', async (t) => {
  const r = await sendHello(w.a, tls12Hello('strict.example.test', [ECH_GREASE]));
  t.is(r.how, 'closed');
  t.deepEqual([...r.bytes], ACCESS_DENIED);
  const line = await connLine(r);
  t.like(line, { decision: 'deny', host: 'strict.example.test', ech: true });
  t.is(line.reason, 'encrypted ClientHello (ECH) is refused for strict.example.test (policies.default.allow[4], ech: refuse)');
  const plain = await sendHello(w.a, tls12Hello('strict.example.test', []));
  t.is(plain.how, 'hello-done');
  const allowed = await connLine(plain);
  t.is(allowed.decision, 'allow');
  t.false('ech' in allowed);
});

test('an ESNI (0xffce) hello is denied even to an allowed name', async (t) => {
  const r = await sendHello(w.a, tls12Hello('api.example.test', [ESNI]));
  t.is(r.how, 'closed');
  t.deepEqual([...r.bytes], ACCESS_DENIED);
  const line = await connLine(r);
  t.like(line, { decision: 'deny', host: 'api.example.test', reason: 'encrypted SNI (ESNI) is not allowed' });
});

// Serial tests run before the concurrent ones, so the switch back is in place before they start.
test.serial('global tls.ech: refuse denies ECH to every rule without its own ech, passthrough and intercepted', async (t) => {
  t.is((await g.reload(config('refuse'))).action, 'reloaded');
  try {
    for (const host of ['api.example.test', 'icpt.example.test']) {
      const r = await sendHello(w.a, tls12Hello(host, [ECH_GREASE]));
      t.is(r.how, 'closed', host);
      t.deepEqual([...r.bytes], ACCESS_DENIED, host);
      const line = await connLine(r);
      t.like(line, { decision: 'deny', host, ech: true });
      t.regex(String(line.reason), /^encrypted ClientHello \(ECH\) is refused for /);
    }
    t.is((await sendHello(w.a, tls12Hello('api.example.test', []))).how, 'hello-done', 'without ECH the host is still allowed');
  } finally {
    t.is((await g.reload(config())).action, 'reloaded');
  }
});

test('a silent socket and a stalled ClientHello are reset at the 10 s peek timeout; a hello announcing more than 16 KiB at once', async (t) => {
  // Each client prints its port and what happened; the process limit (20 s) only detects a hang.
  const probe = (write: string): Promise<{ stdout: string }> =>
    w.topo.exec(
      w.sandbox,
      process.execPath,
      [
        '-e',
        `
    const s = require('net').connect(443, '${w.a}', () => { console.log('port', s.localPort); const b = Buffer.from('${write}', 'hex'); if (b.length) s.write(b); });
    s.on('data', (d) => console.log('DATA', d.toString('hex')));
    s.on('error', (e) => console.log('error', e.code));
    s.on('close', () => console.log('closed'));`,
      ],
      { timeoutMs: 20000 },
    );
  const [silent, stalled, huge] = await Promise.all([
    probe(''),
    // A handshake record header announcing 300 bytes, then nothing more.
    probe('1603010130'),
    // A record of 16 KiB whose ClientHello says it is 16 MiB long: invalid as soon as that is known.
    probe('16030140000100ffff0303'),
  ]);
  const lineOf = async (r: { stdout: string }): Promise<Line> => {
    const port = /port (\d+)/.exec(r.stdout)?.[1];
    return g.log.waitFor((l) => l.event === 'conn' && l.src === `${w.topo.addr('sbx')}:${port}`, 5000, `the conn line of port ${port}`);
  };
  for (const [what, r] of [
    ['silent', silent],
    ['stalled', stalled],
    ['huge', huge],
  ] as const)
    t.regex(r.stdout, /closed/, `${what}: ${r.stdout}`);
  for (const r of [silent, stalled]) t.notRegex(r.stdout, /DATA/);
  // A TLS record that is no valid ClientHello: a fatal decode_error alert (50), then the close.
  t.regex(huge.stdout, /DATA 15030300020232\n/);
  for (const r of [silent, stalled]) t.like(await lineOf(r), { decision: 'deny', reason: 'no ClientHello or request within 10000 ms' });
  const h = await lineOf(huge);
  t.is(h.decision, 'deny');
  t.regex(String(h.reason), /^bad ClientHello: /);
});

void net;
