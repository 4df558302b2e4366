import type { SandboxConfig } from '../config/types.js';
import { cidrContains, parseCidr, parseIp, type Cidr } from '../util/ip.js';
import type { Policy } from './policy.js';

export interface Sandbox {
  readonly name: string;
  readonly user?: string;
  readonly policy: Policy;
  readonly cidr?: Cidr;
  /** Interface glob as a predicate ("sbx-*" matches "sbx-a"); nft's iifname uses the same glob. */
  readonly iface?: (name: string) => boolean;
}

export function globPredicate(glob: string): (name: string) => boolean {
  if (glob === '*') return () => true;
  if (glob.endsWith('*')) {
    const prefix = glob.slice(0, -1);
    return (n) => n.startsWith(prefix);
  }
  return (n) => n === glob;
}

/**
 * Who is this packet from? A sandbox is identified by its source address (CIDR) and/or the host
 * interface it arrived on. The firewall's strict reverse-path check (fib saddr . iif) guarantees
 * that a source address only arrives through the interface the host routes it back to, so the
 * interface can be derived from the source address: that is what `ifaceOf` does (a route lookup).
 * First sandbox in config order wins, as in the firewall.
 */
export class SandboxTable {
  readonly list: readonly Sandbox[];
  readonly needsIface: boolean;

  constructor(configs: readonly SandboxConfig[], policies: ReadonlyMap<string, Policy>) {
    this.list = configs.map((s) => {
      const policy = policies.get(s.policy);
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
        ...(s.user !== undefined ? { user: s.user } : {}),
        ...(cidr ? { cidr } : {}),
        ...(s.interface !== undefined ? { iface: globPredicate(s.interface) } : {}),
      };
    });
    this.needsIface = this.list.some((s) => s.iface !== undefined);
  }

  /** Identify by source address; `iface` is the host-side interface the address routes through (if known). */
  identify(src: string, iface: string | undefined): Sandbox | undefined {
    const ip = parseIp(src);
    if (!ip) return undefined;
    for (const s of this.list) {
      if (s.cidr && !cidrContains(s.cidr, ip)) continue;
      if (s.iface && (iface === undefined || !s.iface(iface))) continue;
      return s;
    }
    return undefined;
  }

  byName(name: string): Sandbox | undefined {
    return this.list.find((s) => s.name === name);
  }
}
