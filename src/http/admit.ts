import type { ConnInfo } from '../net/conn-info.js';
import { who } from '../net/conn-info.js';
import type { CompiledRule, RequestFacts } from '../policy/policy.js';
import type { CredentialSource } from '../creds/credential.js';
import type { AuditFields } from '../audit/logger.js';
import { hostFromHeader, pathOnly } from './headers.js';
import { QUARANTINED, tripwireReason } from '../control/quarantine.js';
import type { TripwireHit } from '../creds/tripwire.js';

/**
 * One request's verdict, before any byte goes upstream: shared by ordinary requests and
 * WebSocket upgrades, for plain HTTP and for TLS that sandgate terminated.
 */
export interface Admitted {
  readonly ok: true;
  readonly info: ConnInfo;
  /** Audit fields every line about this request carries. */
  readonly base: AuditFields;
  readonly host: string;
  readonly decision: 'allow' | 'would-deny';
  readonly reason: string | undefined;
  readonly rule: CompiledRule | undefined;
  /** A static credential, or a token source that forward() asks per request (docs/auth-service.md). */
  readonly credential: CredentialSource | undefined;
  /** Where the request goes: scheme, name (resolved by sandgate), port, Host header to send. */
  readonly upstream: { readonly tls: boolean; readonly host: string; readonly port: number; readonly hostHeader: string };
}

export interface Refused {
  readonly ok: false;
  readonly base: AuditFields;
  readonly host: string | undefined;
  readonly status: number;
  readonly error: string;
  readonly reason: string;
  /** Set when a credential's placeholder was in the request where it is not bound (src/creds/tripwire.ts). */
  readonly tripwire?: TripwireHit;
}

export type Admission = Admitted | Refused;

function countRaw(raw: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i] as string;
    if (k.length === name.length && k.toLowerCase() === name) n++;
  }
  return n;
}

/** The upstream TLS port for a plain-HTTP request to a `plainHttp` rule: 80 -> 443, else the same port. */
export function plainHttpUpstreamPort(dstPort: number): number {
  return dstPort === 80 ? 443 : dstPort;
}

/** What admission reads of a request: IncomingMessage has this shape, and so does the relay's. */
export interface RequestHead {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  /** Names and values alternating, as sent. */
  readonly rawHeaders: readonly string[];
  /** The first Host field's value. */
  readonly headers: { readonly host?: string | undefined };
}

/**
 * One request's admission: a quarantined sandbox is refused outright; otherwise the request is
 * decided on its facts (decide()), and then, when some credential has a placeholder, its head is
 * searched for one that the request's credential does not account for: that refuses it, whatever
 * the policy said (a tripwire, even in report mode: the placeholder is worthless upstream, and
 * its presence is the signal).
 */
export function admit(req: RequestHead, info: ConnInfo): Admission {
  const a = decide(req, info);
  const tw = info.rt.tripwire;
  if (tw === undefined || (!a.ok && a.reason === QUARANTINED)) return a;
  const bound = a.ok ? a.credential?.id : deniedBinding(a, info);
  const hit = tw.inRequest({ method: req.method ?? 'GET', url: req.url ?? '/', rawHeaders: req.rawHeaders }, bound);
  if (hit === undefined) return a;
  return { ok: false, base: a.base, host: a.host, status: 403, error: 'denied', reason: tripwireReason(hit, a.host), tripwire: hit };
}

/**
 * The credential a refused request would have been bound to: its own host's rule injects it, and
 * the request came the way that rule takes it (inside TLS for that very name, or plain HTTP where
 * the rule opts in), but a method or path rule refused it. Its placeholder there is the agent
 * calling its own API outside the allowed routes, not an exfiltration: a denial, never a
 * tripwire (under `onTripwire: quarantine` it would cut the sandbox off for a 403).
 */
function deniedBinding(a: Refused, info: ConnInfo): string | undefined {
  if (a.host === undefined || a.reason === QUARANTINED) return undefined;
  const rule = info.sandbox.policy.find(a.host, info.dstPort, 'http');
  if (rule === undefined || !rule.intercept || rule.inject === undefined) return undefined;
  const sameWay = info.sni !== undefined ? a.host === info.sni : rule.plainHttp === true;
  return sameWay ? rule.inject : undefined;
}

function decide(req: RequestHead, info: ConnInfo): Admission {
  const method = req.method ?? 'GET';
  const url = req.url ?? '/';
  const path = pathOnly(url);
  const intercepted = info.sni !== undefined;
  const base: AuditFields = { event: 'http', ...who(info), proto: intercepted ? 'tls' : 'http', alpn: info.alpn, method, path };
  const refuse = (status: number, error: string, reason: string, host?: string): Refused => ({ ok: false, base, host, status, error, reason });

  // Cut off until an operator releases it (src/control/quarantine.ts): nothing else is looked at.
  if (info.rt.quarantine.has(info.sandbox.name)) return refuse(403, 'denied', QUARANTINED);

  const hostCount = countRaw(req.rawHeaders, 'host');
  const host = hostFromHeader(req.headers.host);
  if (hostCount !== 1 || !host) return refuse(400, 'bad request', hostCount > 1 ? 'more than one Host header' : 'missing or invalid Host header');
  // origin-form only (RFC 9112 §3.2.1): an absolute-form target would let the request name a
  // second host that the upstream might honour over Host.
  if (!url.startsWith('/') && !(method === 'OPTIONS' && url === '*')) {
    return refuse(400, 'bad request', 'only origin-form request targets ("/path") are accepted', host);
  }
  if (method === 'CONNECT') return refuse(405, 'method not allowed', 'CONNECT is not supported', host);

  // Domain fronting: inside TLS that sandgate terminated, every request must name the host the
  // connection was admitted (and its credential chosen) for. Not relaxed in report mode: it is a
  // protocol integrity check, not a policy choice.
  if (intercepted && host !== info.sni) {
    return refuse(403, 'denied', `Host ${host} does not match the TLS server name ${info.sni} (domain fronting)`, host);
  }

  // Host, port, methods, paths, plainHttp: the policy decides on the request's facts.
  const facts: RequestFacts = { host, port: info.dstPort, method, path, intercepted };
  const verdict = info.sandbox.policy.requestVerdict(facts);
  if (verdict.decision === 'deny') return refuse(verdict.status, verdict.status === 400 ? 'bad request' : 'denied', verdict.reason, host);
  const hostHeader = req.headers.host ?? host;
  const { decision, reason, rule } = verdict;
  if (rule === undefined || (!intercepted && !rule.intercept)) {
    return { ok: true, info, base, host, decision, reason, rule, credential: undefined, upstream: { tls: false, host, port: info.dstPort, hostHeader } };
  }
  const port = intercepted ? info.dstPort : plainHttpUpstreamPort(info.dstPort);
  return {
    ok: true,
    info,
    base,
    host,
    decision,
    reason,
    rule,
    credential: rule.intercept && rule.inject !== undefined ? info.rt.credentials.get(rule.inject) : undefined,
    upstream: {
      tls: true,
      host,
      port,
      // Plain HTTP upgraded by sandgate: the Host the TLS origin expects (RFC 9110 §7.2).
      hostHeader: intercepted ? hostHeader : port === 443 ? host : `${host}:${port}`,
    },
  };
}
