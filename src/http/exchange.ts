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
import { Attempt, type UpstreamAttempt } from './attempt.js';
import { H2Attempt, type H2Upstream } from './h2-attempt.js';
import { MAX_REPLAY_BODY, refreshCredential, unavailableReason, withCredential, type CredentialWaiter, type Dynamic } from './credential-step.js';
import { httpLine } from './http-audit.js';
import type { BodySink, Incoming } from './incoming.js';
import type { DecodeSink, Decoder, SandboxIo, UpstreamIo, UpstreamWaiter } from './io.js';
import type { Head } from './llhttp.js';
import { requestHead, requestHeaders } from './request-head.js';
import { codingToDecode, decodable, declaredLength, refusal, responseFacts, type Framing, type ResponseFacts } from './response-head.js';
import { nameCarriesSecret } from './headers.js';
import { Scrubber, scrubString } from './scrub.js';
import { BodyBuffer, type BufferWaiter } from './body-buffer.js';
import { planRewrite, type BodyTransform, type Rewrite } from './rewrite.js';
import { isTokenSource } from '../creds/credential.js';
import { tlsFailure } from '../upstream/tls.js';
import { afterTripwire } from '../control/quarantine.js';

// The HTTP/2 codes: a pooled session the upstream is closing (GOAWAY) as a stream starts on it.
const STALE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_HTTP2_GOAWAY_SESSION', 'ERR_HTTP2_INVALID_SESSION']);
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
  /** An interim 100 (Continue) toward the sandbox (RFC 9110 §15.2.1). */
  sendContinue(): void;
  /**
   * The response head toward the sandbox. `framing` as the exchange chose it; a connection that
   * frames bodies itself (HTTP/2 DATA frames, `framesBodies`) was told 'raw' or 'none'.
   */
  sendHead(
    status: number,
    message: string,
    raw: readonly string[],
    facts: ResponseFacts,
    needles: readonly string[] | undefined,
    decoded: boolean,
    framing: Framing,
    keepAlive: boolean,
    http10: boolean,
  ): void;
  /** The response's trailer fields, scrubbed (HTTP/2 relays them; HTTP/1.1 drops them, as it always has). */
  sendTrailers(raw: readonly string[]): void;
  /** Bodies are framed by the connection (HTTP/2): the exchange writes bare body bytes, never chunks. */
  readonly framesBodies: boolean;
  /**
   * `fn` once what this exchange answered has left for the sandbox (an HTTP/2 stream closes after
   * its last frame is written; an HTTP/1.1 answer is written synchronously, so at once).
   */
  whenAnswered(fn: () => void): void;
}

export class Exchange implements CredentialWaiter, UpstreamWaiter, BodySink, DecodeSink, BufferWaiter {
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
  #attempt: UpstreamAttempt | undefined;
  headSent = false;
  #ended = false;
  /** The exchange is over (every way it ends sets this): a body transform lets go of what it holds. */
  get #over(): boolean {
    return this.#ended;
  }
  set #over(v: boolean) {
    this.#ended = v;
    if (v) this.#transform?.release();
  }
  #abortConnect: (() => void) | undefined;
  /** The next attempt's head, body to replay and retry permission, while its connection is set up. */
  #head = '';
  #replay: Buffer | undefined;
  #mayRetry = false;
  /** The token a 401 refused, while the rest of the body is kept for the retry. */
  #refused: { dyn: Dynamic; used: Credential } | undefined;
  /** A head built with the body in view (AWS re-signing, a placeholder in the body): src/http/rewrite.ts. */
  #rewrite: Rewrite | undefined;
  /** The body as the sandbox sent it, when the rewrite buffered it (a retry rebuilds from it). */
  #original: Buffer | undefined;
  /** The body goes upstream with a Content-Length (it was buffered), not re-chunked. */
  #lengthFramed = false;
  #transform: BodyTransform | undefined;
  /** The body being held for the rewrite, until it is complete. */
  #buffer: BodyBuffer | undefined;

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
      const c = adm.credential;
      if (c !== undefined && !isTokenSource(c) && c.aws !== undefined) {
        this.#refuse({
          ...adm,
          ok: false,
          status: 400,
          error: 'bad request',
          reason: 'WebSocket upgrades toward an awsSigV4 host are not re-signed',
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
    if (inc.expectsContinue && !inc.http10) conn.sendContinue();
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
    if (cred !== undefined && (cred.aws !== undefined || cred.placeholderIn !== undefined)) {
      const adm = this.#adm as Admitted;
      const p = planRewrite(this.inc, adm.host, adm.upstream.hostHeader, cred);
      if (!p.ok) {
        this.#reject(p.status, p.error, p.reason);
        return;
      }
      this.#rewrite = p.rewrite;
      if (p.rewrite?.bufferLimit !== undefined) {
        if (!this.inc.hasBody) {
          this.bodyBuffered(EMPTY);
          return;
        }
        this.#buffer = new BodyBuffer(p.rewrite.bufferLimit, this);
        this.inc.take(this.#buffer);
        return;
      }
    }
    if (dyn !== undefined && this.inc.hasBody) this.#kept = [];
    this.#send(true, undefined);
  }

  /** The whole body, for a rewrite that needed it. */
  bodyBuffered(body: Buffer): void {
    if (this.#over) return;
    this.#original = body;
    this.#lengthFramed = true;
    this.#send(true, body);
  }

  bodyTooLarge(limit: number): void {
    this.#reject(413, 'content too large', `the request body is held whole to be signed or searched, and it is larger than ${limit} bytes`);
  }

  bodyBusy(): void {
    this.#reject(503, 'busy', 'sandgate holds too many request bodies at once; try again', 'Retry-After: 1\r\n');
  }

  /** Refused after admission (by the credential's rewrite): nothing went upstream. */
  #reject(status: number, error: string, reason: string, extra?: string): void {
    if (this.#over) return;
    this.#over = true;
    this.#buffer?.drop();
    this.log(status, reason, undefined, status === 403);
    this.inc.discard();
    // A body the sandbox may still be sending: the connection closes rather than read it all.
    const keep = this.inc.keepAlive && this.inc.complete;
    this.conn.respond(status, { error, reason }, !keep, extra);
    this.conn.exchangeDone(keep);
  }

  /** The streamed body could not be rewritten (malformed aws-chunked framing): the request goes no further. */
  #bodyRefused(reason: string): void {
    if (this.#over) return;
    const a = this.#attempt;
    this.#attempt = undefined;
    a?.destroy();
    if (this.headSent) {
      this.#midBodyFailure(reason);
      return;
    }
    this.#reject(400, 'bad request', reason);
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
    // the sandbox's connections, this one too, which on HTTP/2 must first carry the 403 out.
    const hit = r.tripwire;
    if (hit !== undefined) this.conn.whenAnswered(() => afterTripwire(info.rt, info.sandbox, hit, r.reason));
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
      const rw = this.#rewrite;
      if (rw !== undefined) {
        const built = rw.build(rw.bufferLimit !== undefined ? replay : undefined, Date.now());
        this.#head = built.head;
        if (built.body !== undefined) replay = built.body;
        this.#transform?.release();
        this.#transform = built.transform;
        if (built.needles !== undefined && built.needles.length > 0)
          this.#needles = [...new Set([...(this.#needles ?? []), ...built.needles])].sort((x, y) => y.length - x.length);
      } else this.#head = requestHead(this.inc, adm.upstream.hostHeader, this.#cred);
    } catch (err) {
      this.log(502, (err as Error).message);
      this.#badGateway('sandgate could not build the upstream request');
      return;
    }
    this.#mayRetry = mayRetry;
    this.#replay = replay;
    this.#abortConnect = this.conn.io.connect(adm.info, adm.upstream, this);
  }

  get http1Only(): boolean {
    return this.#rewrite !== undefined;
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

  /**
   * An HTTP/2 upstream session is ready (one stream of it carries this request): the fields go as
   * a header list, the body as DATA frames (src/http/h2-attempt.ts).
   */
  upstreamH2Ready(session: H2Upstream, reused: boolean): void {
    this.#abortConnect = undefined;
    if (this.#over) return;
    const adm = this.#adm as Admitted;
    const a = new H2Attempt(this, session, reused, this.#mayRetry);
    this.#attempt = a;
    const replay = this.#replay;
    this.#head = '';
    this.#replay = undefined;
    // The same builder as the HTTP/1.1 head (it already accepted these fields in #send).
    a.start(requestHeaders(this.inc, adm.upstream.hostHeader, this.#cred), replay);
  }

  /** Body bytes on their way upstream: counted, and kept for a 401 retry while they fit. */
  bodyOut(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (this.#kept !== undefined) {
      if (this.bytesOut > MAX_REPLAY_BODY) this.#kept = undefined;
      else this.#kept.push(chunk);
    }
  }

  /** Request body toward the upstream: framed as the sandbox framed it (chunks re-encoded). */
  writeBody(up: UpstreamIo, chunk: Buffer): boolean {
    this.bodyOut(chunk);
    let data = chunk;
    if (this.#transform !== undefined) {
      try {
        data = this.#transform.push(chunk);
      } catch (err) {
        this.#bodyRefused((err as Error).message);
        return true;
      }
      // Held back until a whole aws-chunked chunk is in (an empty HTTP chunk would end the body).
      if (data.length === 0) return true;
    }
    if (!this.inc.chunked || this.#lengthFramed) return up.write(data);
    up.write(data.length.toString(16) + CRLF);
    up.write(data);
    return up.write(CRLF);
  }

  endBody(up: UpstreamIo): void {
    if (this.#transform !== undefined) {
      try {
        this.#transform.end();
      } catch (err) {
        this.#bodyRefused((err as Error).message);
        return;
      }
    }
    if (this.inc.chunked && !this.#lengthFramed) up.write(LAST_CHUNK);
  }

  /** The attempt's response head: whether its body is relayed, skipped (none) or discarded. */
  onResponseHead(a: UpstreamAttempt, h: Head): 'skip' | 'body' | 'discard' {
    const status = h.statusCode;
    const bodyless = this.inc.method === 'HEAD' || status === 204 || status === 304;
    const dyn = this.#dyn;
    const cred = this.#cred;
    if (status === 401 && dyn !== undefined && cred !== undefined && this.#rejected === undefined) {
      // The upstream refused the token (RFC 9110 §15.5.2): it is dropped whatever happens next.
      // The request is retried once with a fresh one if it can be replayed, else the 401 is relayed.
      const replayable = !this.inc.hasBody || this.#original !== undefined || (this.inc.length >= 0 && this.inc.length <= MAX_REPLAY_BODY);
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
    const body = this.#original ?? (this.#kept !== undefined ? Buffer.concat(this.#kept) : EMPTY);
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
  #responding: UpstreamAttempt | undefined;
  #status = 0;
  #keepAlive = true;

  #respond(a: UpstreamAttempt, h: Head, bodyless: boolean): void {
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
    // HTTP/2 frames the body itself (DATA frames, END_STREAM): the bytes go bare.
    if (conn.framesBodies && framing !== 'none') framing = 'raw';
    this.#framing = framing;
    this.#keepAlive = inc.keepAlive && framing !== 'close';
    this.#responding = a;
    this.headSent = true;
    conn.sendHead(h.statusCode, h.statusMessage, raw, facts, needles, decoding !== undefined, framing, this.#keepAlive, inc.http10);
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

  /** The response's trailer section (HTTP/2 upstreams): scrubbed like the head, relayed where the sandbox's protocol can carry it. */
  onResponseTrailers(raw: readonly string[]): void {
    if (this.#over) return;
    const needles = this.#needles;
    if (needles !== undefined && nameCarriesSecret(raw, needles)) {
      // A field name cannot be masked: the response is cut short instead of relayed.
      this.#responding?.destroy();
      this.#midBodyFailure('upstream sent a trailer field whose name carries the credential');
      return;
    }
    this.conn.sendTrailers(needles !== undefined ? raw.map((v, i) => (i % 2 === 1 ? scrubString(v, needles) : v)) : raw);
  }

  onResponseComplete(a: UpstreamAttempt): void {
    if (this.#decoder !== undefined) {
      this.#decoder.end();
      return;
    }
    this.#finishResponse(a);
  }

  #finishResponse(a: UpstreamAttempt): void {
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
  upstreamFailed(err: NodeJS.ErrnoException, a: UpstreamAttempt | undefined): void {
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
    this.#buffer?.drop();
    if (this.#over) return;
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
    if (this.#adm !== undefined && !this.#logged) this.log(this.headSent ? this.#status : 499, undefined, 'sandbox closed the connection');
  }

  /** The connection is being closed for a reason of its own (a malformed pipelined request). */
  abort(): void {
    this.#buffer?.drop();
    this.#over = true;
    this.#abortConnect?.();
    this.#attempt?.destroy();
  }
}
