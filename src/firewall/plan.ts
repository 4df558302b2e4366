import { SandgateError } from '../errors.js';
import { DEFAULTS } from '../config/defaults.js';
/**
 * The firewall plan: everything the ruleset and the policy routing depend on, decided once
 * from the validated config. Backend-neutral: `render-nft.ts` and `render-iptables.ts` turn it
 * into text (pure); `apply-nft.ts` / `apply-iptables.ts` install, remove and show it (I/O);
 * `backend.ts` picks one.
 */

/**
 * Which packets belong to one sandbox. At least one of `interface` and `cidr` is present;
 * when both are, a packet must match both (AND).
 */
export interface SandboxMatch {
  /** Config name of the sandbox; [A-Za-z0-9_.-]{1,64}. Ends up in nft rule comments. */
  name: string;
  /**
   * Host-side input interface as an nft `iifname` pattern: a literal name, or a prefix
   * ending in a single trailing '*' ("sbx-*"). At most 15 characters (IFNAMSIZ - 1).
   */
  interface?: string;
  /**
   * IPv4 source network, "a.b.c.d/len" (or a bare address for a single host). IPv4 only:
   * an IPv6 sandbox is contained only through an interface match (see render-nft.ts).
   */
  cidr?: string;
}

export interface FirewallPlan {
  /** nft table name in family inet; DEFAULT_TABLE unless configured otherwise. */
  table: string;
  /** Transparent TCP listener port on the host (the TPROXY target). */
  tproxyPort: number;
  /** DNS responder port on the host (UDP and TCP); sandbox port 53 is redirected here. */
  dnsPort: number;
  /** fwmark put on TPROXY'd packets so policy routing delivers them locally. Non-zero. */
  mark: number;
  /** Policy-routing table that holds `local 0.0.0.0/0 dev lo` for marked packets. */
  routeTable: number;
  sandboxes: SandboxMatch[];
  /**
   * Sandboxes registered through the control API (nft backend). Absent: the ruleset has no
   * dynamic part at all. Present (even empty): the ruleset declares the dyn_* sets and the
   * constant rules that refer to them, and these sandboxes are the sets' elements, so
   * registering or removing one is an element change, never a rule change (render-nft.ts).
   */
  dynamic?: SandboxMatch[];
  /**
   * NFQUEUE number sandgate reads (0-65535; per network namespace). The first packet of every
   * new flow that is neither TCP nor DNS is queued there for a verdict (docs/packets.md).
   */
  queueNum: number;
  /**
   * nft backend only: packets to queue get this mark in nft, and one iptables rule queues what
   * carries it (the kernel here has no native nft `queue`, only xt NFQUEUE). A packet still
   * marked after the iptables hook was never queued, and is dropped. Non-zero, distinct.
   */
  queueMark: number;
  /**
   * Mark (and, once copied, conntrack mark) of flows sandgate accepted: its accept verdict
   * sets it, the forward chain copies it into the connection, and later packets of the flow
   * match the connmark instead of being queued. Non-zero, distinct from the others.
   */
  flowMark: number;
  /** Per-source-address budget of queued packets; over it, the kernel drops (never queues). */
  packetRate: { pps: number; burst: number };
  /**
   * Per-source-address budget of packets to port 53 (UDP and TCP), enforced before the redirect
   * to the DNS responder; over it the kernel drops them, so one source cannot overflow the
   * responder's one socket for everyone (docs/dns.md).
   */
  dnsRate: { pps: number; burst: number };
}

/** The packet-path and DNS-rate part of a plan with its defaults (tests and callers that only care about TCP). */
export const DEFAULT_PACKET_PLAN: Pick<FirewallPlan, 'queueNum' | 'queueMark' | 'flowMark' | 'packetRate' | 'dnsRate'> = {
  queueNum: DEFAULTS.firewall.queue,
  queueMark: DEFAULTS.firewall.queueMark,
  flowMark: DEFAULTS.firewall.flowMark,
  packetRate: { ...DEFAULTS.packets.rateLimit },
  // The config's default dns.sourceRateLimit (five times the default dns.rateLimit).
  dnsRate: { ...DEFAULTS.dns.sourceRateLimit },
};

/**
 * Any failure to render, install, remove or read the firewall. The message is one
 * sentence; where nft or ip failed it ends with the tool's own first stderr line.
 */
export class FirewallError extends SandgateError {
  override readonly name = 'FirewallError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'FIREWALL', options);
  }
}
