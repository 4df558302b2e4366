/**
 * The validated, frozen configuration. Shapes are documented in docs/policy.md; defaults are filled in
 * by the validator so nothing downstream needs to know them.
 */
export type Protocol = 'tls' | 'tcp'; // 'tls' = TLS by SNI or plain HTTP by Host (auto-detected)
export type Mode = 'enforce' | 'report';
/**
 * What to do with a ClientHello carrying encrypted_client_hello (0xfe0d): decide on its outer SNI
 * like any other (`allow`), or deny it (`refuse`). docs/threat-model.md, "ECH".
 */
export type EchChoice = 'allow' | 'refuse';

export interface AllowRule {
  readonly host: string; // normalised: lowercase, no trailing dot; may start with "*."
  readonly ports: readonly number[];
  readonly protocol: Protocol;
  readonly inject?: string;
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  /** Lets the sandbox speak plain HTTP to this intercepted host; sandgate upgrades to TLS upstream. */
  readonly plainHttp?: boolean;
  /** Overrides `tls.ech` for this rule (TLS rules only). */
  readonly ech?: EchChoice;
}

/**
 * `protocol: udp` allow entries (docs/packets.md). Kept apart from `allow` so no TLS/HTTP/TCP
 * lookup can ever match them. Exactly one of host (an exact name, matched against addresses
 * sandgate resolved or answered for it) and cidr.
 */
export interface UdpRule {
  /** "policies.default.allow[3]": the entry's place in the config, shown in audit lines. */
  readonly id: string;
  readonly host?: string;
  readonly cidr?: string;
  readonly ports: readonly number[];
}

/** What happens to a name (or name:port) the policy does not list: denied, or asked about (docs/approvals.md). */
export type Unlisted = 'deny' | 'ask';

export interface PolicyConfig {
  readonly mode: Mode;
  readonly allow: readonly AllowRule[];
  /** `ask`: an unlisted name waits for an approver (docs/approvals.md); default `deny`. */
  readonly unlisted: Unlisted;
  /** How long an `ask` waits before it is a denial (reason ask-timeout). */
  readonly askTimeoutMs: number;
  /** The policy's `protocol: udp` entries; absent = none. */
  readonly udp?: readonly UdpRule[];
  /** Cloud instance metadata answered by sandgate itself (docs/metadata.md); absent = none. */
  readonly metadata?: MetadataConfig;
  /** What a tripwire does to a sandbox under this policy; absent: the global `onTripwire`. */
  readonly onTripwire?: OnTripwire;
}

/**
 * `metadata`: which cloud instance-metadata services sandgate answers from memory for the
 * policy's sandboxes, on 169.254.169.254:80 (docs/metadata.md). Every credential in the answers
 * is a placeholder that a credential rule swaps for the real one on the way out.
 */
export interface MetadataConfig {
  readonly aws?: AwsMetadataConfig;
  readonly gce?: GceMetadataConfig;
}

/** AWS IMDSv2 answers (IMDSv1 requests without a session token get 401). */
export interface AwsMetadataConfig {
  readonly role: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string;
  /** Expiration of the credentials document: this long after each answer. */
  readonly credentialLifetimeS: number;
  readonly region: string;
  readonly availabilityZone: string;
  readonly instanceId: string;
  readonly instanceType: string;
  readonly accountId: string;
}

/** GCE metadata server answers (requests need Metadata-Flavor: Google). */
export interface GceMetadataConfig {
  readonly projectId: string;
  readonly numericProjectId: string;
  readonly email: string;
  readonly scopes: readonly string[];
  readonly accessToken: string;
  readonly expiresInS: number;
  readonly zone: string;
  readonly instanceId: string;
}

/**
 * What happens when a credential's placeholder is seen where it is not bound (src/creds/tripwire.ts):
 * `deny` refuses that request or query; `quarantine` also cuts the sandbox off until an operator
 * releases it (docs/policy.md, "Tripwire").
 */
export type OnTripwire = 'deny' | 'quarantine';

export type FirewallBackendChoice = 'nft' | 'iptables' | 'auto';

/** Limits of the packet path (NFQUEUE verdicts for everything neither TCP nor DNS; docs/packets.md). */
export interface PacketsConfig {
  /** Kernel-side, per source address: packets per second (and burst) that may reach the queue. */
  readonly rateLimit: { readonly pps: number; readonly burst: number };
  /** `packet` audit lines written individually per sandbox (token bucket); the rest are summarised. */
  readonly auditSampling: { readonly linesPerSecond: number; readonly burst: number };
}

export interface SandboxConfig {
  readonly name: string;
  readonly interface?: string;
  readonly cidr?: string;
  readonly policy: string;
  readonly user?: string;
}

export type SecretSource = { readonly env: string } | { readonly file: string };

/**
 * `authService`: sandgate asks an HTTP service for a short-lived token per (credential, user,
 * host) (docs/auth-service.md). `secret` is sandgate's own key for that service.
 */
export interface AuthServiceConfig {
  readonly url: string;
  /** The whole exchange, retries included, must finish within this; then the request gets 503. */
  readonly timeoutMs: number;
  readonly secret: SecretSource;
}

/** `oauth2`: an OAuth 2.0 token endpoint (RFC 6749 §4.4 client credentials, §6 refresh token). */
export interface OAuth2Config {
  readonly tokenUrl: string;
  readonly grant: 'client_credentials' | 'refresh_token';
  readonly clientId: string;
  /** Required for client_credentials; optional for refresh_token (a public client). */
  readonly clientSecret?: SecretSource;
  /** Required for refresh_token; replaced in memory when the endpoint rotates it. */
  readonly refreshToken?: SecretSource;
  readonly scope?: string;
  /** RFC 6749 §2.3.1: HTTP Basic (default; servers must support it) or client_id/client_secret in the body. */
  readonly clientAuth: 'basic' | 'body';
  readonly timeoutMs: number;
}

/**
 * `googleServiceAccount`: access tokens minted from a Google service-account key file with the
 * JWT bearer grant (RFC 7523 §2.1), per credential (one scope list), injected as a bearer token.
 */
export interface GoogleServiceAccountConfig {
  /** The JSON key file (client_email, private_key, token_uri), read at load like a secret file. */
  readonly keyFile: string;
  readonly scopes: readonly string[];
  /** Domain-wide delegation: the user to act as (the JWT's `sub`). */
  readonly subject?: string;
  readonly timeoutMs: number;
}

/**
 * `awsSigV4`: sandgate re-signs AWS Signature V4 requests with these keys; the sandbox signs with
 * a placeholder key id (docs/credentials-aws.md).
 */
export interface AwsSigV4Config {
  /** Static keys (both set), or temporary ones from `authService` (docs/credentials-aws.md). */
  readonly accessKeyId?: SecretSource;
  readonly secretAccessKey?: SecretSource;
  readonly sessionToken?: SecretSource;
  readonly authService?: AuthServiceConfig;
  /** Signing region and service; otherwise taken from the host name. */
  readonly region?: string;
  readonly service?: string;
  /** The only access key id the sandbox may sign with. */
  readonly placeholderKeyId: string;
  /** A signed payload is buffered to be hashed: past this many bytes, 413. */
  readonly maxBodyBytes: number;
}

/** Where a placeholder is replaced (docs/credentials-placeholders.md). */
export type PlaceholderPlace = 'header' | 'query' | 'body';

/** Exactly one of `secret`, `authService`, `oauth2`, `googleServiceAccount`, `awsSigV4` is set (the validator guarantees it). */
export interface CredentialConfig {
  readonly secret?: SecretSource;
  readonly authService?: AuthServiceConfig;
  readonly oauth2?: OAuth2Config;
  readonly googleServiceAccount?: GoogleServiceAccountConfig;
  readonly awsSigV4?: AwsSigV4Config;
  /** Default ['header']. */
  readonly placeholderIn?: readonly PlaceholderPlace[];
  /** Bodies searched for the placeholder are buffered up to this many bytes; past it, 413. */
  readonly maxBodyBytes?: number;
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
  /**
   * Enforced by the firewall, per source address, before a packet reaches the responder's one
   * socket: packets to port 53 (UDP datagrams and TCP segments) per second, and the burst. Over
   * it the kernel drops them. Defaults to five times rateLimit (at most 1,000,000 each).
   */
  readonly sourceRateLimit: { readonly pps: number; readonly burst: number };
  /** DNS over TCP: a connection idle this long is closed; at most maxConnections open at once. */
  readonly tcp: { readonly idleTimeoutMs: number; readonly maxConnections: number };
  /** `dns` audit lines written individually (token bucket); the rest are counted in summary lines. */
  readonly auditSampling: { readonly linesPerSecond: number; readonly burst: number };
}

export interface Config {
  /** Default of every policy's `onTripwire` (default `deny`). */
  readonly onTripwire: OnTripwire;
  readonly listen: {
    readonly port: number;
    readonly dnsPort: number;
    readonly address: string;
    /**
     * The control API's unix socket (docs/control-api.md): an absolute path, default
     * /run/sandgate/control.sock; `false` turns the control API off (static sandboxes only).
     */
    readonly control: string | false;
  };
  readonly dns: DnsConfig;
  readonly log: { readonly file?: string; readonly level: string };
  readonly tls: {
    readonly caDir: string;
    /** Default for every TLS allow rule without its own `ech`; default `allow`. */
    readonly ech: EchChoice;
    /** How often the TLS session ticket keys of intercepted connections are replaced (default 1 h). */
    readonly ticketKeyRotationMs: number;
  };
  /**
   * Directory of sandgate's state: registered.json, the sandboxes registered through the control
   * API (src/control/state-file.ts). Default: tls.caDir.
   */
  readonly stateDir: string;
  readonly upstream: {
    readonly resolver?: string;
    readonly hosts: Readonly<Record<string, readonly string[]>>;
    readonly caFile?: string;
    readonly allowPrivate: readonly string[];
    readonly connectTimeoutMs: number;
  };
  readonly firewall: {
    readonly table: string;
    readonly mark: number;
    readonly routeTable: number;
    /** nft, iptables, or auto (nft when usable); default auto. */
    readonly backend: FirewallBackendChoice;
    /** NFQUEUE number for packet verdicts. */
    readonly queue: number;
    /** Mark/connmark of flows sandgate accepted, and the nft backend's "to be queued" mark. */
    readonly flowMark: number;
    readonly queueMark: number;
  };
  readonly packets: PacketsConfig;
  /**
   * Processes on the TCP data path (docs/performance.md, "1 vs N workers"): 1 (default) is one
   * process doing everything; N > 1 forks N node:cluster workers for the transparent listener's
   * connections while the primary keeps the firewall, DNS, packet gate, control API and audit.
   * "auto" is resolved here to os.availableParallelism() (at most 64).
   */
  readonly workers: number;
  /**
   * The opt-in Prometheus endpoint (docs/operations.md): `GET /metrics` on this address and
   * port of the host. Absent: no metrics listener.
   */
  readonly metrics?: { readonly address: string; readonly port: number };
  /** Approvers of `unlisted: ask` policies besides the control API (docs/approvals.md). */
  readonly approvals: ApprovalsConfig;
  readonly sandboxes: readonly SandboxConfig[];
  readonly policies: Readonly<Record<string, PolicyConfig>>;
  readonly credentials: Readonly<Record<string, CredentialConfig>>;
}

/** `approvals:` (docs/approvals.md). */
export interface ApprovalsConfig {
  /** POSTed each pending item; its JSON answer `{"action": ...}` decides it. */
  readonly webhook?: string;
  readonly webhookTimeoutMs: number;
  /** Pending decisions one sandbox may have at once; past it an unlisted name is denied at once. */
  readonly maxPendingPerSandbox: number;
}
