/**
 * Pure render of the iptables backend's ipsets: the sandboxes registered through the control
 * API (plan.dynamic; docs/control-api.md) as `ipset restore` text. The counterpart of
 * render-nft.ts's DYN_SETS: the rules that name these sets are constant (render-iptables.ts),
 * so registering or removing a sandbox is an element change, never a rule change.
 *
 *   PAIR4    hash:net,iface  inet   cidr,interface   interface and cidr (both must match)
 *   PAIRIF4  hash:net,iface  inet   0.0.0.0/0,iface  the interfaces PAIR4 names (replies, and
 *                                                    sources outside the cidr)
 *   IF4      hash:net,iface  inet   0.0.0.0/0,iface  interface only
 *   ADDR4    hash:net        inet   cidr             cidr only
 *   PAIRIF6  hash:net,iface  inet6  ::/0,iface       PAIRIF4 for IPv6 (never carried: dropped)
 *   IF6      hash:net,iface  inet6  ::/0,iface       IF4 for IPv6
 *
 * An ipset holds one address family, so the interface sets exist once per family (nft's
 * `ifname` sets serve both). An nft glob "sbx-*" is the element "sbx-" with the `wildcard`
 * flag (prefix match; kernel 5.5+, ipset 7.4+: checked on this kernel). The match is
 * `-m set --match-set NAME src,src` (address, then input interface), or `dst,dst` for packets
 * towards a sandbox (output interface), like iptables' -i / -o.
 *
 * One limit of hash:net,iface: the interface is not part of the element's hash, so one network
 * (here 0.0.0.0/0 or ::/0) holds at most 64 interfaces per set ("Hash is full"); so at most 64
 * interface-only registered sandboxes, and 64 distinct interfaces among interface+cidr ones.
 */
import type { FirewallPlan, SandboxMatch } from './plan.js';
import { checkSandbox } from './render-nft.js';

export const IPSET_KINDS = ['PAIR4', 'PAIRIF4', 'IF4', 'ADDR4', 'PAIRIF6', 'IF6'] as const;
export type IpsetKind = (typeof IPSET_KINDS)[number];

const TYPE: Record<IpsetKind, { type: string; family: 'inet' | 'inet6' }> = {
  PAIR4: { type: 'hash:net,iface', family: 'inet' },
  PAIRIF4: { type: 'hash:net,iface', family: 'inet' },
  IF4: { type: 'hash:net,iface', family: 'inet' },
  ADDR4: { type: 'hash:net', family: 'inet' },
  PAIRIF6: { type: 'hash:net,iface', family: 'inet6' },
  IF6: { type: 'hash:net,iface', family: 'inet6' },
};

/** Suffix of the temporary set an `up` fills before it swaps it in. */
const TEMP = '-T';
/** ipset names hold at most 31 characters (IPSET_MAXNAMELEN 32, with the NUL). */
export const IPSET_MAX_NAME = 31;

/**
 * `<PREFIX>-<KIND>`, PREFIX being the backend's chain prefix (render-iptables.ts chainPrefix:
 * the table upper-cased, at most 21 characters), so the longest, "<21>-PAIRIF6-T", is 31
 * characters: always a valid ipset name.
 */
export function ipsetNames(p: string): Record<IpsetKind, string> {
  const out = {} as Record<IpsetKind, string>;
  for (const kind of IPSET_KINDS) out[kind] = `${p}-${kind}`;
  return out;
}

/** Every set name the backend may create for this table (temporaries included), for `down`. */
export function allIpsets(prefix: string): string[] {
  const names = Object.values(ipsetNames(prefix));
  return [...names, ...names.map((n) => `${n}${TEMP}`)];
}

/** An interface as a hash:net,iface element tail: "sbx-*" -> "sbx- wildcard". */
function iface(glob: string): string {
  return glob.endsWith('*') ? `${glob.slice(0, -1)} wildcard` : glob;
}

/** The elements (ipset text) of each set for a list of registered sandboxes, sorted. */
export function ipsetElements(matches: readonly SandboxMatch[]): Record<IpsetKind, string[]> {
  const out: Record<IpsetKind, Set<string>> = { PAIR4: new Set(), PAIRIF4: new Set(), IF4: new Set(), ADDR4: new Set(), PAIRIF6: new Set(), IF6: new Set() };
  for (const m of matches) {
    if (m.interface !== undefined && m.cidr !== undefined) {
      out.PAIR4.add(`${m.cidr},${iface(m.interface)}`);
      out.PAIRIF4.add(`0.0.0.0/0,${iface(m.interface)}`);
      out.PAIRIF6.add(`::/0,${iface(m.interface)}`);
    } else if (m.interface !== undefined) {
      out.IF4.add(`0.0.0.0/0,${iface(m.interface)}`);
      out.IF6.add(`::/0,${iface(m.interface)}`);
    } else if (m.cidr !== undefined) {
      out.ADDR4.add(m.cidr);
    }
  }
  const res = {} as Record<IpsetKind, string[]>;
  for (const kind of IPSET_KINDS) res[kind] = [...out[kind]].sort();
  return res;
}

function checkList(list: readonly SandboxMatch[]): void {
  const seen = new Set<string>();
  for (const m of list) checkSandbox(m, seen);
}

/**
 * `ipset -exist restore` text that makes every set hold exactly the plan's registered
 * sandboxes: each set is created if absent, and its new contents are filled into a temporary
 * set that is then swapped in (`swap` is atomic), so a packet never meets a half-filled set,
 * even on a reload of a live ruleset. Empty when the plan has no dynamic part.
 */
export function renderIpsetUp(prefix: string, plan: Pick<FirewallPlan, 'dynamic'>): string {
  if (plan.dynamic === undefined) return '';
  checkList(plan.dynamic);
  const names = ipsetNames(prefix);
  const elements = ipsetElements(plan.dynamic);
  const out: string[] = [];
  for (const kind of IPSET_KINDS) {
    const { type, family } = TYPE[kind];
    const name = names[kind];
    const temp = `${name}${TEMP}`;
    out.push(`create ${name} ${type} family ${family}`, `create ${temp} ${type} family ${family}`, `flush ${temp}`);
    for (const e of elements[kind]) out.push(`add ${temp} ${e}`);
    out.push(`swap ${temp} ${name}`, `destroy ${temp}`);
  }
  return `${out.join('\n')}\n`;
}

/**
 * `ipset -exist restore` text that turns the sets for `before` into the sets for `after`:
 * adds first, then deletes. ipset has no transaction across lines, so the order is chosen to
 * fail closed: between two lines a sandbox is matched by more sets, never by fewer (a packet of
 * an updated sandbox never falls outside every sandbox rule). Empty when nothing changes.
 */
export function renderIpsetChanges(prefix: string, before: readonly SandboxMatch[], after: readonly SandboxMatch[]): string {
  checkList(before);
  checkList(after);
  const names = ipsetNames(prefix);
  const was = ipsetElements(before);
  const now = ipsetElements(after);
  const adds: string[] = [];
  const dels: string[] = [];
  for (const kind of IPSET_KINDS) {
    const old = new Set(was[kind]);
    const next = new Set(now[kind]);
    for (const e of now[kind]) if (!old.has(e)) adds.push(`add ${names[kind]} ${e}`);
    // `del` takes no flags: "sbx- wildcard" is deleted as "sbx-".
    for (const e of was[kind]) if (!next.has(e)) dels.push(`del ${names[kind]} ${e.replace(/ wildcard$/, '')}`);
  }
  const lines = [...adds, ...dels];
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** `ipset restore` text that destroys the named sets (those that exist; rules must be gone first). */
export function renderIpsetDestroy(present: readonly string[]): string {
  return present.length === 0 ? '' : `${present.map((n) => `destroy ${n}`).join('\n')}\n`;
}

/** `ipset list -n` output -> the set names. */
export function parseIpsetNames(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}
