/**
 * What the HTTP relay's pure core (src/http/sandbox-conn.ts, exchange.ts, attempt.ts) asks of
 * the world: the socket shell (src/http/relay.ts) implements these over net/tls sockets, the
 * unit tests with recorders (test/unit/exchange*.test.ts). Methods, not action objects: the core
 * calls them as it decides, so an action costs a call, never an allocation.
 */
import type { ConnInfo } from '../net/conn-info.js';
import type { Admitted } from './admit.js';
import type { Target } from '../upstream/pool.js';
import type { UpstreamReader } from './attempt.js';
import type { H2Upstream } from './h2-attempt.js';

/** The sandbox's side of one connection. */
export interface SandboxIo {
  /** Bytes toward the sandbox; the writes of one event-loop turn leave as one. Strings: latin1 unless told. */
  write(data: string | Buffer, encoding?: 'latin1' | 'utf8'): void;
  /** Send what is queued now; if the sandbox is not keeping up, pause the current source. */
  flush(): void;
  /** Read from the sandbox, or hold (backpressure, a pipelined request waiting). */
  reading(on: boolean): void;
  /** Stop reading for good and leave the unread bytes in place: the connection changes protocol. */
  stopReading(): void;
  /** Send what is queued, then end the connection (FIN). */
  close(): void;
  /** Drop the connection at once: the sandbox must see a response cut short, never a complete one. */
  destroy(): void;
  /** Whether the connection is already gone. */
  gone(): boolean;
  /** The upstream connection or stream feeding the response now (paused while the sandbox is not reading). */
  source(up: Pausable | undefined): void;
  /** Hand the connection to the WebSocket relay: the upgrade request was admitted. */
  upgrade(req: UpgradeHandover): void;
  /**
   * An upstream connection to `target` under this connection's Runtime: a pooled one if free,
   * else a new one. `waiter.upstreamReady` or `waiter.upstreamFailed` follows, possibly at once.
   * Returns a function that aborts a connection still being set up.
   */
  connect(info: ConnInfo, target: Target, waiter: UpstreamWaiter): (() => void) | undefined;
  /** A decoder for `coding` (one `decodable` says yes to); its output goes to `sink`. */
  decoder(coding: string, sink: DecodeSink): Decoder;
  /** A monotonic clock in milliseconds (performance.now()). */
  now(): number;
}

/** An upgrade request handed to the WebSocket relay. */
export interface UpgradeHandover {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: readonly string[];
  readonly connectionNamed: ReadonlySet<string> | undefined;
  /** Bytes after the upgrade request's head (the first frames). */
  readonly rest: Buffer;
  readonly adm: Admitted;
}

/** What feeds a response: an upstream connection, or one stream of an HTTP/2 upstream session. */
export interface Pausable {
  pause(): void;
  resume(): void;
}

/** One upstream connection (held by one attempt at a time). */
export interface UpstreamIo extends Pausable {
  /** The connection's response reader: made once per connection, reused by every attempt. */
  readonly reader: UpstreamReader;
  /** Write toward the upstream; false once its buffer is full (wait for the reader's drain). */
  write(data: string | Buffer, encoding?: 'latin1'): boolean;
  cork(): void;
  uncork(): void;
  /** Stop reading (the sandbox is not keeping up with the response). */
  pause(): void;
  /** Read again. */
  resume(): void;
  /** Back to the pool, after the current event's work (the reader may still hold unasked bytes). */
  releaseSoon(): void;
  /** Back to the pool now (it carried nothing). */
  release(): void;
  destroy(): void;
}

export interface UpstreamWaiter {
  /** `reused`: the connection served requests before (a stale one may fail on first use). */
  upstreamReady(up: UpstreamIo, reused: boolean): void;
  upstreamFailed(err: NodeJS.ErrnoException, attempt: undefined): void;
  /** The upstream speaks HTTP/2 (ALPN): the request is one stream of this session. */
  upstreamH2Ready(session: H2Upstream, reused: boolean): void;
  /**
   * The request must go as HTTP/1.1 (the head is built as text with its body, e.g. AWS re-signing
   * or placeholders in the body: src/http/rewrite.ts): only http/1.1 is offered in ALPN.
   */
  readonly http1Only: boolean;
}

export interface Decoder {
  write(chunk: Buffer): void;
  end(): void;
}

export interface DecodeSink {
  decoded(chunk: Buffer): void;
  decodedEnd(): void;
  decodeFailed(err: NodeJS.ErrnoException): void;
}
