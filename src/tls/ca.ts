/**
 * The interception CA: the certificate sandboxes are told to trust, and the key that signs every
 * per-host leaf (see leaf-cache.ts).
 *
 * Two files in one directory: ca.pem (certificate, 0644, handed to sandboxes) and ca.key
 * (PKCS#8 private key, 0600). They are created once and then only ever read: a missing half is an
 * error for the operator to resolve, never a reason to generate a new CA over an old one, because
 * every sandbox that trusts the old certificate would silently stop working.
 */
import { KeyObject, X509Certificate as NodeX509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { link, lstat, mkdir, open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomSerialHex, webcrypto, x509 } from './x509.js';
import { SandgateError } from '../errors.js';

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca.key';

const HOUR_MS = 60 * 60 * 1000;
/** Ten calendar years would drift with leap days; 3653 days covers them. */
const CA_VALIDITY_MS = 3653 * 24 * HOUR_MS;

/**
 * Subject in DER order: O first, CN last, as CAs conventionally encode it. Its RFC 4514 string
 * form, which lists RDNs last-first (§2.1), is "CN=sandgate interception CA,O=sandgate".
 */
const CA_NAME: x509.JsonName = [{ O: ['sandgate'] }, { CN: ['sandgate interception CA'] }];

export interface CaMaterial {
  /** The CA certificate, PEM, ending in a newline (safe to concatenate after a leaf). */
  readonly certPem: string;
  /** The CA private key, PKCS#8 PEM. */
  readonly keyPem: string;
  readonly cert: x509.X509Certificate;
  /** Private key as a non-extractable WebCrypto key, usable only for signing. */
  readonly key: CryptoKey;
  /** What to pass as `signingAlgorithm` when signing with `key`. */
  readonly signingAlgorithm: Algorithm | EcdsaParams;
  /** Hex key identifier of the CA (its SKI, or RFC 5280 §4.2.1.2 method 1 if it has none). */
  readonly keyId: string;
  readonly notAfter: Date;
}

export class CaError extends SandgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'CA', options);
    this.name = 'CaError';
  }
}

/**
 * Load the CA in `dir`, or create one if the directory holds neither file. Exactly one of the two
 * present is an error (see the module comment).
 */
export async function initCa(dir: string): Promise<{ created: boolean; material: CaMaterial }> {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  const [hasCert, hasKey] = await Promise.all([exists(certPath), exists(keyPath)]);
  if (hasCert && hasKey) return { created: false, material: await loadCa(dir) };
  if (hasCert !== hasKey) {
    const [present, missing] = hasCert ? [certPath, keyPath] : [keyPath, certPath];
    throw new CaError(
      `${missing} is missing but ${present} exists; restore ${missing}, or remove ${present} to generate a new CA (sandboxes trusting the old one must then be given the new ${CA_CERT_FILE}).`,
    );
  }
  return { created: true, material: await createCa(dir, certPath, keyPath) };
}

/** Load and validate the CA in `dir`; never creates anything. */
export async function loadCa(dir: string): Promise<CaMaterial> {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  const [certPem, keyPem] = await Promise.all([readText(certPath), readText(keyPath)]);

  let nodeCert: NodeX509Certificate;
  let cert: x509.X509Certificate;
  try {
    // Node (OpenSSL) is the reference parser: it is what will later build chains with this cert.
    nodeCert = new NodeX509Certificate(certPem);
    cert = new x509.X509Certificate(new Uint8Array(nodeCert.raw));
  } catch (err) {
    throw new CaError(`${certPath} is not a PEM X.509 certificate (${errText(err)}).`, { cause: err });
  }
  if (!nodeCert.ca) {
    throw new CaError(`${certPath} is not a CA certificate (basicConstraints CA:TRUE is missing).`);
  }
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    // RFC 5280 §4.2.1.3: without keyCertSign, verifiers must reject everything it signs.
    throw new CaError(`${certPath} has a keyUsage extension without keyCertSign, so it cannot sign certificates.`);
  }
  if (cert.notAfter.getTime() <= Date.now()) {
    throw new CaError(`${certPath} expired on ${cert.notAfter.toISOString()}; generate a new CA.`);
  }

  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(keyPem);
  } catch (err) {
    throw new CaError(`${keyPath} is not an unencrypted PEM private key (${errText(err)}).`, { cause: err });
  }
  if (!nodeCert.checkPrivateKey(keyObject)) {
    throw new CaError(`${keyPath} does not match the public key in ${certPath}.`);
  }
  const { importAlg, signingAlgorithm } = webCryptoAlgorithms(keyObject, keyPath);
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, importAlg, false, ['sign']);

  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const keyId = ski ? ski.keyId : (await x509.SubjectKeyIdentifierExtension.create(cert.publicKey)).keyId;

  return Object.freeze({
    certPem: withNewline(nodeCert.toString()),
    keyPem: withNewline(keyObject.export({ type: 'pkcs8', format: 'pem' }).toString()),
    cert,
    key,
    signingAlgorithm,
    keyId,
    notAfter: cert.notAfter,
  });
}

async function createCa(dir: string, certPath: string, keyPath: string): Promise<CaMaterial> {
  // Mode applies only if we create it; an existing directory is the operator's choice.
  await mkdir(dir, { recursive: true, mode: 0o700 });

  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: CA_NAME,
    // An hour of slack for sandboxes whose clock runs behind the host's.
    notBefore: new Date(now - HOUR_MS),
    notAfter: new Date(now + CA_VALIDITY_MS),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      // pathLen 0: this CA signs leaves only, never another CA (RFC 5280 §4.2.1.9).
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });

  const keyPem = withNewline(KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString());
  const certPem = withNewline(cert.toString('pem'));

  // Key first: if writing the certificate fails we remove the key again, so a failed init leaves
  // the directory as it was. A crash in between leaves only ca.key, which initCa reports.
  await publishFile(keyPath, keyPem, 0o600);
  try {
    await publishFile(certPath, certPem, 0o644);
  } catch (err) {
    await unlink(keyPath).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
  return loadCa(dir);
}

/**
 * Write `data` to `finalPath` so that the name either does not exist or holds the whole content.
 * The temp file is created with O_CREAT|O_EXCL and its final mode in the same open(2), so a key is
 * never readable by others even for an instant (the umask can only narrow the mode; fchmod then
 * sets it exactly). It is published with link(2) rather than rename(2): link fails with EEXIST
 * instead of replacing a file another process created meanwhile, so an existing CA is never
 * overwritten.
 */
async function publishFile(finalPath: string, data: string, mode: number): Promise<void> {
  const tmp = path.join(path.dirname(finalPath), `.${path.basename(finalPath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.chmod(mode);
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, finalPath);
  } catch (err) {
    if (isErrno(err, 'EEXIST')) {
      throw new CaError(`${finalPath} appeared while a new CA was being generated (is another sandgate initialising the same directory?).`, { cause: err });
    }
    throw new CaError(`cannot write ${finalPath} (${errText(err)}).`, { cause: err });
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Make the new directory entries durable, not just the file contents. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function webCryptoAlgorithms(
  key: KeyObject,
  keyPath: string,
): { importAlg: EcKeyImportParams | RsaHashedImportParams; signingAlgorithm: Algorithm | EcdsaParams } {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    // Hash sized to the curve (RFC 5480 §4); P-256 with SHA-256 is what initCa generates.
    const known: Record<string, [string, string]> = {
      prime256v1: ['P-256', 'SHA-256'],
      secp384r1: ['P-384', 'SHA-384'],
      secp521r1: ['P-521', 'SHA-512'],
    };
    const pick = curve === undefined ? undefined : known[curve];
    if (pick) {
      return { importAlg: { name: 'ECDSA', namedCurve: pick[0] }, signingAlgorithm: { name: 'ECDSA', hash: pick[1] } };
    }
    throw new CaError(`${keyPath} is an EC key on curve ${curve ?? 'unknown'}; only P-256, P-384 and P-521 are supported.`);
  }
  if (key.asymmetricKeyType === 'rsa') {
    return {
      importAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
    };
  }
  throw new CaError(`${keyPath} is a ${key.asymmetricKeyType ?? 'unknown'} key; only EC (P-256/384/521) and RSA CA keys are supported.`);
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw new CaError(`cannot access ${file} (${errText(err)}).`, { cause: err });
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new CaError(`${file} does not exist (no interception CA has been initialised there).`, { cause: err });
    throw new CaError(`cannot read ${file} (${errText(err)}).`, { cause: err });
  }
}

function withNewline(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
