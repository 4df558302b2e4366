import test, { type ExecutionContext } from 'ava';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { initCa, loadCa, type CaMaterial } from '../../src/tls/ca.js';
import { LeafCache, LeafError } from '../../src/tls/leaf-cache.js';
import { x509 } from '../../src/tls/x509.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

let ca: CaMaterial;
let otherCa: CaMaterial;
let tmpRoot: string;

test.before(async () => {
  tmpRoot = await mkdtemp(path.join(os.tmpdir(), 'sandgate-leaf-'));
  ca = (await initCa(path.join(tmpRoot, 'ca'))).material;
  otherCa = (await initCa(path.join(tmpRoot, 'other-ca'))).material;
});

test.after.always(async () => {
  if (tmpRoot) await rm(tmpRoot, { recursive: true, force: true });
});

/** A TLS server on 127.0.0.1:0 whose SNICallback asks `pick` which name to mint for. */
async function startServer(t: ExecutionContext, cache: LeafCache, pick: (servername: string) => string = (name) => name): Promise<number> {
  const server = tls.createServer({
    SNICallback: (name, cb) => {
      cache.get(pick(name)).then((ctx) => cb(null, ctx), cb);
    },
  });
  // The client may abort the handshake on purpose; that is not a test failure.
  server.on('tlsClientError', () => undefined);
  server.on('secureConnection', (socket) => {
    socket.on('error', () => undefined);
    socket.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

interface Handshake {
  authorized: boolean;
  leaf: X509Certificate;
  chain: tls.DetailedPeerCertificate;
}

function connect(port: number, opts: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...opts }, () => {
      // (On Node 20, calling getPeerX509Certificate() first leaves getPeerCertificate() empty.)
      const chain = socket.getPeerCertificate(true);
      const authorized = socket.authorized;
      socket.destroy();
      if (chain.raw === undefined) reject(new Error('no peer certificate'));
      else resolve({ authorized, chain, leaf: new X509Certificate(chain.raw) });
    });
    socket.on('error', (err) => {
      socket.destroy();
      reject(err);
    });
  });
}

test('a real TLS handshake verifies the leaf against the CA', async (t) => {
  const cache = await LeafCache.create(ca);
  const port = await startServer(t, cache);
  const before = Date.now();
  const hs = await connect(port, { servername: 'api.example.test', ca: ca.certPem });
  t.true(hs.authorized);

  const caCert = new X509Certificate(ca.certPem);
  const leaf = hs.leaf;
  t.is(leaf.subject, 'CN=api.example.test');
  t.is(leaf.subjectAltName, 'DNS:api.example.test');
  t.is(leaf.issuer, caCert.subject);
  t.false(leaf.ca);
  t.true(leaf.checkIssued(caCert));
  t.true(leaf.verify(caCert.publicKey));
  // 16 octets, positive without a sign octet.
  t.regex(leaf.serialNumber, /^[4-7][0-9A-F]{31}$/);
  t.true(Math.abs(new Date(leaf.validFrom).getTime() - (before - HOUR)) < 5_000);
  t.true(Math.abs(new Date(leaf.validTo).getTime() - (before + 7 * DAY)) < 5_000);
  t.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extKeyUsage serverAuth');
  // The server sends the CA after the leaf.
  t.is(hs.chain.issuerCertificate.fingerprint256, caCert.fingerprint256);

  const p = new x509.X509Certificate(leaf.raw.toString('base64'));
  const bc = p.getExtension(x509.BasicConstraintsExtension);
  t.false(bc?.ca);
  const ku = p.getExtension(x509.KeyUsagesExtension);
  t.is(ku?.usages, x509.KeyUsageFlags.digitalSignature);
  t.true(ku?.critical);
  const aki = p.getExtension(x509.AuthorityKeyIdentifierExtension);
  t.is(aki?.keyId, ca.keyId);
  const san = p.getExtension(x509.SubjectAlternativeNameExtension);
  t.deepEqual(san?.names.toJSON(), [{ type: 'dns', value: 'api.example.test' }]);
  t.false(san?.critical);
  t.is(p.signatureAlgorithm.name, 'ECDSA');
  t.is((p.signatureAlgorithm.hash as Algorithm).name, 'SHA-256');
});

test('a leaf minted for another name fails the client identity check', async (t) => {
  const cache = await LeafCache.create(ca);
  // The server answers every SNI with a leaf for other.example.test.
  const port = await startServer(t, cache, () => 'other.example.test');
  const err = await t.throwsAsync(connect(port, { servername: 'api.example.test', ca: ca.certPem }));
  t.is((err as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  // Control: the same leaf is accepted under the name it was minted for.
  const ok = await connect(port, { servername: 'other.example.test', ca: ca.certPem });
  t.true(ok.authorized);
});

test('checking the identity against a different name than the SNI fails', async (t) => {
  const cache = await LeafCache.create(ca);
  const port = await startServer(t, cache);
  const err = await t.throwsAsync(
    connect(port, {
      servername: 'other.example.test',
      ca: ca.certPem,
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity('api.example.test', cert),
    }),
  );
  t.is((err as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
});

test('a client trusting a different CA rejects the leaf', async (t) => {
  const cache = await LeafCache.create(ca);
  const port = await startServer(t, cache);
  const err = await t.throwsAsync(connect(port, { servername: 'api.example.test', ca: otherCa.certPem }));
  t.regex((err as NodeJS.ErrnoException).code ?? '', /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
});

test('all leaves share one key', async (t) => {
  const cache = await LeafCache.create(ca);
  const port = await startServer(t, cache);
  const a = await connect(port, { servername: 'a.example.test', ca: ca.certPem });
  const b = await connect(port, { servername: 'b.example.test', ca: ca.certPem });
  t.not(a.leaf.serialNumber, b.leaf.serialNumber);
  t.true(a.leaf.publicKey.equals(b.leaf.publicKey));
  t.false(a.leaf.publicKey.equals(new X509Certificate(ca.certPem).publicKey));
});

test('a host name too long for the CN gets an empty subject and a critical SAN', async (t) => {
  const cache = await LeafCache.create(ca);
  const port = await startServer(t, cache);
  const host = `${'a'.repeat(60)}.example.test`; // 73 characters > ub-common-name (64)
  const hs = await connect(port, { servername: host, ca: ca.certPem });
  t.true(hs.authorized);
  t.falsy(hs.leaf.subject, 'empty subject');
  t.is(hs.leaf.subjectAltName, `DNS:${host}`);
  const san = new x509.X509Certificate(hs.leaf.raw.toString('base64')).getExtension(x509.SubjectAlternativeNameExtension);
  t.true(san?.critical);
});

test('a leaf never outlives the CA, and is still cached when the CA is near expiry', async (t) => {
  const dir = path.join(tmpRoot, 'short-ca');
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const caNotAfter = new Date(Date.now() + 30 * HOUR);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=short-lived test CA',
    keys,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: caNotAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  await mkdir(dir, { mode: 0o700 });
  await writeFile(path.join(dir, 'ca.pem'), cert.toString('pem'));
  await writeFile(path.join(dir, 'ca.key'), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), { mode: 0o600 });
  const shortCa = await loadCa(dir);

  const cache = await LeafCache.create(shortCa); // default validity 7 days, renew 1 day before
  const port = await startServer(t, cache);
  const hs = await connect(port, { servername: 'api.example.test', ca: shortCa.certPem });
  t.true(hs.authorized);
  // Second resolution in X.509 times.
  t.true(Math.abs(new Date(hs.leaf.validTo).getTime() - caNotAfter.getTime()) < 1_000);
  // 30 h of life is less than validity, and renewBefore (1 day) would leave only 6 h of caching;
  // the half-lifetime rule keeps it cached.
  t.truthy(cache.peek('api.example.test'));
  t.is(cache.stats().mints, 1);
});

test('a second get is a hit returning the same context', async (t) => {
  const cache = await LeafCache.create(ca);
  const first = await cache.get('api.example.test');
  const second = await cache.get('api.example.test');
  t.is(second, first);
  t.is(cache.peek('api.example.test'), first);
  t.is(cache.peek('unknown.example.test'), undefined);
  t.is(cache.size, 1);
  t.deepEqual(cache.stats(), { hits: 2, misses: 1, mints: 1, evictions: 0 });
});

test('the cache is an LRU bounded by max', async (t) => {
  const cache = await LeafCache.create(ca, { max: 3 });
  const a = await cache.get('a.test');
  await cache.get('b.test');
  await cache.get('c.test');
  t.is(await cache.get('a.test'), a); // a is now most recently used: order b, c, a
  await cache.get('d.test'); // evicts b
  t.is(cache.size, 3);
  t.is(cache.stats().evictions, 1);
  t.is(cache.peek('b.test'), undefined);
  t.is(cache.peek('a.test'), a); // order c, d, a
  const b2 = await cache.get('b.test'); // evicts c
  t.truthy(b2);
  t.is(cache.peek('c.test'), undefined);
  t.truthy(cache.peek('d.test'));
  t.is(cache.peek('a.test'), a);
  t.is(cache.size, 3);
  t.deepEqual(cache.stats(), { hits: 4, misses: 5, mints: 5, evictions: 2 });
});

test('a leaf is re-minted once it is within renewBeforeMs of expiry', async (t) => {
  let now = Date.now();
  const cache = await LeafCache.create(ca, { validityMs: 10 * HOUR, renewBeforeMs: 2 * HOUR, now: () => now });
  const start = now;
  const first = await cache.get('api.example.test');
  now = start + 8 * HOUR - 1;
  t.is(cache.peek('api.example.test'), first);
  t.is(await cache.get('api.example.test'), first);
  now = start + 8 * HOUR;
  t.is(cache.peek('api.example.test'), undefined);
  const second = await cache.get('api.example.test');
  t.not(second, first);
  t.is(await cache.get('api.example.test'), second);
  t.is(cache.size, 1);
  t.deepEqual(cache.stats(), { hits: 3, misses: 2, mints: 2, evictions: 0 });
});

test('concurrent gets for one new host share a single mint', async (t) => {
  const cache = await LeafCache.create(ca);
  const contexts = await Promise.all(Array.from({ length: 20 }, () => cache.get('burst.example.test')));
  t.is(new Set(contexts).size, 1);
  t.is(cache.stats().mints, 1);
  t.is(cache.stats().misses, 20);
  t.is(cache.size, 1);
});

test('a failed mint rejects every waiter, is not cached, and is retried', async (t) => {
  // A CA "private" key that is really a public key: signing fails inside WebCrypto.
  const pub = await crypto.subtle.importKey(
    'spki',
    new X509Certificate(ca.certPem).publicKey.export({ type: 'spki', format: 'der' }),
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['verify'],
  );
  const cache = await LeafCache.create({ ...ca, key: pub });
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => cache.get('api.example.test')));
  t.true(results.every((r) => r.status === 'rejected' && r.reason instanceof LeafError));
  t.is(cache.size, 0);
  const err = await t.throwsAsync(cache.get('api.example.test'), { instanceOf: LeafError });
  t.regex(err?.message ?? '', /api\.example\.test/);
  t.is(cache.stats().mints, 0);
  t.is(cache.stats().misses, 6);
});

test('refuses names that must never appear in a leaf', async (t) => {
  const cache = await LeafCache.create(ca);
  for (const host of ['*.example.test', 'a.*.test', '10.0.0.1', '::1', 'API.example.test', '', 'a..test', 'bad host.test']) {
    const err = await t.throwsAsync(cache.get(host), { instanceOf: LeafError }, host);
    t.is(err?.code, 'TLS_LEAF');
  }
  t.is(cache.stats().mints, 0);
  t.is(cache.size, 0);
});

test('rejects nonsensical options', (t) => {
  t.throws(() => new LeafCache(ca, { max: 0 }), { instanceOf: LeafError });
  t.throws(() => new LeafCache(ca, { max: 1.5 }), { instanceOf: LeafError });
  t.throws(() => new LeafCache(ca, { validityMs: 0 }), { instanceOf: LeafError });
  t.throws(() => new LeafCache(ca, { validityMs: HOUR, renewBeforeMs: HOUR }), { instanceOf: LeafError });
  t.throws(() => new LeafCache(ca, { renewBeforeMs: -1 }), { instanceOf: LeafError });
});

test('mint time over 50 hosts (logged, not asserted)', async (t) => {
  const cache = await LeafCache.create(ca);
  const n = 50;
  const start = performance.now();
  for (let i = 0; i < n; i++) await cache.get(`host-${i}.example.test`);
  const mean = (performance.now() - start) / n;
  t.log(`mean mint time over ${n} hosts: ${mean.toFixed(2)} ms`);
  t.is(cache.stats().mints, n);
});

/**
 * A server as the interceptor runs one (src/tls/intercept.ts: the leaf's own context, no
 * SNICallback) answering "hi" to every connection, and a client that keeps the TLS 1.3 ticket it
 * is sent and reports whether it resumed.
 */
async function startTicketServer(t: ExecutionContext, cache: LeafCache, host: string): Promise<number> {
  const server = net.createServer((raw) => {
    cache.get(host).then(
      (ctx) => {
        const s = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
        s.on('error', () => undefined);
        s.on('secure', () => s.end('hi'));
      },
      () => raw.destroy(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

function resume(port: number, host: string, session: Buffer | undefined): Promise<{ reused: boolean; session: Buffer }> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, servername: host, ca: ca.certPem, ...(session ? { session } : {}) });
    socket.on('session', (s: Buffer) => {
      ticket ??= s;
    });
    socket.on('data', () => undefined);
    socket.on('end', () => {
      const reused = socket.isSessionReused();
      socket.destroy();
      // A resumed handshake brings no new ticket (OpenSSL's default): the one used still holds.
      const next = ticket ?? (reused ? session : undefined);
      if (next === undefined) reject(new Error('no session ticket arrived'));
      else resolve({ reused, session: next });
    });
    socket.on('error', reject);
  });
}

test('rotated ticket keys: a ticket from before the rotation no longer resumes; one issued after does, on cached and new leaves alike', async (t) => {
  const cache = await LeafCache.create(ca, { ticketKeys: randomBytes(48) });
  const port = await startTicketServer(t, cache, 'rotate.example.test');
  const first = await resume(port, 'rotate.example.test', undefined);
  t.false(first.reused);
  t.true((await resume(port, 'rotate.example.test', first.session)).reused, 'resumes before the rotation');
  cache.rotateTicketKeys(randomBytes(48));
  const after = await resume(port, 'rotate.example.test', first.session);
  t.false(after.reused, 'a ticket under the old keys is refused by the cached leaf');
  t.true((await resume(port, 'rotate.example.test', after.session)).reused, 'a ticket under the new keys resumes');
  // A leaf minted after the rotation uses the new keys too.
  const other = await startTicketServer(t, cache, 'rotate2.example.test');
  const o1 = await resume(other, 'rotate2.example.test', undefined);
  t.true((await resume(other, 'rotate2.example.test', o1.session)).reused);
  t.throws(() => cache.rotateTicketKeys(Buffer.alloc(47)), { instanceOf: LeafError });
});
