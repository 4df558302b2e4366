/**
 * Pure render of sandgate's nftables ruleset: FirewallPlan -> nft text. No I/O, so it is
 * unit-tested exactly; `apply-nft.ts` only feeds the text to `nft -f -`.
 *
 * Shape ("S" = packets from a sandbox; verified end to end on the project's machines):
 *
 *   prerouting, priority mangle - 5 (-155): S goes to sandbox_pre, which sends IPv6 to
 *     sandbox_pre6, drops spoofed sources, leaves TCP and UDP to port 53 alone (pre_nat
 *     redirects them) and TPROXYs every other TCP packet to the transparent listener,
 *     marking it so policy routing (fwmark -> table with `local 0.0.0.0/0 dev lo`) delivers
 *     it locally instead of forwarding it. What is left (UDP, ICMP, any other protocol) is
 *     either a later packet of a flow sandgate accepted (`ct mark` = flowMark: passes) or is
 *     marked queueMark for a verdict, within a per-source rate limit (over it: dropped).
 *     A packet that arrives on a sandbox's interface but is not S (its interface AND cidr did
 *     not both match: an IPv4 source outside the cidr) is dropped right after.
 *     DNS over its per-source rate (dns_rate4, plan.dnsRate) is dropped before the return: every
 *     sandbox's DNS ends in the responder's one socket, so a flood must die here, before it
 *     fills that socket's receive queue and the kernel drops other sandboxes' queries with it.
 *     Here and not in pre_nat: a nat chain sees only the first packet of a conntrack flow, and a
 *     flood from one source port is one flow. After the reverse-path check, so only addresses
 *     routed back to the sandbox's interface can become elements.
 *   prerouting, priority mangle (-150): not ours. The kernel here has no nft `queue`
 *     (CONFIG_NFT_QUEUE is off), so one iptables rule (render-iptables.ts
 *     renderQueueCompanion) queues packets marked queueMark with xt NFQUEUE, without
 *     --queue-bypass: with no reader the kernel drops them. sandgate's accept verdict
 *     replaces the mark with flowMark; a drop verdict drops.
 *   prerouting, priority mangle + 5 (-145): pre_verdict drops whatever still carries
 *     queueMark (it was never queued: the iptables rule is missing) and all sandbox IPv6,
 *     whatever the verdict was. Fail closed without depending on the iptables rule.
 *   prerouting, priority dstnat (-100): S's UDP/TCP port 53, to any address, is redirected
 *     to the DNS responder. NAT rather than TPROXY because conntrack then rewrites the
 *     reply's source back to the address the sandbox asked; a TPROXY'd UDP reply would
 *     leave from the host's own address. mangle runs before dstnat, hence the
 *     `th dport 53 return` lines in sandbox_pre.
 *   input, priority filter: S reaches the host only as TPROXY'd TCP (marked) or as
 *     redirected DNS (`ct status dnat`); everything else is dropped, so host services and
 *     sandgate's own ports are not reachable directly, even for an accepted packet flow.
 *   forward, priority filter: S is forwarded only for flows sandgate's verdict accepted
 *     (first packet: `meta mark` flowMark, copied into `ct mark`; later packets: `ct mark`).
 *     Towards a sandbox, only packets of such flows (their replies) are forwarded. The host
 *     needs net.ipv4.ip_forward=1 for accepted flows to leave at all (docs/packets.md).
 *   postrouting, priority srcnat: accepted flows are masqueraded, so they leave from the
 *     host's address like everything sandgate proxies.
 *
 * Sandboxes registered through the control API (plan.dynamic; docs/control-api.md) are not
 * rules but elements of four sets (DYN_SETS below), matched by a constant set of rules placed
 * before the config's per-sandbox rules in each of these chains; registering or removing one is
 * an element change (renderSetChanges), so the ruleset has the same size for any number of them.
 *
 * IPv6 is never carried (docs/packets.md): neighbour solicitation/advertisement with the host
 * passes (so an attempt leaves the sandbox at all), router discovery and MLD are dropped
 * silently, everything else is queued (so sandgate writes a `packet` deny line), then dropped
 * in pre_verdict whatever the verdict. Sandbox matching is `iifname "<glob>"` and/or
 * `ip saddr <cidr>`. `ip saddr` in an inet table carries an implicit `meta nfproto ipv4`,
 * so a cidr-only sandbox's IPv6 packets match none of these rules: IPv6 containment needs an
 * interface match.
 */
import { FirewallError, type FirewallPlan, type SandboxMatch } from './plan.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/**
 * nft identifiers start with a letter; '-' and '_' are accepted inside (checked with
 * `nft -c`). Kept narrow so the name can never break out of the text it is placed in.
 */
const TABLE_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
/**
 * An iifname pattern: a literal interface name, or a prefix plus one trailing '*'. nft
 * stores it in IFNAMSIZ (16) bytes including the terminating NUL, so at most 15
 * characters counting the '*' (nft rejects 16: "String exceeds maximum length of 16").
 * A lone "*" is refused by nft ("All-wildcard strings are not supported") and would mean
 * every interface, loopback included, so a non-empty prefix is required. The character
 * set is narrower than the kernel's (which forbids only '/', ':' and whitespace) so a
 * name can never contain a quote or a backslash.
 */
const IFACE_RE = /^(?:[A-Za-z0-9_.-]{1,15}|[A-Za-z0-9_.-]{1,14}\*)$/;
const OCTET_RE = /^(?:0|[1-9][0-9]{0,2})$/;
/** Routing table ids the kernel reserves: unspec, default, main, local. */
const RESERVED_ROUTE_TABLES = new Set([0, 253, 254, 255]);

function invalid(what: string): never {
  throw new FirewallError(`invalid firewall plan: ${what}`);
}

function checkPort(value: unknown, key: string): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    invalid(`${key} must be an integer port 1-65535, got ${String(value)}`);
  }
}

function checkU32(value: unknown, key: string, min: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > 0xffffffff) {
    invalid(`${key} must be an integer ${min}-4294967295, got ${String(value)}`);
  }
}

/** Parses "a.b.c.d" to a 32-bit unsigned integer, or returns undefined. */
function parseIPv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    // No leading zeros: "010" is octal to inet_aton but decimal to others; refuse it.
    if (!OCTET_RE.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

/**
 * Checks an IPv4 CIDR. Host bits must be zero: nft silently masks "10.77.1.5/24" to
 * 10.77.1.0/24, which would widen what the config author probably meant as one host.
 */
function checkCidr(cidr: unknown, sandbox: string): void {
  if (typeof cidr !== 'string') invalid(`sandbox "${sandbox}": cidr must be a string`);
  const slash = cidr.indexOf('/');
  const addrText = slash === -1 ? cidr : cidr.slice(0, slash);
  const lenText = slash === -1 ? '32' : cidr.slice(slash + 1);
  const addr = parseIPv4(addrText);
  if (addr === undefined || !/^(?:[0-9]|[12][0-9]|3[0-2])$/.test(lenText)) {
    invalid(`sandbox "${sandbox}": cidr ${JSON.stringify(cidr)} is not an IPv4 CIDR like 10.77.0.0/24`);
  }
  const len = Number(lenText);
  const hostBits = len === 32 ? 0 : 2 ** (32 - len) - 1;
  // Bitwise ops are 32-bit signed in JS; `% (hostBits + 1)` keeps the arithmetic unsigned.
  if (addr % (hostBits + 1) !== 0) {
    const network = addr - (addr % (hostBits + 1));
    const dotted = [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.');
    invalid(`sandbox "${sandbox}": cidr ${cidr} has host bits set (network is ${dotted}/${len})`);
  }
}

/** Checks one sandbox's match fields (and that its name is not in `seen`, which it joins). */
export function checkSandbox(sandbox: SandboxMatch, seen: Set<string>): void {
  const { name } = sandbox;
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    invalid(`sandbox name ${JSON.stringify(name)} must match [A-Za-z0-9_.-]{1,64}`);
  }
  if (seen.has(name)) invalid(`sandbox name "${name}" appears twice`);
  seen.add(name);
  if (sandbox.interface === undefined && sandbox.cidr === undefined) {
    invalid(`sandbox "${name}" needs an interface, a cidr, or both`);
  }
  if (sandbox.interface !== undefined) {
    if (typeof sandbox.interface !== 'string' || !IFACE_RE.test(sandbox.interface)) {
      invalid(
        `sandbox "${name}": interface ${JSON.stringify(sandbox.interface)} must be an interface ` +
          `name of at most 15 characters [A-Za-z0-9_.-], optionally ending in one '*'`,
      );
    }
  }
  if (sandbox.cidr !== undefined) checkCidr(sandbox.cidr, name);
}

/**
 * Throws FirewallError unless the plan renders to text nft will parse as intended. The
 * config layer validates first and reports FILE:LINE:COL; this is the last line of
 * defence so that nothing unchecked is ever spliced into the ruleset.
 */
export function validatePlan(plan: FirewallPlan): void {
  if (typeof plan.table !== 'string' || !TABLE_RE.test(plan.table)) {
    invalid(`table ${JSON.stringify(plan.table)} must match [A-Za-z][A-Za-z0-9_-]{0,63}`);
  }
  checkPort(plan.tproxyPort, 'tproxyPort');
  checkPort(plan.dnsPort, 'dnsPort');
  if (plan.tproxyPort === plan.dnsPort) {
    invalid(`tproxyPort and dnsPort are both ${plan.tproxyPort}; the DNS responder also listens on TCP`);
  }
  // Mark 0 would make `meta mark 0` in sandbox_in accept every unmarked sandbox packet.
  checkU32(plan.mark, 'mark', 1);
  checkU32(plan.routeTable, 'routeTable', 1);
  if (RESERVED_ROUTE_TABLES.has(plan.routeTable)) {
    invalid(`routeTable ${plan.routeTable} is reserved (253 default, 254 main, 255 local)`);
  }
  if (typeof plan.queueNum !== 'number' || !Number.isInteger(plan.queueNum) || plan.queueNum < 0 || plan.queueNum > 65535) {
    invalid(`queueNum must be an integer 0-65535, got ${String(plan.queueNum)}`);
  }
  checkU32(plan.queueMark, 'queueMark', 1);
  checkU32(plan.flowMark, 'flowMark', 1);
  if (new Set([plan.mark, plan.queueMark, plan.flowMark]).size !== 3) {
    invalid(`mark, queueMark and flowMark must differ (got ${plan.mark}, ${plan.queueMark}, ${plan.flowMark})`);
  }
  const rate = plan.packetRate as { pps?: unknown; burst?: unknown } | undefined;
  checkU32(rate?.pps, 'packetRate.pps', 1);
  checkU32(rate?.burst, 'packetRate.burst', 1);
  const dnsRate = plan.dnsRate as { pps?: unknown; burst?: unknown } | undefined;
  checkU32(dnsRate?.pps, 'dnsRate.pps', 1);
  checkU32(dnsRate?.burst, 'dnsRate.burst', 1);
  if (!Array.isArray(plan.sandboxes)) invalid('sandboxes must be an array');
  const seen = new Set<string>();
  for (const sandbox of plan.sandboxes) checkSandbox(sandbox, seen);
  if (plan.dynamic !== undefined) {
    if (!Array.isArray(plan.dynamic)) invalid('dynamic must be an array');
    for (const sandbox of plan.dynamic) checkSandbox(sandbox, seen);
  }
}

/** nft and `ip rule` both print marks in hex; rendering the same way keeps output comparable. */
export function formatMark(mark: number): string {
  return `0x${mark.toString(16)}`;
}

/** `iifname "<glob>" ip saddr <cidr>`: both present means both must match. */
function matchExpr(sandbox: SandboxMatch): string {
  const parts: string[] = [];
  if (sandbox.interface !== undefined) parts.push(`iifname "${sandbox.interface}"`);
  if (sandbox.cidr !== undefined) parts.push(`ip saddr ${sandbox.cidr}`);
  return parts.join(' ');
}

/** One rule per sandbox: `<match> <verdict> comment "sandbox <name>"`. */
function perSandbox(plan: FirewallPlan, verdict: string): string[] {
  return plan.sandboxes.map((s) => `${matchExpr(s)} ${verdict} comment "sandbox ${s.name}"`);
}

function chain(name: string, hook: string | undefined, rules: string[]): string {
  const body = hook === undefined ? rules : [hook, ...rules];
  return [`\tchain ${name} {`, ...body.map((line) => `\t\t${line}`), '\t}'].join('\n');
}

/**
 * Router discovery, redirects and MLD (RFC 4861 §4, RFC 3810 §5): a sandbox's kernel sends
 * these on its own whenever an interface comes up. Dropped without a verdict, so they neither
 * flood the queue nor fill the audit log with lines nobody asked for.
 */
const ICMPV6_SILENT = [
  'mld-listener-query',
  'mld-listener-report',
  'mld-listener-done',
  'nd-router-solicit',
  'nd-router-advert',
  'nd-redirect',
  'mld2-listener-report',
];
/**
 * Neighbour solicitation/advertisement between a sandbox and the host, on-link only (hop
 * limit 255, RFC 4861 §7.1.1). Let through so that an IPv6 attempt actually leaves the
 * sandbox and meets the queue (an audit line) instead of dying unseen in neighbour
 * discovery; they carry nothing beyond the link, are never forwarded, and the host only
 * answers for its own addresses.
 */
const ND = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255';

/** Matches packets *to* a sandbox: `oifname` when it has an interface, else `ip daddr`. */
function towardsExpr(sandbox: SandboxMatch): string {
  return sandbox.interface !== undefined ? `oifname "${sandbox.interface}"` : `ip daddr ${sandbox.cidr ?? ''}`;
}

/**
 * Sandboxes registered through the control API live in four sets rather than in rules, so the
 * ruleset is the same size with one of them or ten thousand, and registering or removing one
 * is a single `add element` / `delete element` transaction (renderSetChanges):
 *
 *   dyn_pair        ifname . ipv4_addr   interface and cidr (both must match, as in a rule)
 *   dyn_pair_iface  ifname               the interfaces dyn_pair names (IPv6, replies, and
 *                                        sources outside the cidr, keyed by interface alone)
 *   dyn_iface       ifname               interface only
 *   dyn_addr4       ipv4_addr            cidr only
 *
 * All four are `flags interval`: for ipv4_addr that makes a cidr one element; for ifname it
 * makes "sbx-*" (a prefix) a valid element (nft 1.0.6, checked here), and the kernel refuses
 * overlapping elements, a second line of defence behind src/control/overlap.ts.
 * The rules that use the sets come before the config's per-sandbox rules in every chain:
 * registered sandboxes take precedence, so a config glob is the fallback for the rest.
 */
export const DYN_SETS = ['dyn_pair', 'dyn_pair_iface', 'dyn_iface', 'dyn_addr4'] as const;
export type DynSet = (typeof DYN_SETS)[number];

const DYN_TYPES: Record<DynSet, string> = {
  dyn_pair: 'ifname . ipv4_addr',
  dyn_pair_iface: 'ifname',
  dyn_iface: 'ifname',
  dyn_addr4: 'ipv4_addr',
};

/** The elements (nft text) of each set for a list of registered sandboxes, sorted. */
export function dynamicElements(matches: readonly SandboxMatch[]): Record<DynSet, string[]> {
  const out: Record<DynSet, Set<string>> = { dyn_pair: new Set(), dyn_pair_iface: new Set(), dyn_iface: new Set(), dyn_addr4: new Set() };
  for (const m of matches) {
    if (m.interface !== undefined && m.cidr !== undefined) {
      out.dyn_pair.add(`"${m.interface}" . ${m.cidr}`);
      out.dyn_pair_iface.add(`"${m.interface}"`);
    } else if (m.interface !== undefined) {
      out.dyn_iface.add(`"${m.interface}"`);
    } else if (m.cidr !== undefined) {
      out.dyn_addr4.add(m.cidr);
    }
  }
  const sorted = (set: Set<string>): string[] => [...set].sort();
  return { dyn_pair: sorted(out.dyn_pair), dyn_pair_iface: sorted(out.dyn_pair_iface), dyn_iface: sorted(out.dyn_iface), dyn_addr4: sorted(out.dyn_addr4) };
}

function dynSetDecl(name: DynSet, elements: readonly string[]): string {
  const lines = [`\tset ${name} {`, `\t\ttype ${DYN_TYPES[name]}`, '\t\tflags interval'];
  if (elements.length > 0) lines.push(`\t\telements = { ${elements.join(', ')} }`);
  lines.push('\t}');
  return lines.join('\n');
}

const DYN_NOTE = 'comment "registered sandboxes';

/** Registered sandboxes' counterpart of perSandbox(): one rule per set, whatever its size. */
function perDynamic(verdict: string): string[] {
  return [
    `iifname . ip saddr @dyn_pair ${verdict} ${DYN_NOTE}: interface and cidr"`,
    `iifname @dyn_iface ${verdict} ${DYN_NOTE}: interface"`,
    `ip saddr @dyn_addr4 ${verdict} ${DYN_NOTE}: cidr"`,
  ];
}

/** Packets towards registered sandboxes, like towardsExpr(): by interface where they have one. */
function towardsDynamic(verdict: string, note: string): string[] {
  return [
    `oifname @dyn_pair_iface ${verdict} ${DYN_NOTE}: ${note}"`,
    `oifname @dyn_iface ${verdict} ${DYN_NOTE}: ${note}"`,
    `ip daddr @dyn_addr4 ${verdict} ${DYN_NOTE}: ${note}"`,
  ];
}

/** The registered sandboxes' interface sets: IPv6 is keyed by interface alone. */
function dynIfaces(verdict: string, note: string): string[] {
  return [`iifname @dyn_iface ${verdict} ${DYN_NOTE}: ${note}"`, `iifname @dyn_pair_iface ${verdict} ${DYN_NOTE}: ${note}"`];
}

/**
 * One `nft -f` transaction that turns the sets for `before` into the sets for `after`: deletes
 * first (an updated sandbox may re-add the same interface), then adds. Empty when nothing
 * changes. Both lists are checked like a plan's sandboxes before any text is made.
 */
export function renderSetChanges(table: string, before: readonly SandboxMatch[], after: readonly SandboxMatch[]): string {
  if (typeof table !== 'string' || !TABLE_RE.test(table)) invalid(`table ${JSON.stringify(table)} must match [A-Za-z][A-Za-z0-9_-]{0,63}`);
  for (const list of [before, after]) {
    const seen = new Set<string>();
    for (const m of list) checkSandbox(m, seen);
  }
  const was = dynamicElements(before);
  const now = dynamicElements(after);
  const dels: string[] = [];
  const adds: string[] = [];
  for (const set of DYN_SETS) {
    const old = new Set(was[set]);
    const next = new Set(now[set]);
    const gone = was[set].filter((e) => !next.has(e));
    const added = now[set].filter((e) => !old.has(e));
    if (set !== 'dyn_addr4' && gone.some((e) => e.endsWith('*"'))) {
      // nft 1.0.6 cannot delete a prefix ("sbx-*") from an interval ifname set: "element does
      // not exist" (checked here). The set is emptied and refilled instead, in the same
      // transaction, so no packet ever sees it empty.
      dels.push(`flush set inet ${table} ${set}`);
      if (now[set].length > 0) adds.push(`add element inet ${table} ${set} { ${now[set].join(', ')} }`);
      continue;
    }
    if (gone.length > 0) dels.push(`delete element inet ${table} ${set} { ${gone.join(', ')} }`);
    if (added.length > 0) adds.push(`add element inet ${table} ${set} { ${added.join(', ')} }`);
  }
  const lines = [...dels, ...adds];
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** The full `table inet <table> { ... }` text. Deterministic: same plan, same text. */
export function renderRuleset(plan: FirewallPlan): string {
  validatePlan(plan);
  const mark = formatMark(plan.mark);
  const flow = formatMark(plan.flowMark);
  const queue = formatMark(plan.queueMark);
  const limit = `limit rate over ${plan.packetRate.pps}/second burst ${plan.packetRate.burst} packets`;
  const dnsLimit = `limit rate over ${plan.dnsRate.pps}/second burst ${plan.dnsRate.burst} packets`;
  const withIface = plan.sandboxes.filter((s) => s.interface !== undefined);
  const dyn = plan.dynamic !== undefined;
  /** The registered sandboxes' rules when the plan has a dynamic part, else nothing. */
  const D = (rules: () => string[]): string[] => (dyn ? rules() : []);
  const elements = dynamicElements(plan.dynamic ?? []);
  const sets = [
    // Per source address; bounded (size) and self-cleaning (timeout), so a sandbox cycling
    // through addresses cannot grow it without limit.
    '\tset packet_rate4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 60s\n\t}',
    '\tset dns_rate4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 60s\n\t}',
    ...D(() => DYN_SETS.map((name) => dynSetDecl(name, elements[name]))),
  ];
  const chains = [
    chain('pre_mangle', 'type filter hook prerouting priority mangle - 5; policy accept;', [
      // goto, not jump: a sandbox packet that sandbox_pre lets through (UDP for pre_nat) must
      // not fall back into the catch-all drops below.
      ...D(() => perDynamic('goto sandbox_pre')),
      ...perSandbox(plan, 'goto sandbox_pre'),
      // IPv6 on a sandbox interface: `ip saddr` never matches it, so it lands here.
      ...D(() => dynIfaces('meta nfproto ipv6 goto sandbox_pre6', 'IPv6')),
      ...withIface.map((s) => `iifname "${s.interface}" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox ${s.name}"`),
      // After every sandbox's own rule, so sandboxes sharing an interface glob still match.
      ...D(() => [`iifname @dyn_pair_iface counter drop ${DYN_NOTE}: a source outside its cidr"`]),
      ...plan.sandboxes
        .filter((s) => s.interface !== undefined && s.cidr !== undefined)
        .map((s) => `iifname "${s.interface}" counter drop comment "sandbox ${s.name}: a source outside its cidr"`),
    ]),
    chain('sandbox_pre', undefined, [
      '# sandgate does not carry IPv6: queued for an audit line, then dropped in pre_verdict',
      'meta nfproto ipv6 goto sandbox_pre6',
      "# strict reverse path: a sandbox cannot claim another sandbox's (or anyone's) address",
      'fib saddr . iif oif missing drop',
      '# DNS is redirected in pre_nat (mangle runs before dstnat), within a per-source rate',
      `meta l4proto { tcp, udp } th dport 53 update @dns_rate4 { ip saddr ${dnsLimit} } counter drop`,
      'meta l4proto { tcp, udp } th dport 53 return',
      `meta l4proto tcp tproxy ip to :${plan.tproxyPort} meta mark set ${mark} accept`,
      '# neither TCP nor DNS: a later packet of a flow sandgate accepted passes',
      `ct mark ${flow} return`,
      `update @packet_rate4 { ip saddr ${limit} } counter drop`,
      `meta mark set ${queue}`,
    ]),
    chain('sandbox_pre6', undefined, [
      `${ND} return`,
      `icmpv6 type { ${ICMPV6_SILENT.join(', ')} } counter drop`,
      `${limit} counter drop`,
      `meta mark set ${queue}`,
    ]),
    chain('pre_verdict', 'type filter hook prerouting priority mangle + 5; policy accept;', [
      '# still marked for the queue: no NFQUEUE rule took it, so it was never decided',
      `meta mark ${queue} counter drop`,
      ...D(() => dynIfaces(`${ND} accept`, 'neighbour discovery with the host')),
      ...withIface.map((s) => `iifname "${s.interface}" ${ND} accept comment "sandbox ${s.name}: neighbour discovery with the host"`),
      ...D(() => dynIfaces('meta nfproto ipv6 counter drop', 'IPv6 is never carried')),
      ...withIface.map((s) => `iifname "${s.interface}" meta nfproto ipv6 counter drop comment "sandbox ${s.name}: IPv6 is never carried"`),
    ]),
    chain('pre_nat', 'type nat hook prerouting priority dstnat; policy accept;', [
      ...D(() => perDynamic(`meta l4proto { tcp, udp } th dport 53 redirect to :${plan.dnsPort}`)),
      ...perSandbox(plan, `meta l4proto { tcp, udp } th dport 53 redirect to :${plan.dnsPort}`),
    ]),
    chain('input', 'type filter hook input priority filter; policy accept;', [
      ...D(() => perDynamic('jump sandbox_in')),
      ...perSandbox(plan, 'jump sandbox_in'),
    ]),
    chain('sandbox_in', undefined, [
      '# IPv6 reaches this far only as neighbour discovery (pre_verdict drops the rest)',
      `${ND} accept`,
      "# TPROXY'd TCP: sandbox_pre marks every packet of the flow, not only the first",
      `meta l4proto tcp meta mark ${mark} accept`,
      '# DNS that pre_nat redirected, and nothing else aimed at the responder port',
      `meta l4proto { tcp, udp } th dport ${plan.dnsPort} ct status dnat accept`,
      "# host services, sandgate's own ports and ICMP are not reachable directly",
      'counter drop',
    ]),
    chain('forward', 'type filter hook forward priority filter; policy accept;', [
      // Forwarding would bypass sandgate: only flows its verdict accepted are forwarded.
      ...D(() => perDynamic('goto sandbox_fwd')),
      ...perSandbox(plan, 'goto sandbox_fwd'),
      ...D(() => towardsDynamic(`ct mark ${flow} accept`, 'replies of accepted flows')),
      ...plan.sandboxes.map((s) => `${towardsExpr(s)} ct mark ${flow} accept comment "sandbox ${s.name}: replies of accepted flows"`),
      ...D(() => towardsDynamic('counter drop', 'nothing else is forwarded to it')),
      ...plan.sandboxes.map((s) => `${towardsExpr(s)} counter drop comment "sandbox ${s.name}: nothing else is forwarded to it"`),
    ]),
    chain('sandbox_fwd', undefined, [
      `ct mark ${flow} accept`,
      '# the first packet of a flow: the verdict set the mark; conntrack keeps it for the rest',
      `meta mark ${flow} ct mark set ${flow} accept`,
      'counter drop',
    ]),
    chain('post_nat', 'type nat hook postrouting priority srcnat; policy accept;', [
      "# accepted flows leave from the host's address, like everything sandgate proxies",
      `ct mark ${flow} masquerade`,
    ]),
  ];
  return `table inet ${plan.table} {\n${[...sets, ...chains].join('\n\n')}\n}\n`;
}

/**
 * `nft -f` text that removes the table if present, in one transaction. Declaring an
 * empty table first makes the delete valid whether or not the table exists (nft 1.0.6
 * has no `destroy table`, which arrived in 1.0.8).
 */
export function renderDeleteScript(plan: Pick<FirewallPlan, 'table'>): string {
  if (typeof plan.table !== 'string' || !TABLE_RE.test(plan.table)) {
    invalid(`table ${JSON.stringify(plan.table)} must match [A-Za-z][A-Za-z0-9_-]{0,63}`);
  }
  return `table inet ${plan.table} {}\ndelete table inet ${plan.table}\n`;
}

/**
 * Create-or-replace in one `nft -f` transaction: the whole batch commits or none of it
 * does, so there is no moment without rules (sandboxes never run unfiltered during a
 * reload) and no moment with two rulesets.
 */
export function renderApplyScript(plan: FirewallPlan): string {
  const ruleset = renderRuleset(plan);
  return renderDeleteScript(plan) + ruleset;
}
