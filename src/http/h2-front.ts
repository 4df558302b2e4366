/**
 * HTTP/2 toward the sandbox (RFC 9113): a terminated TLS connection whose ALPN said h2
 * (src/tls/intercept.ts) becomes a node:http2 server session, and every stream on it one exchange
 * of the same core as HTTP/1.1 (src/http/h2-stream.ts, exchange.ts): its own admission against
 * the SNI, method and path rules, credential, scrubbing and audit line. A denied stream is
 * answered on its own; the other streams go on.
 *
 * node:http2 (nghttp2, the library curl, Apache httpd and Node itself use) does the framing, HPACK
 * and flow control; the limits below bound what one sandbox connection can make sandgate hold.
 * nghttp2 also enforces, unasked: the header validity rules of RFC 9113 §8.2 (no connection-specific
 * fields, no uppercase names, no CR/LF/NUL in values: such a stream is reset, never relayed), the
 * Content-Length of a request against its DATA (§8.1.1), a rate limit on streams the peer resets
 * (rapid reset, CVE-2023-44487: 1000 at once, then 33 per second, past which the session gets
 * GOAWAY; this also bounds the exchanges a reset leaves winding down, such as one awaiting a
 * token), a cap on CONTINUATION frames per header block, a connection error for a stream past
 * the acknowledged SETTINGS_MAX_CONCURRENT_STREAMS, and flood detection on queued
 * acknowledgements (SETTINGS and PING floods from a client that does not read).
 */
import http2 from 'node:http2';
import type tls from 'node:tls';
import { who, type ConnInfo } from '../net/conn-info.js';
import { MAX_HEADER_SIZE } from './attempt.js';
import { H2StreamConn, type H2Session } from './h2-stream.js';

/** Streams a sandbox may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 §6.5.2). */
export const H2_MAX_STREAMS = 100;
/** A session with no exchange in flight is closed (GOAWAY) after this long without a frame, as HTTP/1.1 idles out. */
const IDLE_MS = 60_000;

/**
 * The server session's options. The header list limit is HTTP/1.1's (16 KiB, counted as RFC 9113
 * §6.5.2 counts it: names, values and 32 octets per field); extended CONNECT (RFC 8441) is not
 * advertised, so WebSocket clients stay on HTTP/1.1, where sandgate relays WebSockets.
 */
const SERVER_OPTIONS: http2.ServerOptions = {
  settings: {
    maxConcurrentStreams: H2_MAX_STREAMS,
    maxHeaderListSize: MAX_HEADER_SIZE,
    enablePush: false,
    enableConnectProtocol: false,
  },
  maxHeaderListPairs: 128,
  // Unanswered PINGs and unacknowledged SETTINGS sandgate sends (it sends none but its own initial SETTINGS).
  maxOutstandingPings: 10,
  maxSettings: 32,
  // Frames nghttp2 rejects, and streams refused, before the session is torn down.
  maxSessionInvalidFrames: 100,
  maxSessionRejectedStreams: 100,
  // Megabytes of outbound frames and header state the session may queue before it fails.
  maxSessionMemory: 10,
};

/** Serve HTTP/2 on a terminated TLS connection (ALPN h2). */
export function serveH2(socket: tls.TLSSocket, info: ConnInfo): void {
  // A server object per connection: it holds no listening socket, only the options and the
  // session factory, and keeps this connection's facts (`info`) in the closure rather than a side table.
  const server = http2.createServer(SERVER_OPTIONS);
  server.on('session', (session: http2.ServerHttp2Session) => {
    const front: H2Session = { info, active: 0 };
    session.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, raw: string[]) => {
      new H2StreamConn(front, stream, headers, flags, raw).run();
    });
    session.on('error', (err: NodeJS.ErrnoException) => {
      // nghttp2's own verdicts (a flood detected, a protocol error) come as ERR_HTTP2_ERROR, the reason in the message.
      const why = err.code === 'ERR_HTTP2_ERROR' ? `${err.code}: ${err.message}` : (err.code ?? err.message);
      info.rt.audit.write({
        event: 'error',
        ...who(info),
        proto: 'tls',
        alpn: 'h2',
        host: info.sni,
        reason: `HTTP/2 session failed (${why})`,
      });
    });
    // Idle: nothing in flight and no frame for IDLE_MS. GOAWAY lets a client retry elsewhere cleanly.
    session.setTimeout(IDLE_MS, () => {
      if (front.active === 0) session.close();
    });
    session.on('close', () => {
      if (!socket.destroyed) socket.destroy();
    });
  });
  // A TLSSocket made without a tls.Server keeps `secureConnecting` set after its handshake (node
  // clears it only when a server emits 'secureConnection'), and the session would wait for a
  // 'secureConnect' that never comes: the handshake is done ('secure' fired), so it is cleared here.
  (socket as tls.TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
  server.emit('connection', socket);
}
