/**
 * Prometheus counters kept from the audit stream itself: every line the audit writer writes
 * (this process's and, with `workers: N`, the workers' lines as the primary appends them) goes
 * through observe(), so a counter and the audit log cannot disagree. Gauges that describe the
 * present rather than events (open connections, token caches, workers) are read from the
 * runtime at scrape time (src/metrics/server.ts).
 *
 * Labels only ever take values from the config or a fixed set (sandbox and rule names, event
 * kinds, decisions, DNS response codes): never a host name or anything else a sandbox chooses,
 * so a sandbox cannot grow the registry.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { AuditFields } from '../audit/logger.js';

/** Request latency buckets, seconds: from a cached token's few ms to a long model call. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

const DECISIONS = new Set(['allow', 'deny', 'would-deny']);
/** The `proto` values an audit line may carry (AuditFields), i.e. every possible `kind`. */
const PROTOS = new Set(['tls', 'http', 'tcp', 'udp', 'icmp', 'icmpv6', 'sctp', 'ip', 'dns']);
const RCODES = new Set(['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'BADVERS']);
const EVENTS = new Set(['ready', 'conn', 'close', 'http', 'dns', 'packet', 'config', 'error', 'stop', 'tripwire', 'quarantine']);

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/**
 * What a decision line is about: the connection's protocol for `conn` (tcp, tls, or http for a
 * plain-HTTP connection), `http` for a request, `dns` for a query, the packet's protocol.
 */
export function decisionKind(f: AuditFields): string | undefined {
  switch (f.event) {
    case 'conn':
      return f.proto !== undefined && PROTOS.has(f.proto) ? f.proto : 'tcp';
    case 'http':
      return 'http';
    case 'dns':
      return 'dns';
    case 'packet':
      return f.proto !== undefined && PROTOS.has(f.proto) ? f.proto : 'ip';
    default:
      return undefined;
  }
}

/**
 * How many decisions one line stands for: 1, or the count a sampled summary carries (a `dns`
 * summary's `suppressed`, a rate-limit burst's `refused`, a `packet` summary's `count`).
 */
export function decisionsIn(f: AuditFields): number {
  if (f.event === 'dns' && typeof f.suppressed === 'number') return num(f.suppressed);
  if (f.event === 'dns' && typeof f.refused === 'number') return num(f.refused);
  if (f.event === 'packet' && f.summary === true) return num(f.count);
  return 1;
}

export class AuditMetrics {
  readonly #decisions: Counter<'kind' | 'sandbox' | 'rule' | 'decision'>;
  readonly #bytes: Counter<'sandbox' | 'direction'>;
  readonly #upstreamErrors: Counter<'kind' | 'sandbox'>;
  readonly #dnsAnswers: Counter<'sandbox' | 'rcode'>;
  readonly #lines: Counter<'event'>;
  readonly #reloads: Counter<'result'>;
  readonly #latency: Histogram<'decision'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#decisions = new Counter({
      name: 'sandgate_decisions_total',
      help: 'Verdicts by kind (tcp, tls, http, dns, udp, icmp, ...), sandbox, rule and decision; sampled audit summaries add their counts',
      labelNames: ['kind', 'sandbox', 'rule', 'decision'],
      registers,
    });
    this.#bytes = new Counter({
      name: 'sandgate_bytes_total',
      help: 'Bytes relayed, from close and http lines: in = upstream to sandbox, out = sandbox to upstream',
      labelNames: ['sandbox', 'direction'],
      registers,
    });
    this.#upstreamErrors = new Counter({
      name: 'sandgate_upstream_errors_total',
      help: 'Allowed connections or requests that failed upstream (conn lines with error, http lines with error but status 499, close lines with an upstream error)',
      labelNames: ['kind', 'sandbox'],
      registers,
    });
    this.#dnsAnswers = new Counter({
      name: 'sandgate_dns_answers_total',
      help: 'DNS answers by response code (individually written dns lines)',
      labelNames: ['sandbox', 'rcode'],
      registers,
    });
    this.#lines = new Counter({ name: 'sandgate_audit_lines_total', help: 'Audit log lines written, by event', labelNames: ['event'], registers });
    this.#reloads = new Counter({ name: 'sandgate_config_reloads_total', help: 'Config reloads (SIGHUP), by result', labelNames: ['result'], registers });
    this.#latency = new Histogram({
      name: 'sandgate_request_duration_seconds',
      help: 'HTTP requests through the interception front, from head received to response complete (http lines)',
      labelNames: ['decision'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  /** Counts one audit line. Never throws: a line the counters do not understand is skipped. */
  observe(f: AuditFields): void {
    const event = EVENTS.has(f.event) ? f.event : 'other';
    this.#lines.inc({ event });
    const sandbox = str(f.sandbox);
    const kind = decisionKind(f);
    if (kind !== undefined && f.decision !== undefined && DECISIONS.has(f.decision)) {
      const n = decisionsIn(f);
      if (n > 0) this.#decisions.inc({ kind, sandbox, rule: str(f.rule), decision: f.decision }, n);
    }
    switch (f.event) {
      case 'close':
        this.#bytesOf(sandbox, f);
        if (typeof f.error === 'string' && f.error.startsWith('upstream'))
          this.#upstreamErrors.inc({ kind: f.proto !== undefined && PROTOS.has(f.proto) ? f.proto : 'tcp', sandbox });
        return;
      case 'conn':
        if (typeof f.error === 'string') this.#upstreamErrors.inc({ kind: kind ?? 'tcp', sandbox });
        return;
      case 'http':
        this.#bytesOf(sandbox, f);
        // 499: the sandbox went away mid-request (the relay's `sandbox closed the connection`).
        if (typeof f.error === 'string' && f.status !== 499) this.#upstreamErrors.inc({ kind: 'http', sandbox });
        if (typeof f.ms === 'number' && f.decision !== undefined && DECISIONS.has(f.decision))
          this.#latency.observe({ decision: f.decision }, num(f.ms) / 1000);
        return;
      case 'dns':
        if (typeof f.rcode === 'string') this.#dnsAnswers.inc({ sandbox, rcode: RCODES.has(f.rcode) ? f.rcode : 'other' });
        return;
      case 'config':
        if (f.action === 'reloaded' || f.action === 'rejected') this.#reloads.inc({ result: f.action });
        return;
      default:
    }
  }

  #bytesOf(sandbox: string, f: AuditFields): void {
    if (num(f.bytesIn) > 0) this.#bytes.inc({ sandbox, direction: 'in' }, num(f.bytesIn));
    if (num(f.bytesOut) > 0) this.#bytes.inc({ sandbox, direction: 'out' }, num(f.bytesOut));
  }
}
