import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1: hop-by-hop fields never cross a proxy; plus anything `Connection` names. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate',
]);

export function forwardHeaders(src: IncomingHttpHeaders, keepUpgrade = false): OutgoingHttpHeaders {
  const named = new Set<string>();
  const conn = src.connection;
  if (typeof conn === 'string') for (const t of conn.split(',')) named.add(t.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(src)) {
    if (v === undefined) continue;
    if (HOP_BY_HOP.has(k) || named.has(k)) {
      if (keepUpgrade && (k === 'upgrade' || k === 'connection')) out[k] = v;
      continue;
    }
    out[k] = v;
  }
  return out as OutgoingHttpHeaders;
}

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
