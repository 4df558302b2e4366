/**
 * One request, sans-io: admission, the credential, the upstream attempts (a stale pooled
 * connection or a refused token make two), the response's framing, decoding and scrubbing, and
 * the request's one audit line. Events come in as method calls (the connection core starts it;
 * upstream connections, the response reader, the token source and the decoder report to it);
 * what it decides goes out through SandboxIo and UpstreamIo (src/http/io.ts). No socket here.
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
import { SandgateError } from '../errors.js';
import type { Credential } from '../creds/credential.js';
import { asTokenError, type TokenError } from '../creds/token-error.js';
import type { ConnInfo } from '../net/conn-info.js';
import { admit, type Admitted, type Refused } from './admit.js';
import { Attempt } from './attempt.js';
import { MAX_REPLAY_BODY, refreshCredential, unavailableReason, withCredential, type CredentialWaiter, type Dynamic } from './credential-step.js';
import { httpLine } from './http-audit.js';
import type { BodySink, Incoming } from './incoming.js';
import type { DecodeSink, Decoder, SandboxIo, UpstreamIo, UpstreamWaiter } from './io.js';
import type { Head } from './llhttp.js';
import { requestHead } from './request-head.js';
import { codingToDecode, decodable, declaredLength, refusal, responseFacts, responseHead, type Framing } from './response-head.js';
import { Scrubber } from './scrub.js';
import { tlsFailure } from '../upstream/tls.js';
import { afterTripwire } from '../control/quarantine.js';

const STALE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';
const EMPTY = Buffer.alloc(0);

/** What an exchange needs of its connection (src/http/sandbox-conn.ts). */
export interface ExchangeConn {
  readonly info: ConnInfo;
  readonly io: SandboxIo;
  /** A whole response from sandgate itself (JSON body); `close` adds Connection: close. */
  respond(status: number, body: Record<string, unknown>, close?: boolean, extra?: string): void;
  /** The exchange is over; `keepAlive`: the connection may carry the next request. */
  exchangeDone(keepAlive: boolean): void;
  /** Backpressure from the upstream: stop (or resume) reading the sandbox. */
  blockReading(blocked: boolean): void;
  /** Buffered body bytes may have grown: hold reading if there are too many. */
  checkBuffered(): void;
  /** The upgrade request was admitted: the connection goes to the WebSocket relay. */
  upgrade(inc: Incoming, adm: Admitted): void;
  /** The response was cut short after its head reached the sandbox: drop the connection. */
  cutShort(): void;
}

export class Exchange implements CredentialWaiter, UpstreamWaiter, BodySink, DecodeSink {
  readonly conn: ExchangeConn;
  readonly inc: Incoming;
  readonly #started: number;
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
  /** The next attempt's head, body to replay and retry permission, while its connection is set up. */
  #head = '';
  #replay: Buffer | undefined;
  #mayRetry = false;
  /** The token a 401 refused, while the rest of the body is kept for the retry. */
  #refused: { dyn: Dynamic; used: Credential } | undefined;

  constructor(conn: ExchangeConn, inc: Incoming) {
    this.conn = conn;
    this.inc = inc;
    this.#started = conn.io.now();
  }

  #ms(): number {
    return Math.round(this.conn.io.now() - this.#started);
  }

  run(): void {
    const { conn, inc } = this;
    const adm = admit(inc, conn.info);
    if (!adm.ok) {
      this.#refuse(adm);
      return;
    }
    this.#adm = adm;
    if (inc.upgrade) {
      // Only WebSocket (RFC 6455): h2c and other upgrades are not relayed.
      const proto = inc.upgradeTo;
      if (proto !== 'websocket') {
        this.#refuse({
          ...adm,
          ok: false,
          status: 400,
          error: 'bad request',
          reason: `upgrade to "${proto}" is not supported (only websocket)`,
          host: adm.host,
        });
        return;
      }
      this.#over = true;
      conn.upgrade(inc, adm);
      return;
    }
    // Answered by sandgate once the request is admitted, so a denied upload is refused before its
    // body is sent (RFC 9110 §10.1.1); the upstream is sent the body straight away.
    if (inc.expectsContinue && !inc.http10) conn.io.write('HTTP/1.1 100 Continue\r\n\r\n');
    withCredential(adm, this);
  }

  credentialReady(cred: Credential | undefined, dyn: Dynamic | undefined): void {
    if (dyn !== undefined && (this.conn.io.gone() || this.#over)) {
      this.#noCredential(499, 'sandbox closed the connection while its credential was fetched');
      return;
    }
    this.#cred = cred;
    this.#dyn = dyn;
    this.#needles = cred?.needles;
    if (dyn !== undefined && this.inc.hasBody) this.#kept = [];
    this.#send(true, undefined);
  }

  /** No credential, no request: 503, and the upstream never hears of it. */
  credentialFailed(err: TokenError): void {
    const adm = this.#adm as Admitted;
    if (this.conn.io.gone() || this.#over) {
      this.#noCredential(499, unavailableReason(adm, err));
      return;
    }
    this.#noCredential(503, unavailableReason(adm, err));
    this.#unavailable(err);
  }

  #refuse(r: Refused): void {
    this.#over = true;
    const { info } = this.conn;
    const line = httpLine(r.base, { host: r.host ? r.host : undefined, decision: 'deny', status: r.status, reason: r.reason, ms: this.#ms() });
    if (r.tripwire !== undefined) {
      // Its own event, so that an operator (or an alert rule) finds it without reading every http line.
      line.event = 'tripwire';
      line.credential = r.tripwire.credential;
      line.onTripwire = info.sandbox.policy.onTripwire;
    }
    info.rt.audit.write(line);
    this.inc.discard();
    this.conn.respond(r.status, { error: r.error, reason: r.reason });
    this.conn.exchangeDone(false);
    // After the refusal is on its way (the connection is already closing): the quarantine closes
    // the sandbox's other connections.
    if (r.tripwire !== undefined) afterTripwire(info.rt, info.sandbox, r.tripwire, r.reason);
  }

  #noCredential(status: number, reason: string): void {
    const adm = this.#adm as Admitted;
    this.#logged = true;
    adm.info.rt.audit.write(
      httpLine(adm.base, {
        host: adm.host,
        decision: adm.decision,
        rule: adm.rule?.id,
        credential: adm.credential?.id,
        status,
        bytesIn: 0,
        bytesOut: 0,
        ms: this.#ms(),
        reason,
      }),
    );
  }

  #unavailable(err: TokenError): void {
    this.#over = true;
    this.inc.discard();
    this.conn.respond(503, { error: 'credential unavailable', reason: err.short }, true, 'Retry-After: 1\r\n');
    this.conn.exchangeDone(false);
  }

  /** The request's audit line (once): `deny` for the SSRF guard refusing every address. */
  log(status: number, reason?: string, error?: string, deny = false): void {
    if (this.#logged) return;
    this.#logged = true;
    const adm = this.#adm as Admitted;
    const { info, upstream: up } = adm;
    info.rt.audit.write(
      httpLine(adm.base, {
        host: adm.host,
        decision: deny ? 'deny' : adm.decision,
        rule: adm.rule?.id,
        credential: this.#cred?.id,
        tokenRejected: this.#rejected,
        upstream: up.tls && info.sni === undefined ? `https://${up.host}:${up.port}` : undefined,
        status,
        bytesIn: this.bytesIn,
        bytesOut: this.bytesOut,
        ms: this.#ms(),
        reason: reason ?? adm.reason,
        error,
        needles: this.#needles,
      }),
    );
  }

  /** One attempt on an upstream connection (pooled if one is free). */
  #send(mayRetry: boolean, replay: Buffer | undefined): void {
    const adm = this.#adm as Admitted;
    try {
      this.#head = requestHead(this.inc, adm.upstream.hostHeader, this.#cred);
    } catch (err) {
      this.log(502, (err as Error).message);
      this.#badGateway('sandgate could not build the upstream request');
      return;
    }
    this.#mayRetry = mayRetry;
    this.#replay = replay;
    this.#abortConnect = this.conn.io.connect(adm.info, adm.upstream, this);
  }

  upstreamReady(up: UpstreamIo, reused: boolean): void {
    this.#abortConnect = undefined;
    if (this.#over) {
      up.release();
      return;
    }
    const a = new Attempt(this, up, reused, this.#mayRetry);
    this.#attempt = a;
    const head = this.#head;
    const replay = this.#replay;
    this.#head = '';
    this.#replay = undefined;
    a.start(head, replay);
  }

  /** Request body toward the upstream: framed as the sandbox framed it (chunks re-encoded). */
  writeBody(up: UpstreamIo, chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.#kept !== undefined) {
      if (this.bytesOut > MAX_REPLAY_BODY) this.#kept = undefined;
      else this.#kept.push(chunk);
    }
    if (!this.inc.chunked) return up.write(chunk);
    up.write(chunk.length.toString(16) + CRLF);
    up.write(chunk);
    return up.write(CRLF);
  }

  endBody(up: UpstreamIo): void {
    if (this.inc.chunked) up.write(LAST_CHUNK);
  }

  /** The attempt's response head: whether its body is relayed, skipped (none) or discarded. */
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
        this.#refused = { dyn, used: cred };
        // The rest of the body (if any) is kept, no longer sent to the refusing upstream.
        if (this.inc.complete) this.bodyDone();
        else this.inc.take(this);
        return bodyless ? 'skip' : 'discard';
      }
    }
    this.#respond(a, h, bodyless);
    return bodyless ? 'skip' : 'body';
  }

  /** The rest of a request body after a 401, kept for the retry. */
  bodyChunk(c: Buffer): void {
    this.bytesOut += c.length;
    this.#kept?.push(c);
  }

  /** The request body is complete after a 401: retry with a fresh token. */
  bodyDone(): void {
    const r = this.#refused;
    if (r === undefined) return;
    this.#refused = undefined;
    const { dyn, used } = r;
    if (this.#over) {
      dyn.src.reject(dyn.req, used);
      return;
    }
    const body = this.#kept !== undefined ? Buffer.concat(this.#kept) : EMPTY;
    refreshCredential(dyn, used).then(
      (next) => {
        if (this.#over) {
          this.log(499, undefined, 'sandbox closed the connection');
          return;
        }
        this.#cred = next;
        // The response may echo either token: scrub both.
        this.#needles = [...new Set([...used.needles, ...next.needles])].sort((x, y) => y.length - x.length);
        this.bytesOut = 0;
        this.#kept = undefined;
        this.#send(true, body);
      },
      (e: unknown) => {
        const err = asTokenError(e);
        this.log(503, unavailableReason(this.#adm as Admitted, err));
        if (!this.headSent && !this.#over) this.#unavailable(err);
      },
    );
  }

  /** The upstream response's Content-Length (-1: none, or framed otherwise). */
  upstreamLength = -1;
  #framing: Framing = 'none';
  #scrubber: Scrubber | undefined;
  #decoder: Decoder | undefined;
  /** The attempt whose response is being relayed (a decoded body ends asynchronously). */
  #responding: Attempt | undefined;
  #status = 0;
  #keepAlive = true;

  #respond(a: Attempt, h: Head, bodyless: boolean): void {
    const raw = h.rawHeaders;
    const facts = responseFacts(raw);
    this.upstreamLength = declaredLength(facts, bodyless);
    const needles = this.#needles;
    const { inc, conn } = this;
    const refused = refusal(facts, raw, bodyless, needles);
    if (refused !== undefined) {
      a.destroy();
      this.log(502, refused);
      this.#badGateway('the upstream response cannot be relayed safely');
      return;
    }
    this.#status = h.statusCode;
    let framing: Framing = bodyless ? 'none' : facts.length !== undefined && !facts.chunked ? 'raw' : 'chunked';
    let decoding: string | undefined;
    if (needles) {
      decoding = codingToDecode(facts, bodyless);
      if (decoding !== undefined) {
        if (!decodable(decoding)) {
          a.destroy();
          this.log(502, `upstream sent Content-Encoding ${decoding}, which sandgate cannot scrub`);
          this.#badGateway('the upstream response is encoded in a way sandgate cannot inspect');
          return;
        }
        framing = 'chunked';
      }
      if (!bodyless && facts.length !== '0') this.#scrubber = new Scrubber(needles);
    }
    // A body of unknown length reaches an HTTP/1.0 client delimited by the connection's close.
    if (framing === 'chunked' && inc.http10) framing = 'close';
    this.#framing = framing;
    this.#keepAlive = inc.keepAlive && framing !== 'close';
    this.#responding = a;
    this.headSent = true;
    conn.io.write(responseHead(h.statusCode, h.statusMessage, raw, facts, needles, decoding !== undefined, framing, this.#keepAlive, inc.http10));
    if (decoding !== undefined) this.#decoder = conn.io.decoder(decoding, this);
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    // The decoder works asynchronously: it gets a copy (chunk is a view of a reused read buffer).
    if (this.#decoder !== undefined) {
      this.#decoder.write(Buffer.from(chunk));
      return;
    }
    this.#emit(chunk);
  }

  decoded(chunk: Buffer): void {
    this.#emit(chunk);
  }

  decodedEnd(): void {
    const a = this.#responding;
    if (a !== undefined) this.#finishResponse(a);
  }

  decodeFailed(err: NodeJS.ErrnoException): void {
    this.#responding?.destroy();
    this.#midBodyFailure(`response stream: ${err.code ?? err.message}`);
  }

  #emit(data: Buffer): void {
    this.#toSandbox(this.#scrubber !== undefined ? this.#scrubber.push(data) : data);
  }

  /** Body bytes already scrubbed, framed for the sandbox. */
  #toSandbox(out: Buffer): void {
    if (out.length === 0) return;
    const { io } = this.conn;
    if (this.#framing === 'chunked') {
      io.write(out.length.toString(16) + CRLF);
      io.write(out);
      io.write(CRLF);
    } else {
      io.write(out);
    }
  }

  onResponseComplete(a: Attempt): void {
    if (this.#decoder !== undefined) {
      this.#decoder.end();
      return;
    }
    this.#finishResponse(a);
  }

  #finishResponse(a: Attempt): void {
    if (this.#over) return;
    // What the scrubber held back (it could have become a secret) and now cannot: sent as is.
    const rest = this.#scrubber?.end();
    if (rest !== undefined) this.#toSandbox(rest);
    if (this.#framing === 'chunked') this.conn.io.write(LAST_CHUNK);
    this.#over = true;
    this.log(this.#status);
    // The upstream may go back to the pool only if it was sent the whole request.
    a.finish(this.inc.complete);
    // A body the sandbox is still sending goes nowhere now; the parser still frames it, so the
    // connection can carry the next request once it is read.
    if (!this.inc.complete) this.inc.discard();
    this.conn.exchangeDone(this.#keepAlive);
  }

  /** The upstream failed (or closed) before or during the response; `a` undefined: while connecting. */
  upstreamFailed(err: NodeJS.ErrnoException, a: Attempt | undefined): void {
    if (a === undefined) this.#abortConnect = undefined;
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
    if (a?.mayRetry && a.reused && !a.responded && !this.inc.hasBody && IDEMPOTENT.has(this.inc.method) && STALE.has(err.code ?? '')) {
      this.#attempt = undefined;
      this.#send(false, undefined);
      return;
    }
    const up = (this.#adm as Admitted).upstream;
    const tlsReason = up.tls ? tlsFailure(err) : undefined;
    const reason =
      tlsReason ??
      (err instanceof SandgateError
        ? err.message
        : (err.code ?? '').startsWith('HPE_')
          ? `upstream sent a malformed response (${err.code ?? ''})`
          : `upstream unreachable (${err.code ?? err.message})`);
    // The SSRF guard refusing every address is a denial, as for passthrough (connection.ts).
    this.log(502, reason, undefined, err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN');
    this.#badGateway(tlsReason ? "the upstream's TLS certificate could not be verified" : 'upstream unreachable');
  }

  /**
   * The response was cut short after its head reached the sandbox: the sandbox must see a
   * truncated response (the connection closes), never a complete-looking one.
   */
  #midBodyFailure(error: string): void {
    this.#over = true;
    this.log(this.#status, undefined, error);
    this.conn.cutShort();
  }

  #badGateway(reason: string): void {
    this.#over = true;
    this.inc.discard();
    const keep = this.inc.keepAlive && this.inc.complete;
    this.conn.respond(502, { error: 'bad gateway', reason }, !keep);
    this.conn.exchangeDone(keep);
  }

  /** The sandbox went away: never leave the upstream hanging. */
  sandboxClosed(): void {
    if (this.#over) return;
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
    if (this.#adm !== undefined && !this.#logged) this.log(this.headSent ? this.#status : 499, undefined, 'sandbox closed the connection');
  }

  /** The connection is being closed for a reason of its own (a malformed pipelined request). */
  abort(): void {
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
  }
}
