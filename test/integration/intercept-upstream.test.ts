/**
 * Upstream failures behind interception: an upstream certificate that is expired, self-signed or
 * for another name, an upstream that refuses connections, and an address the SSRF guard refuses.
 * The sandbox gets a 502 with a short JSON reason; the audit line names the TLS error; the
 * credential never leaves sandgate (verification fails before any request byte is sent).
 */
import test from 'ava';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, type World, type Gate, type Upstream, type Line } from '../helpers/gate.js';
import { randomSerialHex, webcrypto, x509 } from '../../src/tls/x509.js';

const SECRET = `sk-real-${randomBytes(12).toString('hex')}`;
let w: World;
let g: Gate;
const ups: Upstream[] = [];

/**
 * A certificate that expired yesterday, signed by the test root (openssl 3.0's `x509 -req`
 * cannot backdate, so it is minted here with @peculiar/x509).
 */
async function mintExpired(name: string): Promise<{ cert: string; key: string }> {
  const caPem = readFileSync(w.pki.caFile, 'utf8');
  const caKeyDer = createPrivateKey(readFileSync(join(w.pki.dir, 'ca.key'))).export({ type: 'pkcs8', format: 'der' });
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKey = await webcrypto.subtle.importKey('pkcs8', caKeyDer, alg, false, ['sign']);
  const leaf = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const day = 24 * 3600 * 1000;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: [{ CN: [name] }],
    issuer: new x509.X509Certificate(caPem).subjectName,
    notBefore: new Date(Date.now() - 10 * day),
    notAfter: new Date(Date.now() - day),
    publicKey: leaf.publicKey,
    signingKey: caKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  });
  const certFile = join(w.dir, 'expired.pem');
  const keyFile = join(w.dir, 'expired.key');
  writeFileSync(certFile, cert.toString('pem'));
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leaf.privateKey))
    .toString('base64')
    .replace(/.{64}/g, '$&\n');
  writeFileSync(keyFile, `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`);
  return { cert: certFile, key: keyFile };
}

const CASES = [
  { host: 'expired.example.test', port: 9441, code: /CERT_HAS_EXPIRED/, what: 'expired' },
  { host: 'selfsigned.example.test', port: 9442, code: /DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED/, what: 'self-signed' },
  { host: 'wrongname.example.test', port: 9443, code: /ERR_TLS_CERT_ALTNAME_INVALID/, what: 'for another name' },
];

test.before(async () => {
  w = await createWorld();
  const expired = await mintExpired('expired.example.test');
  const self = w.pki.issue(['selfsigned.example.test'], { selfSigned: true, tag: 'self' });
  const wrong = w.pki.issue(['somebody-else.example.test'], { tag: 'wrong' });
  ups.push(
    ...(await Promise.all([
      startUpstream(w.topo, 'a', ['--name', 'expired', '--port', '9441', '--tls', expired.cert, expired.key]),
      startUpstream(w.topo, 'a', ['--name', 'self', '--port', '9442', '--tls', self.cert, self.key]),
      startUpstream(w.topo, 'a', ['--name', 'wrong', '--port', '9443', '--tls', wrong.cert, wrong.key]),
    ])),
  );
  const names = [...CASES.map((c) => c.host), 'refused.example.test', 'loop.example.test'];
  const config = {
    ...baseConfig(w, {
      allow: [
        ...CASES.map((c) => ({ host: c.host, ports: [c.port], inject: 'k' })),
        { host: 'refused.example.test', ports: [9449], inject: 'k' },
        { host: 'loop.example.test', ports: [9441], inject: 'k' },
      ],
      upstream: {
        hosts: { ...Object.fromEntries([...NAMES, ...names].map((n) => [n, w.a])), 'loop.example.test': '127.0.0.1' },
        allowPrivate: ['10.77.0.0/16'],
        caFile: w.pki.caFile,
        connectTimeoutMs: 2000,
      },
    }),
    credentials: { k: { secret: { env: 'SG_TEST_K' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_K: SECRET } });
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, names.map((n) => `${w.a}\t${n}\n`).join(''));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

function curl(url: string): Promise<{ status: number; body: Record<string, unknown>; raw: string }> {
  return w.topo
    .exec(w.sandbox, '/usr/bin/curl', ['-sS', '--max-time', '8', '--cacert', join(w.dir, 'ca', 'ca.pem'), '-w', '\n%{http_code}', url], { timeoutMs: 10000 })
    .then((r) => {
      const i = r.stdout.lastIndexOf('\n');
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(r.stdout.slice(0, i)) as Record<string, unknown>;
      } catch {
        /* not JSON */
      }
      return { status: Number(r.stdout.slice(i + 1)), body, raw: r.stdout + r.stderr };
    });
}

for (const c of CASES) {
  test.serial(`an upstream certificate ${c.what} gets 502; the audit line names the TLS error`, async (t) => {
    const path = `/bad-cert/${c.port}`;
    const r = await curl(`https://${c.host}:${c.port}${path}`);
    t.is(r.status, 502, r.raw);
    t.like(r.body, { error: 'bad gateway', by: 'sandgate' });
    t.regex(String(r.body.reason), /certificate could not be verified/);
    t.false(r.raw.includes(SECRET));
    const line = await g.log.waitFor((l) => l.event === 'http' && l.path === path);
    t.is(line.status, 502);
    t.regex(String(line.reason), c.code);
    t.is(line.credential, 'k');
    // Verification failed in the handshake: the upstream never saw a request.
    t.false(ups.some((u) => u.log.lines.some((l) => (l.request as Line | undefined)?.path === path)));
  });
}

test.serial('an upstream that refuses the connection gets 502 "upstream unreachable"', async (t) => {
  const r = await curl('https://refused.example.test:9449/refused');
  t.is(r.status, 502, r.raw);
  t.regex(String(r.body.reason), /upstream unreachable/);
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/refused');
  t.regex(String(line.reason), /ECONNREFUSED/);
});

test.serial('an upstream name resolving to a guarded address (loopback) gets 502; the guard is named in the audit', async (t) => {
  const r = await curl('https://loop.example.test:9441/loop');
  t.is(r.status, 502, r.raw);
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/loop');
  t.regex(String(line.reason), /127\.0\.0\.1.*not allowed/);
  t.is(line.decision, 'deny');
});

test.serial('nothing sandgate printed carries the secret', (t) => {
  t.false(g.log.raw.join('\n').includes(SECRET));
  t.false(g.stderr().includes(SECRET));
});
