/**
 * What to do with an accepted connection once its first bytes are known: a pure decision on the
 * connection's facts (who, where) and what the peek found, carried out by src/net/connection.ts.
 * Raw TCP rules are decided before any byte is read (server-speaks-first protocols), so they are
 * not this function's concern; neither is the per-request decision of plain HTTP
 * (src/http/admit.ts).
 */
import type { CompiledRule } from '../policy/policy.js';
import { tripwireReason } from '../control/quarantine.js';
import type { ConnInfo } from './conn-info.js';
import type { Peeked } from './peek.js';
import type { TlsAlert } from './tls-alert.js';
import type { TripwireHit } from '../creds/tripwire.js';

export type Route =
  /**
   * Refused, nothing sent upstream; the `conn` line says why. `alert`: the TLS alert the client is
   * sent before the close (src/net/tls-alert.ts); undefined: a reset (not TLS, or nothing to answer).
   */
  | {
      readonly kind: 'deny';
      readonly proto: 'tls' | undefined;
      readonly host: string | undefined;
      readonly rule: string | undefined;
      readonly reason: string;
      readonly alert: TlsAlert | undefined;
      /** Set when the SNI carries a credential's placeholder (src/creds/tripwire.ts): a tripwire, not a plain denial. */
      readonly tripwire?: TripwireHit;
    }
  /** Plain HTTP: every request is decided on its own Host (src/http/relay.ts). */
  | { readonly kind: 'http' }
  /** Report mode with no name to go by: relayed to the original destination, behind the SSRF guard. */
  | { readonly kind: 'raw'; readonly reason: string }
  /** TLS relayed unopened to the SNI host as sandgate resolves it. */
  | { readonly kind: 'passthrough'; readonly host: string; readonly decision: 'allow'; readonly rule: string }
  | { readonly kind: 'passthrough'; readonly host: string; readonly decision: 'would-deny'; readonly reason: string }
  /** `unlisted: ask`: an unlisted SNI waits for an approver, its ClientHello held (docs/approvals.md). */
  | { readonly kind: 'ask'; readonly host: string }
  /** TLS terminated with sandgate's CA: requests are checked and get their credential. */
  | { readonly kind: 'intercept'; readonly sni: string; readonly rule: CompiledRule };

function deny(reason: string, alert: TlsAlert | undefined, proto?: 'tls', host?: string, rule?: string): Route {
  return { kind: 'deny', proto, host, rule, reason, alert };
}

/**
 * The route of a connection to a named port (TLS or HTTP) once peeked. `intercepting`: whether
 * interception is enabled (a CA and leaf cache exist).
 */
export function classify(info: ConnInfo, p: Peeked, intercepting: boolean): Route {
  if (p.kind === 'reject') return deny(p.reason, p.alert);
  if (p.kind === 'http') return { kind: 'http' };
  const { hello } = p;
  // The ESNI drafts (never widely deployed) put the real name in that extension and a cover name in SNI.
  if (hello.esni) return deny('encrypted SNI (ESNI) is not allowed', 'access_denied', 'tls', hello.sni);
  // A placeholder in the server name (a label, or inside one, in any case) is the DNS tripwire's
  // case arriving without a query (the sandbox connected to an address it knew): whatever the
  // policy says of the name (a wildcard rule, report mode, an approver asked), it would leave in
  // the ClientHello relayed upstream and in sandgate's own lookup of the name.
  const inName = hello.sni !== undefined ? info.rt.tripwire?.inName(hello.sni) : undefined;
  if (inName !== undefined) {
    const hit: TripwireHit = { credential: inName.credential, where: 'TLS server name' };
    return { kind: 'deny', proto: 'tls', host: hello.sni, rule: undefined, reason: tripwireReason(hit, undefined), alert: 'access_denied', tripwire: hit };
  }
  // ECH (GREASE or real, indistinguishable by design) is decided on the outer SNI; a rule or the
  // global tls.ech may refuse it (docs/threat-model.md).
  const verdict = info.sandbox.policy.decide(hello.sni, info.dstPort, 'tls', hello.ech);
  if (verdict.decision !== 'allow') {
    // Only a name no rule covers is asked about (a rule that refuses ECH is a denial, not a question).
    const policy = info.sandbox.policy;
    if (hello.sni !== undefined && policy.asks(hello.sni, info.dstPort) && policy.find(hello.sni, info.dstPort, 'tls') === undefined)
      return { kind: 'ask', host: hello.sni };
    // No name to decide on is unrecognized_name (RFC 6066 §3); any other refusal, access_denied.
    if (verdict.decision === 'deny') return deny(verdict.reason, hello.sni === undefined ? 'unrecognized_name' : 'access_denied', 'tls', hello.sni);
    if (hello.sni === undefined) return { kind: 'raw', reason: verdict.reason };
    return { kind: 'passthrough', host: hello.sni, decision: 'would-deny', reason: verdict.reason };
  }
  // An allowed verdict always has a name: the policy never allows a ClientHello without SNI.
  const sni = hello.sni as string;
  if (verdict.rule.intercept) {
    if (!intercepting) return deny('interception is not enabled', 'access_denied', 'tls', hello.sni, verdict.rule.id);
    return { kind: 'intercept', sni, rule: verdict.rule };
  }
  return { kind: 'passthrough', host: sni, decision: 'allow', rule: verdict.rule.id };
}
