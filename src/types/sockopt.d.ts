declare module 'sockopt' {
  import type { Socket, Server } from 'node:net';
  import type { Socket as DgramSocket } from 'node:dgram';
  type Any = Socket | Server | DgramSocket;
  export function setsockopt(socket: Any, level: number, option: number, value: number): void;
  export function getsockopt(socket: Any, level: number, option: number): number;
  const _default: { setsockopt: typeof setsockopt; getsockopt: typeof getsockopt };
  export default _default;
}
