import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { pipeline, type Readable, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import { SandgateError } from '../errors.js';
import { injectHeaders, injectQuery } from '../creds/credential.js';
import type { Admitted } from './admit.js';
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
 */
export function forward(req: http.IncomingMessage, res: http.ServerResponse, adm: Admitted): void {
  const { info, credential: cred, upstream: up } = adm;
  const { rt } = info;
  const started = performance.now();
  const headers = forwardHeaders(req.headers);
  // The front answered any "Expect: 100-continue" itself (RFC 9110 §10.1.1), once the request
  // was admitted; the upstream is sent the body straight away.
  delete headers.expect;
  headers.host = up.hostHeader;
  let target = req.url ?? '/';
  if (cred) {
    injectHeaders(headers, cred);
    target = injectQuery(target, cred);
    // Scrubbing reads the body's bytes: ask for it unencoded (RFC 9110 §12.5.3). An upstream that
    // encodes anyway is decoded below.
    headers['accept-encoding'] = 'identity';
  }
  const te = req.headers['transfer-encoding'];
  const hasBody = te !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  // Transfer-Encoding is hop-by-hop, so forwardHeaders dropped it; but a body without framing
  // would reach the upstream raw, and Node sends GET/DELETE/OPTIONS bodies unframed unless told:
  // the body's bytes would then parse as further requests upstream (smuggling, RFC 9112 §11.2).
  // llhttp already decoded the chunks; say "chunked" again and Node re-encodes them.
  if (te !== undefined) headers['transfer-encoding'] = te;

  let bytesOut = 0;
  let bytesIn = 0;
  let logged = false;
  const log = (status: number, extra: { reason?: string; error?: string; deny?: boolean } = {}): void => {
    if (logged) return;
    logged = true;
    const reason = extra.reason ?? adm.reason;
    rt.audit.write({
      ...adm.base, host: adm.host, decision: extra.deny ? 'deny' : adm.decision,
      ...(adm.rule ? { rule: adm.rule.id } : {}),
      ...(cred ? { credential: cred.id } : {}),
      ...(up.tls && info.sni === undefined ? { upstream: `https://${up.host}:${up.port}` } : {}),
      status, bytesIn, bytesOut, ms: Math.round(performance.now() - started),
      ...(reason !== undefined ? { reason: cred ? scrubString(reason, cred.needles) : reason } : {}),
      ...(extra.error !== undefined ? { error: cred ? scrubString(extra.error, cred.needles) : extra.error } : {}),
    });
  };
  if (hasBody) req.on('data', (c: Buffer) => { bytesOut += c.length; });

  let current: http.ClientRequest | undefined;
  res.once('close', () => {
    // The sandbox went away (or the response is complete): never leave the upstream hanging.
    if (!res.writableFinished) {
      current?.destroy();
      log(res.headersSent ? res.statusCode : 499, { error: 'sandbox closed the connection' });
    }
  });

  const send = (mayRetry: boolean): void => {
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
    upReq.once('response', (upRes) => respond(upRes));
    let failed = false;
    upReq.on('error', (err: NodeJS.ErrnoException) => {
      if (failed) return; // a ClientRequest may report more than once; the first one counts
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
    if (hasBody) req.pipe(upReq);
    else upReq.end();
  };

  const respond = (upRes: http.IncomingMessage): void => {
    const status = upRes.statusCode ?? 502;
    const outHeaders = forwardHeaders(upRes.headers);
    let message = upRes.statusMessage;
    const bodyless = req.method === 'HEAD' || status === 204 || status === 304;
    let scrubber: Scrubber | undefined;
    let decoder: Transform | undefined;
    if (cred) {
      scrubHeaders(outHeaders, cred.needles);
      if (message) message = scrubString(message, cred.needles);
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
        scrubber = new Scrubber(cred.needles);
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
  src.on('data', (chunk: Buffer) => {
    const out = scrubber ? scrubber.push(chunk) : chunk;
    if (out.length > 0 && !res.write(out)) src.pause();
  });
  src.once('end', () => {
    ended = true;
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
