/**
 * Pure render of sandgate's nftables ruleset: FirewallPlan -> nft text. No I/O, so it is
 * unit-tested exactly; `apply-nft.ts` only feeds the text to `nft -f -`.
 *
 * Shape ("S" = packets from a sandbox; verified end to end on the project's machines):
 *
 *   prerouting, priority mangle (-150): S goes to sandbox_pre, which drops IPv6, drops
 *     spoofed sources, leaves TCP to port 53 alone and TPROXYs every other TCP packet to
 *     the transparent listener, marking it so policy routing (fwmark -> table with
 *     `local 0.0.0.0/0 dev lo`) delivers it locally instead of forwarding it. A packet
 *     that arrives on a sandbox's interface but is not S (its interface AND cidr did not
 *     both match: IPv6, or an IPv4 source outside the cidr) is dropped right after: such
 *     packets match no other rule here, so without this they would reach host services
 *     (and be forwarded wherever forwarding is on).
 *   prerouting, priority dstnat (-100): S's UDP/TCP port 53, to any address, is redirected
 *     to the DNS responder. NAT rather than TPROXY because conntrack then rewrites the
 *     reply's source back to the address the sandbox asked; a TPROXY'd UDP reply would
 *     leave from the host's own address. mangle runs before dstnat, hence the
 *     `th dport 53 return` in sandbox_pre: without it DNS over TCP would be TPROXY'd.
 *   input, priority filter: S reaches the host only as TPROXY'd TCP (marked) or as
 *     redirected DNS (`ct status dnat`); everything else is dropped, so host services and
 *     sandgate's own ports are not reachable directly.
 *   forward, priority filter: S is never forwarded; all egress goes through sandgate.
 *
 * Sandbox matching is `iifname "<glob>"` and/or `ip saddr <cidr>`. `ip saddr` in an inet
 * table carries an implicit `meta nfproto ipv4`, so a cidr-only sandbox's IPv6 packets
 * match none of these rules and pass untouched: IPv6 containment needs an interface match
 * (its `meta nfproto ipv6 drop` in sandbox_pre and `counter drop` in forward cover both
 * families).
 *
 * Every rule is a few lines per sandbox; a later change can move the matches into sets.
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

function checkSandbox(sandbox: SandboxMatch, seen: Set<string>): void {
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
  if (!Array.isArray(plan.sandboxes)) invalid('sandboxes must be an array');
  const seen = new Set<string>();
  for (const sandbox of plan.sandboxes) checkSandbox(sandbox, seen);
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

/** The full `table inet <table> { ... }` text. Deterministic: same plan, same text. */
export function renderRuleset(plan: FirewallPlan): string {
  validatePlan(plan);
  const mark = formatMark(plan.mark);
  const chains = [
    chain('pre_mangle', 'type filter hook prerouting priority mangle; policy accept;', [
      // goto, not jump: a sandbox packet that sandbox_pre lets through (UDP for pre_nat) must
      // not fall back into the catch-all drops below.
      ...perSandbox(plan, 'goto sandbox_pre'),
      // After every sandbox's own rule, so sandboxes sharing an interface glob still match.
      ...plan.sandboxes
        .filter((s) => s.interface !== undefined && s.cidr !== undefined)
        .map((s) => `iifname "${s.interface}" counter drop comment "sandbox ${s.name}: IPv6 or a source outside its cidr"`),
    ]),
    chain('sandbox_pre', undefined, [
      '# sandgate does not carry IPv6: nothing v6 leaves a sandbox',
      'meta nfproto ipv6 drop',
      '# strict reverse path: a sandbox cannot claim another sandbox\'s (or anyone\'s) address',
      'fib saddr . iif oif missing drop',
      '# DNS over TCP is redirected in pre_nat (mangle -150 runs before dstnat -100)',
      'meta l4proto tcp th dport 53 return',
      `meta l4proto tcp tproxy ip to :${plan.tproxyPort} meta mark set ${mark} accept`,
    ]),
    chain(
      'pre_nat',
      'type nat hook prerouting priority dstnat; policy accept;',
      perSandbox(plan, `meta l4proto { tcp, udp } th dport 53 redirect to :${plan.dnsPort}`),
    ),
    chain('input', 'type filter hook input priority filter; policy accept;', perSandbox(plan, 'jump sandbox_in')),
    chain('sandbox_in', undefined, [
      '# TPROXY\'d TCP: sandbox_pre marks every packet of the flow, not only the first',
      `meta l4proto tcp meta mark ${mark} accept`,
      '# DNS that pre_nat redirected, and nothing else aimed at the responder port',
      `meta l4proto { tcp, udp } th dport ${plan.dnsPort} ct status dnat accept`,
      '# host services, sandgate\'s own ports and ICMP are not reachable directly',
      'counter drop',
    ]),
    chain(
      'forward',
      'type filter hook forward priority filter; policy accept;',
      // Forwarding would bypass sandgate: every sandbox packet must end in input or here.
      perSandbox(plan, 'counter drop'),
    ),
  ];
  return `table inet ${plan.table} {\n${chains.join('\n\n')}\n}\n`;
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
