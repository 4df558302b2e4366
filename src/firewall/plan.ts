/**
 * The firewall plan: everything the nftables ruleset and the policy routing depend on,
 * decided once from the validated config. `render-nft.ts` turns it into text (pure);
 * `apply-nft.ts` installs, removes and shows it (I/O).
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
}

export const DEFAULT_TABLE = 'sandgate';
/** 0x5347 is "SG" in ASCII: easy to spot in `ip rule` and `nft list` output. */
export const DEFAULT_MARK = 0x5347;
export const DEFAULT_ROUTE_TABLE = 5347;

/**
 * Any failure to render, install, remove or read the firewall. The message is one
 * sentence; where nft or ip failed it ends with the tool's own first stderr line.
 */
export class FirewallError extends Error {
  readonly code = 'FIREWALL' as const;
  override readonly name = 'FirewallError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
