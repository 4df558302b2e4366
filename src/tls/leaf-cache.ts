/**
 * Per-host leaf certificates for TLS interception, served as ready-made SecureContexts.
 *
 * Minting costs an ECDSA signature plus an OpenSSL context, so contexts are cached: an LRU bounded
 * by `max`, each entry fresh until `renewBeforeMs` before its certificate expires. All leaves share
 * one key pair (as mockttp and httpjail do): key generation is the expensive half of minting, and a
 * per-host key buys nothing here because the CA key, which signs them all, lives in the same
 * process anyway.
 */
import { KeyObject, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { isHostName } from '../policy/host-name.js';
import type { CaMaterial } from './ca.js';
import { randomSerialHex, webcrypto, x509 } from './x509.js';
import { SandgateError } from '../errors.js';

export interface LeafCacheOptions {
  /** Most contexts kept; the least recently used is dropped beyond it. Default 1024. */
  max?: number;
  /** Leaf lifetime from minting. Default 7 days. */
  validityMs?: number;
  /** Re-mint once a leaf is this close to expiry. Default 1 day. */
  renewBeforeMs?: number;
  /** Clock (ms since epoch) used for certificate dates and freshness; tests inject one. */
  now?: () => number;
  /**
   * TLS session ticket keys (48 bytes) for every leaf context. One set for all names and, with
   * `workers`, for every process (the primary makes it), so a sandbox's ticket resumes wherever
   * its next connection lands and whichever context serves it. Default: random, per cache.
   */
  ticketKeys?: Buffer;
}

export interface LeafCacheStats {
  /** Lookups (get or peek) answered from the cache. */
  hits: number;
  /** get calls that found no fresh context (whether they minted or joined a mint in flight). */
  misses: number;
  /** Certificates actually minted. */
  mints: number;
  /** Fresh entries dropped to stay within `max`. */
  evictions: number;
}

export class LeafError extends SandgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'TLS_LEAF', options);
    this.name = 'LeafError';
  }
}

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;
/** ub-common-name (RFC 5280 Appendix A.1): longer host names cannot go in the CN. */
const MAX_CN_LENGTH = 64;

interface Entry {
  readonly ctx: tls.SecureContext;
  /** From this instant (per `now`) the entry is no longer served and get mints a replacement. */
  readonly renewAt: number;
}

interface LeafKey {
  /** SubjectPublicKeyInfo DER, embedded in every leaf. */
  readonly spki: ArrayBuffer;
  readonly pem: string;
}

export class LeafCache {
  readonly #ca: CaMaterial;
  readonly #max: number;
  readonly #validityMs: number;
  readonly #renewBeforeMs: number;
  readonly #now: () => number;
  /** Extensions identical for every leaf, built once. */
  readonly #fixedExtensions: readonly x509.Extension[];
  #leafKey: Promise<LeafKey> | undefined;
  /** Map iteration order is insertion order: the first key is the least recently used. */
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<tls.SecureContext>>();
  #hits = 0;
  #misses = 0;
  #mints = 0;
  #evictions = 0;
  #ticketKeys: Buffer;

  /** The shared leaf key is generated on first use; `create` generates it up front instead. */
  constructor(ca: CaMaterial, opts: LeafCacheOptions = {}) {
    const max = opts.max ?? 1024;
    const validityMs = opts.validityMs ?? 7 * DAY_MS;
    const renewBeforeMs = opts.renewBeforeMs ?? DAY_MS;
    if (!Number.isSafeInteger(max) || max < 1) throw new LeafError(`max must be a positive integer, got ${max}.`);
    if (!(validityMs > 0)) throw new LeafError(`validityMs must be positive, got ${validityMs}.`);
    if (!(renewBeforeMs >= 0 && renewBeforeMs < validityMs)) {
      throw new LeafError(`renewBeforeMs must be at least 0 and less than validityMs (${validityMs}), got ${renewBeforeMs}.`);
    }
    if (opts.ticketKeys !== undefined && opts.ticketKeys.length !== 48) throw new LeafError(`ticketKeys must be 48 bytes, got ${opts.ticketKeys.length}.`);
    this.#ticketKeys = opts.ticketKeys ?? randomBytes(48);
    this.#ca = ca;
    this.#max = max;
    this.#validityMs = validityMs;
    this.#renewBeforeMs = renewBeforeMs;
    this.#now = opts.now ?? Date.now;
    this.#fixedExtensions = [
      // Marked critical as public CAs do; RFC 5280 §4.2.1.9 allows either for end entities.
      new x509.BasicConstraintsExtension(false, undefined, true),
      // ECDSA keys sign the handshake (RFC 8446 §4.4.3); they never encipher.
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      // Lets clients pick the right issuer when the CA is ever re-keyed (RFC 5280 §4.2.1.1).
      new x509.AuthorityKeyIdentifierExtension(ca.keyId),
    ];
  }

  static async create(ca: CaMaterial, opts?: LeafCacheOptions): Promise<LeafCache> {
    const cache = new LeafCache(ca, opts);
    await cache.#key();
    return cache;
  }

  get size(): number {
    return this.#entries.size;
  }

  stats(): LeafCacheStats {
    return { hits: this.#hits, misses: this.#misses, mints: this.#mints, evictions: this.#evictions };
  }

  /**
   * New TLS session ticket keys for every context, cached and minted from now on (forward
   * secrecy: a ticket key that leaks later opens only the tickets of its own period). Node takes one
   * key set per context, so tickets issued under the old keys no longer resume: their clients make
   * one full handshake. Tickets live 300 s (Node's default session timeout), so a rotation costs a
   * full handshake only to clients that resumed within the last five minutes before it.
   */
  rotateTicketKeys(keys: Buffer): void {
    if (keys.length !== 48) throw new LeafError(`ticketKeys must be 48 bytes, got ${keys.length}.`);
    this.#ticketKeys = keys;
    for (const e of this.#entries.values()) setTicketKeys(e.ctx, keys);
  }

  /**
   * The cached context for `host` if it is fresh, else undefined. A miss is not counted here: the
   * caller's follow-up get counts it, so `peek(h) ?? await get(h)` counts each lookup once.
   */
  peek(host: string): tls.SecureContext | undefined {
    const entry = this.#entries.get(host);
    if (entry === undefined || this.#now() >= entry.renewAt) return undefined;
    this.#entries.delete(host);
    this.#entries.set(host, entry);
    this.#hits++;
    return entry.ctx;
  }

  /**
   * A SecureContext presenting a leaf for exactly `host` (a normalised DNS name, as sent in SNI).
   * Concurrent calls for a host share one mint; a failed mint is not cached, so the next call
   * tries again.
   */
  get(host: string): Promise<tls.SecureContext> {
    const cached = this.peek(host);
    if (cached !== undefined) return Promise.resolve(cached);
    const problem = hostProblem(host);
    if (problem !== undefined) return Promise.reject(new LeafError(problem));
    this.#misses++;
    const pending = this.#inflight.get(host);
    if (pending !== undefined) return pending;
    const mint = this.#mint(host).finally(() => this.#inflight.delete(host));
    this.#inflight.set(host, mint);
    return mint;
  }

  async #mint(host: string): Promise<tls.SecureContext> {
    const key = await this.#key();
    const now = this.#now();
    // Never outlive the CA: a chain is only valid while every certificate in it is (RFC 5280 §6.1.3).
    const notAfter = Math.min(now + this.#validityMs, this.#ca.notAfter.getTime());
    if (notAfter <= now) {
      throw new LeafError(`cannot issue a certificate for ${host}: the interception CA expired on ${this.#ca.notAfter.toISOString()}.`);
    }
    // RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical. Clients match the SAN
    // only (RFC 6125 §6.4.4); the CN is there for humans reading the certificate.
    const fitsCn = host.length <= MAX_CN_LENGTH;
    let ctx: tls.SecureContext;
    const keys = this.#ticketKeys;
    try {
      ctx = await this.#issue(host, key, now, notAfter, fitsCn, keys);
    } catch (err) {
      // WebCrypto and OpenSSL failures (DOMException, plain objects) become one typed error.
      const detail = err instanceof Error ? err.message : String(err);
      throw new LeafError(`cannot issue a certificate for ${host}: ${detail}`, { cause: err });
    }
    this.#mints++;
    // Keys rotated while this leaf was being minted: it must not keep the old ones.
    if (keys !== this.#ticketKeys) setTicketKeys(ctx, this.#ticketKeys);
    // Serve the entry until renewBeforeMs before expiry, but for at least half its lifetime, so a
    // leaf cut short by the CA's own expiry is still cached rather than re-minted on every call.
    const lifetime = notAfter - now;
    this.#store(host, { ctx, renewAt: notAfter - Math.min(this.#renewBeforeMs, lifetime / 2) });
    return ctx;
  }

  async #issue(host: string, key: LeafKey, now: number, notAfter: number, fitsCn: boolean, ticketKeys: Buffer): Promise<tls.SecureContext> {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      ...(fitsCn ? { subject: [{ CN: [host] }] } : {}),
      issuer: this.#ca.cert.subjectName,
      // An hour of slack for clients whose clock runs behind ours.
      notBefore: new Date(now - HOUR_MS),
      notAfter: new Date(notAfter),
      publicKey: key.spki,
      signingKey: this.#ca.key,
      signingAlgorithm: this.#ca.signingAlgorithm,
      extensions: [
        ...this.#fixedExtensions,
        // dNSName only, never a wildcard: the caller passes the exact SNI name.
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: host }], !fitsCn),
      ],
    });
    const leafPem = cert.toString('pem');
    return tls.createSecureContext({
      // The CA goes in the chain too; it is self-signed, so clients that already trust it ignore it.
      cert: `${leafPem}${leafPem.endsWith('\n') ? '' : '\n'}${this.#ca.certPem}`,
      key: key.pem,
      minVersion: 'TLSv1.2',
      ticketKeys,
    });
  }

  #store(host: string, entry: Entry): void {
    this.#entries.delete(host);
    this.#entries.set(host, entry);
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
      this.#evictions++;
    }
  }

  #key(): Promise<LeafKey> {
    if (this.#leafKey === undefined) {
      const pending = generateLeafKey();
      // A failed generation is not remembered, so a later call can retry.
      pending.catch(() => {
        if (this.#leafKey === pending) this.#leafKey = undefined;
      });
      this.#leafKey = pending;
    }
    return this.#leafKey;
  }
}

async function generateLeafKey(): Promise<LeafKey> {
  const pair = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  return {
    spki: await webcrypto.subtle.exportKey('spki', pair.publicKey),
    pem: KeyObject.from(pair.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/** Node's native context takes new keys for the handshakes that start after this call. */
function setTicketKeys(ctx: tls.SecureContext, keys: Buffer): void {
  (ctx.context as { setTicketKeys(k: Buffer): void }).setTicketKeys(keys);
}

/** Why `host` cannot be put in a leaf, or undefined. */
function hostProblem(host: string): string | undefined {
  // SNI never carries IP literals (RFC 6066 §3), and we only ever issue dNSName SANs.
  if (isIP(host) !== 0) return `refusing to issue a certificate for IP address ${host}.`;
  if (host.includes('*')) return `refusing to issue a wildcard certificate (${host}).`;
  if (!isHostName(host)) return `refusing to issue a certificate for ${JSON.stringify(host)}: not a normalised DNS host name.`;
  return undefined;
}
