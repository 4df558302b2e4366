/**
 * Upstream connections for the relay (src/http/relay.ts): raw sockets, TLS verified against the
 * Runtime's trust (src/upstream/tls.ts) with the host name checked (RFC 9110 §4.3.4), kept
 * alive and reused LIFO per (scheme, host, port), TLS sessions cached per host so a new
 * connection resumes instead of a full handshake. Addresses come from sandgate's resolver
 * through the SSRF guard (lookup.ts), never from the sandbox.
 *
 * ALPN offers h2 and http/1.1 (RFC 7301): an upstream that picks h2 gets one multiplexed session
 * (node:http2), kept per (host, port) and shared by every request to it, whatever protocol the
 * sandbox speaks; the others get HTTP/1.1 connections as before. The session runs over the
 * socket connect() made, so the certificate check and the SSRF guard are the same for both.
 *
 * One pool per UpstreamTls, built with it (src/upstream/upstream.ts, so once per config load):
 * connections made under one trust setting are never reused under another.
 */
import http2 from 'node:http2';
import net, { type LookupFunction } from 'node:net';
import tls from 'node:tls';
import { SandgateError } from '../errors.js';
import type { UpstreamTls } from './tls.js';
import type { AddressGuard } from './address-guard.js';
import { literalRefused } from './lookup.js';

export interface Target {
  readonly tls: boolean;
  readonly host: string;
  readonly port: number;
}

/** An upstream connection: whoever holds it gets its data and close events. */
export interface PooledSocket {
  readonly socket: net.Socket;
  readonly key: string;
  /** False for a connection that served requests before (a stale one may fail at first write). */
  readonly reused: boolean;
}

/**
 * Every upstream connection reads into this one buffer (net/tls `onread`): no buffer is allocated
 * per read, so moving a large body makes no garbage (docs/performance.md). It is safe because
 * every reader consumes a chunk synchronously, before the next read: the HTTP parser copies what
 * it keeps, and the relay copies body bytes into its write buffer (src/http/out-buffer.ts).
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

const sinks = new WeakMap<net.Socket, (chunk: Buffer) => void>();

/**
 * Where `socket`'s bytes go. `chunk` is a view of the shared read buffer, valid only during the
 * call: keep a copy, never the view.
 */
export function onRead(socket: net.Socket, sink: (chunk: Buffer) => void): void {
  sinks.set(socket, sink);
}

function deliver(socket: net.Socket, chunk: Buffer): void {
  const sink = sinks.get(socket);
  // Bytes before anyone asked (an upstream speaking first) answer no request: drop the connection.
  if (sink === undefined) socket.destroy();
  else sink(chunk);
}

const IDLE_MS = 30_000;
/** How often idle connections are swept: an idle one is closed IDLE_MS to IDLE_MS + SWEEP_MS after its release. */
const SWEEP_MS = 5_000;
/**
 * Idle connections kept per (scheme, host, port). It bounds what a burst leaves held for up to
 * IDLE_MS, not the peak: those connections were all in use a moment before. Below the concurrency
 * a client keeps up, it closes connections the next requests reopen at once: with 256, 500 HTTP/2
 * streams in flight (50 sessions × 10) made a new upstream TLS connection for 0.1 to 0.3 of the
 * requests (docs/performance.md, "HTTP/2").
 */
const MAX_FREE_PER_KEY = 1024;
const MAX_SESSIONS = 256;

/** Settings sandgate sends an upstream's HTTP/2 session: no server push (RFC 9113 §8.4), bounded header lists. */
const H2_CLIENT_SETTINGS: http2.Settings = { enablePush: false, maxHeaderListSize: 64 * 1024 };

const ALPN: readonly string[] = ['h2', 'http/1.1'];

/**
 * The idle connections to one (scheme, host, port), oldest first, with when each was released
 * (parallel arrays: releasing and taking a connection allocates nothing).
 */
interface FreeList {
  readonly sockets: net.Socket[];
  readonly since: number[];
}

export class UpstreamPool {
  readonly #free = new Map<string, FreeList>();
  #sweeper: NodeJS.Timeout | undefined;
  /** One HTTP/2 session per upstream that chose h2: every request to it is a stream of that session. */
  readonly #h2 = new Map<string, http2.ClientHttp2Session>();
  readonly #sessions = new Map<string, Buffer>();
  readonly #tls: UpstreamTls;
  readonly #lookup: LookupFunction;
  readonly #guard: AddressGuard;
  readonly #connectTimeoutMs: number;
  readonly #idleMs: number;
  readonly #sweepMs: number;

  /**
   * `lookup`: sandgate's resolver then the SSRF guard (lookup.ts); `guard`: the same guard, for IP
   * literal hosts, which Node connects to without a lookup; `connectTimeoutMs`: upstream.connectTimeoutMs.
   */
  constructor(
    upstreamTls: UpstreamTls,
    lookup: LookupFunction,
    guard: AddressGuard,
    connectTimeoutMs: number,
    idle: { readonly idleMs: number; readonly sweepMs: number } = { idleMs: IDLE_MS, sweepMs: SWEEP_MS },
  ) {
    this.#tls = upstreamTls;
    this.#lookup = lookup;
    this.#guard = guard;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#idleMs = idle.idleMs;
    this.#sweepMs = idle.sweepMs;
  }

  static keyOf(t: Target): string {
    return `${t.tls ? 'https' : 'http'}://${t.host}:${t.port}`;
  }

  /** A free connection to `t`, if one is idle in the pool (most recently used first). */
  take(t: Target): PooledSocket | undefined {
    const key = UpstreamPool.keyOf(t);
    const list = this.#free.get(key);
    while (list !== undefined && list.sockets.length > 0) {
      const s = list.sockets.pop() as net.Socket;
      list.since.pop();
      if (s.destroyed || !s.readable || !s.writable) {
        s.destroy();
        continue;
      }
      s.ref();
      return { socket: s, key, reused: true };
    }
    return undefined;
  }

  /** The HTTP/2 session to `t`, if one is open and not closing (GOAWAY). */
  takeH2(t: Target): http2.ClientHttp2Session | undefined {
    const key = UpstreamPool.keyOf(t);
    const s = this.#h2.get(key);
    if (s === undefined) return undefined;
    if (s.closed || s.destroyed) {
      this.#h2.delete(key);
      return undefined;
    }
    return s;
  }

  /**
   * An HTTP/2 session over a new connection whose ALPN said h2; kept for the next requests to the
   * same upstream unless one is already kept (two requests connected at once): then this one
   * serves its request and idles out.
   */
  h2Session(p: PooledSocket, t: Target): http2.ClientHttp2Session {
    const socket = p.socket;
    const session = http2.connect(`https://${t.host}:${t.port}`, {
      createConnection: () => socket,
      settings: H2_CLIENT_SETTINGS,
      maxHeaderListPairs: 256,
    });
    const key = p.key;
    const forget = (): void => {
      if (this.#h2.get(key) === session) this.#h2.delete(key);
    };
    session.on('error', forget);
    session.once('goaway', forget);
    session.once('close', forget);
    // Idle sessions close as idle sockets do; one with streams in flight finishes them first.
    session.setTimeout(IDLE_MS, () => {
      forget();
      session.close();
    });
    // A session does not keep a stopping daemon alive; the sandbox connections it serves do.
    session.unref();
    const kept = this.#h2.get(key);
    if (kept === undefined || kept.closed || kept.destroyed) this.#h2.set(key, session);
    return session;
  }

  /**
   * A new connection to `t`; `ready` once connected (and, for TLS, verified), or `failed` with an
   * error whose code names the cause (UPSTREAM_CONNECT on timeout, UPSTREAM_FORBIDDEN from the
   * SSRF guard, TLS verification codes). Returns a function that aborts the attempt.
   */
  connect(
    t: Target,
    ready: (p: PooledSocket) => void,
    failed: (err: NodeJS.ErrnoException) => void,
    /** ALPN offered; default h2 then http/1.1. */
    alpn: readonly string[] = ALPN,
  ): () => void {
    const refused = literalRefused(t.host, this.#guard);
    if (refused !== undefined) {
      // As a refused lookup would: asynchronously, before any socket exists.
      let aborted = false;
      queueMicrotask(() => {
        if (!aborted) failed(refused);
      });
      return () => {
        aborted = true;
      };
    }
    const key = UpstreamPool.keyOf(t);
    const lookup = this.#lookup;
    // Reads land in one shared buffer (READ_BUFFER) and go to whoever reads this socket (onRead).
    const holder: { socket?: net.Socket } = {};
    const onread = {
      buffer: READ_BUFFER,
      callback: (n: number, buf: Uint8Array): boolean => {
        if (holder.socket !== undefined) deliver(holder.socket, Buffer.from(buf.buffer, buf.byteOffset, n));
        return true;
      },
    };
    let socket: net.Socket;
    if (t.tls) {
      const session = this.#sessions.get(key);
      // `onread` is honoured by tls.connect when it dials the socket itself (node lib/_tls_wrap.js);
      // @types/node does not list it for TLS.
      const opts: tls.ConnectionOptions & { onread: typeof onread } = {
        host: t.host,
        port: t.port,
        servername: t.host,
        lookup,
        onread,
        secureContext: this.#tls.context,
        ALPNProtocols: alpn as string[],
        ...(session !== undefined ? { session } : {}),
      };
      socket = tls.connect(opts);
      socket.on('session', (s: Buffer) => {
        this.#remember(key, s);
      });
    } else {
      socket = net.connect({ host: t.host, port: t.port, lookup, onread });
    }
    holder.socket = socket;
    let done = false;
    const ms = this.#connectTimeoutMs;
    const timer = setTimeout(() => {
      fail(new SandgateError(`connect to ${t.host}:${t.port} timed out after ${ms} ms`, 'UPSTREAM_CONNECT'));
    }, ms);
    const fail = (err: NodeJS.ErrnoException): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeListener('error', fail);
      socket.on('error', () => undefined);
      socket.destroy();
      failed(err);
    };
    const closed = (): void => {
      fail(Object.assign(new Error('upstream closed the connection during setup'), { code: 'ECONNRESET' }));
    };
    socket.on('error', fail);
    socket.once('close', closed);
    socket.once(t.tls ? 'secureConnect' : 'connect', () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeListener('error', fail);
      socket.removeListener('close', closed);
      socket.setNoDelay(true);
      // Set once for the connection's life, not on every release (each is a JS-to-native call,
      // and listeners added and removed per request made the socket objects megamorphic):
      // an error while idle is followed by 'close', which takes it off the free list; TCP
      // keep-alive notices a peer that vanished while idle (as node's http.Agent does).
      socket.on('error', ignore);
      socket.once('close', () => {
        this.forget(socket, key);
      });
      socket.setKeepAlive(true, IDLE_MS);
      ready({ socket, key, reused: false });
    });
    return () => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        socket.destroy();
      }
    };
  }

  /** Give a connection back once its exchange is complete; it is closed if the pool is full. */
  release(p: PooledSocket): void {
    const s = p.socket;
    if (s.destroyed || !s.readable || !s.writable) {
      s.destroy();
      return;
    }
    let list = this.#free.get(p.key);
    if (list === undefined) {
      list = { sockets: [], since: [] };
      this.#free.set(p.key, list);
    }
    if (list.sockets.length >= MAX_FREE_PER_KEY) {
      s.destroy();
      return;
    }
    // An idle connection's only events: the upstream closing it (its 'close' listener, set at
    // connect, takes it off the list), or the idle timeout (the sweep). Bytes from an idle
    // upstream are a protocol error (it may not answer what was never asked): its reader
    // (src/http/relay.ts) closes it.
    s.resume();
    // An idle connection does not keep the process alive (a stopping daemon exits with some in the pool).
    s.unref();
    list.sockets.push(s);
    list.since.push(performance.now());
    this.#sweeper ??= setInterval(() => {
      this.#sweep();
    }, this.#sweepMs).unref();
  }

  /** Close the connections idle for IDLE_MS or more (each list is oldest first). */
  #sweep(): void {
    const cutoff = performance.now() - this.#idleMs;
    for (const [key, list] of this.#free) {
      if (list.sockets.length === 0) {
        this.#free.delete(key);
        continue;
      }
      let n = 0;
      while (n < list.since.length && (list.since[n] as number) <= cutoff) n++;
      if (n === 0) continue;
      const old = list.sockets.splice(0, n);
      list.since.splice(0, n);
      for (const s of old) s.destroy();
    }
    // Nothing idle: no timer until the next release. A pool its config left behind (a reload
    // builds a new one) thus stops waking up once its last idle connection is gone, and is collected.
    let idle = 0;
    for (const list of this.#free.values()) idle += list.sockets.length;
    if (idle === 0 && this.#sweeper !== undefined) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  /** Close every idle connection (the config that made this pool was replaced, or shutdown). */
  drain(): void {
    for (const list of this.#free.values()) for (const s of list.sockets) s.destroy();
    this.#free.clear();
    for (const s of this.#h2.values()) s.close();
    this.#h2.clear();
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** Taken off the free list (it closed). */
  forget(s: net.Socket, key: string): void {
    const list = this.#free.get(key);
    if (list === undefined) return;
    const i = list.sockets.indexOf(s);
    if (i >= 0) {
      list.sockets.splice(i, 1);
      list.since.splice(i, 1);
    }
  }

  #remember(key: string, session: Buffer): void {
    if (!this.#sessions.has(key) && this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest !== undefined) this.#sessions.delete(oldest);
    }
    this.#sessions.set(key, session);
  }
}

function ignore(): void {
  /* an idle connection's error: its close follows */
}
