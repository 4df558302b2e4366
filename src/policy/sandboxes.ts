import type { SandboxConfig } from '../config/types.js';
import { cidrContains, parseCidr, parseIp, type Cidr } from '../util/ip.js';
import type { Policy } from './policy.js';

/**
 * A sandbox registered through the control API (src/control): the config's fields plus labels.
 * Immutable; an update makes a new object, so "is this still the registered sandbox?" is an
 * identity check on the spec (src/net/conn-registry.ts).
 */
export interface SandboxSpec extends SandboxConfig {
  readonly labels?: Readonly<Record<string, string>>;
}

export interface Sandbox {
  readonly name: string;
  readonly user?: string;
  readonly policy: Policy;
  readonly cidr?: Cidr;
  /** Interface glob as a predicate ("sbx-*" matches "sbx-a"); nft's iifname uses the same glob. */
  readonly iface?: (name: string) => boolean;
  /** `config`: from the config file; `api`: registered through the control API. */
  readonly source: 'config' | 'api';
  /** What it was built from (the config entry, or the registered spec). */
  readonly spec: SandboxSpec;
}

export function globPredicate(glob: string): (name: string) => boolean {
  if (glob === '*') return () => true;
  if (glob.endsWith('*')) {
    const prefix = glob.slice(0, -1);
    return (n) => n.startsWith(prefix);
  }
  return (n) => n === glob;
}

const NO_OVERRIDES: ReadonlyMap<string, Policy> = new Map();

/**
 * Compiled registered sandboxes by spec: the table is rebuilt on every registry change, and
 * the sandboxes that did not change keep their compiled object (same spec, same policy).
 */
const compiled = new WeakMap<SandboxSpec, Sandbox>();

function compileRegistered(s: SandboxSpec, policies: ReadonlyMap<string, Policy>, overrides: ReadonlyMap<string, Policy>): Sandbox {
  const hit = compiled.get(s);
  if (hit && hit.policy === policyOf(s, policies, overrides)) return hit;
  const sandbox = compile(s, policies, overrides, 'api');
  compiled.set(s, sandbox);
  return sandbox;
}

/**
 * The sandbox's policy: its own copy with names approved for it alone (src/approvals/), if it has
 * one made from the policy it uses now, else the shared one.
 */
function policyOf(s: SandboxSpec, policies: ReadonlyMap<string, Policy>, overrides: ReadonlyMap<string, Policy>): Policy | undefined {
  const own = overrides.get(s.name);
  return own !== undefined && own.name === s.policy ? own : policies.get(s.policy);
}

function compile(s: SandboxSpec, policies: ReadonlyMap<string, Policy>, overrides: ReadonlyMap<string, Policy>, source: Sandbox['source']): Sandbox {
  const policy = policyOf(s, policies, overrides);
  if (!policy) throw new Error(`sandbox ${s.name}: unknown policy ${s.policy}`); // validated earlier
  let cidr: Cidr | undefined;
  if (s.cidr !== undefined) {
    const c = parseCidr(s.cidr);
    if ('error' in c) throw new Error(c.error);
    cidr = c;
  }
  return {
    name: s.name,
    policy,
    source,
    spec: s,
    ...(s.user !== undefined ? { user: s.user } : {}),
    ...(cidr ? { cidr } : {}),
    ...(s.interface !== undefined ? { iface: globPredicate(s.interface) } : {}),
  };
}

/**
 * Who is this packet from? A sandbox is identified by its source address (CIDR) and/or the host
 * interface it arrived on. The firewall's strict reverse-path check (fib saddr . iif) guarantees
 * that a source address only arrives through the interface the host routes it back to, so the
 * interface can be derived from the source address: that is what `ifaceOf` does (a route lookup).
 *
 * Precedence, the same as the firewall's rule order (render-nft.ts): registered (control API)
 * sandboxes first, those with interface and cidr, then interface only, then cidr only; then the
 * config's, first in config order wins. Registered sandboxes never overlap each other or a
 * config sandbox except as a carve-out of a config interface glob (src/control/overlap.ts), so
 * a config glob such as "sbx-*" is the fallback for interfaces nobody registered.
 *
 * Registered ones are indexed (exact interface name, single address), so identification stays
 * cheap with thousands of them; the config's few are scanned.
 */
export class SandboxTable {
  /** Registered sandboxes (in registration order), then the config's (in config order). */
  readonly list: readonly Sandbox[];
  readonly needsIface: boolean;
  private readonly staticList: readonly Sandbox[];
  private readonly byNameMap = new Map<string, Sandbox>();
  /** Registered, interface (+ cidr): exact interface name -> sandboxes; globs scanned. */
  private readonly pairExact = new Map<string, Sandbox[]>();
  private readonly pairGlob: Sandbox[] = [];
  private readonly ifaceExact = new Map<string, Sandbox>();
  private readonly ifaceGlob: Sandbox[] = [];
  /** Registered, cidr only: /32 by address text; wider cidrs scanned. */
  private readonly addrExact = new Map<bigint, Sandbox>();
  private readonly addrNets: Sandbox[] = [];

  /** `overrides`: per sandbox name, its policy with the names approved for that sandbox alone. */
  constructor(
    configs: readonly SandboxConfig[],
    policies: ReadonlyMap<string, Policy>,
    dynamic: readonly SandboxSpec[] = [],
    overrides: ReadonlyMap<string, Policy> = NO_OVERRIDES,
  ) {
    const dyn = dynamic.map((s) => compileRegistered(s, policies, overrides));
    this.staticList = configs.map((s) => compile(s, policies, overrides, 'config'));
    this.list = [...dyn, ...this.staticList];
    for (const s of this.list) if (!this.byNameMap.has(s.name)) this.byNameMap.set(s.name, s);
    for (const s of dyn) {
      const iface = s.spec.interface;
      if (iface !== undefined && s.cidr) {
        if (iface.endsWith('*')) this.pairGlob.push(s);
        else this.pairExact.set(iface, [...(this.pairExact.get(iface) ?? []), s]);
      } else if (iface !== undefined) {
        if (iface.endsWith('*')) this.ifaceGlob.push(s);
        else this.ifaceExact.set(iface, s);
      } else if (s.cidr) {
        if (s.cidr.bits === 32) this.addrExact.set(s.cidr.base, s);
        else this.addrNets.push(s);
      }
    }
    this.needsIface = this.list.some((s) => s.iface !== undefined);
  }

  /** Identify by source address; `iface` is the host-side interface the address routes through (if known). */
  identify(src: string, iface: string | undefined): Sandbox | undefined {
    const ip = parseIp(src);
    if (!ip) return undefined;
    if (ip.family === 4) {
      if (iface !== undefined) {
        for (const s of this.pairExact.get(iface) ?? []) if (s.cidr && cidrContains(s.cidr, ip)) return s;
        for (const s of this.pairGlob) if (s.iface?.(iface) === true && s.cidr && cidrContains(s.cidr, ip)) return s;
      }
    }
    const byIface = this.registeredByIface(iface);
    if (byIface) return byIface;
    if (ip.family === 4) {
      const exact = this.addrExact.get(ip.value);
      if (exact) return exact;
      for (const s of this.addrNets) if (s.cidr && cidrContains(s.cidr, ip)) return s;
    }
    for (const s of this.staticList) {
      if (s.cidr && !cidrContains(s.cidr, ip)) continue;
      if (s.iface && (iface === undefined || !s.iface(iface))) continue;
      return s;
    }
    return undefined;
  }

  /**
   * The sandbox whose interface match covers `iface`, for packets that carry no usable source
   * address (IPv6: sandbox cidrs are IPv4). Same precedence as identify().
   */
  byIface(iface: string | undefined): Sandbox | undefined {
    if (iface === undefined) return undefined;
    const pair = this.pairExact.get(iface)?.[0] ?? this.pairGlob.find((s) => s.iface?.(iface) === true);
    return pair ?? this.registeredByIface(iface) ?? this.staticList.find((s) => s.iface?.(iface));
  }

  private registeredByIface(iface: string | undefined): Sandbox | undefined {
    if (iface === undefined) return undefined;
    return this.ifaceExact.get(iface) ?? this.ifaceGlob.find((s) => s.iface?.(iface) === true);
  }

  byName(name: string): Sandbox | undefined {
    return this.byNameMap.get(name);
  }
}
