/**
 * The DNS responder's decisions, independent of sockets: one query message in, one reply out.
 *
 * A sandbox's DNS (UDP and TCP port 53, to any address) is redirected here by the firewall.
 * Each query is answered from that sandbox's policy alone:
 *
 *   - unknown source            -> REFUSED
 *   - quarantined sandbox       -> REFUSED (src/control/quarantine.ts)
 *   - a credential's placeholder in the name -> REFUSED, a `tripwire` line (src/creds/tripwire.ts)
 *   - over the rate limit       -> REFUSED (one audit line per burst)
 *   - malformed                 -> FORMERR / NOTIMP / REFUSED from the codec (wire.ts)
 *   - name not covered          -> NXDOMAIN, and nothing is sent anywhere (report mode: answered,
 *                                  logged as would-deny)
 *   - covered, A                -> sandgate's own resolution (upstream.hosts, then
 *                                  upstream.resolver; CNAME chains flattened), TTL clamped
 *   - covered, anything else    -> empty NOERROR: AAAA because sandgate carries no IPv6 (clients
 *                                  fall back to IPv4 at once); HTTPS/SVCB so no ECH config or
 *                                  alternative endpoint reaches the sandbox; TXT, MX, NULL, ANY,
 *                                  ... because they are never forwarded (a tunnel's favourite
 *                                  record types)
 *
 * "Covered" is Policy.coversName: the matcher TLS and HTTP use (policy/host-name.ts).
 */
import { isIPv4 } from 'node:net';
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';
import type { AuditFields, Decision } from '../audit/logger.js';
import { QTYPE, RCODE, EXTENDED_RCODE, parseQuery, buildResponse, buildError, type AnswerRecord } from './wire.js';
import { KeyedRateLimiter } from './rate-limit.js';
import { AuditSampler } from './audit-sampler.js';
import { GCE_METADATA_NAME, METADATA_IP } from '../metadata/answer.js';
import type { AskApproval } from '../approvals/ask.js';
import { approvedRuleId } from '../approvals/grants.js';

/** The port a held DNS question is about (DNS carries no port; 443 is the one usually dialled next). */
const ASK_DNS_PORT = 443;
import { afterTripwire, QUARANTINED, tripwireReason } from '../control/quarantine.js';

/** RFC 2181 §8 allows up to 2^31-1; sandbox caches are kept short so policy changes land soon. */
export const MIN_ANSWER_TTL_S = 5;
export const MAX_ANSWER_TTL_S = 300;

/** Key for sources that are not a configured sandbox (cannot clash: sandbox names exclude '('). */
export const UNKNOWN_SOURCE = '(unknown)';

export type Transport = 'udp' | 'tcp';

/** The part of RouteIfaceCache the responder uses (shared with the TCP gate). */
export interface IfaceLookup {
  peek(src: string): string | undefined | null;
  lookup(src: string): Promise<string | undefined>;
}

export interface ResponderDeps {
  runtime(): Runtime;
  ifaces: IfaceLookup;
  /** Monotonic milliseconds (tests inject a clock). */
  now?: () => number;
  /** `unlisted: ask`: an unlisted name's query waits for an approver (docs/approvals.md). */
  ask?: AskApproval;
}

const TYPE_NAMES = new Map<number, string>([...Object.entries(QTYPE).map(([k, v]) => [v, k] as [number, string]), [251, 'IXFR'], [252, 'AXFR']]);

const RCODE_NAMES = new Map<number, string>([...Object.entries(RCODE).map(([k, v]) => [v, k] as [number, string]), [EXTENDED_RCODE.BADVERS, 'BADVERS']]);

/** "A", "TXT", or RFC 3597's "TYPE1234" for types without a mnemonic here. */
export function qtypeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `TYPE${type}`;
}

function rcodeName(rcode: number): string {
  return RCODE_NAMES.get(rcode) ?? String(rcode);
}

/** c-ares' code for a failed lookup (UpstreamResolver puts it on the error's cause). */
function failureCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  return typeof cause?.code === 'string' ? cause.code : undefined;
}

interface BurstMeta {
  src: string;
  host?: string;
  qtype?: string;
  user?: string;
}

type Line = Omit<AuditFields, 'event' | 'proto'> & { decision: Decision };

export class DnsResponder {
  private readonly deps: ResponderDeps;
  private readonly now: () => number;
  private readonly limiter = new KeyedRateLimiter<BurstMeta>();
  private readonly sampler = new AuditSampler();
  /** Queries being answered, by transport, source and exact bytes -> copies in flight (see handle()). */
  private readonly inflight = new Map<string, number>();

  constructor(deps: ResponderDeps) {
    this.deps = deps;
    this.now = deps.now ?? (() => performance.now());
  }

  /** Which sandbox a source address belongs to, by address and (if any sandbox needs it) interface. */
  async identify(rt: Runtime, srcIp: string): Promise<Sandbox | undefined> {
    if (!rt.sandboxes.needsIface) return rt.sandboxes.identify(srcIp, undefined);
    const cached = this.deps.ifaces.peek(srcIp);
    const iface = cached !== null ? cached : await this.deps.ifaces.lookup(srcIp);
    return rt.sandboxes.identify(srcIp, iface);
  }

  /**
   * Answers one query message. Undefined means "send nothing" (the input was itself a response,
   * or too short to carry an id). Never throws for anything the sandbox sends.
   *
   * A stub resolver that hears nothing within its timeout sends the identical message again from
   * the same socket (glibc every `timeout` seconds, musl more often), often while sandgate is
   * still waiting on its own resolver: such a retransmission is the same query, so it is answered
   * (and rate-limited) as usual but writes no audit line of its own: one line per sandbox query,
   * not per datagram. Only queries in flight are matched, so this holds at most what is being
   * answered; the resolver asks upstream once for both (UpstreamResolver's in-flight lookups).
   */
  async handle(msg: Buffer, srcIp: string, srcPort: number, transport: Transport): Promise<Buffer | undefined> {
    // Only UDP is retransmitted datagram by datagram; over TCP each message is a query of its own.
    if (transport !== 'udp') return this.answer(msg, srcIp, srcPort, transport, false);
    const key = `${srcIp} ${srcPort} ${msg.toString('latin1')}`;
    const copies = this.inflight.get(key) ?? 0;
    this.inflight.set(key, copies + 1);
    try {
      return await this.answer(msg, srcIp, srcPort, transport, copies > 0);
    } finally {
      const n = (this.inflight.get(key) ?? 1) - 1;
      if (n <= 0) this.inflight.delete(key);
      else this.inflight.set(key, n);
    }
  }

  private async answer(msg: Buffer, srcIp: string, srcPort: number, transport: Transport, retransmission: boolean): Promise<Buffer | undefined> {
    const rt = this.deps.runtime();
    const audit = (key: string, now: number, line: Line): void => {
      if (!retransmission) this.audit(rt, key, now, line);
    };
    const src = `${srcIp}:${srcPort}`;
    const sandbox = await this.identify(rt, srcIp);
    const now = this.now();
    if (!sandbox) {
      audit(UNKNOWN_SOURCE, now, { src, decision: 'deny', reason: 'source is not a configured sandbox', rcode: 'REFUSED' });
      return buildError(msg, RCODE.REFUSED);
    }
    const ident = { sandbox: sandbox.name, ...(sandbox.user !== undefined ? { user: sandbox.user } : {}), src };
    if (rt.quarantine.has(sandbox.name)) {
      audit(sandbox.name, now, { ...ident, decision: 'deny', reason: QUARANTINED, rcode: 'REFUSED' });
      return buildError(msg, RCODE.REFUSED);
    }

    const { qps, burst } = rt.config.dns.rateLimit;
    const admitted = this.limiter.take(sandbox.name, { rate: qps, burst }, now, () => {
      // Describes the burst's first refused query; parsed only then (cheap, and only once per burst).
      const p = parseQuery(msg);
      return p.ok
        ? { src, host: p.query.question.name, qtype: qtypeName(p.query.question.type), ...(sandbox.user !== undefined ? { user: sandbox.user } : {}) }
        : { src, ...(sandbox.user !== undefined ? { user: sandbox.user } : {}) };
    });
    if (!admitted) return buildError(msg, RCODE.REFUSED);

    const parsed = parseQuery(msg);
    if (!parsed.ok) {
      audit(sandbox.name, now, { ...ident, decision: 'deny', reason: `malformed query (${parsed.reason})`, rcode: rcodeName(parsed.rcode) });
      return buildError(msg, parsed.rcode, parsed.id);
    }
    const q = parsed.query;
    const host = q.question.name;
    const qtype = qtypeName(q.question.type);
    const maxSize = transport === 'tcp' ? 0xffff : undefined;
    const reply = (rcode: number, answers: AnswerRecord[] = []): Buffer => buildResponse(q, rcode, answers, maxSize === undefined ? {} : { maxSize });

    if (q.edns && q.edns.version > 0) {
      // RFC 6891 §6.1.3: only EDNS version 0 exists.
      audit(sandbox.name, now, { ...ident, host, qtype, decision: 'deny', reason: `EDNS version ${q.edns.version} not supported`, rcode: 'BADVERS' });
      return reply(EXTENDED_RCODE.BADVERS);
    }

    // A credential's placeholder in a name (a label, or inside one, in any case): an exfiltration
    // attempt (src/creds/tripwire.ts). REFUSED, nothing resolved; its line is never sampled away.
    const hit = rt.tripwire?.inName(host);
    if (hit !== undefined) {
      const why = tripwireReason(hit, undefined);
      if (!retransmission)
        rt.audit.write({
          event: 'tripwire',
          proto: 'dns',
          ...ident,
          host,
          qtype,
          decision: 'deny',
          reason: why,
          credential: hit.credential,
          onTripwire: sandbox.policy.onTripwire,
          rcode: 'REFUSED',
        });
      afterTripwire(rt, sandbox, hit, why);
      return reply(RCODE.REFUSED);
    }

    const policy = sandbox.policy;
    if (host === GCE_METADATA_NAME && policy.metadata?.gce !== undefined) {
      // GCE clients reach the metadata server by this name; sandgate answers there itself
      // (src/metadata/). Sandboxes whose policy does not enable it get the usual denial below.
      const a = q.question.type === QTYPE.A;
      audit(sandbox.name, now, {
        ...ident,
        host,
        qtype,
        decision: 'allow',
        rule: `policies.${policy.name}.metadata.gce`,
        rcode: 'NOERROR',
        answers: a ? [METADATA_IP] : [],
      });
      return reply(RCODE.NOERROR, a ? [{ type: QTYPE.A, ttl: MAX_ANSWER_TTL_S, address: METADATA_IP }] : []);
    }
    let decision: Decision = 'allow';
    let rule: string | undefined;
    let reason: string | undefined;
    if (host !== '' && policy.coversName(host)) {
      // For the audit line only (the decision is coversName's), in Policy.find's order.
      rule = policy.nameRule(host)?.id;
    } else if (this.deps.ask && policy.asks(host, ASK_DNS_PORT)) {
      // Held until an approver decides: the answer (or NXDOMAIN) only then. The question is about
      // the name on port 443, so the TLS connection that usually follows shares it.
      const o = await this.deps.ask(sandbox, host, ASK_DNS_PORT, 'dns');
      if (!o.allow) {
        audit(sandbox.name, this.now(), {
          ...ident,
          host,
          qtype,
          decision: 'deny',
          reason: o.reason,
          ...(o.id !== undefined ? { approval: o.id } : {}),
          rcode: 'NXDOMAIN',
        });
        return reply(RCODE.NXDOMAIN);
      }
      rule = approvedRuleId(o.action, o.id);
    } else {
      const d = policy.denied(`${host === '' ? 'the root' : host} is not allowed`);
      if (d.decision === 'deny') {
        // The query goes nowhere: not to the resolver, not to any cache lookup that could miss.
        audit(sandbox.name, now, { ...ident, host, qtype, decision: 'deny', reason: d.reason, rcode: 'NXDOMAIN' });
        return reply(RCODE.NXDOMAIN);
      }
      decision = d.decision;
      reason = d.reason;
    }
    const base: Line = { ...ident, host, qtype, decision, ...(rule !== undefined ? { rule } : {}), ...(reason !== undefined ? { reason } : {}) };

    if (q.question.type !== QTYPE.A || host === '') {
      audit(sandbox.name, now, { ...base, rcode: 'NOERROR', answers: [] });
      return reply(RCODE.NOERROR);
    }
    return this.answerA(rt, sandbox, host, base, reply, audit);
  }

  private async answerA(
    rt: Runtime,
    sandbox: Sandbox,
    host: string,
    base: Line,
    reply: (rcode: number, answers?: AnswerRecord[]) => Buffer,
    audit: (key: string, now: number, line: Line) => void,
  ): Promise<Buffer> {
    let addrs: readonly string[];
    let ttl: number;
    try {
      ({ addrs, ttl } = await rt.upstream.resolver.resolveWithTtl(host));
    } catch (err) {
      const code = failureCode(err);
      // NXDOMAIN and NODATA are answers, not failures: pass them on so clients stop retrying.
      const rcode = code === 'ENOTFOUND' ? RCODE.NXDOMAIN : code === 'ENODATA' ? RCODE.NOERROR : RCODE.SERVFAIL;
      audit(sandbox.name, this.now(), { ...base, rcode: rcodeName(rcode), error: `cannot resolve ${host} (${code ?? 'error'})` });
      return reply(rcode);
    }
    ttl = Math.min(MAX_ANSWER_TTL_S, Math.max(MIN_ANSWER_TTL_S, Math.round(ttl)));
    // IPv6 is not carried; addresses the SSRF guard refuses could not be reached through
    // sandgate anyway, and handing them out would only invite the sandbox to try.
    const usable: string[] = [];
    let guarded: string | undefined;
    for (const a of addrs) {
      if (!isIPv4(a)) continue;
      const why = rt.upstream.guard.check(a);
      if (why) guarded ??= why;
      else usable.push(a);
    }
    if (usable.length > 0) rt.dnsAnswers.record(sandbox.name, host, usable, ttl);
    audit(sandbox.name, this.now(), {
      ...base,
      rcode: 'NOERROR',
      answers: usable,
      ttl,
      ...(usable.length === 0 && guarded ? { error: guarded } : {}),
    });
    return reply(
      RCODE.NOERROR,
      usable.map((address) => ({ type: QTYPE.A, ttl, address })),
    );
  }

  /** A `dns` audit line about `key`'s traffic, subject to per-sandbox sampling. */
  audit(rt: Runtime, key: string, now: number, line: Line): void {
    const { linesPerSecond, burst } = rt.config.dns.auditSampling;
    if (!this.sampler.admit(key, { rate: linesPerSecond, burst }, now, line.decision, typeof line.host === 'string' ? line.host : undefined)) return;
    rt.audit.write({ event: 'dns', proto: 'dns', ...line });
  }

  /**
   * Writes what is due: closed rate-limit bursts (one line each) and sampling summaries. Called
   * periodically by the server; with `final`, every open burst is closed (on stop).
   */
  tick(final = false): void {
    const rt = this.deps.runtime();
    const now = this.now();
    const { qps, burst } = rt.config.dns.rateLimit;
    for (const b of this.limiter.due(now, final)) {
      rt.audit.write({
        event: 'dns',
        proto: 'dns',
        decision: 'deny',
        sandbox: b.key,
        ...(b.meta.user !== undefined ? { user: b.meta.user } : {}),
        src: b.meta.src,
        ...(b.meta.host !== undefined ? { host: b.meta.host, qtype: b.meta.qtype } : {}),
        reason: `rate limit exceeded (dns.rateLimit: ${qps} queries/s, burst ${burst}); ${b.refused} queries refused${b.ongoing ? ', still going on' : ''}`,
        rcode: 'REFUSED',
        refused: b.refused,
        ms: b.ms,
      });
    }
    for (const s of this.sampler.drain()) {
      const sb = s.key === UNKNOWN_SOURCE ? undefined : rt.sandboxes.byName(s.key);
      rt.audit.write({
        event: 'dns',
        proto: 'dns',
        decision: s.decision,
        ...(s.key === UNKNOWN_SOURCE ? {} : { sandbox: s.key }),
        ...(sb?.user !== undefined ? { user: sb.user } : {}),
        reason: `${s.count} more dns lines like this not written individually (dns.auditSampling)`,
        suppressed: s.count,
        domains: s.domains,
      });
    }
  }
}
