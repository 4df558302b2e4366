import type { AllowRule, Config, EchChoice, Mode, SandboxConfig } from '../config/types.js';
import { hostMatches } from './host-name.js';

/** A rule with what the data path needs precomputed. */
export interface CompiledRule extends AllowRule {
  /** "policies.default.allow[0]": stable, shown in audit lines. */
  readonly id: string;
  /** TLS is terminated for this host (inject, methods or paths present). */
  readonly intercept: boolean;
  /** A ClientHello with encrypted_client_hello is denied under this rule (its `ech`, else `tls.ech`). */
  readonly refuseEch: boolean;
}

export type Kind = 'tls' | 'http' | 'tcp';

export type Denial = { readonly decision: 'deny' | 'would-deny'; readonly reason: string; readonly rule?: undefined };
export type Verdict = { readonly decision: 'allow'; readonly rule: CompiledRule } | Denial;

/**
 * One policy, compiled once at load: exact names in a Map, wildcards sorted longest suffix first,
 * per-port indexes. decide() is pure and allocation-free on the allow path.
 */
export class Policy {
  readonly name: string;
  readonly mode: Mode;
  readonly rules: readonly CompiledRule[];
  private readonly exact = new Map<string, CompiledRule[]>();
  private readonly wildcards: CompiledRule[] = [];
  /** Ports some TLS/HTTP rule lists (worth peeking at), and ports some raw TCP rule lists. */
  readonly namedPorts: ReadonlySet<number>;
  readonly tcpPorts: ReadonlySet<number>;
  readonly tcpRules: readonly CompiledRule[];
  /** Exact names of `protocol: udp` rules: answerable by DNS, never matched by find(). */
  private readonly udpHosts: ReadonlySet<string>;

  /** `ech`: the config's `tls.ech`, for rules that do not set their own. */
  constructor(name: string, mode: Mode, allow: readonly AllowRule[], udpHosts: Iterable<string> = [], ech: EchChoice = 'allow') {
    this.name = name;
    this.mode = mode;
    this.udpHosts = new Set(udpHosts);
    const named = new Set<number>();
    const tcp = new Set<number>();
    this.rules = allow.map((r, i) => ({
      ...r,
      id: `policies.${name}.allow[${i}]`,
      intercept: r.inject !== undefined || r.methods !== undefined || r.paths !== undefined,
      refuseEch: (r.ech ?? ech) === 'refuse',
    }));
    for (const r of this.rules) {
      for (const p of r.ports) (r.protocol === 'tcp' ? tcp : named).add(p);
      if (r.host.startsWith('*.')) this.wildcards.push(r);
      else {
        const list = this.exact.get(r.host) ?? [];
        list.push(r);
        this.exact.set(r.host, list);
      }
    }
    // Most specific wildcard first, so "*.api.example.test" wins over "*.example.test".
    this.wildcards.sort((a, b) => b.host.length - a.host.length);
    this.namedPorts = named;
    this.tcpPorts = tcp;
    this.tcpRules = this.rules.filter((r) => r.protocol === 'tcp');
  }

  /** First rule covering (host, port) for the given kind; exact names before wildcards. */
  find(host: string, port: number, kind: Kind): CompiledRule | undefined {
    const wantTcp = kind === 'tcp';
    const exact = this.exact.get(host);
    if (exact) for (const r of exact) if ((r.protocol === 'tcp') === wantTcp && r.ports.includes(port)) return r;
    for (const r of this.wildcards) if ((r.protocol === 'tcp') === wantTcp && r.ports.includes(port) && hostMatches(r.host, host)) return r;
    return undefined;
  }

  /** Any rule (any port, any kind) naming this host: used by DNS (a name is answerable if reachable at all). */
  coversName(host: string): boolean {
    if (this.exact.has(host) || this.udpHosts.has(host)) return true;
    for (const r of this.wildcards) if (hostMatches(r.host, host)) return true;
    return false;
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

export interface CompiledPolicies {
  readonly byName: ReadonlyMap<string, Policy>;
  readonly anyIntercept: boolean;
}

export function compilePolicies(config: Config): CompiledPolicies {
  const byName = new Map<string, Policy>();
  for (const [name, p] of Object.entries(config.policies)) {
    const udpHosts = (p.udp ?? []).flatMap((r) => (r.host !== undefined ? [r.host] : []));
    byName.set(name, new Policy(name, p.mode, p.allow, udpHosts, config.tls.ech));
  }
  let anyIntercept = false;
  for (const p of byName.values()) if (p.rules.some((r) => r.intercept)) anyIntercept = true;
  return { byName, anyIntercept };
}

export type { SandboxConfig };
