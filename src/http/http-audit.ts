/**
 * The one builder of `http` audit lines: every request (answered, refused, failed, a WebSocket
 * upgrade) is one line of this shape. One object literal of a fixed shape, absent fields
 * undefined (the JSON line omits them): it runs once per request, and conditional spreads would
 * build a new hidden class each time.
 */
import type { AuditFields, Decision } from '../audit/logger.js';
import { maskFor, scrubString } from './scrub.js';

/** What one line says about a request beyond the fields every line about it carries (`base`). */
export interface HttpLineFacts {
  readonly host: string | undefined;
  readonly decision: Decision;
  readonly status: number;
  readonly ms?: number | undefined;
  readonly rule?: string | undefined;
  readonly credential?: string | undefined;
  readonly tokenRejected?: 'retried' | 'relayed' | undefined;
  /** Set when sandgate itself spoke TLS upstream for a plain-HTTP request. */
  readonly upstream?: string | undefined;
  readonly websocket?: true | undefined;
  readonly bytesIn?: number | undefined;
  readonly bytesOut?: number | undefined;
  readonly reason?: string | undefined;
  readonly error?: string | undefined;
  /** The credential's needles: a reason or error quoting the upstream is scrubbed of them. */
  readonly needles?: readonly string[] | undefined;
}

/**
 * Reasons quote upstream text, some of it lower-cased (content and transfer codings): a needle is
 * masked there whatever its case. Where lower-casing changes the length, the text is kept lower-cased.
 */
function scrubAnyCase(s: string, needles: readonly string[]): string {
  const low = s.toLowerCase();
  const folded = needles.map((n) => n.toLowerCase());
  if (low.length !== s.length) return scrubString(low, folded);
  let out = s;
  for (const n of folded) {
    for (let at = n.length > 0 ? low.indexOf(n) : -1; at >= 0; at = low.indexOf(n, at + n.length))
      out = out.slice(0, at) + maskFor(n.length) + out.slice(at + n.length);
  }
  return out;
}

/** `base`: event, who, proto, method, path (src/http/admit.ts). */
export function httpLine(base: AuditFields, f: HttpLineFacts): AuditFields {
  const needles = f.needles;
  return {
    event: base.event,
    sandbox: base.sandbox,
    user: base.user,
    src: base.src,
    dst: base.dst,
    proto: base.proto,
    alpn: base.alpn,
    method: base.method,
    path: base.path,
    host: f.host,
    decision: f.decision,
    rule: f.rule,
    credential: f.credential,
    tokenRejected: f.tokenRejected,
    upstream: f.upstream,
    websocket: f.websocket,
    status: f.status,
    bytesIn: f.bytesIn,
    bytesOut: f.bytesOut,
    ms: f.ms,
    reason: f.reason !== undefined && needles !== undefined ? scrubAnyCase(f.reason, needles) : f.reason,
    error: f.error !== undefined && needles !== undefined ? scrubAnyCase(f.error, needles) : f.error,
  };
}
