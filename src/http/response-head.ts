/**
 * An upstream response's head, read and rewritten for the sandbox: the facts that decide its
 * framing, why it may have to be refused, and the head the sandbox is sent (hop-by-hop fields
 * dropped, values scrubbed of the credential).
 */
import { addConnectionTokens, HOP_BY_HOP, nameCarriesSecret, unrelayableTransferCoding } from './headers.js';
import { scrubString } from './scrub.js';

/** An upstream response's head as the relay reads it. */
export interface ResponseFacts {
  readonly length: string | undefined;
  readonly chunked: boolean;
  /** Transfer-Encoding values, in order (empty: none). */
  readonly te: readonly string[];
  readonly encoding: string | undefined;
  /** Fields the Connection header names (RFC 9110 §7.6.1). */
  readonly named: Set<string> | undefined;
}

/** How a response body reaches the sandbox: none, as is, re-chunked by sandgate, or delimited by the close. */
export type Framing = 'none' | 'raw' | 'chunked' | 'close';

const NONE: readonly string[] = [];

/** `list` (codings so far, normalised: lower case, ", "-separated, no empties) with `value`'s appended. */
export function addCodings(list: string | undefined, value: string): string {
  let out = list ?? '';
  for (const c of value.split(',')) {
    const t = c.trim().toLowerCase();
    if (t.length > 0) out = out.length > 0 ? `${out}, ${t}` : t;
  }
  return out;
}

/** Response head facts: framing, coding, and the fields Connection names (hop-by-hop too). */
export function responseFacts(raw: readonly string[]): ResponseFacts {
  let length: string | undefined;
  let chunked = false;
  let te: string[] | undefined;
  let encoding: string | undefined;
  let named: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    // Length first: most names are none of these, and lower-casing allocates.
    switch (k.length) {
      case 10:
        if (k.toLowerCase() === 'connection') named = addConnectionTokens(named, raw[i + 1] as string);
        break;
      case 14:
        if (k.toLowerCase() === 'content-length') length = raw[i + 1];
        break;
      // Every field counts: codings split over several fields are one list (RFC 9110 §5.3, §8.4).
      case 16:
        if (k.toLowerCase() === 'content-encoding') encoding = addCodings(encoding, raw[i + 1] as string);
        break;
      case 17:
        if (k.toLowerCase() === 'transfer-encoding') {
          chunked = true;
          (te ??= []).push(raw[i + 1] as string);
        }
        break;
      default:
        break;
    }
  }
  return { length, chunked, te: te ?? NONE, encoding, named };
}

/** The declared Content-Length of a body framed by it (-1: none, bodyless, or framed otherwise). */
export function declaredLength(facts: ResponseFacts, bodyless: boolean): number {
  if (bodyless || facts.length === undefined || facts.chunked) return -1;
  const n = Number(facts.length);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}

/**
 * Why a response head cannot be relayed (its body's transfer coding, or a secret in a field name),
 * or undefined. For the audit line; the sandbox is told only that it was refused.
 */
export function refusal(facts: ResponseFacts, raw: readonly string[], bodyless: boolean, needles: readonly string[] | undefined): string | undefined {
  const coding = bodyless ? undefined : unrelayableTransferCoding(facts.te);
  if (coding !== undefined) return `upstream sent Transfer-Encoding ${coding}, which sandgate does not relay`;
  if (needles !== undefined && nameCarriesSecret(raw, needles)) return 'upstream sent a header field whose name carries the credential';
  return undefined;
}

/** Content codings sandgate can decode to scrub (stacked codings, zstd, compress... cannot). */
export function decodable(coding: string): boolean {
  return coding === 'gzip' || coding === 'x-gzip' || coding === 'deflate' || coding === 'br';
}

/** The content coding a body to be scrubbed must be decoded from, or undefined (identity, none, empty body). */
export function codingToDecode(facts: ResponseFacts, bodyless: boolean): string | undefined {
  if (bodyless || facts.length === '0') return undefined;
  const enc = facts.encoding;
  return enc !== undefined && enc !== 'identity' && enc !== '' ? enc : undefined;
}

/** Bit n set: a name of length n (mod 32) may be one responseHead drops (hop-by-hop, or Content-Encoding/-Length). */
const DROP_LENGTHS = [...HOP_BY_HOP, 'content-encoding', 'content-length'].reduce((m, n) => m | (1 << (n.length & 31)), 0);

/**
 * The head the sandbox gets: always HTTP/1.1, hop-by-hop fields and those Connection names
 * dropped, values (and the reason phrase) scrubbed; a decoded body loses its Content-Encoding and
 * Content-Length (it is sent chunked); sandgate's own framing and connection fields added.
 */
export function responseHead(
  status: number,
  message: string,
  raw: readonly string[],
  facts: ResponseFacts,
  needles: readonly string[] | undefined,
  decoded: boolean,
  framing: Framing,
  keepAlive: boolean,
  http10: boolean,
): string {
  let out = `HTTP/1.1 ${status} ${needles !== undefined ? scrubString(message, needles) : message}\r\n`;
  // A name is lower-cased (a new string, then a hash) only if its length is one a dropped name has:
  // most fields of a response (Date, Server, Content-Type...) are kept without either.
  let lengths = DROP_LENGTHS;
  if (facts.named !== undefined) for (const n of facts.named) lengths |= 1 << (n.length & 31);
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    if ((lengths & (1 << (k.length & 31))) !== 0) {
      const l = k.toLowerCase();
      if (HOP_BY_HOP.has(l) || facts.named?.has(l) === true) continue;
      // Decoded bodies are sent chunked: their coding and length are the upstream's, not these bytes'.
      if (decoded && (l === 'content-encoding' || l === 'content-length')) continue;
    }
    const v = raw[i + 1] as string;
    out += `${k}: ${needles !== undefined ? scrubString(v, needles) : v}\r\n`;
  }
  if (framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (!keepAlive) out += 'Connection: close\r\n';
  else if (http10) out += 'Connection: keep-alive\r\n';
  return out + '\r\n';
}
