import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { pipeline, type Readable, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import { SandgateError } from '../errors.js';
import { injectHeaders, injectQuery, type Credential } from '../creds/credential.js';
import { asTokenError, type TokenError } from '../creds/token-error.js';
import type { Admitted } from './admit.js';
import { credentialUnavailable, MAX_REPLAY_BODY, refreshCredential, unavailableReason, withCredential, type Dynamic } from './credential-step.js';
import { forwardHeaders } from './headers.js';
import { guardedLookup } from './lookup.js';
import { Scrubber, scrubString } from './scrub.js';
import { tlsFailure } from './upstream-tls.js';

/** Keep-alive pool for plain-HTTP upstreams (TLS upstreams use the Runtime's pool). */
export const plainAgent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo', timeout: 30_000 });

/**
 * Forward one admitted request and stream the response back. Nothing is buffered: the request
 * body is piped upstream (backpressure both ways), the response body is piped back, through a
 * scrubber when a credential was injected.
 *
 * Redirects are never followed: a 3xx is relayed as is, so the client decides, and its follow-up
 * request to another host gets that host's verdict and credential (none, for an unlisted host).
 *
 * With a token source (authService, oauth2), the credential is looked up first (synchronously on
 * a cache hit) and the request fails closed with 503 if none can be had. An upstream 401 to such
 * a request drops the token, and the request is retried once with a fresh one when it can be
 * replayed: no body, or a body of at most 64 KiB, kept while it streamed (docs/auth-service.md).
 */
export function forward(req: http.IncomingMessage, res: http.ServerResponse, adm: Admitted): void {
  const started = performance.now();
  withCredential(adm, (cred, dyn) => {
    if (dyn !== undefined && res.destroyed) { noCredential(res, adm, started, 499, 'sandbox closed the connection while its credential was fetched'); return; }
    forwardWith(req, res, adm, started, cred, dyn);
  }, (err) => { failClosed(res, adm, started, err); });
}

function noCredential(res: http.ServerResponse, adm: Admitted, started: number, status: number, reason: string): void {
  adm.info.rt.audit.write({
    ...adm.base, host: adm.host, decision: adm.decision,
    ...(adm.rule ? { rule: adm.rule.id } : {}),
    ...(adm.credential ? { credential: adm.credential.id } : {}),
    status, bytesIn: 0, bytesOut: 0, ms: Math.round(performance.now() - started), reason,
  });
  if (status === 499) res.destroy();
}

/** No credential, no request: 503, and the upstream never hears of it. */
function failClosed(res: http.ServerResponse, adm: Admitted, started: number, err: TokenError): void {
  if (res.destroyed) { noCredential(res, adm, started, 499, unavailableReason(adm, err)); return; }
  noCredential(res, adm, started, 503, unavailableReason(adm, err));
  if (res.headersSent) res.destroy();
  else credentialUnavailable(res, err);
}

function forwardWith(req: http.IncomingMessage, res: http.ServerResponse, adm: Admitted, started: number, first: Credential | undefined, dyn: Dynamic | undefined): void {
  const { info, upstream: up } = adm;
  const { rt } = info;
  let cred = first;
  let needles = cred?.needles;
  const base = forwardHeaders(req.headers);
  // The front answered any "Expect: 100-continue" itself (RFC 9110 §10.1.1), once the request
  // was admitted; the upstream is sent the body straight away.
  delete base.expect;
  base.host = up.hostHeader;
  const te = req.headers['transfer-encoding'];
  const hasBody = te !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  // Transfer-Encoding is hop-by-hop, so forwardHeaders dropped it; but a body without framing
  // would reach the upstream raw, and Node sends GET/DELETE/OPTIONS bodies unframed unless told:
  // the body's bytes would then parse as further requests upstream (smuggling, RFC 9112 §11.2).
  // llhttp already decoded the chunks; say "chunked" again and Node re-encodes them.
  if (te !== undefined) base['transfer-encoding'] = te;
  let headers = base;
  let target = req.url ?? '/';
  const inject = (c: Credential): void => {
    // A retry injects its new token into the headers as the sandbox sent them, not over the old one.
    headers = dyn !== undefined ? { ...base } : base;
    injectHeaders(headers, c);
    target = injectQuery(req.url ?? '/', c);
    // Scrubbing reads the body's bytes: ask for it unencoded (RFC 9110 §12.5.3). An upstream that
    // encodes anyway is decoded below.
    headers['accept-encoding'] = 'identity';
  };
  if (cred) inject(cred);

  let bytesOut = 0;
  let bytesIn = 0;
  let logged = false;
  /** Set when an upstream 401 made sandgate drop the token: "retried" or "relayed". */
  let rejected: 'retried' | 'relayed' | undefined;
  const log = (status: number, extra: { reason?: string; error?: string; deny?: boolean } = {}): void => {
    if (logged) return;
    logged = true;
    const reason = extra.reason ?? adm.reason;
    rt.audit.write({
      ...adm.base, host: adm.host, decision: extra.deny ? 'deny' : adm.decision,
      ...(adm.rule ? { rule: adm.rule.id } : {}),
      ...(cred ? { credential: cred.id } : {}),
      ...(rejected !== undefined ? { tokenRejected: rejected } : {}),
      ...(up.tls && info.sni === undefined ? { upstream: `https://${up.host}:${up.port}` } : {}),
      status, bytesIn, bytesOut, ms: Math.round(performance.now() - started),
      ...(reason !== undefined ? { reason: needles ? scrubString(reason, needles) : reason } : {}),
      ...(extra.error !== undefined ? { error: needles ? scrubString(extra.error, needles) : extra.error } : {}),
    });
  };
  // With a token source, the body is kept (up to MAX_REPLAY_BODY) as it streams, for a 401 retry.
  let kept: Buffer[] | undefined = dyn !== undefined && hasBody ? [] : undefined;
  if (hasBody) {
    req.on('data', (c: Buffer) => {
      bytesOut += c.length;
      if (kept !== undefined) {
        if (bytesOut > MAX_REPLAY_BODY) kept = undefined;
        else kept.push(c);
      }
    });
  }

  let current: http.ClientRequest | undefined;
  res.once('close', () => {
    // The sandbox went away (or the response is complete): never leave the upstream hanging.
    if (!res.writableFinished) {
      current?.destroy();
      log(res.headersSent ? res.statusCode : 499, { error: 'sandbox closed the connection' });
    }
  });

  /** Each send is one attempt; events of a superseded attempt (a 401 being retried) are ignored. */
  let attempt = 0;
  const send = (mayRetry: boolean, replay?: Buffer): void => {
    const my = ++attempt;
    const opts: https.RequestOptions = {
      host: up.host,
      port: up.port,
      method: req.method,
      path: target,
      headers,
      setHost: false,
      lookup: guardedLookup(rt),
      agent: up.tls ? rt.upstreamTls.agent : plainAgent,
      ...(up.tls ? { servername: up.host } : {}),
    };
    const upReq = up.tls ? https.request(opts) : http.request(opts);
    current = upReq;
    const connectMs = rt.config.upstream.connectTimeoutMs;
    upReq.once('socket', (s: net.Socket) => {
      if (!s.connecting) return; // a pooled connection
      const timer = setTimeout(() => upReq.destroy(new SandgateError(`connect to ${up.host}:${up.port} timed out after ${connectMs} ms`, 'UPSTREAM_CONNECT')), connectMs);
      s.once(up.tls ? 'secureConnect' : 'connect', () => clearTimeout(timer));
      s.once('close', () => clearTimeout(timer));
    });
    upReq.once('response', (upRes) => {
      if (my !== attempt) { upRes.resume(); return; }
      if (upRes.statusCode === 401 && dyn !== undefined && cred !== undefined && rejected === undefined) { unauthorized(upRes, dyn, cred); return; }
      respond(upRes);
    });
    let failed = false;
    upReq.on('error', (err: NodeJS.ErrnoException) => {
      if (failed || my !== attempt) return; // a ClientRequest may report more than once; the first one counts
      failed = true;
      // A pooled connection the upstream closed just as we reused it (RFC 9112 §9.3.1): retry
      // once on a fresh one, but only when no body was sent (it cannot be replayed).
      if (mayRetry && !hasBody && upReq.reusedSocket && !res.headersSent && STALE.has(err.code ?? '')) return send(false);
      const tlsReason = up.tls ? tlsFailure(err) : undefined;
      const reason = tlsReason ?? (err instanceof SandgateError ? err.message : `upstream unreachable (${err.code ?? err.message})`);
      if (res.writableFinished) return; // the response was complete; the pool deals with its socket
      if (res.headersSent) {
        log(res.statusCode, { error: reason });
        res.destroy();
        return;
      }
      if (res.destroyed) return;
      // The SSRF guard refusing every address is a denial, as for passthrough (connection.ts).
      log(502, { reason, deny: err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN' });
      badGateway(res, tlsReason ? 'the upstream\'s TLS certificate could not be verified' : 'upstream unreachable');
    });
    if (replay !== undefined) upReq.end(replay);
    else if (hasBody) req.pipe(upReq);
    else upReq.end();
  };

  /** The whole body once the sandbox has sent it, if it was kept; undefined if it cannot be replayed. */
  const replayable = (): Promise<Buffer | undefined> => {
    if (!hasBody) return Promise.resolve(Buffer.alloc(0));
    if (kept === undefined) return Promise.resolve(undefined);
    if (req.complete) return Promise.resolve(Buffer.concat(kept));
    return new Promise((resolve) => {
      const settle = (): void => { req.off('end', settle); req.off('close', settle); resolve(req.complete && kept !== undefined ? Buffer.concat(kept) : undefined); };
      req.once('end', settle);
      req.once('close', settle);
    });
  };

  /**
   * The upstream refused the token (RFC 9110 §15.5.2). It is dropped from the cache whatever
   * happens next, so the following requests get a new one. This request is retried once with a
   * fresh token when it can be replayed; otherwise the 401 is relayed.
   */
  const unauthorized = (upRes: http.IncomingMessage, d: Dynamic, used: Credential): void => {
    const held = ++attempt; // from here on, errors of the refused exchange are not this request's
    replayable().then((body) => {
      if (held !== attempt) return;
      if (res.destroyed) { d.src.reject(d.req, used); upRes.destroy(); return; }
      if (body === undefined) {
        d.src.reject(d.req, used);
        rejected = 'relayed';
        respond(upRes);
        return;
      }
      rejected = 'retried';
      upRes.resume(); // discard the 401's body; its connection goes back to the pool
      refreshCredential(d, used).then((next) => {
        if (res.destroyed) { log(499, { error: 'sandbox closed the connection' }); return; }
        cred = next;
        // The response may echo either token: scrub both.
        needles = [...new Set([...used.needles, ...next.needles])].sort((a, b) => b.length - a.length);
        inject(next);
        send(true, body);
      }, (e: unknown) => {
        const err = asTokenError(e);
        log(503, { reason: unavailableReason(adm, err) });
        if (!res.headersSent && !res.destroyed) credentialUnavailable(res, err);
      });
    }, () => undefined);
  };

  const respond = (upRes: http.IncomingMessage): void => {
    const status = upRes.statusCode ?? 502;
    const outHeaders = forwardHeaders(upRes.headers);
    let message = upRes.statusMessage;
    const bodyless = req.method === 'HEAD' || status === 204 || status === 304;
    let scrubber: Scrubber | undefined;
    let decoder: Transform | undefined;
    if (needles) {
      scrubHeaders(outHeaders, needles);
      if (message) message = scrubString(message, needles);
      if (!bodyless && upRes.headers['content-length'] !== '0') {
        const enc = (upRes.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
        if (enc !== 'identity' && enc !== '') {
          decoder = decoderFor(enc);
          if (!decoder) {
            upRes.destroy();
            log(502, { reason: `upstream sent Content-Encoding ${enc}, which sandgate cannot scrub` });
            badGateway(res, 'the upstream response is encoded in a way sandgate cannot inspect');
            return;
          }
          delete outHeaders['content-encoding'];
          delete outHeaders['content-length'];
        }
        scrubber = new Scrubber(needles);
      }
    }
    res.writeHead(status, message, outHeaders);
    // Streams (SSE, chunked) get their head at once; a sized body carries it in its first write.
    if (outHeaders['content-length'] === undefined && !bodyless) res.flushHeaders();
    upRes.on('data', (c: Buffer) => { bytesIn += c.length; });
    const done = (err?: NodeJS.ErrnoException): void => {
      if (err) log(status, { error: `response stream: ${err.code ?? err.message}` });
      else log(status);
    };
    if (decoder) {
      pipeline(upRes, decoder, (err) => { if (err) { res.destroy(); done(err); } });
      relayBody(decoder, res, scrubber, done);
    } else {
      relayBody(upRes, res, scrubber, done);
    }
  };

  send(true);
}

const STALE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Body relay with backpressure, lighter than stream.pipeline (no Transform, no AbortSignal,
 * no end-of-stream bookkeeping per response: this runs once per request on the hot path).
 * Chunks are written as they arrive, so SSE events and chunked streams are never held back
 * (except a scrubber's tail that may still become a secret).
 */
function relayBody(src: Readable, res: http.ServerResponse, scrubber: Scrubber | undefined, done: (err?: NodeJS.ErrnoException) => void): void {
  let ended = false;
  const resume = (): void => { src.resume(); };
  res.on('drain', resume);
  // One upstream read yields several 'data' events (one per 16 KiB TLS record); written one by
  // one, each would be its own TLS record write and write(2) toward the sandbox. Corked until the
  // end of this event-loop turn, they leave as one write (the bench's bulk scenario measures it).
  // A turn adds no delay to streams (SSE) and holds at most what one upstream read produced;
  // backpressure is checked once the turn's chunks are flushed.
  let corked = false;
  const flush = (): void => {
    if (!corked) return;
    corked = false;
    res.uncork();
    if (res.writableNeedDrain) src.pause();
  };
  src.on('data', (chunk: Buffer) => {
    const out = scrubber ? scrubber.push(chunk) : chunk;
    if (out.length === 0) return;
    if (!corked && !res.destroyed) {
      corked = true;
      res.cork();
      setImmediate(flush);
    }
    res.write(out);
  });
  src.once('end', () => {
    ended = true;
    corked = false; // end() below uncorks the connection fully (node:_http_outgoing)
    res.removeListener('drain', resume);
    const rest = scrubber?.end();
    if (rest && rest.length > 0) res.end(rest);
    else res.end();
    done();
  });
  src.once('error', (err: NodeJS.ErrnoException) => {
    if (ended) return;
    ended = true;
    res.destroy();
    done(err);
  });
  src.once('close', () => {
    // The upstream connection died mid-body: the sandbox must see a truncated response (the
    // connection closes), never a complete-looking one.
    if (ended) return;
    ended = true;
    res.destroy();
    done(Object.assign(new Error('upstream closed before the body was complete'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
  });
}

function decoderFor(enc: string): Transform | undefined {
  switch (enc) {
    case 'gzip': case 'x-gzip': return zlib.createGunzip();
    case 'deflate': return zlib.createInflate();
    case 'br': return zlib.createBrotliDecompress();
    default: return undefined; // stacked codings, zstd, compress...
  }
}

function scrubHeaders(headers: http.OutgoingHttpHeaders, needles: readonly string[]): void {
  for (const [k, v] of Object.entries(headers)) {
    if (typeof v === 'string') headers[k] = scrubString(v, needles);
    else if (Array.isArray(v)) headers[k] = v.map((x) => scrubString(x, needles));
  }
}

export function badGateway(res: http.ServerResponse, reason: string): void {
  const body = JSON.stringify({ error: 'bad gateway', reason, by: 'sandgate' });
  res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
