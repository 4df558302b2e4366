import test from 'ava';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CaError, initCa, loadCa } from '../../src/tls/ca.js';
import { x509 } from '../../src/tls/x509.js';

async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sandgate-ca-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('initCa creates a P-256 CA with the expected files, modes and extensions', async (t) => {
  const dir = path.join(await tempDir(t), 'ca'); // does not exist yet: initCa creates it
  const before = Date.now();
  const { created, material } = await initCa(dir);
  t.true(created);

  t.is((await stat(dir)).mode & 0o777, 0o700);
  t.is((await stat(path.join(dir, 'ca.key'))).mode & 0o777, 0o600);
  t.is((await stat(path.join(dir, 'ca.pem'))).mode & 0o777, 0o644);
  t.deepEqual((await readdir(dir)).sort(), ['ca.key', 'ca.pem'], 'no temp files left behind');

  const certPem = await readFile(path.join(dir, 'ca.pem'), 'utf8');
  const cert = new X509Certificate(certPem);
  t.true(cert.ca);
  t.true(cert.subject.includes('CN=sandgate interception CA'));
  t.true(cert.subject.includes('O=sandgate'));
  t.is(cert.issuer, cert.subject);
  t.true(cert.verify(cert.publicKey), 'self-signed');
  t.is(cert.publicKey.asymmetricKeyType, 'ec');
  t.is(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.true(cert.checkPrivateKey(createPrivateKey(await readFile(path.join(dir, 'ca.key'), 'utf8'))));

  const notBefore = new Date(cert.validFrom).getTime();
  const notAfter = new Date(cert.validTo).getTime();
  // X.509 times have one-second resolution.
  t.true(Math.abs(notBefore - (before - 3600_000)) < 5_000);
  const years = (notAfter - before) / (365.25 * 24 * 3600_000);
  t.true(years > 9.99 && years < 10.01, `validity ${years} years`);

  const p = new x509.X509Certificate(certPem);
  const bc = p.getExtension(x509.BasicConstraintsExtension);
  t.truthy(bc);
  t.true(bc?.ca);
  t.is(bc?.pathLength, 0);
  t.true(bc?.critical);
  const ku = p.getExtension(x509.KeyUsagesExtension);
  t.is(ku?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  t.true(ku?.critical);
  const ski = p.getExtension(x509.SubjectKeyIdentifierExtension);
  t.truthy(ski?.keyId);
  t.is(ski?.keyId, material.keyId);
  t.is(p.signatureAlgorithm.name, 'ECDSA');
  t.is(((p.signatureAlgorithm as EcdsaParams).hash as Algorithm).name, 'SHA-256');

  t.is(material.certPem, certPem);
  t.is(material.key.type, 'private');
  t.false(material.key.extractable);
});

test('a second initCa loads the same CA instead of creating one', async (t) => {
  const dir = await tempDir(t);
  const first = await initCa(dir);
  const second = await initCa(dir);
  t.true(first.created);
  t.false(second.created);
  t.is(second.material.certPem, first.material.certPem);
  t.is(second.material.keyPem, first.material.keyPem);
  const loaded = await loadCa(dir);
  t.is(new X509Certificate(loaded.certPem).fingerprint256, new X509Certificate(first.material.certPem).fingerprint256);
});

test('initCa refuses when only ca.pem exists, and leaves it alone', async (t) => {
  const dir = await tempDir(t);
  await initCa(dir);
  const certBefore = await readFile(path.join(dir, 'ca.pem'), 'utf8');
  await unlink(path.join(dir, 'ca.key'));
  const err = await t.throwsAsync(initCa(dir), { instanceOf: CaError });
  t.is(err?.code, 'CA');
  t.true(err?.message.includes(path.join(dir, 'ca.key')), err?.message);
  t.is(await readFile(path.join(dir, 'ca.pem'), 'utf8'), certBefore);
  t.deepEqual(await readdir(dir), ['ca.pem']);
});

test('initCa refuses when only ca.key exists, and leaves it alone', async (t) => {
  const dir = await tempDir(t);
  await initCa(dir);
  const keyBefore = await readFile(path.join(dir, 'ca.key'), 'utf8');
  await unlink(path.join(dir, 'ca.pem'));
  const err = await t.throwsAsync(initCa(dir), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(dir, 'ca.pem')), err?.message);
  t.is(await readFile(path.join(dir, 'ca.key'), 'utf8'), keyBefore);
  t.deepEqual(await readdir(dir), ['ca.key']);
});

test('a garbage ca.pem is a CaError naming ca.pem', async (t) => {
  const dir = await tempDir(t);
  await initCa(dir);
  await writeFile(path.join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
  const err = await t.throwsAsync(initCa(dir), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(dir, 'ca.pem')), err?.message);
  t.false(err?.message.includes('ca.key'), err?.message);
});

test('a garbage ca.key is a CaError naming ca.key', async (t) => {
  const dir = await tempDir(t);
  await initCa(dir);
  await writeFile(path.join(dir, 'ca.key'), 'hello\n');
  const err = await t.throwsAsync(loadCa(dir), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(dir, 'ca.key')), err?.message);
});

test('a key that does not match the certificate is a CaError naming ca.key', async (t) => {
  const a = await tempDir(t);
  const b = await tempDir(t);
  await initCa(a);
  await initCa(b);
  await copyFile(path.join(b, 'ca.key'), path.join(a, 'ca.key'));
  const err = await t.throwsAsync(initCa(a), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(a, 'ca.key')), err?.message);
  t.regex(err?.message ?? '', /does not match/);
});

test('a certificate that is not a CA is refused even with its matching key', async (t) => {
  const dir = await tempDir(t);
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=not a ca',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  await writeFile(path.join(dir, 'ca.pem'), cert.toString('pem'));
  await writeFile(path.join(dir, 'ca.key'), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), { mode: 0o600 });
  const err = await t.throwsAsync(loadCa(dir), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(dir, 'ca.pem')), err?.message);
  t.regex(err?.message ?? '', /not a CA/);
});

test('an expired CA is refused', async (t) => {
  const dir = await tempDir(t);
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=old ca',
    keys,
    notBefore: new Date(Date.now() - 10 * 86400_000),
    notAfter: new Date(Date.now() - 86400_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  await writeFile(path.join(dir, 'ca.pem'), cert.toString('pem'));
  await writeFile(path.join(dir, 'ca.key'), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), { mode: 0o600 });
  const err = await t.throwsAsync(loadCa(dir), { instanceOf: CaError });
  t.regex(err?.message ?? '', /expired/);
});

test('loadCa never creates a CA', async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(loadCa(dir), { instanceOf: CaError });
  t.true(err?.message.includes(path.join(dir, 'ca.pem')) || err?.message.includes(path.join(dir, 'ca.key')), err?.message);
  t.deepEqual(await readdir(dir), []);
});

test('initCa leaves an existing directory mode alone', async (t) => {
  const dir = await tempDir(t); // mkdtemp makes it 0700; widen it to see that initCa does not touch it
  await chmod(dir, 0o750);
  await initCa(dir);
  t.is((await stat(dir)).mode & 0o777, 0o750);
});
