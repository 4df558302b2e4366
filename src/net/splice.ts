import type net from 'node:net';
import { pooledReader, type PooledReader } from '../upstream/pooled-read.js';

/** Error codes of a peer that hung up: RST received (RFC 9293 §3.10.7.4), or a write after it did. */
const HANGUP = new Set(['ECONNRESET', 'EPIPE']);

export interface SpliceStats {
  bytesIn: number;
  bytesOut: number;
  ms: number;
  error?: string;
}

/**
 * Relay bytes both ways between the sandbox's socket and the upstream socket.
 * - backpressure: pipe() pauses the reader while the writer's buffer is full;
 * - half-close: both sockets are allowHalfOpen, so an `end` from one side becomes an `end`
 *   (FIN) on the other while the opposite direction keeps flowing;
 * - errors: an error or reset on either side destroys both at once (the sandbox sees a reset
 *   when the upstream resets, and vice versa), and no timeouts apply to an established stream;
 *   `error` names the upstream's failures and the sandbox's other than hanging up (HANGUP).
 * `head` is what was already read from the client while peeking (the ClientHello).
 * bytesOut = sandbox -> upstream, bytesIn = upstream -> sandbox (the sandbox's point of view).
 */
export function splice(client: net.Socket, upstream: net.Socket, head: Buffer | undefined, done: (s: SpliceStats) => void): void {
  const started = Date.now();
  let error: string | undefined;
  let closed = 0;
  const headLen = head?.length ?? 0;
  const onClose = (): void => {
    if (++closed === 2) {
      done({
        bytesOut: client.bytesRead,
        bytesIn: upstream.bytesRead,
        ms: Date.now() - started,
        ...(error !== undefined ? { error } : {}),
      });
    }
  };
  const fail =
    (side: 'sandbox' | 'upstream') =>
    (err: NodeJS.ErrnoException): void => {
      // A sandbox that hangs up with a reset (unread data at close, SO_LINGER 0) or goes away while
      // bytes are still on their way to it is closing, not failing: the close line has no error.
      if (!(side === 'sandbox' && HANGUP.has(err.code ?? ''))) error ??= `${side}: ${err.code ?? err.message}`;
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
  client.on('error', fail('sandbox'));
  upstream.on('error', fail('upstream'));
  client.once('close', onClose);
  upstream.once('close', onClose);
  // When one side is gone entirely, the other cannot usefully continue.
  client.once('close', () => {
    if (!upstream.destroyed) upstream.destroy();
  });
  upstream.once('close', () => {
    if (!client.destroyed) client.destroy();
  });
  // A fully half-closed pair (both FINs seen and flushed) is done: release the sockets.
  const maybeEnd = (): void => {
    if (client.readableEnded && upstream.readableEnded) {
      client.end();
      upstream.end();
    }
  };
  client.once('end', maybeEnd);
  upstream.once('end', maybeEnd);
  if (headLen > 0 && head) upstream.write(head);
  client.pipe(upstream);
  const reader = pooledReader(upstream);
  if (reader) relayPooled(upstream, client, reader);
  else upstream.pipe(client);
  client.resume();
}

/**
 * What `from.pipe(to)` does (backpressure, end -> end), for a socket whose reads land in a reused
 * buffer (src/upstream/pooled-read.ts): each chunk is written on at once, and if the write could not complete
 * synchronously (it is still queued, referencing the buffer) the next read gets a new buffer.
 */
function relayPooled(from: net.Socket, to: net.Socket, reader: PooledReader): void {
  const resume = (): void => {
    from.resume();
  };
  reader.attach(from, (chunk) => {
    if (to.destroyed) return false;
    const ok = to.write(chunk);
    if (to.writableLength > 0) reader.retain();
    if (!ok) {
      to.once('drain', resume);
      return false;
    }
    return true;
  });
  from.once('end', () => {
    if (!to.destroyed) to.end();
  });
}
