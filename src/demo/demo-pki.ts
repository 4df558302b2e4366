/**
 * The demo's stand-in for the public Web PKI: a throwaway root ("sandgate demo public CA") and
 * server certificates for the fake upstreams, minted at demo time so the demo needs nothing but
 * dist/ (no openssl, no test fixtures).
 *
 * This is deliberately not sandgate's interception CA: it plays the CAs real API servers get their
 * certificates from. The sandbox trusts it (curl --cacert), so an HTTPS call that sandgate passes
 * through untouched verifies, and one that anything in between decrypted would not.
 */
import { KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomSerialHex, webcrypto, x509 } from '../tls/x509.js';

const HOUR_MS = 60 * 60 * 1000;
/** A demo lives for seconds; a day is plenty, and an hour of back-dating absorbs clock skew. */
const VALIDITY_MS = 24 * HOUR_MS;
const SIGNING: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const KEY_ALG: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };

export interface DemoPki {
  /** PEM file of the demo root, for the sandbox's clients (curl --cacert, Node `ca`). */
  readonly caFile: string;
  /**
   * Mints a server certificate for `names` (dNSName SANs) and writes `<tag>.pem` (leaf then root)
   * and `<tag>.key` (PKCS#8, mode 0600) into the PKI's directory.
   */
  issue(tag: string, names: readonly string[]): Promise<{ certFile: string; keyFile: string }>;
}

function pkcs8Pem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString();
}

function withNewline(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

/** Creates the root in `dir` (which the caller owns and removes). */
export async function createDemoPki(dir: string): Promise<DemoPki> {
  const now = Date.now();
  const notBefore = new Date(now - HOUR_MS);
  const notAfter = new Date(now + VALIDITY_MS);
  const caKeys = await webcrypto.subtle.generateKey(KEY_ALG, true, ['sign', 'verify']);
  const caSki = await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ O: ['sandgate demo'] }, { CN: ['sandgate demo public CA'] }],
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: SIGNING,
    extensions: [
      // A root that signs leaves only (RFC 5280 §4.2.1.9 pathLenConstraint 0).
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      caSki,
    ],
  });
  const caPem = withNewline(ca.toString('pem'));
  const caFile = path.join(dir, 'demo-ca.pem');
  await writeFile(caFile, caPem, { mode: 0o644 });

  return {
    caFile,
    async issue(tag, names) {
      const keys = await webcrypto.subtle.generateKey(KEY_ALG, true, ['sign', 'verify']);
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerialHex(),
        subject: [{ CN: [names[0] ?? tag] }],
        issuer: ca.subjectName,
        notBefore,
        notAfter,
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: SIGNING,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          // ECDSA server keys only sign the handshake (RFC 8446 §4.4.3).
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          // Clients match the SAN only (RFC 6125 §6.4.4); the CN is for people reading it.
          new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value }))),
          new x509.AuthorityKeyIdentifierExtension(caSki.keyId),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      const certFile = path.join(dir, `${tag}.pem`);
      const keyFile = path.join(dir, `${tag}.key`);
      await writeFile(certFile, withNewline(leaf.toString('pem')) + caPem, { mode: 0o644 });
      await writeFile(keyFile, pkcs8Pem(keys.privateKey), { mode: 0o600 });
      return { certFile, keyFile };
    },
  };
}
