import { STATUS_CODES } from 'node:http';

/** RFC 9110 §7.6.1: hop-by-hop fields never cross a proxy; plus anything `Connection` names. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

/** Host header -> normalised host name (port stripped, lowercase, no trailing dot). */
export function hostFromHeader(value: string | undefined): string | undefined {
  if (value === undefined || value.length === 0) return undefined;
  let h = value.trim().toLowerCase();
  if (h.startsWith('[')) return undefined; // IPv6 literal: never a policy name
  const colon = h.lastIndexOf(':');
  if (colon >= 0) {
    if (!/^\d{1,5}$/.test(h.slice(colon + 1))) return undefined;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.length > 0 ? h : undefined;
}

/** The path without the query string (audit lines never carry query strings: they may hold tokens). */
export function pathOnly(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/**
 * Adds the tokens of one Connection field value (RFC 9110 §7.6.1) to `set` (made if undefined).
 * Never Content-Length: the body is relayed as that field frames it (RFC 9112 §6.3), so the field
 * goes on with it; dropped, the body would be read as further messages (request smuggling upstream).
 */
export function addConnectionTokens(set: Set<string> | undefined, value: string): Set<string> {
  const s = set ?? new Set<string>();
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase();
    if (name !== 'content-length') s.add(name);
  }
  return s;
}

/**
 * A whole response from sandgate itself: a JSON body (`by: "sandgate"` added) an agent can read.
 * `extra`: more header lines, each ending in CRLF; `close` adds Connection: close.
 */
export function jsonResponse(status: number, body: Record<string, unknown>, close = true, extra = ''): string {
  const text = JSON.stringify({ ...body, by: 'sandgate' });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}${close ? 'Connection: close\r\n' : ''}\r\n${text}`;
}

/**
 * A response's transfer codings (RFC 9112 §6.1), all Transfer-Encoding fields joined, unless they
 * are exactly one `chunked`: sandgate decodes chunked framing and nothing else, and drops the field
 * as hop-by-hop, so a body under any other coding (gzip, deflate, compress, br, stacked, unknown)
 * would reach the sandbox still encoded and unscrubbed. Such responses are refused (502).
 * `undefined`: no Transfer-Encoding, or just chunked (any case).
 */
export function unrelayableTransferCoding(values: readonly string[]): string | undefined {
  if (values.length === 0) return undefined;
  const codings = values
    .join(',')
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c.length > 0);
  if (codings.length === 1 && codings[0] === 'chunked') return undefined;
  return codings.join(', ') || '(empty)';
}

/**
 * Whether a response field's name carries a secret (compared case-insensitively: field names are).
 * Masking a name would not give a valid field name, so such a response is refused instead.
 */
export function nameCarriesSecret(raw: readonly string[], needles: readonly string[]): boolean {
  let lowered: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    lowered ??= needles.filter((n) => n.length > 0).map((n) => n.toLowerCase());
    // Most names are shorter than any secret: no lower-casing for them.
    if (!lowered.some((n) => name.length >= n.length)) continue;
    const k = name.toLowerCase();
    for (const n of lowered) if (k.includes(n)) return true;
  }
  return false;
}
