/**
 * The one place @peculiar/x509 is loaded. It relies on decorator metadata, so `reflect-metadata`
 * must be evaluated before it (ESM evaluates imports in order), and it needs a WebCrypto
 * provider, which is Node's own. Every module in src/tls imports x509 from here rather than from
 * the package, so no import order elsewhere can break that.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509, webcrypto };

/**
 * A random 16-byte serial as hex. RFC 5280 §4.1.2.2: a positive INTEGER of at most 20 octets,
 * unique per issuer; CA/B Forum BR §7.1 asks for at least 64 bits of CSPRNG output. Forcing the
 * first octet into 0x40..0x7f keeps the value positive (no 0x00 sign octet needed) and exactly 16
 * octets long (a leading zero octet would be non-minimal DER, which OpenSSL rejects), at the cost
 * of 2 of the 128 random bits.
 */
export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x3f) | 0x40;
  return b.toString('hex');
}
