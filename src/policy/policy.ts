import type { AllowRule, Config, EchChoice, MetadataConfig, Mode, OnTripwire, SandboxConfig, UdpRule, Unlisted } from '../config/types.js';
import { parseCidr, type Cidr } from '../util/ip.js';
import { hostMatches, isHostName } from './host-name.js';
import { checkRequest, compileRequestChecks, type RequestChecks } from './request-rules.js';

/** A rule with what the data path needs precomputed. */
export interface CompiledRule extends AllowRule {
  /** "policies.default.allow[0]": stable, shown in audit lines. */
  readonly id: string;
  /** TLS is terminated for this host (inject, methods or paths present). */
  readonly intercept: boolean;
  /** A ClientHello with encrypted_client_hello is denied under this rule (its `ech`, else `tls.ech`). */
  readonly refuseEch: boolean;
  /** Per-request method/path checks: set for intercepted rules (empty checks when neither is listed). */
  readonly checks: RequestChecks | undefined;
}

/** A `protocol: udp` rule, compiled for the packet path (src/packets/decide.ts). */
export interface CompiledUdpRule {
  readonly id: string;
  readonly host?: string;
  readonly cidr?: Cidr;
  readonly ports: ReadonlySet<number>;
}

export type Kind = 'tls' | 'http' | 'tcp';

export type Denial = { readonly decision: 'deny' | 'would-deny'; readonly reason: string; readonly rule?: undefined };
export type Verdict = { readonly decision: 'allow'; readonly rule: CompiledRule } | Denial;

/**
 * The facts of one HTTP request, as every request decision reads them (one value, built once by
 * src/http/admit.ts): the name from Host (normalised), the connection's destination port, the
 * method and the origin-form path without its query, and whether sandgate terminated TLS for it.
 */
export interface RequestFacts {
  readonly host: string;
  readonly port: number;
  readonly method: string;
  readonly path: string;
  readonly intercepted: boolean;
}

/**
 * A request's verdict. `deny` carries the status the sandbox gets (403, or 400 for a path that
 * cannot be matched unambiguously); `would-deny` (report mode) passes, with or without a rule.
 */
export type RequestVerdict =
  | { readonly decision: 'allow'; readonly rule: CompiledRule; readonly reason?: undefined; readonly status?: undefined }
  | { readonly decision: 'would-deny'; readonly rule: CompiledRule | undefined; readonly reason: string; readonly status?: undefined }
  | { readonly decision: 'deny'; readonly status: 400 | 403; readonly reason: string; readonly rule?: undefined };

/** A rule an approver added (docs/approvals.md): a passthrough for one name and port, with its own id. */
export interface ApprovedRule {
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

export interface PolicyOptions {
  readonly unlisted?: Unlisted;
  readonly askTimeoutMs?: number;
  /** Instance metadata sandgate answers itself for this policy's sandboxes (src/metadata/). */
  readonly metadata?: MetadataConfig;
  /** Rules approvers added, after the config's (so the config's own rule for a name wins). */
  readonly approved?: readonly ApprovedRule[];
  /** What a tripwire does to this policy's sandboxes (default deny). */
  readonly onTripwire?: OnTripwire;
}

/**
 * The ports on which an unlisted name is asked about under `unlisted: ask`: TLS (SNI) and plain
 * HTTP (Host), where a name is on the wire. Other unlisted ports are denied as ever.
 */
export const ASK_PORTS: ReadonlySet<number> = new Set([443, 80]);

/**
 * One policy, compiled once at load: exact names in a Map, wildcards sorted longest suffix first,
 * per-port indexes, per-rule request checks, the udp rules. Every decision about what a sandbox
 * may reach is a method here, pure; the I/O (DNS answers, resolving) stays with the callers.
 */
export class Policy {
  readonly name: string;
  readonly mode: Mode;
  /** The policy's `onTripwire`, else the global one (src/creds/tripwire.ts). */
  readonly onTripwire: OnTripwire;
  readonly rules: readonly CompiledRule[];
  /** `ask`: unlisted names on ASK_PORTS wait for an approver instead of being denied. */
  readonly unlisted: Unlisted;
  readonly askTimeoutMs: number;
  /** What this policy was compiled from, so withApproved() can compile it again with more. */
  private readonly source: { allow: readonly AllowRule[]; udp: readonly UdpRule[]; ech: EchChoice; opts: PolicyOptions };
  private readonly exact = new Map<string, CompiledRule[]>();
  private readonly wildcards: CompiledRule[] = [];
  /** Ports some TLS/HTTP rule lists (worth peeking at), and ports some raw TCP rule lists. */
  readonly namedPorts: ReadonlySet<number>;
  readonly tcpPorts: ReadonlySet<number>;
  readonly tcpRules: readonly CompiledRule[];
  /** Per port: the raw TCP rules listing it, in config order. */
  private readonly tcpByPort = new Map<number, CompiledRule[]>();
  /** Exact names of `protocol: udp` rules: answerable by DNS, never matched by find(). */
  private readonly udpHosts: ReadonlySet<string>;
  /** The `protocol: udp` rules, in config order. */
  readonly udpRules: readonly CompiledUdpRule[];
  /** The allow verdict of each rule for requestVerdict(), built once (no object per request). */
  private readonly requestAllowed = new Map<CompiledRule, RequestVerdict>();
  /** Instance metadata sandgate answers itself for this policy's sandboxes (src/metadata/); absent = none. */
  readonly metadata: MetadataConfig | undefined;

  /** `udp`: the policy's `udp` rules; `ech`: the config's `tls.ech`, for rules that do not set their own. */
  constructor(name: string, mode: Mode, allow: readonly AllowRule[], udp: readonly UdpRule[] = [], ech: EchChoice = 'allow', opts: PolicyOptions = {}) {
    this.name = name;
    this.metadata = opts.metadata;
    this.mode = mode;
    this.unlisted = opts.unlisted ?? 'deny';
    this.onTripwire = opts.onTripwire ?? 'deny';
    this.askTimeoutMs = opts.askTimeoutMs ?? 30_000;
    this.source = { allow, udp, ech, opts };
    const approved = opts.approved ?? [];
    this.udpHosts = new Set(udp.flatMap((r) => (r.host !== undefined ? [r.host] : [])));
    this.udpRules = udp.map(compileUdpRule);
    const named = new Set<number>();
    const tcp = new Set<number>();
    const configured = allow.map((r, i) => {
      const intercept = r.inject !== undefined || r.methods !== undefined || r.paths !== undefined;
      return {
        ...r,
        id: `policies.${name}.allow[${i}]`,
        intercept,
        refuseEch: (r.ech ?? ech) === 'refuse',
        checks: intercept ? compileRequestChecks(r) : undefined,
      };
    });
    // Approved names are passthrough rules (never intercepted: no credential is ever approved).
    const added = approved.map(
      (a): CompiledRule => ({ host: a.host, ports: [a.port], protocol: 'tls', id: a.id, intercept: false, refuseEch: ech === 'refuse', checks: undefined }),
    );
    this.rules = [...configured, ...added];
    for (const r of this.rules) {
      this.requestAllowed.set(r, { decision: 'allow', rule: r });
      for (const p of r.ports) {
        (r.protocol === 'tcp' ? tcp : named).add(p);
        if (r.protocol === 'tcp') {
          const list = this.tcpByPort.get(p) ?? [];
          list.push(r);
          this.tcpByPort.set(p, list);
        }
      }
      if (r.host.startsWith('*.')) this.wildcards.push(r);
      else {
        const list = this.exact.get(r.host) ?? [];
        list.push(r);
        this.exact.set(r.host, list);
      }
    }
    // Most specific wildcard first, so "*.api.example.test" wins over "*.example.test".
    this.wildcards.sort((a, b) => b.host.length - a.host.length);
    if (this.unlisted === 'ask') for (const p of ASK_PORTS) named.add(p);
    this.namedPorts = named;
    this.tcpPorts = tcp;
    this.tcpRules = this.rules.filter((r) => r.protocol === 'tcp');
  }

  /** This policy with more approved rules (after the ones it has): a new object, this one unchanged. */
  withApproved(more: readonly ApprovedRule[]): Policy {
    if (more.length === 0) return this;
    const { allow, udp, ech, opts } = this.source;
    return new Policy(this.name, this.mode, allow, udp, ech, { ...opts, approved: [...(opts.approved ?? []), ...more] });
  }

  /** Whether an unlisted (host, port) is asked about rather than denied (never in report mode: that lets it through anyway). */
  asks(host: string | undefined, port: number): boolean {
    // Only a well-formed name is put to an approver: never an IP literal (no rule can name one),
    // never bytes that would reach the approver's terminal as control sequences.
    return this.unlisted === 'ask' && this.mode === 'enforce' && host !== undefined && ASK_PORTS.has(port) && isHostName(host);
  }

  /** First rule covering (host, port) for the given kind; exact names before wildcards. */
  find(host: string, port: number, kind: Kind): CompiledRule | undefined {
    return this.first(host, port, kind);
  }

  /**
   * The rule a name falls under at any port and of any kind, in find()'s order (exact names in
   * config order, then the longest matching wildcard): what DNS names on its audit line.
   * Undefined for a name only a udp rule lists (those are not CompiledRules).
   */
  nameRule(host: string): CompiledRule | undefined {
    return this.first(host, 0, undefined);
  }

  /**
   * The one ordering of every name lookup: exact names in config order, then wildcards longest
   * first (config order among equals: the sort is stable). `kind` undefined: any port, any kind.
   */
  private first(host: string, port: number, kind: Kind | undefined): CompiledRule | undefined {
    const wantTcp = kind === 'tcp';
    const exact = this.exact.get(host);
    if (exact) for (const r of exact) if (kind === undefined || ((r.protocol === 'tcp') === wantTcp && r.ports.includes(port))) return r;
    for (const r of this.wildcards)
      if ((kind === undefined || ((r.protocol === 'tcp') === wantTcp && r.ports.includes(port))) && hostMatches(r.host, host)) return r;
    return undefined;
  }

  /** Any rule (any port, any kind) naming this host: used by DNS (a name is answerable if reachable at all). */
  coversName(host: string): boolean {
    return this.udpHosts.has(host) || this.nameRule(host) !== undefined;
  }

  /**
   * The raw TCP rules that could match a connection to `port`, in config order: the caller then
   * checks each rule's name against the destination address (DNS answers, resolver: I/O).
   */
  tcpRulesFor(port: number): readonly CompiledRule[] {
    return this.tcpByPort.get(port) ?? NONE;
  }

  /**
   * One HTTP request (plain, or inside TLS sandgate terminated): the host and port against the
   * rules, then, for an intercepted rule, plain HTTP only where it opts in (`plainHttp`, never
   * relaxed in report mode), then its methods and paths (a 400 for a path that cannot be
   * matched unambiguously, never relaxed either).
   */
  requestVerdict(f: RequestFacts): RequestVerdict {
    const rule = this.find(f.host, f.port, 'http');
    if (rule === undefined) {
      const d = this.denied(`${f.host}:${f.port} is not allowed`);
      if (d.decision === 'deny') return { decision: 'deny', status: 403, reason: `host ${f.host} on port ${f.port} is not allowed by policy` };
      return { decision: 'would-deny', rule: undefined, reason: d.reason };
    }
    // Intercepted hosts carry credentials: plain HTTP to them only where the rule opts in, and
    // then sandgate itself speaks verified TLS upstream.
    if (!f.intercepted && rule.intercept && rule.plainHttp !== true) return { decision: 'deny', status: 403, reason: `host ${f.host} requires TLS` };
    if (rule.checks !== undefined) {
      const c = checkRequest(rule.checks, f.method, f.path);
      if (c !== undefined) {
        if (c.status === 400) return { decision: 'deny', status: 400, reason: c.reason };
        const d = this.denied(c.reason);
        if (d.decision === 'deny') return { decision: 'deny', status: 403, reason: c.reason };
        return { decision: 'would-deny', rule, reason: c.reason };
      }
    }
    return this.requestAllowed.get(rule) as RequestVerdict;
  }

  /**
   * `ech`: the ClientHello carried encrypted_client_hello. The outer SNI decides either way (GREASE
   * and real ECH look alike on the wire); a rule with `refuseEch` turns the allow into a denial.
   */
  decide(host: string | undefined, port: number, kind: Kind, ech = false): Verdict {
    if (host !== undefined) {
      const rule = this.find(host, port, kind);
      if (rule && ech && rule.refuseEch) return this.denied(`encrypted ClientHello (ECH) is refused for ${host} (${rule.id}, ech: refuse)`);
      if (rule) return { decision: 'allow', rule };
    }
    const reason = host === undefined ? (kind === 'tls' ? 'no SNI' : 'no host') : `${host}:${port} is not allowed`;
    return this.denied(reason);
  }

  denied(reason: string): Denial {
    return { decision: this.mode === 'report' ? 'would-deny' : 'deny', reason };
  }
}

const NONE: readonly CompiledRule[] = Object.freeze([]);

function compileUdpRule(r: UdpRule): CompiledUdpRule {
  const cidr = r.cidr !== undefined ? parseCidr(r.cidr) : undefined;
  return {
    id: r.id,
    ...(r.host !== undefined ? { host: r.host } : {}),
    ...(cidr !== undefined && !('error' in cidr) ? { cidr } : {}),
    ports: new Set(r.ports),
  };
}

export interface CompiledPolicies {
  readonly byName: ReadonlyMap<string, Policy>;
  readonly anyIntercept: boolean;
}

export function compilePolicies(config: Config): CompiledPolicies {
  const byName = new Map<string, Policy>();
  for (const [name, p] of Object.entries(config.policies)) {
    byName.set(
      name,
      new Policy(name, p.mode, p.allow, p.udp ?? [], config.tls.ech, {
        unlisted: p.unlisted,
        askTimeoutMs: p.askTimeoutMs,
        metadata: p.metadata,
        onTripwire: p.onTripwire ?? config.onTripwire,
      }),
    );
  }
  let anyIntercept = false;
  for (const p of byName.values()) if (p.rules.some((r) => r.intercept)) anyIntercept = true;
  return { byName, anyIntercept };
}

export type { SandboxConfig };
