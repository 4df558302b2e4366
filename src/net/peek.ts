import type net from 'node:net';
import { parseClientHello, looksLikeTls, type HelloResult } from './client-hello.js';
import type { TlsAlert } from './tls-alert.js';

export type Peeked =
  | { kind: 'tls'; hello: Extract<HelloResult, { kind: 'hello' }>; head: Buffer }
  | { kind: 'http'; head: Buffer }
  /** `alert`: the TLS alert to answer with (a TLS record that is no valid ClientHello), else a reset. */
  | { kind: 'reject'; reason: string; head: Buffer; alert?: TlsAlert };

const MAX_HELLO = 16 * 1024 + 5 * 4;

/**
 * Read just enough of an unknown stream to classify it: a complete TLS ClientHello (which may
 * span several records and TCP segments), or the first byte of an HTTP request line. Bounded in
 * bytes and time; on return the socket is paused and `head` holds every byte read so far, to be
 * replayed to whoever handles the stream next.
 */
export function peek(socket: net.Socket, timeoutMs: number): Promise<Peeked> {
  return new Promise((resolve) => {
    let head: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (p: Peeked): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', onEnd);
      socket.pause();
      resolve(p);
    };
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const first = head[0] ?? 0;
      if (!looksLikeTls(first)) {
        // An HTTP/1.x request line starts with an upper-case method token (RFC 9112 §3).
        if (first >= 0x41 && first <= 0x5a) finish({ kind: 'http', head });
        else finish({ kind: 'reject', reason: 'neither TLS nor HTTP', head });
        return;
      }
      const r = parseClientHello(head, MAX_HELLO);
      if (r.kind === 'hello') finish({ kind: 'tls', hello: r, head });
      else if (r.kind === 'invalid') finish({ kind: 'reject', reason: `bad ClientHello: ${r.reason}`, head, alert: 'decode_error' });
    };
    const onEnd = (): void => finish({ kind: 'reject', reason: 'closed before sending a ClientHello or request', head });
    const timer = setTimeout(() => finish({ kind: 'reject', reason: `no ClientHello or request within ${timeoutMs} ms`, head }), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
    socket.resume();
  });
}
