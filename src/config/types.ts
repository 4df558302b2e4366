/**
 * The validated, frozen configuration. Shapes follow shared/contract.md; defaults are filled in
 * by the validator so nothing downstream needs to know them.
 */
export type Protocol = 'tls' | 'tcp';   // 'tls' = TLS by SNI or plain HTTP by Host (auto-detected)
export type Mode = 'enforce' | 'report';

export interface AllowRule {
  readonly host: string;                 // normalised: lowercase, no trailing dot; may start with "*."
  readonly ports: readonly number[];
  readonly protocol: Protocol;
  readonly inject?: string;
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  /** Lets the sandbox speak plain HTTP to this intercepted host; sandgate upgrades to TLS upstream. */
  readonly plainHttp?: boolean;
}

export interface PolicyConfig { readonly mode: Mode; readonly allow: readonly AllowRule[] }

export interface SandboxConfig {
  readonly name: string;
  readonly interface?: string;
  readonly cidr?: string;
  readonly policy: string;
  readonly user?: string;
}

export type SecretSource = { readonly env: string } | { readonly file: string };

export interface CredentialConfig {
  readonly secret: SecretSource;
  readonly header: string;
  readonly format: string;
  readonly placeholder?: string;
  readonly basic?: { readonly username: string };
  readonly query?: string;
}

/** The DNS responder's limits (docs/dns.md). All per sandbox. */
export interface DnsConfig {
  /** Token bucket: sustained queries per second, and how many may arrive at once. Over it: REFUSED. */
  readonly rateLimit: { readonly qps: number; readonly burst: number };
  /** DNS over TCP: a connection idle this long is closed; at most maxConnections open at once. */
  readonly tcp: { readonly idleTimeoutMs: number; readonly maxConnections: number };
  /** `dns` audit lines written individually (token bucket); the rest are counted in summary lines. */
  readonly auditSampling: { readonly linesPerSecond: number; readonly burst: number };
}

export interface Config {
  readonly listen: { readonly port: number; readonly dnsPort: number; readonly address: string };
  readonly dns: DnsConfig;
  readonly log: { readonly file?: string; readonly level: string };
  readonly tls: { readonly caDir: string };
  readonly upstream: {
    readonly resolver?: string;
    readonly hosts: Readonly<Record<string, readonly string[]>>;
    readonly caFile?: string;
    readonly allowPrivate: readonly string[];
    readonly connectTimeoutMs: number;
  };
  readonly firewall: { readonly table: string; readonly mark: number; readonly routeTable: number };
  readonly sandboxes: readonly SandboxConfig[];
  readonly policies: Readonly<Record<string, PolicyConfig>>;
  readonly credentials: Readonly<Record<string, CredentialConfig>>;
}
