import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';

/** Per-connection facts, handed to whatever serves the connection (src/http/relay.ts, src/tls/intercept.ts). */
export interface ConnInfo {
  readonly rt: Runtime;
  readonly sandbox: Sandbox;
  readonly src: string; // "ip:port" as the sandbox sent it
  readonly dst: string; // original destination "ip:port"
  readonly dstPort: number;
  /** SNI when the connection was TLS (intercepted); requests must name this host. */
  readonly sni?: string;
  /** The ClientHello carried encrypted_client_hello (0xfe0d): shown as `ech: true` on its conn line. */
  readonly ech?: boolean;
  /** The sandbox's TLS settled on HTTP/2 (ALPN h2): shown as `alpn: "h2"` on its lines. */
  readonly alpn?: 'h2';
}

/** Audit fields every line about this connection carries. */
export function who(info: ConnInfo): { sandbox: string; user?: string; src: string; dst: string } {
  return { sandbox: info.sandbox.name, ...(info.sandbox.user !== undefined ? { user: info.sandbox.user } : {}), src: info.src, dst: info.dst };
}
