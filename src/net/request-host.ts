/**
 * The Host of a plain-HTTP connection's first request, read before anything is decided, for
 * `unlisted: ask` (docs/approvals.md): the question needs the name before the relay starts. Only
 * the question uses it; every request is still admitted by the relay's own parser and the policy
 * (src/http/admit.ts), so a head this reader misreads is at worst asked about and then refused.
 */
import type net from 'node:net';
import { hostFromHeader } from '../http/headers.js';

/** Larger heads are not asked about (the relay's own limit applies to them). */
const MAX_HEAD = 16 * 1024;

/** Reads on from `head` until the end of the request head (CRLF CRLF), the limit, EOF or the timeout; the socket is left paused. */
export function readRequestHead(socket: net.Socket, head: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve) => {
    let buf = head;
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', done);
      socket.removeListener('error', done);
      socket.pause();
      resolve(buf);
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.includes('\r\n\r\n') || buf.length >= MAX_HEAD) done();
    };
    const timer = setTimeout(done, timeoutMs);
    if (buf.includes('\r\n\r\n')) {
      done();
      return;
    }
    socket.on('data', onData);
    socket.once('end', done);
    socket.once('error', done);
    socket.resume();
  });
}

/** The one Host field's name (normalised as admit does), or undefined: none, several, or no complete head. */
export function requestHost(head: Buffer): string | undefined {
  const end = head.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = head.subarray(0, end).toString('latin1').split('\r\n').slice(1);
  const hosts = lines.filter((l) => /^host:/i.test(l));
  if (hosts.length !== 1) return undefined;
  return hostFromHeader((hosts[0] as string).slice(5).trim());
}
