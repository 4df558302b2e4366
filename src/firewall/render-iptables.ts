/**
 * Pure render of sandgate's iptables backend: the same FirewallPlan as render-nft.ts, as
 * `iptables-restore --noflush` / `ip6tables-restore --noflush` input. No I/O; apply-iptables.ts
 * reads the current state (iptables-save), renders, and feeds the text in.
 *
 * Coexistence with rules sandgate did not write (Docker, ufw, libvirt, an operator's own):
 * everything of sandgate's lives in chains of its own, named `<TABLE>-*` after the plan's
 * table name upper-cased (SANDGATE-PRE, ...). The built-in chains get exactly one jump each,
 * inserted at position 1 and only when absent, so `up` twice changes nothing and `down`
 * removes the jumps and our chains and nothing else. Declaring a chain in a --noflush restore
 * flushes just that chain, so re-applying replaces our rules in one restore transaction.
 *
 * Semantics match the nft ruleset rule for rule, with one difference of kind: nft `accept`
 * ends only sandgate's own base chain, while an iptables ACCEPT would also skip the host's
 * later rules in the same built-in chain. So here sandgate's chains only ever drop, mark,
 * queue, redirect or TPROXY; "let it through" is RETURN, and the host's own rules and
 * policies still apply afterwards, exactly as other nft tables' rules do under the nft backend.
 *
 * IPv4 (iptables):
 *   mangle PREROUTING -> P-PRE: per sandbox -> P-SBX: rpfilter (strict reverse path), DNS
 *     over its per-source rate (hashlimit, plan.dnsRate; render-nft.ts says why here) -> DROP,
 *     other DNS returns (nat redirects it), TCP -> TPROXY (mark), a flow sandgate accepted
 *     (connmark) returns, over the per-source rate -> DROP, else NFQUEUE (no --queue-bypass:
 *     with no reader the kernel drops). A source outside an interface+cidr sandbox's cidr -> DROP.
 *   nat PREROUTING -> P-NAT: DNS (UDP/TCP 53, any address) -> REDIRECT to the responder.
 *   nat POSTROUTING -> P-POST: accepted flows -> MASQUERADE.
 *   filter INPUT -> P-IN -> P-SBXIN: only TPROXY'd TCP (mark) and redirected DNS (ctstate
 *     DNAT) return; everything else from a sandbox is dropped.
 *   filter FORWARD -> P-FWD -> P-SBXFWD: only flows sandgate accepted (connmark, or the
 *     verdict's mark on the first packet, copied into the connmark) return; the rest drops.
 *     Towards a sandbox, only packets of accepted flows pass.
 * IPv6 (ip6tables): never carried. mangle PREROUTING -> P-PRE -> P-SBX: neighbour
 *   solicitation/advertisement with the host returns, router discovery and MLD drop silently,
 *   the rest is queued (rate-limited) for an audit line; filter INPUT (but for that neighbour
 *   discovery) and FORWARD drop everything from (and forwarded to) a sandbox interface,
 *   whatever the verdict was.
 *
 * Sandboxes registered through the control API (plan.dynamic; docs/control-api.md) are not
 * rules but elements of ipsets (render-ipset.ts), matched with `-m set --match-set` by a
 * constant set of rules placed before the config's per-sandbox rules wherever those are, exactly
 * where render-nft.ts puts its dyn_* set rules; so the rules are the same for any number of them.
 */
import { FirewallError, type FirewallPlan, type SandboxMatch } from './plan.js';
import { formatMark, validatePlan } from './render-nft.js';
import { ipsetNames, type IpsetKind } from './render-ipset.js';

export type IptTable = 'mangle' | 'nat' | 'filter';

export interface IptChain {
  readonly name: string;
  readonly rules: readonly string[];
}

export interface IptTableSpec {
  readonly table: IptTable;
  readonly chains: readonly IptChain[];
  /** Built-in chain -> our chain, one unconditional jump each, inserted at position 1. */
  readonly jumps: readonly { readonly from: string; readonly to: string }[];
}

export interface IptSpec {
  readonly v4: readonly IptTableSpec[];
  readonly v6: readonly IptTableSpec[];
}

/** What iptables-save shows of one family: "table/CHAIN" chains, "table/FROM/TO" jump counts. */
export interface IptState {
  readonly chains: ReadonlySet<string>;
  readonly jumps: ReadonlyMap<string, number>;
}

export const EMPTY_STATE: IptState = { chains: new Set(), jumps: new Map() };

/** iptables chain names hold at most 28 characters; the longest suffix is "-SBXFWD" (7). */
const MAX_PREFIX = 21;
/** Router discovery, redirects, MLD: dropped silently (render-nft.ts ICMPV6_SILENT). */
const ICMPV6_SILENT = [130, 131, 132, 133, 134, 137, 143];
/** Neighbour solicitation/advertisement with the host, on-link only (render-nft.ts ND). */
const ND = ['135', '136'].map((type) => `-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -m hl --hl-eq 255`);

/** "sandgate" -> "SANDGATE"; the plan's table name is already [A-Za-z][A-Za-z0-9_-]*. */
export function chainPrefix(plan: Pick<FirewallPlan, 'table'>): string {
  const prefix = plan.table.toUpperCase();
  if (prefix.length > MAX_PREFIX) {
    throw new FirewallError(
      `invalid firewall plan: table "${plan.table}" is too long for the iptables backend (at most ${MAX_PREFIX} characters; iptables chain names hold 28)`,
    );
  }
  return prefix;
}

/** FNV-1a (32-bit) in base 36: at most 7 characters. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}

/** nft's "sbx-*" glob is iptables' "sbx-+". */
function ipIface(glob: string): string {
  return glob.endsWith('*') ? `${glob.slice(0, -1)}+` : glob;
}

function comment(text: string): string {
  return `-m comment --comment "${text}"`;
}

function matchArgs(s: SandboxMatch): string {
  const parts: string[] = [];
  if (s.interface !== undefined) parts.push(`-i ${ipIface(s.interface)}`);
  if (s.cidr !== undefined) parts.push(`-s ${s.cidr}`);
  return parts.join(' ');
}

function towardsArgs(s: SandboxMatch): string {
  return s.interface !== undefined ? `-o ${ipIface(s.interface)}` : `-d ${s.cidr ?? ''}`;
}

function perSandbox(plan: FirewallPlan, tail: string): string[] {
  return plan.sandboxes.map((s) => `${matchArgs(s)} ${comment(`sandbox ${s.name}`)} ${tail}`);
}

/** Names of every chain the backend may create, for `down` (whatever the plan's sandboxes). */
export function allChains(plan: Pick<FirewallPlan, 'table'>): { v4: Record<IptTable, string[]>; v6: Record<IptTable, string[]> } {
  const p = chainPrefix(plan);
  return {
    v4: { mangle: [`${p}-PRE`, `${p}-SBX`, `${p}-Q`], nat: [`${p}-NAT`, `${p}-POST`], filter: [`${p}-IN`, `${p}-SBXIN`, `${p}-FWD`, `${p}-SBXFWD`] },
    v6: { mangle: [`${p}-PRE`, `${p}-SBX`, `${p}-Q`], nat: [], filter: [`${p}-IN`, `${p}-FWD`] },
  };
}

/** The full iptables backend for a plan. */
export function iptablesSpec(plan: FirewallPlan): IptSpec {
  validatePlan(plan);
  const p = chainPrefix(plan);
  const sets = ipsetNames(p);
  /** The registered sandboxes' rules when the plan has a dynamic part, else nothing. */
  const D = (rules: () => string[]): string[] => (plan.dynamic !== undefined ? rules() : []);
  const inSet = (kind: IpsetKind, dirs: string, note: string, tail: string): string =>
    `-m set --match-set ${sets[kind]} ${dirs} ${comment(`registered sandboxes: ${note}`)} ${tail}`;
  /** render-nft.ts perDynamic(): one rule per set, whatever its size. */
  const perDynamic = (tail: string): string[] => [
    inSet('PAIR4', 'src,src', 'interface and cidr', tail),
    inSet('IF4', 'src,src', 'interface', tail),
    inSet('ADDR4', 'src', 'cidr', tail),
  ];
  /** render-nft.ts towardsDynamic(): by interface where they have one (dst,dst: -o). */
  const towardsDynamic = (note: string, tail: string): string[] => [
    inSet('PAIRIF4', 'dst,dst', note, tail),
    inSet('IF4', 'dst,dst', note, tail),
    inSet('ADDR4', 'dst', note, tail),
  ];
  /** render-nft.ts dynIfaces() for IPv6: keyed by interface alone. */
  const dynIfaces6 = (dirs: string, note: string, tail: string): string[] => [inSet('IF6', dirs, note, tail), inSet('PAIRIF6', dirs, note, tail)];
  const mark = formatMark(plan.mark);
  const flow = formatMark(plan.flowMark);
  const { pps, burst } = plan.packetRate;
  const queue = `-j NFQUEUE --queue-num ${plan.queueNum}`;
  // hashlimit names are at most 15 characters and per network namespace. A table of a given
  // name keeps the parameters it was created with as long as any rule uses it, so a reload
  // with another rate must use another name: the name is a hash of prefix and rate.
  const hashName = `sg-${fnv1a(`${p}|${pps}|${burst}`)}`;
  // DNS: one table for UDP and TCP (two rules naming it share it), so a source has one budget.
  const dns = plan.dnsRate;
  const dnsLimit = `-m hashlimit --hashlimit-above ${dns.pps}/sec --hashlimit-burst ${dns.burst} --hashlimit-mode srcip --hashlimit-name sg-${fnv1a(`${p}|dns|${dns.pps}|${dns.burst}`)}-d --hashlimit-htable-expire 60000 -j DROP`;
  const withIface = plan.sandboxes.filter((s) => s.interface !== undefined);

  const v4: IptTableSpec[] = [
    {
      table: 'mangle',
      jumps: [{ from: 'PREROUTING', to: `${p}-PRE` }],
      chains: [
        {
          name: `${p}-PRE`,
          rules: [
            ...D(() => perDynamic(`-g ${p}-SBX`)),
            ...perSandbox(plan, `-g ${p}-SBX`),
            // After every sandbox's own rule, so sandboxes sharing an interface glob still match.
            ...D(() => [inSet('PAIRIF4', 'src,src', 'a source outside its cidr', '-j DROP')]),
            ...plan.sandboxes
              .filter((s) => s.interface !== undefined && s.cidr !== undefined)
              .map((s) => `-i ${ipIface(s.interface ?? '')} ${comment(`sandbox ${s.name}: a source outside its cidr`)} -j DROP`),
          ],
        },
        {
          name: `${p}-SBX`,
          rules: [
            '-m rpfilter --invert -j DROP',
            `-p tcp -m tcp --dport 53 ${dnsLimit}`,
            `-p udp -m udp --dport 53 ${dnsLimit}`,
            '-p tcp -m tcp --dport 53 -j RETURN',
            '-p udp -m udp --dport 53 -j RETURN',
            `-p tcp -j TPROXY --on-port ${plan.tproxyPort} --on-ip 0.0.0.0 --tproxy-mark ${mark}/0xffffffff`,
            `-m connmark --mark ${flow} -j RETURN`,
            `-m hashlimit --hashlimit-above ${pps}/sec --hashlimit-burst ${burst} --hashlimit-mode srcip --hashlimit-name ${hashName}-4 --hashlimit-htable-expire 60000 -j DROP`,
            queue,
          ],
        },
      ],
    },
    {
      table: 'nat',
      jumps: [
        { from: 'PREROUTING', to: `${p}-NAT` },
        { from: 'POSTROUTING', to: `${p}-POST` },
      ],
      chains: [
        {
          name: `${p}-NAT`,
          rules: [
            ...D(() => perDynamic(`-p udp -m udp --dport 53 -j REDIRECT --to-ports ${plan.dnsPort}`)),
            ...perSandbox(plan, `-p udp -m udp --dport 53 -j REDIRECT --to-ports ${plan.dnsPort}`),
            ...D(() => perDynamic(`-p tcp -m tcp --dport 53 -j REDIRECT --to-ports ${plan.dnsPort}`)),
            ...perSandbox(plan, `-p tcp -m tcp --dport 53 -j REDIRECT --to-ports ${plan.dnsPort}`),
          ],
        },
        { name: `${p}-POST`, rules: [`-m connmark --mark ${flow} -j MASQUERADE`] },
      ],
    },
    {
      table: 'filter',
      jumps: [
        { from: 'INPUT', to: `${p}-IN` },
        { from: 'FORWARD', to: `${p}-FWD` },
      ],
      chains: [
        { name: `${p}-IN`, rules: [...D(() => perDynamic(`-g ${p}-SBXIN`)), ...perSandbox(plan, `-g ${p}-SBXIN`)] },
        {
          name: `${p}-SBXIN`,
          rules: [
            `-p tcp -m mark --mark ${mark} -j RETURN`,
            `-p udp -m udp --dport ${plan.dnsPort} -m conntrack --ctstate DNAT -j RETURN`,
            `-p tcp -m tcp --dport ${plan.dnsPort} -m conntrack --ctstate DNAT -j RETURN`,
            '-j DROP',
          ],
        },
        {
          name: `${p}-FWD`,
          rules: [
            ...D(() => perDynamic(`-g ${p}-SBXFWD`)),
            ...perSandbox(plan, `-g ${p}-SBXFWD`),
            ...D(() => towardsDynamic('only replies of accepted flows', `-m connmark ! --mark ${flow} -j DROP`)),
            ...plan.sandboxes.map(
              (s) => `${towardsArgs(s)} -m connmark ! --mark ${flow} ${comment(`sandbox ${s.name}: only replies of accepted flows`)} -j DROP`,
            ),
          ],
        },
        {
          name: `${p}-SBXFWD`,
          rules: [
            `-m connmark --mark ${flow} -j RETURN`,
            `-m mark --mark ${flow} -j CONNMARK --set-xmark ${flow}/0xffffffff`,
            `-m mark --mark ${flow} -j RETURN`,
            '-j DROP',
          ],
        },
      ],
    },
  ];

  const v6: IptTableSpec[] = [
    {
      table: 'mangle',
      jumps: [{ from: 'PREROUTING', to: `${p}-PRE` }],
      chains: [
        {
          name: `${p}-PRE`,
          rules: [
            ...D(() => dynIfaces6('src,src', 'IPv6', `-g ${p}-SBX`)),
            ...withIface.map((s) => `-i ${ipIface(s.interface ?? '')} ${comment(`sandbox ${s.name}`)} -g ${p}-SBX`),
          ],
        },
        {
          name: `${p}-SBX`,
          rules: [
            ...ND.map((nd) => `${nd} -j RETURN`),
            ...ICMPV6_SILENT.map((type) => `-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -j DROP`),
            // hashlimit with no --hashlimit-mode is one bucket for all (sources are the
            // sandbox's to pick in IPv6); `-m limit` would cap the rate at 10000/s.
            `-m hashlimit --hashlimit-above ${pps}/sec --hashlimit-burst ${burst} --hashlimit-name ${hashName}-6 -j DROP`,
            queue,
          ],
        },
      ],
    },
    {
      table: 'filter',
      jumps: [
        { from: 'INPUT', to: `${p}-IN` },
        { from: 'FORWARD', to: `${p}-FWD` },
      ],
      chains: [
        {
          name: `${p}-IN`,
          rules: [
            ...D(() => ND.flatMap((nd) => dynIfaces6('src,src', 'neighbour discovery with the host', `${nd} -j RETURN`))),
            ...withIface.flatMap((s) =>
              ND.map((nd) => `-i ${ipIface(s.interface ?? '')} ${nd} ${comment(`sandbox ${s.name}: neighbour discovery with the host`)} -j RETURN`),
            ),
            ...D(() => dynIfaces6('src,src', 'IPv6 is never carried', '-j DROP')),
            ...withIface.map((s) => `-i ${ipIface(s.interface ?? '')} ${comment(`sandbox ${s.name}: IPv6 is never carried`)} -j DROP`),
          ],
        },
        {
          name: `${p}-FWD`,
          rules: [
            ...D(() => [...dynIfaces6('src,src', 'IPv6 is never carried', '-j DROP'), ...dynIfaces6('dst,dst', 'IPv6 is never carried', '-j DROP')]),
            ...withIface.flatMap((s) => [
              `-i ${ipIface(s.interface ?? '')} ${comment(`sandbox ${s.name}: IPv6 is never carried`)} -j DROP`,
              `-o ${ipIface(s.interface ?? '')} ${comment(`sandbox ${s.name}: IPv6 is never carried`)} -j DROP`,
            ]),
          ],
        },
      ],
    },
  ];
  return { v4, v6 };
}

/**
 * The nft backend's one iptables piece: this kernel has no nft `queue` statement, so packets
 * the nft ruleset marked queueMark are queued by xt NFQUEUE in iptables' mangle PREROUTING
 * (priority -150, between nft's pre_mangle at -155 and pre_verdict at -145).
 */
export function queueCompanionSpec(plan: FirewallPlan): IptSpec {
  validatePlan(plan);
  const p = chainPrefix(plan);
  const table: IptTableSpec = {
    table: 'mangle',
    jumps: [{ from: 'PREROUTING', to: `${p}-Q` }],
    chains: [{ name: `${p}-Q`, rules: [`-m mark --mark ${formatMark(plan.queueMark)} -j NFQUEUE --queue-num ${plan.queueNum}`] }],
  };
  return { v4: [table], v6: [table] };
}

/** Reads `iptables-save` output: which chains exist and how many plain jumps each built-in has. */
export function parseIptablesSave(text: string): IptState {
  const chains = new Set<string>();
  const jumps = new Map<string, number>();
  let table = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) chains.add(`${table}/${line.slice(1).split(' ')[0] ?? ''}`);
    else {
      const m = /^-A (\S+) -j (\S+)$/.exec(line);
      if (m) {
        const key = `${table}/${m[1]}/${m[2]}`;
        jumps.set(key, (jumps.get(key) ?? 0) + 1);
      }
    }
  }
  return { chains, jumps };
}

/**
 * What of `tables` (one family's part of a spec) `state` lacks: each chain, and each built-in's
 * jump to it, one sentence per missing piece; empty when the ruleset is in place. For health.
 */
export function missingFrom(tables: readonly IptTableSpec[], state: IptState, family: string): string[] {
  const out: string[] = [];
  for (const t of tables) {
    for (const c of t.chains) if (!state.chains.has(`${t.table}/${c.name}`)) out.push(`${family} ${t.table} chain ${c.name} is missing`);
    for (const j of t.jumps)
      if ((state.jumps.get(`${t.table}/${j.from}/${j.to}`) ?? 0) === 0) out.push(`${family} ${t.table} ${j.from} has no jump to ${j.to}`);
  }
  return out;
}

/**
 * `--noflush` restore text that installs (or replaces) the tables' chains and adds each
 * missing jump. Chains are declared before the jumps that name them, as restore requires.
 */
export function renderRestoreUp(tables: readonly IptTableSpec[], state: IptState): string {
  const out: string[] = [];
  for (const t of tables) {
    out.push(`*${t.table}`);
    for (const c of t.chains) out.push(`:${c.name} - [0:0]`);
    for (const c of t.chains) for (const rule of c.rules) out.push(`-A ${c.name} ${rule}`);
    for (const j of t.jumps) {
      if ((state.jumps.get(`${t.table}/${j.from}/${j.to}`) ?? 0) === 0) out.push(`-I ${j.from} 1 -j ${j.to}`);
    }
    out.push('COMMIT');
  }
  return `${out.join('\n')}\n`;
}

/**
 * `--noflush` restore text that removes every jump to our chains, then flushes and deletes
 * them (all flushes first: our chains jump to each other). Empty when nothing is installed.
 */
export function renderRestoreDown(
  chainsByTable: Partial<Record<IptTable, readonly string[]>>,
  builtins: Record<IptTable, readonly string[]>,
  state: IptState,
): string {
  const out: string[] = [];
  for (const [table, names] of Object.entries(chainsByTable) as [IptTable, readonly string[]][]) {
    const present = names.filter((n) => state.chains.has(`${table}/${n}`));
    const dels: string[] = [];
    for (const from of builtins[table]) {
      for (const to of names) {
        const count = state.jumps.get(`${table}/${from}/${to}`) ?? 0;
        for (let i = 0; i < count; i++) dels.push(`-D ${from} -j ${to}`);
      }
    }
    if (present.length === 0 && dels.length === 0) continue;
    out.push(`*${table}`, ...dels, ...present.map((n) => `-F ${n}`), ...present.map((n) => `-X ${n}`), 'COMMIT');
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

export const BUILTINS: Record<IptTable, readonly string[]> = {
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
};
