/**
 * The HTTP/1.1 relay: requests a sandbox sends in plain HTTP and, with interception, inside TLS
 * that sandgate terminated (src/tls/intercept.ts). Each request is parsed by Node's llhttp
 * (src/http/llhttp.ts, strict), admitted on its own (src/http/admit.ts), gets its credential, and
 * is re-issued to the upstream sandgate resolved itself, over a pooled, verified connection
 * (src/http/upstream-pool.ts). Because every request is re-issued to the upstream named by its own
 * Host, a keep-alive connection cannot carry a second request to a host the policy does not allow.
 *
 * Only heads are turned into objects. Bodies cross as bytes: a Content-Length body as it came, a
 * chunked one re-framed by sandgate from what llhttp decoded (so the framing the upstream sees is
 * sandgate's, never the sandbox's: no smuggling through chunk extensions or odd sizes). A
 * Content-Length response body is read past the parser, as slices of the shared read buffer
 * (upstream-pool.ts). Writes are batched: what goes to the sandbox in one event-loop turn (heads,
 * bodies, framing) leaves in one write (out-buffer.ts), and a request's head and a body that came
 * with it leave corked in one. No IncomingMessage, ServerResponse, ClientRequest or Agent exists
 * per request; that was most of the CPU per intercepted request (docs/performance.md).
 *
 * Redirects are never followed: a 3xx is relayed as is, so the client decides, and its follow-up
 * request to another host gets that host's verdict and credential (none, for an unlisted host).
 *
 * With a token source (authService, oauth2) the credential is looked up first (synchronously on a
 * cache hit) and the request fails closed with 503 if none can be had. An upstream 401 to such a
 * request drops the token, and the request is retried once with a fresh one when it can be
 * replayed: no body, or a body of known length up to 64 KiB, kept while it streamed
 * (docs/auth-service.md).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type net from 'node:net';
import zlib from 'node:zlib';
import type { Transform } from 'node:stream';
import { SandgateError } from '../errors.js';
import { injectQuery, type Credential } from '../creds/credential.js';
import { asTokenError, type TokenError } from '../creds/token-error.js';
import type { AuditFields } from '../audit/logger.js';
import { getConnInfo, who, type ConnInfo } from '../net/conn-info.js';
import { admit, type Admitted, type Refused } from './admit.js';
import { MAX_REPLAY_BODY, refreshCredential, unavailableReason, withCredential, type Dynamic } from './credential-step.js';
import { addConnectionTokens, HOP_BY_HOP, jsonResponse, nameCarriesSecret, unrelayableTransferCoding } from './headers.js';
import { OutBuffer } from './out-buffer.js';
import { Parser, type AfterHead, type Head, type ParseError } from './llhttp.js';
import { Scrubber, scrubString } from './scrub.js';
import { onRead, poolFor, type PooledSocket } from './upstream-pool.js';
import { tlsFailure } from './upstream-tls.js';
import { relayUpgrade } from './websocket.js';

const MAX_HEADER_SIZE = 16 * 1024;
/** A connection with no request in flight is closed after this long without a byte. */
const KEEP_ALIVE_MS = 60_000;
/** A request head must be complete this long after its first byte (slow-header attacks). */
const HEAD_MS = 30_000;
/** A request body sandgate holds while the upstream connection is being set up, before it stops reading. */
const MAX_BUFFERED_BODY = 64 * 1024;
/** Decoded response bytes queued toward the sandbox before the decoder is paused. */
const MAX_QUEUED_OUT = 1024 * 1024;
const STALE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';
const UNSAFE_VALUE = /[\r\n\0]/;

/** Serve HTTP/1.1 on a sandbox connection; `head`: bytes already read from it (the peek). */
export function serveHttp(socket: net.Socket, head: Buffer | undefined): void {
  const info = getConnInfo(socket);
  if (!info) { socket.destroy(); return; }
  const front = new Front(socket, info);
  if (head !== undefined && head.length > 0) front.onData(head);
  socket.resume();
}

/** One request as the sandbox sent it: its head, and its body as it arrives. */
class Incoming {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly headers: { host?: string };
  readonly keepAlive: boolean;
  readonly http10: boolean;
  readonly upgrade: boolean;
  readonly chunked: boolean;
  readonly hasBody: boolean;
  /** Declared Content-Length (-1: none). */
  readonly length: number;
  readonly expectsContinue: boolean;
  /** Fields the Connection header names (hop-by-hop too, RFC 9110 §7.6.1). */
  readonly connectionNamed: Set<string> | undefined;
  /** The first Upgrade field's value, lower-case ('' if none). */
  readonly upgradeTo: string;
  /** Body bytes that arrived before anyone took them. */
  buffered: Buffer[] = [];
  bufferedBytes = 0;
  complete = false;
  /** Bytes after the head of an upgrade request (the first WebSocket frames). */
  rest: Buffer | undefined;
  #sink: ((chunk: Buffer) => void) | undefined;
  #onComplete: (() => void) | undefined;

  constructor(h: Head) {
    this.method = h.method;
    this.url = h.url;
    this.rawHeaders = h.rawHeaders;
    this.keepAlive = h.shouldKeepAlive;
    this.http10 = h.versionMajor === 1 && h.versionMinor === 0;
    this.upgrade = h.upgrade;
    let host: string | undefined;
    let te: string | undefined;
    let length = -1;
    let expect = false;
    let named: Set<string> | undefined;
    let upgradeTo: string | undefined;
    const raw = h.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i] as string;
      if (k.length === 4 && k.toLowerCase() === 'host') host ??= raw[i + 1];
      else if (k.length === 10 && k.toLowerCase() === 'connection') named = addConnectionTokens(named, raw[i + 1] as string);
      else if (k.length === 7 && upgradeTo === undefined && k.toLowerCase() === 'upgrade') upgradeTo = (raw[i + 1] as string).trim().toLowerCase();
      else if (k.length === 17 && k.toLowerCase() === 'transfer-encoding') te = raw[i + 1];
      else if (k.length === 14 && k.toLowerCase() === 'content-length') length = Number(raw[i + 1]);
      else if (k.length === 6 && k.toLowerCase() === 'expect') expect = (raw[i + 1] ?? '').trim().toLowerCase() === '100-continue';
    }
    this.headers = host !== undefined ? { host } : {};
    this.chunked = te !== undefined;
    this.length = length;
    this.hasBody = te !== undefined || length > 0;
    this.expectsContinue = expect;
    this.connectionNamed = named;
    this.upgradeTo = upgradeTo ?? '';
  }

  /** Route body bytes (and what was buffered) to `sink`; `done` once the body is complete. */
  take(sink: (chunk: Buffer) => void, done: () => void): void {
    this.#sink = sink;
    this.#onComplete = done;
    const b = this.buffered;
    this.buffered = [];
    this.bufferedBytes = 0;
    for (const c of b) sink(c);
    if (this.complete) done();
  }

  /** Body bytes from here on are dropped (the exchange is over; the parser still frames them). */
  discard(): void {
    this.#sink = ignoreChunk;
    this.#onComplete = undefined;
    this.buffered = [];
    this.bufferedBytes = 0;
  }

  body(chunk: Buffer): void {
    if (this.#sink !== undefined) { this.#sink(chunk); return; }
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  end(): void {
    this.complete = true;
    this.#onComplete?.();
  }
}

function ignoreChunk(): void { /* discarded */ }

/** A sandbox connection: parses its requests and runs them one at a time, in order. */
class Front {
  readonly socket: net.Socket;
  readonly info: ConnInfo;
  readonly #parser: Parser;
  /** Requests parsed and not started yet: pipelined behind the current one, or parsed in this read. */
  readonly #queue: Incoming[] = [];
  /** The request whose body the parser is reading. */
  #parsing: Incoming | undefined;
  current: Exchange | undefined;
  closing = false;
  #headStart = 0;
  #peerEnded = false;
  /** Bytes toward the sandbox, copied and written once per turn. */
  readonly #out: OutBuffer;
  /** Paused for the upstream's sake (backpressure); resumed on drain. */
  #readBlocked = false;
  /** The upstream connection feeding the current response: paused while the sandbox is not reading. */
  #source: net.Socket | undefined;
  #sourcePaused = false;

  constructor(socket: net.Socket, info: ConnInfo) {
    this.socket = socket;
    this.info = info;
    this.#out = new OutBuffer(socket);
    this.#parser = new Parser('request', MAX_HEADER_SIZE, {
      onHead: (h) => { this.#onHead(h); return 'body'; },
      onBody: (c) => { this.#parsing?.body(c); },
      onComplete: () => {
        const p = this.#parsing;
        this.#parsing = undefined;
        this.#headStart = 0;
        p?.end();
      },
    });
    socket.on('data', (c: Buffer) => { this.onData(c); });
    socket.on('error', () => { /* 'close' follows */ });
    // The sandbox finished sending (the listener allows half-open connections): a request in
    // flight is still answered, then the connection closes; nothing more will come.
    socket.on('end', () => { this.#peerEnded = true; if (this.current === undefined) this.close(); });
    socket.on('close', () => { this.#onClose(); });
    socket.on('drain', () => { this.#onDrain(); });
    socket.setTimeout(KEEP_ALIVE_MS);
    socket.on('timeout', () => { if (this.current === undefined) socket.destroy(); });
  }

  onData(chunk: Buffer): void {
    if (this.closing) return;
    if (this.#parsing === undefined) {
      const now = performance.now();
      if (this.#headStart === 0) this.#headStart = now;
      else if (now - this.#headStart > HEAD_MS) { this.#malformed(408, 'HEAD_TIMEOUT'); return; }
    }
    const r = this.#parser.execute(chunk);
    if (typeof r !== 'number') { this.#parseError(r); return; }
    // An upgrade request ends the HTTP part of the connection: what follows its head is the
    // new protocol's, relayed once the upgrade is admitted and accepted. Nothing more is parsed.
    const up = this.#upgrade;
    if (up !== undefined) {
      this.#upgrade = undefined;
      up.rest = chunk.subarray(r);
      this.#parsing = undefined;
      this.socket.removeAllListeners('data');
      this.socket.pause();
      this.#queue.push(up);
    }
    // Requests start only once the parser has accepted everything read so far: llhttp reports a
    // head before it has checked all of it (a bad Transfer-Encoding value fails after the head
    // callback), and nothing of a request the parser rejects may go upstream.
    if (this.current === undefined) {
      const next = this.#queue.shift();
      if (next !== undefined) this.#start(next);
    }
    this.#updateReading();
  }

  /** An upgrade request whose head was just parsed: started once the parser has stopped. */
  #upgrade: Incoming | undefined;

  #onHead(h: Head): void {
    if (this.closing) return;
    const inc = new Incoming(h);
    this.#parsing = inc;
    if (inc.upgrade) this.#upgrade = inc;
    else this.#queue.push(inc);
  }

  #start(inc: Incoming): void {
    this.current = new Exchange(this, inc);
    this.current.run();
  }

  /** The current exchange is over; `keepAlive`: the connection may carry the next request. */
  exchangeDone(keepAlive: boolean): void {
    this.current = undefined;
    this.flushNow();
    if (!keepAlive || this.closing) { this.close(); return; }
    // The next request starts in a microtask: after the upstream connection that carried this one
    // is back in the pool (Attempt.finish), so a pipelined request can reuse it.
    queueMicrotask(this.#startNext);
  }

  readonly #startNext = (): void => {
    if (this.current !== undefined || this.closing) return;
    const next = this.#queue.shift();
    if (next !== undefined) this.#start(next);
    else if (this.#peerEnded) { this.close(); return; }
    if (this.current === undefined) this.#updateReading();
  };

  /** Stop reading, send what is queued, close. */
  close(): void {
    if (this.#parsing !== undefined) this.#parsing.discard();
    this.closing = true;
    this.flushNow();
    this.socket.pause();
    if (this.socket.writable) this.socket.end();
    this.socket.destroySoon();
  }

  /**
   * Write toward the sandbox; writes within one event-loop turn leave together. Heads are
   * latin1: the parser hands header bytes over as latin1 strings, so they go back byte for byte.
   */
  write(data: string | Buffer, encoding: 'latin1' | 'utf8' = 'latin1'): void {
    this.#out.write(data, encoding);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  #flushScheduled = false;
  readonly #flushLater = (): void => {
    this.#flushScheduled = false;
    this.flushNow();
  };

  /**
   * The turn's writes leave as one (src/http/out-buffer.ts). Backpressure is checked here, once
   * per turn: if the sandbox is not keeping up, the upstream feeding it is paused until the
   * socket drains.
   */
  flushNow(): void {
    this.#out.flush();
    if (this.#source !== undefined && !this.#sourcePaused && this.socket.writableNeedDrain) {
      this.#sourcePaused = true;
      this.#source.pause();
    }
  }

  /** The upstream socket feeding responses now (undefined: none). */
  setSource(s: net.Socket | undefined): void {
    if (this.#sourcePaused && this.#source !== undefined && this.#source !== s) this.#source.resume();
    this.#source = s;
    this.#sourcePaused = false;
  }

  #onDrain(): void {
    if (!this.#sourcePaused) return;
    this.#sourcePaused = false;
    this.#source?.resume();
  }

  /** Backpressure from the upstream: stop (or resume) reading the sandbox. */
  blockReading(blocked: boolean): void {
    this.#readBlocked = blocked;
    this.#updateReading();
  }

  #updateReading(): void {
    if (this.closing || this.socket.destroyed) return;
    const parsing = this.#parsing;
    const hold = this.#readBlocked || this.#queue.length > 0 || (parsing !== undefined && parsing.bufferedBytes > MAX_BUFFERED_BODY);
    if (hold) this.socket.pause();
    else if (this.socket.listenerCount('data') > 0) this.socket.resume();
  }

  /** Buffered body bytes may have grown: pause reading if there are too many. */
  checkBuffered(): void { this.#updateReading(); }

  #parseError(err: ParseError): void {
    this.#malformed(err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400, err.code ?? 'parse error');
  }

  /** A request sandgate cannot parse: answered (if nothing else is being answered) and the connection closed. */
  #malformed(status: number, code: string): void {
    const { info } = this;
    info.rt.audit.write({
      event: 'http', decision: 'deny', ...who(info), proto: info.sni !== undefined ? 'tls' : 'http',
      ...(info.sni !== undefined ? { host: info.sni } : {}), status,
      reason: status === 408 ? 'request head not complete in time' : `malformed request (${code})`,
    });
    const cur = this.current;
    if (cur !== undefined && cur.headSent) { this.socket.destroy(); return; }
    cur?.abort();
    this.current = undefined;
    const error = status === 431 ? 'request header fields too large' : status === 408 ? 'request timeout' : 'malformed request';
    this.respond(status, { error });
    this.close();
  }

  /** A whole response from sandgate itself (JSON body); `close` adds Connection: close. */
  respond(status: number, body: Record<string, unknown>, close = true, extra = ''): void {
    this.write(jsonResponse(status, body, close, extra), 'utf8');
  }

  /** Hand the connection to the WebSocket relay (the upgrade request was admitted). */
  upgrade(inc: Incoming, adm: Admitted): void {
    this.closing = true;
    this.flushNow();
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('drain');
    this.socket.removeAllListeners('timeout');
    this.socket.setTimeout(0);
    this.current = undefined;
    relayUpgrade({ method: inc.method, url: inc.url, headers: headersObject(inc.rawHeaders) }, this.socket, inc.rest ?? Buffer.alloc(0), adm);
  }

  #onClose(): void {
    this.closing = true;
    this.#parser.free();
    this.#source = undefined;
    const cur = this.current;
    this.current = undefined;
    cur?.sandboxClosed();
  }
}

/** An upstream response's head as the relay reads it. */
interface ResponseFacts {
  readonly length: string | undefined;
  readonly chunked: boolean;
  /** Transfer-Encoding values, in order (empty: none). */
  readonly te: readonly string[];
  readonly encoding: string | undefined;
  /** Fields the Connection header names (RFC 9110 §7.6.1). */
  readonly named: Set<string> | undefined;
}

type Framing = 'none' | 'raw' | 'chunked' | 'close';

/** One request: admission, credential, upstream attempts (a stale connection or a 401 make two), the response. */
class Exchange {
  readonly front: Front;
  readonly inc: Incoming;
  readonly #started = performance.now();
  #adm: Admitted | undefined;
  #cred: Credential | undefined;
  #dyn: Dynamic | undefined;
  #needles: readonly string[] | undefined;
  #rejected: 'retried' | 'relayed' | undefined;
  #logged = false;
  bytesIn = 0;
  bytesOut = 0;
  /** Body bytes kept for a 401 retry (token sources only; undefined once over the limit). */
  #kept: Buffer[] | undefined;
  #attempt: Attempt | undefined;
  headSent = false;
  #over = false;
  #abortConnect: (() => void) | undefined;

  constructor(front: Front, inc: Incoming) {
    this.front = front;
    this.inc = inc;
  }

  run(): void {
    const { front, inc } = this;
    const info = front.info;
    const adm = admit(inc, info);
    if (!adm.ok) {
      this.#refuse(adm);
      return;
    }
    this.#adm = adm;
    if (inc.upgrade) {
      // Only WebSocket (RFC 6455): h2c and other upgrades are not relayed.
      const proto = inc.upgradeTo;
      if (proto !== 'websocket') {
        this.#refuse({ ...adm, ok: false, status: 400, error: 'bad request', reason: `upgrade to "${proto}" is not supported (only websocket)`, host: adm.host });
        return;
      }
      this.#over = true;
      front.upgrade(inc, adm);
      return;
    }
    // Answered by sandgate once the request is admitted, so a denied upload is refused before its
    // body is sent (RFC 9110 §10.1.1); the upstream is sent the body straight away.
    if (inc.expectsContinue && !inc.http10) front.write('HTTP/1.1 100 Continue\r\n\r\n');
    withCredential(adm, (cred, dyn) => {
      if (dyn !== undefined && (front.socket.destroyed || this.#over)) { this.#noCredential(499, 'sandbox closed the connection while its credential was fetched'); return; }
      this.#cred = cred;
      this.#dyn = dyn;
      this.#needles = cred?.needles;
      if (dyn !== undefined && inc.hasBody) this.#kept = [];
      this.#send(true, undefined);
    }, (err) => { this.#failClosed(err); });
  }

  #refuse(r: Refused): void {
    this.#over = true;
    this.front.info.rt.audit.write({ ...r.base, ...(r.host ? { host: r.host } : {}), decision: 'deny', status: r.status, reason: r.reason, ms: Math.round(performance.now() - this.#started) });
    this.inc.discard();
    this.front.respond(r.status, { error: r.error, reason: r.reason });
    this.front.current = undefined;
    this.front.close();
  }

  #noCredential(status: number, reason: string): void {
    const adm = this.#adm as Admitted;
    this.#logged = true;
    adm.info.rt.audit.write({
      ...adm.base, host: adm.host, decision: adm.decision,
      ...(adm.rule ? { rule: adm.rule.id } : {}),
      ...(adm.credential ? { credential: adm.credential.id } : {}),
      status, bytesIn: 0, bytesOut: 0, ms: Math.round(performance.now() - this.#started), reason,
    });
  }

  /** No credential, no request: 503, and the upstream never hears of it. */
  #failClosed(err: TokenError): void {
    const adm = this.#adm as Admitted;
    if (this.front.socket.destroyed || this.#over) { this.#noCredential(499, unavailableReason(adm, err)); return; }
    this.#noCredential(503, unavailableReason(adm, err));
    this.#unavailable(err);
  }

  #unavailable(err: TokenError): void {
    this.#over = true;
    this.inc.discard();
    this.front.respond(503, { error: 'credential unavailable', reason: err.short }, true, 'Retry-After: 1\r\n');
    this.front.current = undefined;
    this.front.close();
  }

  log(status: number, extra: { reason?: string; error?: string; deny?: boolean } = {}): void {
    if (this.#logged) return;
    this.#logged = true;
    const adm = this.#adm as Admitted;
    const { info, upstream: up } = adm;
    const needles = this.#needles;
    const reason = extra.reason ?? adm.reason;
    // One object literal of a fixed shape (absent fields undefined, which the JSON line omits):
    // this runs once per request, and conditional spreads would build a new shape each time.
    const b = adm.base;
    const line: AuditFields = {
      event: b.event, sandbox: b.sandbox, user: b.user, src: b.src, dst: b.dst, proto: b.proto, method: b.method, path: b.path,
      host: adm.host, decision: extra.deny ? 'deny' : adm.decision,
      rule: adm.rule?.id, credential: this.#cred?.id, tokenRejected: this.#rejected,
      upstream: up.tls && info.sni === undefined ? `https://${up.host}:${up.port}` : undefined,
      status, bytesIn: this.bytesIn, bytesOut: this.bytesOut, ms: Math.round(performance.now() - this.#started),
      reason: reason !== undefined && needles ? scrubString(reason, needles) : reason,
      error: extra.error !== undefined && needles ? scrubString(extra.error, needles) : extra.error,
    };
    info.rt.audit.write(line);
  }

  /**
   * The request's head toward the upstream, built straight from the fields as the sandbox sent
   * them: Host set to the upstream's, hop-by-hop fields and Expect dropped, the credential
   * injected (docs/interception.md): fields it sets replace the sandbox's, never duplicate them.
   */
  #requestHead(): string {
    const adm = this.#adm as Admitted;
    const { inc } = this;
    const cred = this.#cred;
    const raw = inc.rawHeaders;
    const named = inc.connectionNamed;
    const replaced = cred !== undefined ? credentialNames(cred) : undefined;
    const ph = cred?.placeholder;
    let out = `${inc.method} ${cred !== undefined ? injectQuery(inc.url, cred) : inc.url} HTTP/1.1\r\nHost: ${adm.upstream.hostHeader}\r\n`;
    let te: string | undefined;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i] as string;
      const l = k.toLowerCase();
      if (l === 'transfer-encoding') te = raw[i + 1];
      if (l === 'host' || l === 'expect' || HOP_BY_HOP.has(l) || named?.has(l) === true || replaced?.has(l) === true) continue;
      const v = raw[i + 1] as string;
      if (ph !== undefined && cred !== undefined && v.includes(ph)) out += headerLine(k, v.split(ph).join(cred.secret));
      else out += `${k}: ${v}\r\n`;
    }
    // Transfer-Encoding is hop-by-hop, but a chunked body keeps its framing (re-encoded by
    // sandgate): without it the body's bytes would parse as further requests upstream.
    if (te !== undefined) out += `Transfer-Encoding: ${te}\r\n`;
    if (cred !== undefined) {
      if (cred.value !== undefined) out += headerLine(cred.header, cred.value);
      if (cred.headers !== undefined) for (const [k, v] of cred.headers) out += headerLine(k, v);
      // Scrubbing reads the body's bytes: ask for it unencoded (RFC 9110 §12.5.3). An upstream
      // that encodes anyway is decoded (#respond).
      out += 'Accept-Encoding: identity\r\n';
    }
    return out + CRLF;
  }

  /** One attempt on an upstream connection (pooled if one is free). */
  #send(mayRetry: boolean, replay: Buffer | undefined): void {
    const adm = this.#adm as Admitted;
    const rt = adm.info.rt;
    let head: string;
    try {
      head = this.#requestHead();
    } catch (err) {
      this.log(502, { reason: (err as Error).message });
      this.#badGateway('sandgate could not build the upstream request');
      return;
    }
    const pool = poolFor(rt);
    const pooled = pool.take(adm.upstream);
    const go = (p: PooledSocket): void => {
      this.#abortConnect = undefined;
      if (this.#over) { pool.release(p); return; }
      const a = new Attempt(this, p, mayRetry);
      this.#attempt = a;
      a.start(head, replay);
    };
    if (pooled !== undefined) { go(pooled); return; }
    this.#abortConnect = pool.connect(rt, adm.upstream, go, (err) => {
      this.#abortConnect = undefined;
      if (this.#over) return;
      this.upstreamFailed(err, undefined);
    });
  }

  /** Request body toward the upstream: framed as the sandbox framed it (chunks re-encoded). */
  writeBody(sock: net.Socket, chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.#kept !== undefined) {
      if (this.bytesOut > MAX_REPLAY_BODY) this.#kept = undefined;
      else this.#kept.push(chunk);
    }
    if (!this.inc.chunked) return sock.write(chunk);
    sock.write(chunk.length.toString(16) + CRLF);
    sock.write(chunk);
    return sock.write(CRLF);
  }

  endBody(sock: net.Socket): void {
    if (this.inc.chunked) sock.write(LAST_CHUNK);
  }

  /** The attempt's response head: returns whether the response has no body. */
  onResponseHead(a: Attempt, h: Head): 'skip' | 'body' | 'discard' {
    const status = h.statusCode;
    const bodyless = this.inc.method === 'HEAD' || status === 204 || status === 304;
    const dyn = this.#dyn;
    const cred = this.#cred;
    if (status === 401 && dyn !== undefined && cred !== undefined && this.#rejected === undefined) {
      // The upstream refused the token (RFC 9110 §15.5.2): it is dropped whatever happens next.
      // The request is retried once with a fresh one if it can be replayed, else the 401 is relayed.
      const replayable = !this.inc.hasBody || (this.inc.length >= 0 && this.inc.length <= MAX_REPLAY_BODY);
      if (!replayable) {
        dyn.src.reject(dyn.req, cred);
        this.#rejected = 'relayed';
      } else {
        this.#rejected = 'retried';
        // From here on the refused exchange's events (its body, its errors) are not this request's.
        this.#attempt = undefined;
        this.#retryWithFreshToken(dyn, cred);
        return bodyless ? 'skip' : 'discard';
      }
    }
    this.#respond(a, h, bodyless);
    return bodyless ? 'skip' : 'body';
  }

  #retryWithFreshToken(dyn: Dynamic, used: Credential): void {
    const proceed = (): void => {
      if (this.#over) { dyn.src.reject(dyn.req, used); return; }
      const body = this.#kept !== undefined ? Buffer.concat(this.#kept) : Buffer.alloc(0);
      refreshCredential(dyn, used).then((next) => {
        if (this.#over) { this.log(499, { error: 'sandbox closed the connection' }); return; }
        this.#cred = next;
        // The response may echo either token: scrub both.
        this.#needles = [...new Set([...used.needles, ...next.needles])].sort((x, y) => y.length - x.length);
        this.bytesOut = 0;
        this.#kept = undefined;
        this.#send(true, body);
      }, (e: unknown) => {
        const err = asTokenError(e);
        this.log(503, { reason: unavailableReason(this.#adm as Admitted, err) });
        if (!this.headSent && !this.#over) this.#unavailable(err);
      });
    };
    // The rest of the body (if any) is kept, no longer sent to the refusing upstream.
    if (this.inc.complete) { proceed(); return; }
    this.inc.take((c) => { this.bytesOut += c.length; this.#kept?.push(c); }, proceed);
  }

  /** The upstream response's Content-Length (-1: none, or framed otherwise). */
  upstreamLength = -1;
  #framing: Framing = 'none';
  #scrubber: Scrubber | undefined;
  #decoder: Transform | undefined;
  #status = 0;
  #keepAlive = true;

  #respond(a: Attempt, h: Head, bodyless: boolean): void {
    const facts = responseFacts(h.rawHeaders);
    if (!bodyless && facts.length !== undefined && !facts.chunked) {
      const n = Number(facts.length);
      if (Number.isSafeInteger(n) && n >= 0) this.upstreamLength = n;
    }
    const needles = this.#needles;
    const { inc, front } = this;
    const refused = refusal(facts, h.rawHeaders, bodyless, needles);
    if (refused !== undefined) {
      a.destroy();
      this.log(502, { reason: refused });
      this.#badGateway('the upstream response cannot be relayed safely');
      return;
    }
    this.#status = h.statusCode;
    let framing: Framing = bodyless ? 'none' : facts.length !== undefined && !facts.chunked ? 'raw' : 'chunked';
    let decoding = false;
    if (needles) {
      if (!bodyless && facts.length !== '0') {
        const enc = facts.encoding;
        if (enc !== undefined && enc !== 'identity' && enc !== '') {
          const decoder = decoderFor(enc);
          if (decoder === undefined) {
            a.destroy();
            this.log(502, { reason: `upstream sent Content-Encoding ${enc}, which sandgate cannot scrub` });
            this.#badGateway('the upstream response is encoded in a way sandgate cannot inspect');
            return;
          }
          this.#decoder = decoder;
          decoding = true;
          framing = 'chunked';
        }
        this.#scrubber = new Scrubber(needles);
      }
    }
    // A body of unknown length reaches an HTTP/1.0 client delimited by the connection's close.
    if (framing === 'chunked' && inc.http10) framing = 'close';
    this.#framing = framing;
    this.#keepAlive = inc.keepAlive && framing !== 'close';
    const sc = needles !== undefined ? (x: string): string => scrubString(x, needles) : undefined;
    let out = `HTTP/1.1 ${h.statusCode} ${sc ? sc(h.statusMessage) : h.statusMessage}\r\n`;
    const raw = h.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i] as string;
      const l = k.toLowerCase();
      if (HOP_BY_HOP.has(l) || facts.named?.has(l) === true) continue;
      // Decoded bodies are sent chunked: their coding and length are the upstream's, not these bytes'.
      if (decoding && (l === 'content-encoding' || l === 'content-length')) continue;
      const v = raw[i + 1] as string;
      out += `${k}: ${sc ? sc(v) : v}\r\n`;
    }
    if (framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
    if (!this.#keepAlive) out += 'Connection: close\r\n';
    else if (inc.http10) out += 'Connection: keep-alive\r\n';
    this.headSent = true;
    front.write(out + CRLF);
    if (this.#decoder !== undefined) this.#pipeDecoder(a, this.#decoder);
  }

  #pipeDecoder(a: Attempt, d: Transform): void {
    d.on('data', (c: Buffer) => {
      this.#emit(c);
      if (this.front.socket.writableLength > MAX_QUEUED_OUT) {
        d.pause();
        this.front.socket.once('drain', () => d.resume());
      }
    });
    d.once('end', () => { this.#finishResponse(a); });
    d.once('error', (err: NodeJS.ErrnoException) => {
      a.destroy();
      this.#midBodyFailure(`response stream: ${err.code ?? err.message}`);
    });
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    // The decoder works asynchronously: it gets a copy (chunk is a view of a reused read buffer).
    if (this.#decoder !== undefined) { this.#decoder.write(Buffer.from(chunk)); return; }
    this.#emit(chunk);
  }

  #emit(data: Buffer): void {
    this.#toSandbox(this.#scrubber !== undefined ? this.#scrubber.push(data) : data);
  }

  /** Body bytes already scrubbed, framed for the sandbox. */
  #toSandbox(out: Buffer): void {
    if (out.length === 0) return;
    const { front } = this;
    if (this.#framing === 'chunked') {
      front.write(out.length.toString(16) + CRLF);
      front.write(out);
      front.write(CRLF);
    } else {
      front.write(out);
    }
  }

  onResponseComplete(a: Attempt): void {
    if (this.#decoder !== undefined) { this.#decoder.end(); return; }
    this.#finishResponse(a);
  }

  #finishResponse(a: Attempt): void {
    if (this.#over) return;
    // What the scrubber held back (it could have become a secret) and now cannot: sent as is.
    const rest = this.#scrubber?.end();
    if (rest !== undefined) this.#toSandbox(rest);
    if (this.#framing === 'chunked') this.front.write(LAST_CHUNK);
    this.#over = true;
    this.log(this.#status);
    // The upstream may go back to the pool only if it was sent the whole request.
    a.finish(this.inc.complete);
    // A body the sandbox is still sending goes nowhere now; the parser still frames it, so the
    // connection can carry the next request once it is read.
    if (!this.inc.complete) this.inc.discard();
    this.front.exchangeDone(this.#keepAlive);
  }

  /** The upstream failed (or closed) before or during the response. */
  upstreamFailed(err: NodeJS.ErrnoException, a: Attempt | undefined): void {
    if (this.#over) return;
    if (a !== undefined && a !== this.#attempt) return;
    if (this.headSent) {
      a?.destroy();
      this.#midBodyFailure(err.code === 'ERR_STREAM_PREMATURE_CLOSE' ? err.message : `response stream: ${err.code ?? err.message}`);
      return;
    }
    // A pooled connection the upstream closed (reset or FIN) just as we reused it (RFC 9112
    // §9.3.1): retried once on a fresh one, but only an idempotent request (RFC 9110 §9.2.2: a
    // proxy must not retry others, the upstream may have acted on it) without a body.
    if (a !== undefined && a.mayRetry && a.pooled.reused && !a.responded && !this.inc.hasBody && IDEMPOTENT.has(this.inc.method) && STALE.has(err.code ?? '')) {
      this.#attempt = undefined;
      this.#send(false, undefined);
      return;
    }
    const up = (this.#adm as Admitted).upstream;
    const tlsReason = up.tls ? tlsFailure(err) : undefined;
    const reason = tlsReason ?? (err instanceof SandgateError ? err.message
      : (err.code ?? '').startsWith('HPE_') ? `upstream sent a malformed response (${err.code ?? ''})`
        : `upstream unreachable (${err.code ?? err.message})`);
    // The SSRF guard refusing every address is a denial, as for passthrough (connection.ts).
    this.log(502, { reason, deny: err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN' });
    this.#badGateway(tlsReason ? 'the upstream\'s TLS certificate could not be verified' : 'upstream unreachable');
  }

  /**
   * The response was cut short after its head reached the sandbox: the sandbox must see a
   * truncated response (the connection closes), never a complete-looking one.
   */
  #midBodyFailure(error: string): void {
    this.#over = true;
    this.log(this.#status, { error });
    this.front.current = undefined;
    this.front.closing = true;
    this.front.flushNow();
    this.front.socket.destroy();
  }

  #badGateway(reason: string): void {
    this.#over = true;
    this.inc.discard();
    const keep = this.inc.keepAlive && this.inc.complete;
    this.front.respond(502, { error: 'bad gateway', reason }, !keep);
    this.front.exchangeDone(keep);
  }

  /** The sandbox went away: never leave the upstream hanging. */
  sandboxClosed(): void {
    if (this.#over) return;
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
    if (this.#adm !== undefined && !this.#logged) this.log(this.headSent ? this.#status : 499, { error: 'sandbox closed the connection' });
  }

  /** The connection is being closed for a reason of its own (a malformed pipelined request). */
  abort(): void {
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
  }
}

/**
 * An upstream connection's response parser and listeners: made once per connection and reused by
 * every exchange it carries (a keep-alive connection serves thousands of requests), so an
 * exchange allocates neither a parser nor listeners. Events go to the attempt that holds it.
 */
class UpstreamLink {
  readonly socket: net.Socket;
  readonly #parser: Parser;
  owner: Attempt | undefined;
  /** The current response's body has a Content-Length: its bytes bypass the parser (no copies). */
  #raw = false;
  /** Set while the parser reports a 'raw' head; the body starts where execute() stopped. */
  #rawNext = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#parser = new Parser('response', MAX_HEADER_SIZE, {
      onHead: (h) => {
        // A response while no request is outstanding: the upstream answered what was never asked.
        if (this.owner === undefined) { socket.destroy(); return 'none'; }
        const after = this.owner.onHead(h);
        if (after === 'raw') this.#rawNext = true;
        return after;
      },
      onBody: (c) => { this.owner?.onBody(c); },
      // A 'raw' head completes at once in llhttp; its body has not been read yet.
      onComplete: () => { if (!this.#rawNext) this.owner?.onComplete(); },
    });
    onRead(socket, (c: Buffer) => {
      const o = this.owner;
      // Idle in the pool: an upstream may not answer what was never asked.
      if (o === undefined) { socket.destroy(); return; }
      if (this.#raw) { o.rawBody(c); return; }
      const r = this.#parser.execute(c);
      if (typeof r !== 'number') { o.malformed(r); return; }
      if (this.#rawNext) {
        this.#rawNext = false;
        this.#parser.reset();
        this.#raw = true;
        if (r < c.length && this.owner === o) o.rawBody(c.subarray(r));
      }
    });
    socket.on('end', () => {
      const o = this.owner;
      if (o === undefined) return;
      if (this.#raw) { o.ended(undefined); return; }
      // A body delimited by the connection's close ends here; anything else is truncated.
      const err = this.#parser.finish();
      if (this.owner === o) o.ended(err);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => { this.owner?.onError(err); });
    socket.on('drain', () => { this.owner?.onDrain(); });
    socket.once('close', () => {
      const o = this.owner;
      this.owner = undefined;
      links.delete(socket);
      this.#parser.free();
      o?.onClose();
    });
  }

  /** The raw body is complete: the next bytes are the next response's head. */
  rawDone(): void { this.#raw = false; }

  static of(socket: net.Socket): UpstreamLink {
    let l = links.get(socket);
    if (l === undefined) {
      l = new UpstreamLink(socket);
      links.set(socket, l);
    }
    return l;
  }
}

const links = new WeakMap<net.Socket, UpstreamLink>();

/** One upstream connection carrying one request and its response. */
class Attempt {
  readonly ex: Exchange;
  readonly pooled: PooledSocket;
  readonly mayRetry: boolean;
  readonly #link: UpstreamLink;
  responded = false;
  #mode: 'body' | 'skip' | 'discard' | 'info' = 'body';
  #done = false;
  #sentAll = false;
  #lastChunkDone = false;
  /** The upstream's own keep-alive verdict on the response (HTTP/1.0, Connection: close). */
  #keepAlive = true;
  #error: NodeJS.ErrnoException | undefined;

  constructor(ex: Exchange, pooled: PooledSocket, mayRetry: boolean) {
    this.ex = ex;
    this.pooled = pooled;
    this.mayRetry = mayRetry;
    this.#link = UpstreamLink.of(pooled.socket);
  }

  start(head: string, replay: Buffer | undefined): void {
    const s = this.pooled.socket;
    this.#link.owner = this;
    const { ex } = this;
    ex.front.setSource(s);
    const inc = ex.inc;
    s.cork();
    s.write(head, 'latin1');
    if (replay !== undefined) {
      if (replay.length > 0) ex.writeBody(s, replay);
      ex.endBody(s);
      this.#sentAll = true;
      s.uncork();
      return;
    }
    if (!inc.hasBody) {
      this.#sentAll = true;
      s.uncork();
      return;
    }
    inc.take((c) => {
      if (this.#done) return;
      if (!ex.writeBody(s, c)) ex.front.blockReading(true);
    }, () => {
      if (this.#done) return;
      ex.endBody(s);
      this.#sentAll = true;
    });
    s.uncork();
    ex.front.checkBuffered();
  }

  onDrain(): void { this.ex.front.blockReading(false); }

  onError(err: NodeJS.ErrnoException): void { this.#error ??= err; }

  malformed(r: ParseError): void {
    this.destroy();
    this.ex.upstreamFailed(Object.assign(new Error(`upstream sent a malformed response (${r.code ?? 'parse error'})`), { code: r.code }), this);
  }

  ended(err: ParseError | undefined): void {
    if (this.#done) return;
    this.destroy();
    this.ex.upstreamFailed(err ?? Object.assign(new Error('upstream closed before the response was complete'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }), this);
  }

  onClose(): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    this.ex.upstreamFailed(this.#error ?? Object.assign(new Error('upstream closed before the response was complete'), { code: this.responded ? 'ERR_STREAM_PREMATURE_CLOSE' : 'ECONNRESET' }), this);
  }

  onHead(h: Head): AfterHead {
    const status = h.statusCode;
    if (status >= 100 && status < 200) {
      // 1xx (RFC 9110 §15.2): informational, not relayed (sandgate answered any 100 itself);
      // the final response follows. 101 without an upgrade request is a protocol error.
      if (status === 101) {
        this.destroy();
        this.ex.upstreamFailed(Object.assign(new Error('upstream switched protocols unasked'), { code: 'HPE_UNEXPECTED_101' }), this);
        return 'none';
      }
      this.#mode = 'info';
      return 'none';
    }
    this.responded = true;
    this.#keepAlive = h.shouldKeepAlive;
    this.#mode = this.ex.onResponseHead(this, h);
    if (this.#done || this.#mode === 'skip') return 'none';
    // A body of known length is read without the parser: its bytes go on as slices of what the
    // socket read, with no copy per chunk (llhttp's body callback copies each one).
    const n = this.#mode === 'body' ? this.ex.upstreamLength : -1;
    if (n > 0) {
      this.#remaining = n;
      return 'raw';
    }
    return 'body';
  }

  #remaining = 0;

  /** Body bytes of a Content-Length response, read past the parser. */
  rawBody(c: Buffer): void {
    if (this.#done) return;
    let chunk = c;
    if (chunk.length > this.#remaining) {
      // Bytes beyond the declared length belong to no request: the connection is not reused.
      chunk = chunk.subarray(0, this.#remaining);
      this.#keepAlive = false;
    }
    this.#remaining -= chunk.length;
    if (chunk.length > 0) this.ex.onResponseBody(chunk);
    if (this.#remaining === 0 && !this.#done) {
      this.#link.rawDone();
      this.onComplete();
    }
  }

  onBody(c: Buffer): void {
    if (this.#mode === 'body') this.ex.onResponseBody(c);
  }

  onComplete(): void {
    if (this.#mode === 'info') { this.#mode = 'body'; return; }
    if (this.#done) return;
    this.#lastChunkDone = true;
    if (this.#mode === 'discard') { this.finish(this.#sentAll); return; }
    this.ex.onResponseComplete(this);
  }

  /** The response is complete: the connection goes back to the pool if it is clean. */
  finish(requestComplete: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    if (this.#lastChunkDone && requestComplete && this.#sentAll && this.#keepAlive) {
      // Back to the pool only once the parser has finished with what this read brought: bytes
      // after the response (an upstream answering twice) are unasked, close the connection
      // (UpstreamLink), and must never be taken for the next request's answer.
      const { pooled } = this;
      const pool = poolFor(this.ex.front.info.rt);
      queueMicrotask(() => { pool.release(pooled); });
    } else {
      this.pooled.socket.destroy();
    }
  }

  destroy(): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    this.pooled.socket.destroy();
  }

  #detach(): void {
    if (this.#link.owner === this) this.#link.owner = undefined;
    this.ex.front.setSource(undefined);
    this.pooled.socket.resume();
    this.ex.front.blockReading(false);
  }
}

/** Response head facts: framing, coding, and the fields Connection names (hop-by-hop too). */
function responseFacts(raw: readonly string[]): ResponseFacts {
  let length: string | undefined;
  let chunked = false;
  let te: string[] | undefined;
  let encoding: string | undefined;
  let named: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    // Length first: most names are none of these, and lower-casing allocates.
    switch (k.length) {
      case 10: if (k.toLowerCase() === 'connection') named = addConnectionTokens(named, raw[i + 1] as string); break;
      case 14: if (k.toLowerCase() === 'content-length') length = raw[i + 1]; break;
      case 16: if (k.toLowerCase() === 'content-encoding') encoding = (raw[i + 1] as string).trim().toLowerCase(); break;
      case 17: if (k.toLowerCase() === 'transfer-encoding') { chunked = true; (te ??= []).push(raw[i + 1] as string); } break;
      default: break;
    }
  }
  return { length, chunked, te: te ?? NONE, encoding, named };
}

const NONE: readonly string[] = [];

/**
 * Why a response head cannot be relayed (its body's transfer coding, or a secret in a field name),
 * or undefined. For the audit line; the sandbox is told only that it was refused.
 */
function refusal(facts: ResponseFacts, raw: readonly string[], bodyless: boolean, needles: readonly string[] | undefined): string | undefined {
  const coding = bodyless ? undefined : unrelayableTransferCoding(facts.te);
  if (coding !== undefined) return `upstream sent Transfer-Encoding ${coding}, which sandgate does not relay`;
  if (needles !== undefined && nameCarriesSecret(raw, needles)) return 'upstream sent a header field whose name carries the credential';
  return undefined;
}

/** Lower-case names of the fields a credential sets (they replace what the sandbox sent), and Accept-Encoding. */
function credentialNames(cred: Credential): ReadonlySet<string> {
  const known = credNames.get(cred);
  if (known !== undefined) return known;
  const n = new Set(['accept-encoding']);
  if (cred.value !== undefined) n.add(cred.header.toLowerCase());
  if (cred.headers !== undefined) for (const [k] of cred.headers) n.add(k.toLowerCase());
  credNames.set(cred, n);
  return n;
}

const credNames = new WeakMap<Credential, ReadonlySet<string>>();

/** A header line; values sandgate put there (credentials, tokens) are checked for line breaks. */
function headerLine(name: string, value: string): string {
  if (UNSAFE_VALUE.test(value)) throw new SandgateError(`header ${name} would carry a line break or NUL`, 'UPSTREAM_REQUEST');
  return `${name}: ${value}\r\n`;
}

/** Node's IncomingHttpHeaders shape from raw headers (for the WebSocket relay). */
function headersObject(raw: readonly string[]): IncomingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = (raw[i] as string).toLowerCase();
    const v = raw[i + 1] as string;
    const prev = out[k];
    if (k === 'set-cookie') out[k] = Array.isArray(prev) ? [...prev, v] : [v];
    else if (prev === undefined) out[k] = v;
    else if (k !== 'host') out[k] = `${String(prev)}${k === 'cookie' ? '; ' : ', '}${v}`;
  }
  return out as IncomingHttpHeaders;
}

function decoderFor(enc: string): Transform | undefined {
  switch (enc) {
    case 'gzip': case 'x-gzip': return zlib.createGunzip();
    case 'deflate': return zlib.createInflate();
    case 'br': return zlib.createBrotliDecompress();
    default: return undefined; // stacked codings, zstd, compress...
  }
}
