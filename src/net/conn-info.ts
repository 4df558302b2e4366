import type net from 'node:net';
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';

/** Per-connection facts, attached to the sandbox-side socket via a WeakMap (no ad-hoc socket props). */
export interface ConnInfo {
  readonly rt: Runtime;
  readonly sandbox: Sandbox;
  readonly src: string;        // "ip:port" as the sandbox sent it
  readonly dst: string;        // original destination "ip:port"
  readonly dstPort: number;
  /** SNI when the connection was TLS (intercepted); requests must name this host. */
  readonly sni?: string;
  /** The ClientHello carried encrypted_client_hello (0xfe0d): shown as `ech: true` on its conn line. */
  readonly ech?: boolean;
}

const infos = new WeakMap<net.Socket, ConnInfo>();

export function setConnInfo(socket: net.Socket, info: ConnInfo): void {
  infos.set(socket, info);
}

export function getConnInfo(socket: net.Socket): ConnInfo | undefined {
  return infos.get(socket);
}

/** Audit fields every line about this connection carries. */
export function who(info: ConnInfo): { sandbox: string; user?: string; src: string; dst: string } {
  return { sandbox: info.sandbox.name, ...(info.sandbox.user !== undefined ? { user: info.sandbox.user } : {}), src: info.src, dst: info.dst };
}
