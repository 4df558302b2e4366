/**
 * The HTTP/1.1 relay's socket shell: requests a sandbox sends in plain HTTP and, with
 * interception, inside TLS that sandgate terminated (src/tls/intercept.ts). Every decision is made
 * by the sans-io core (src/http/sandbox-conn.ts, exchange.ts, attempt.ts); this file only feeds it
 * socket events and carries out what it asks (src/http/io.ts): writes, reads held or resumed,
 * upstream connections from the pool, decoders, closing.
 *
 * Writes are batched: what goes to the sandbox in one event-loop turn (heads, bodies, framing)
 * leaves in one write (out-buffer.ts), and a request's head and a body that came with it leave
 * corked in one. Upstream connections read into one shared buffer (src/upstream/pool.ts); a
 * Content-Length response body crosses as slices of it. No IncomingMessage, ServerResponse,
 * ClientRequest or Agent exists per request (docs/performance.md).
 */
import type net from 'node:net';
import type { Writable } from 'node:stream';
import type tls from 'node:tls';
import zlib from 'node:zlib';
import type { ConnInfo } from '../net/conn-info.js';
import { UpstreamReader } from './attempt.js';
import type { DecodeSink, Decoder, Pausable, SandboxIo, UpgradeHandover, UpstreamIo, UpstreamWaiter } from './io.js';
import { OutBuffer } from './out-buffer.js';
import { SandboxConn } from './sandbox-conn.js';
import { onRead, type PooledSocket, type Target, type UpstreamPool } from '../upstream/pool.js';
import { relayUpgrade } from './websocket.js';

/** A connection with no request in flight is closed after this long without a byte. */
const KEEP_ALIVE_MS = 60_000;
/** Decoded response bytes queued toward the sandbox before the decoder is paused. */
const MAX_QUEUED_OUT = 1024 * 1024;

/** Serve HTTP/1.1 on a sandbox connection; `head`: bytes already read from it (the peek). */
export function serveHttp(socket: net.Socket, info: ConnInfo, head: Buffer | undefined): void {
  const front = new FrontShell(socket, info);
  if (head !== undefined && head.length > 0) front.conn.data(head);
  socket.resume();
}

/** The sandbox's socket under a SandboxConn. */
class FrontShell implements SandboxIo {
  readonly conn: SandboxConn;
  readonly #socket: net.Socket;
  /** Bytes toward the sandbox, copied and written once per turn. */
  readonly #out: OutBuffer;
  #flushScheduled = false;
  /** The upstream connection feeding the current response: paused while the sandbox is not reading. */
  #source: Pausable | undefined;
  #sourcePaused = false;

  constructor(socket: net.Socket, info: ConnInfo) {
    this.#socket = socket;
    this.#out = new OutBuffer(socket);
    const conn = new SandboxConn(this, info);
    this.conn = conn;
    socket.on('data', (c: Buffer) => {
      conn.data(c);
    });
    socket.on('error', () => {
      /* 'close' follows */
    });
    socket.on('end', () => {
      conn.ended();
    });
    socket.on('close', () => {
      this.#source = undefined;
      conn.closed();
    });
    socket.on('drain', () => {
      this.#onDrain();
    });
    socket.setTimeout(KEEP_ALIVE_MS);
    socket.on('timeout', () => {
      conn.idle();
    });
  }

  /** Heads are latin1: the parser hands header bytes over as latin1 strings, so they go back byte for byte. */
  write(data: string | Buffer, encoding: 'latin1' | 'utf8' = 'latin1'): void {
    this.#out.write(data, encoding);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  readonly #flushLater = (): void => {
    this.#flushScheduled = false;
    this.flush();
  };

  /**
   * The turn's writes leave as one (src/http/out-buffer.ts). Backpressure is checked here, once
   * per turn: if the sandbox is not keeping up, the upstream feeding it is paused until the
   * socket drains.
   */
  flush(): void {
    this.#out.flush();
    if (this.#source !== undefined && !this.#sourcePaused && this.#socket.writableNeedDrain) {
      this.#sourcePaused = true;
      this.#source.pause();
    }
  }

  source(up: Pausable | undefined): void {
    if (this.#sourcePaused && this.#source !== undefined && this.#source !== up) this.#source.resume();
    this.#source = up;
    this.#sourcePaused = false;
  }

  #onDrain(): void {
    if (!this.#sourcePaused) return;
    this.#sourcePaused = false;
    this.#source?.resume();
  }

  reading(on: boolean): void {
    if (on) this.#socket.resume();
    else this.#socket.pause();
  }

  stopReading(): void {
    this.#socket.removeAllListeners('data');
    this.#socket.pause();
  }

  close(): void {
    this.flush();
    const s = this.#socket;
    s.pause();
    if (s.writable) s.end();
    s.destroySoon();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  gone(): boolean {
    return this.#socket.destroyed;
  }

  upgrade(h: UpgradeHandover): void {
    const s = this.#socket;
    this.flush();
    s.removeAllListeners('data');
    s.removeAllListeners('drain');
    s.removeAllListeners('timeout');
    s.setTimeout(0);
    relayUpgrade(h, s);
  }

  connect(info: ConnInfo, target: Target, waiter: UpstreamWaiter): (() => void) | undefined {
    return connectUpstream(info, target, waiter);
  }

  decoder(coding: string, sink: DecodeSink): Decoder {
    return decoderFor(coding, sink, this.#socket);
  }

  now(): number {
    return performance.now();
  }
}

/**
 * An upstream for one request under `info`'s Runtime: a stream of the kept HTTP/2 session, a free
 * pooled HTTP/1.1 connection, or a new connection that becomes either by its ALPN answer. Shared by
 * the HTTP/1.1 shell and the HTTP/2 one (src/http/h2-front.ts).
 */
export function connectUpstream(info: ConnInfo, target: Target, waiter: UpstreamWaiter): (() => void) | undefined {
  const pool = info.rt.upstream.pool;
  const h1 = waiter.http1Only;
  if (target.tls && !h1) {
    const session = pool.takeH2(target);
    if (session !== undefined) {
      waiter.upstreamH2Ready(session, true);
      return undefined;
    }
  }
  const pooled = pool.take(target);
  if (pooled !== undefined) {
    waiter.upstreamReady(UpstreamShell.of(pooled, pool), true);
    return undefined;
  }
  return pool.connect(
    target,
    (p) => {
      if ((p.socket as tls.TLSSocket).alpnProtocol === 'h2') waiter.upstreamH2Ready(pool.h2Session(p, target), false);
      else waiter.upstreamReady(UpstreamShell.of(p, pool), p.reused);
    },
    (err) => {
      waiter.upstreamFailed(err, undefined);
    },
    h1 ? HTTP1_ONLY : undefined,
  );
}

const HTTP1_ONLY: readonly string[] = ['http/1.1'];

/** A decoder for `coding`, paused while `out` (the sandbox's socket or stream) holds more than it should. */
export function decoderFor(coding: string, sink: DecodeSink, out: Writable): Decoder {
  const d = coding === 'br' ? zlib.createBrotliDecompress() : coding === 'deflate' ? zlib.createInflate() : zlib.createGunzip();
  d.on('data', (c: Buffer) => {
    sink.decoded(c);
    if (out.writableLength > MAX_QUEUED_OUT) {
      d.pause();
      out.once('drain', () => d.resume());
    }
  });
  d.once('end', () => {
    sink.decodedEnd();
  });
  d.once('error', (err: NodeJS.ErrnoException) => {
    sink.decodeFailed(err);
  });
  return d;
}

const links = new WeakMap<net.Socket, UpstreamShell>();

/**
 * An upstream connection under its UpstreamReader: made once per connection (with its listeners)
 * and reused by every request it carries.
 */
class UpstreamShell implements UpstreamIo {
  readonly reader: UpstreamReader;
  readonly #socket: net.Socket;
  readonly #pooled: PooledSocket;
  readonly #pool: UpstreamPool;

  static of(p: PooledSocket, pool: UpstreamPool): UpstreamShell {
    let l = links.get(p.socket);
    if (l === undefined) {
      l = new UpstreamShell(p, pool);
      links.set(p.socket, l);
    }
    return l;
  }

  private constructor(p: PooledSocket, pool: UpstreamPool) {
    const socket = p.socket;
    this.#socket = socket;
    this.#pooled = p;
    this.#pool = pool;
    const reader = new UpstreamReader(this);
    this.reader = reader;
    onRead(socket, (c: Buffer) => {
      reader.data(c);
    });
    socket.on('end', () => {
      reader.end();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      reader.error(err);
    });
    socket.on('drain', () => {
      reader.drain();
    });
    socket.once('close', () => {
      links.delete(socket);
      reader.closed();
    });
  }

  write(data: string | Buffer, encoding: 'latin1' = 'latin1'): boolean {
    return this.#socket.write(data, encoding);
  }
  cork(): void {
    this.#socket.cork();
  }
  uncork(): void {
    this.#socket.uncork();
  }
  pause(): void {
    this.#socket.pause();
  }
  resume(): void {
    this.#socket.resume();
  }
  destroy(): void {
    this.#socket.destroy();
  }
  release(): void {
    this.#pool.release(this.#pooled);
  }
  releaseSoon(): void {
    queueMicrotask(this.#releaseNow);
  }
  readonly #releaseNow = (): void => {
    this.#pool.release(this.#pooled);
  };
}
