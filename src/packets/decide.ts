/**
 * The verdict for one queued packet (docs/packets.md). The data path only looks things up:
 * rules are compiled once per config (Policy.udpRules), names come from sandgate's own DNS
 * answers or its resolver's cache, and only a cache miss costs one lookup.
 *
 *  - IPv6: always denied; sandgate never carries it (the firewall drops it again afterwards).
 *  - UDP: allowed when a `protocol: udp` rule of the sandbox's policy lists the port and the
 *    destination is in its cidr, or is an address sandgate answered or resolves for its host.
 *  - ICMP and every other protocol: no rule can allow them.
 * Whatever a rule says, the host's own addresses and ranges the SSRF guard refuses
 * (upstream.allowPrivate) are denied, as for TCP; a packet no rule allows is denied for that
 * reason first. In report mode a policy denial becomes
 * `would-deny` and the packet passes.
 */
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';
import type { CompiledUdpRule } from '../policy/policy.js';
import { cidrContains, parseIp } from '../util/ip.js';
import type { PacketHeader } from './ip-header.js';
import type { PacketLine } from './packet-audit.js';
import { QUARANTINED } from '../control/quarantine.js';

export interface DecideContext {
  readonly rt: Runtime;
  /** Host-side interface the packet arrived on (undefined when unknown). */
  readonly iface: string | undefined;
  /** Is `ip` one of the gate host's own addresses? */
  isLocal(ip: string): boolean;
  /** Upper bound on a name lookup for a host rule. */
  readonly resolveTimeoutMs: number;
}

export interface PacketVerdict {
  /** Whether the packet passes (allow, or would-deny in report mode). */
  readonly accept: boolean;
  readonly line: PacketLine;
  /** "udp 10.0.0.9:123": the flow, for audit summaries. */
  readonly what: string;
}

function endpoint(ip: string, port: number | undefined, family: 4 | 6): string {
  if (port === undefined) return ip;
  return family === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The sandbox an IPv6 packet came from: by interface only (sandbox cidrs are IPv4). */
function sandboxByIface(rt: Runtime, iface: string | undefined): Sandbox | undefined {
  return rt.sandboxes.byIface(iface);
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function hostHas(ctx: DecideContext, sandbox: Sandbox, host: string, ip: string): Promise<boolean> {
  if (ctx.rt.dnsAnswers.has(sandbox.name, host, ip)) return true;
  const cached = ctx.rt.upstream.resolver.peek(host);
  if (cached) return cached.includes(ip);
  try {
    const addrs = await withTimeout(ctx.rt.upstream.resolver.resolve(host), ctx.resolveTimeoutMs);
    return addrs?.includes(ip) ?? false;
  } catch {
    return false; // unresolvable: this rule cannot match
  }
}

async function matchUdp(ctx: DecideContext, sandbox: Sandbox, h: PacketHeader): Promise<CompiledUdpRule | undefined> {
  if (h.dstPort === undefined) return undefined;
  const ip = parseIp(h.dst);
  if (!ip) return undefined;
  for (const rule of sandbox.policy.udpRules) {
    if (!rule.ports.has(h.dstPort)) continue;
    if (rule.cidr !== undefined && cidrContains(rule.cidr, ip)) return rule;
    if (rule.host !== undefined && (await hostHas(ctx, sandbox, rule.host, h.dst))) return rule;
  }
  return undefined;
}

export async function decidePacket(ctx: DecideContext, h: PacketHeader): Promise<PacketVerdict> {
  const { rt } = ctx;
  const port = h.dstPort;
  const dst = endpoint(h.dst, port, h.family);
  const what = `${h.proto === 'ip' ? `ip/${h.protocol}` : h.proto} ${dst}`;
  const base = {
    proto: h.proto,
    src: endpoint(h.src, h.srcPort, h.family),
    dst,
    ...(port !== undefined ? { port } : {}),
    ...(h.proto === 'ip' ? { ipProto: h.protocol } : {}),
    ...(h.icmpType !== undefined ? { icmpType: h.icmpType } : {}),
    ...(h.family === 6 ? { family: 6 } : {}),
  } as const;
  const deny = (reason: string, sandbox?: Sandbox): PacketVerdict => ({
    accept: false,
    what,
    line: { ...base, ...who(sandbox), decision: 'deny', reason },
  });

  if (h.family === 6) return deny('IPv6 is not carried', sandboxByIface(rt, ctx.iface));
  const sandbox = rt.sandboxes.identify(h.src, ctx.iface);
  if (!sandbox) return deny('source is not a configured sandbox');
  if (rt.quarantine.has(sandbox.name)) return deny(QUARANTINED, sandbox);
  if (ctx.isLocal(h.dst)) return deny("the gate host's own addresses are not reachable", sandbox);

  let rule: CompiledUdpRule | undefined;
  let reason: string;
  if (h.proto === 'udp') {
    rule = await matchUdp(ctx, sandbox, h);
    reason = port === undefined ? 'UDP without a port (a later fragment)' : `udp ${h.dst}:${port} is not allowed`;
  } else if (h.proto === 'ip') {
    reason = `IP protocol ${h.protocol} is not allowed`;
  } else {
    reason = `${h.proto} is not allowed`;
  }
  // The SSRF guard's reason only applies to a packet that would otherwise pass (a matching
  // rule, or report mode); one that no rule allows is denied for that reason, whatever its
  // address: an ICMP echo to a private address is "icmp is not allowed", not a remark about
  // upstream.allowPrivate.
  if (rule) {
    const guard = rt.upstream.guard.check(h.dst);
    if (guard !== undefined) return deny(guard, sandbox);
    return { accept: true, what, line: { ...base, ...who(sandbox), decision: 'allow', rule: rule.id } };
  }
  const d = sandbox.policy.denied(reason);
  if (d.decision === 'deny') return deny(d.reason, sandbox);
  const guard = rt.upstream.guard.check(h.dst);
  if (guard !== undefined) return deny(guard, sandbox);
  return { accept: true, what, line: { ...base, ...who(sandbox), decision: 'would-deny', reason: d.reason } };
}

function who(sandbox: Sandbox | undefined): { sandbox?: string; user?: string } {
  if (!sandbox) return {};
  return { sandbox: sandbox.name, ...(sandbox.user !== undefined ? { user: sandbox.user } : {}) };
}
