/**
 * AWS Signature Version 4, the pure part: canonical request, string to sign, signing key and
 * signatures, for headers, presigned queries and aws-chunked bodies. Written from the AWS
 * "Signature Version 4 signing process" reference (docs.aws.amazon.com/IAM/latest/UserGuide/
 * reference_sigv4-*.html) and the S3 API reference's "Signature Calculations for the Authorization
 * Header: Transferring Payload in Multiple Chunks" (sigv4-streaming); checked against
 * @smithy/signature-v4 in test/unit/sigv4.test.ts. No I/O, no clock: the date is an argument.
 */
import { createHash, createHmac } from 'node:crypto';

export const ALGORITHM = 'AWS4-HMAC-SHA256';
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';
/** SHA-256 of the empty string: the payload hash of a request without a body. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/**
 * Never signed (the SDKs' list): hop-by-hop fields a proxy may change (RFC 9110 §7.6.1), and
 * fields clients add or tracing rewrites. Authorization carries the signature itself.
 */
const UNSIGNABLE: ReadonlySet<string> = new Set([
  'authorization',
  'cache-control',
  'connection',
  'expect',
  'from',
  'keep-alive',
  'max-forwards',
  'pragma',
  'referer',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'user-agent',
  'x-amzn-trace-id',
]);

export function signable(lowerName: string): boolean {
  return !UNSIGNABLE.has(lowerName) && !lowerName.startsWith('proxy-') && !lowerName.startsWith('sec-');
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** "20150830T123600Z" and "20150830" (ISO 8601 basic format, UTC). */
export function amzDate(ms: number): { long: string; short: string } {
  const long = new Date(ms)
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
  return { long, short: long.slice(0, 8) };
}

export function credentialScope(short: string, region: string, service: string): string {
  return `${short}/${region}/${service}/aws4_request`;
}

/** kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
export function signingKey(secretAccessKey: string, short: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, short), region), service), 'aws4_request');
}

/** RFC 3986 unreserved characters stay; everything else is %XX with upper-case hex (the SigV4 UriEncode). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The canonical URI of a request-target's path as it is on the wire (already percent-encoded
 * once by the client). S3 signs that path as is; every other service normalizes it (RFC 3986
 * §5.2.4 dot segments, empty segments dropped) and encodes each segment a second time.
 */
export function canonicalUri(wirePath: string, s3: boolean): string {
  if (wirePath === '') return '/';
  if (s3) return wirePath;
  const out: string[] = [];
  for (const seg of wirePath.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  const norm = `${wirePath.startsWith('/') ? '/' : ''}${out.join('/')}${out.length > 0 && wirePath.endsWith('/') ? '/' : ''}`;
  return uriEncode(norm).replace(/%2F/g, '/');
}

/** A query string's parameters, decoded, in order (a name without "=" has the value ""). */
export function parseQuery(query: string): [string, string][] {
  const out: [string, string][] = [];
  if (query === '') return out;
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    out.push(eq < 0 ? [decode(part), ''] : [decode(part.slice(0, eq)), decode(part.slice(eq + 1))]);
  }
  return out;
}

/** Parameters UriEncoded and sorted by name, then value; X-Amz-Signature left out (it signs the rest). */
export function canonicalQuery(params: readonly (readonly [string, string])[]): string {
  return params
    .filter(([k]) => k.toLowerCase() !== 'x-amz-signature')
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/**
 * Canonical headers of the fields named in `names` (lower-case): values trimmed, inner runs of
 * spaces collapsed, a repeated field's values joined with ",", sorted by name.
 */
export function canonicalHeaders(fields: readonly (readonly [string, string])[], names: ReadonlySet<string>): { text: string; signed: string } {
  const byName = new Map<string, string[]>();
  for (const [k, v] of fields) {
    const l = k.toLowerCase();
    if (!names.has(l)) continue;
    const clean = v
      .replace(/[\r\n]/g, ' ')
      .replace(/[ \t]+/g, ' ')
      .trim();
    const list = byName.get(l);
    if (list) list.push(clean);
    else byName.set(l, [clean]);
  }
  const sorted = [...byName.keys()].sort();
  return { text: sorted.map((n) => `${n}:${(byName.get(n) as string[]).join(',')}\n`).join(''), signed: sorted.join(';') };
}

export interface Signable {
  readonly method: string;
  /** Path as sent, percent-encoded (no query). */
  readonly path: string;
  /** Query parameters, decoded. */
  readonly query: readonly (readonly [string, string])[];
  /** Every field sent; those named in `signedNames` are signed. */
  readonly fields: readonly (readonly [string, string])[];
  readonly signedNames: ReadonlySet<string>;
  /** Hex SHA-256 of the body, or UNSIGNED-PAYLOAD, or a STREAMING-* marker. */
  readonly payloadHash: string;
}

export interface Signature {
  readonly signature: string;
  readonly signedHeaders: string;
  readonly canonicalRequest: string;
}

/** The canonical request, the string to sign over its hash, and the signature with `key`. */
export function sign(r: Signable, key: Buffer, long: string, scope: string, s3: boolean): Signature {
  const h = canonicalHeaders(r.fields, r.signedNames);
  const canonicalRequest = `${r.method}\n${canonicalUri(r.path, s3)}\n${canonicalQuery(r.query)}\n${h.text}\n${h.signed}\n${r.payloadHash}`;
  // Header values are byte strings (latin1, as parsed and as written); everything else is ASCII.
  // AWS hashes the bytes that were sent, so the canonical request is hashed as latin1, not UTF-8.
  const toSign = `${ALGORITHM}\n${long}\n${scope}\n${sha256Hex(Buffer.from(canonicalRequest, 'latin1'))}`;
  return { signature: createHmac('sha256', key).update(toSign, 'utf8').digest('hex'), signedHeaders: h.signed, canonicalRequest };
}

/** One aws-chunked chunk's signature, chained from the previous one (the seed is the request's). */
export function chunkSignature(key: Buffer, long: string, scope: string, previous: string, dataHash: string): string {
  const toSign = `${ALGORITHM}-PAYLOAD\n${long}\n${scope}\n${previous}\n${EMPTY_SHA256}\n${dataHash}`;
  return createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
}

/** The trailer's signature: over the trailing fields, each "name:value\n", chained from the last chunk's. */
export function trailerSignature(key: Buffer, long: string, scope: string, previous: string, trailerText: string): string {
  const toSign = `${ALGORITHM}-TRAILER\n${long}\n${scope}\n${previous}\n${sha256Hex(trailerText)}`;
  return createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
}

/** The parts of an `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...` value. */
export interface ParsedCredential {
  readonly keyId: string;
  readonly region: string | undefined;
  readonly service: string | undefined;
}

/** `KEY/DATE/REGION/SERVICE/aws4_request` (also X-Amz-Credential's value). */
export function parseCredential(v: string): ParsedCredential {
  const parts = v.split('/');
  return { keyId: parts[0] ?? '', region: parts[2], service: parts[3] };
}

/** The Authorization value's algorithm and credential; undefined algorithm: not SigV4 at all. */
export function parseAuthorization(v: string): { algorithm: string; credential: ParsedCredential | undefined } {
  const t = v.trim();
  const sp = t.indexOf(' ');
  const algorithm = sp < 0 ? t : t.slice(0, sp);
  const m = /(?:^|[\s,])Credential=([^,\s]*)/.exec(t.slice(sp + 1));
  return { algorithm, credential: m?.[1] !== undefined ? parseCredential(m[1]) : undefined };
}
