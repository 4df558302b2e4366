/**
 * One request as one stream of an HTTP/2 upstream session (the upstream chose h2 in ALPN,
 * src/upstream/pool.ts). The exchange (src/http/exchange.ts) is the same as over HTTP/1.1: this
 * attempt hands it the response head, body, trailers and end as the HTTP/1.1 Attempt does, so
 * admission, injection, refusals, decoding, scrubbing, the 401 retry and the audit line do not
 * depend on the upstream's protocol. node:http2 (nghttp2) does the framing.
 */
import http2 from 'node:http2';
import { failure, type UpstreamAttempt } from './attempt.js';
import type { Exchange } from './exchange.js';
import type { BodySink } from './incoming.js';
import type { Head } from './llhttp.js';

/** A pooled HTTP/2 session to one upstream (node:http2's client session). */
export type H2Upstream = http2.ClientHttp2Session;

const { NGHTTP2_CANCEL } = http2.constants;

/** Response fields of an HTTP/2 header list, pseudo-fields (":status") left out: names and values alternating. */
export function regularFields(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    if (k.charCodeAt(0) !== 58 /* ':' */) out.push(k, raw[i + 1] as string);
  }
  return out;
}

export class H2Attempt implements BodySink, UpstreamAttempt {
  readonly ex: Exchange;
  readonly session: H2Upstream;
  readonly reused: boolean;
  readonly mayRetry: boolean;
  responded = false;
  #stream: http2.ClientHttp2Stream | undefined;
  #mode: 'body' | 'skip' | 'discard' = 'body';
  #done = false;
  #sentAll = false;
  #complete = false;

  constructor(ex: Exchange, session: H2Upstream, reused: boolean, mayRetry: boolean) {
    this.ex = ex;
    this.session = session;
    this.reused = reused;
    this.mayRetry = mayRetry;
  }

  /** Open the stream with `headers`, then send the body: `replay` (after a 401) or the request's as it arrives. */
  start(headers: Record<string, string | string[]>, replay: Buffer | undefined): void {
    const { ex } = this;
    const inc = ex.inc;
    const bodyless = replay !== undefined ? replay.length === 0 : !inc.hasBody;
    let s: http2.ClientHttp2Stream;
    try {
      s = this.session.request(headers, { endStream: bodyless });
    } catch (err) {
      // The session is closing (GOAWAY) or gone: a stale pooled session, retried like a stale socket.
      this.#done = true;
      ex.upstreamFailed(err as NodeJS.ErrnoException, this);
      return;
    }
    this.#stream = s;
    ex.conn.io.source(s);
    // node:http2 passes the raw header list third (as for 'trailers'); @types/node lists two arguments.
    const onResponse = (h: http2.IncomingHttpHeaders, _flags: number, raw: string[]): void => {
      this.#onResponse(h, raw);
    };
    s.on('response', onResponse as (h: http2.IncomingHttpHeaders, flags: number) => void);
    s.on('data', (c: Buffer) => {
      if (this.#mode === 'body' && !this.#done) ex.onResponseBody(c);
    });
    s.on('trailers', (_h, _flags, raw: string[]) => {
      if (this.#mode === 'body' && !this.#done) ex.onResponseTrailers(regularFields(raw));
    });
    s.on('end', () => {
      this.#onEnd();
    });
    s.on('drain', () => {
      ex.conn.blockReading(false);
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      this.#failed(err);
    });
    s.on('close', () => {
      this.#failed(failure('upstream closed the stream before the response was complete', this.responded ? 'ERR_STREAM_PREMATURE_CLOSE' : 'ECONNRESET'));
    });
    if (bodyless) {
      this.#sentAll = true;
      return;
    }
    if (replay !== undefined) {
      ex.bodyOut(replay);
      s.end(replay);
      this.#sentAll = true;
      return;
    }
    inc.take(this);
    ex.conn.checkBuffered();
  }

  bodyChunk(c: Buffer): void {
    const s = this.#stream;
    if (this.#done || s === undefined) return;
    this.ex.bodyOut(c);
    if (!s.write(c)) this.ex.conn.blockReading(true);
  }

  bodyDone(): void {
    if (this.#done) return;
    this.#stream?.end();
    this.#sentAll = true;
  }

  #onResponse(h: http2.IncomingHttpHeaders, raw: string[]): void {
    if (this.#done || this.responded) return;
    this.responded = true;
    const head: Head = {
      versionMajor: 2,
      versionMinor: 0,
      rawHeaders: regularFields(raw),
      method: '',
      url: '',
      statusCode: Number(h[':status']),
      statusMessage: '',
      upgrade: false,
      shouldKeepAlive: true,
    };
    this.#mode = this.ex.onResponseHead(this, head);
    // No body follows (HEAD, 204, 304): the response is complete with its head.
    if (this.#mode === 'skip' && !this.#done) this.#onEnd();
  }

  #onEnd(): void {
    if (this.#done || this.#complete || !this.responded) return;
    this.#complete = true;
    if (this.#mode === 'discard') {
      this.finish(this.#sentAll);
      return;
    }
    this.ex.onResponseComplete(this);
  }

  #failed(err: NodeJS.ErrnoException): void {
    // A stream closing after its response completed (a decoder may still be working) cuts nothing short.
    if (this.#done || this.#complete) return;
    this.destroy();
    this.ex.upstreamFailed(err, this);
  }

  /** The response is complete: a stream whose request is still being sent is cancelled (RFC 9113 §8.1). */
  finish(requestComplete: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    const s = this.#stream;
    if (s !== undefined && !s.closed && !(requestComplete && this.#sentAll)) s.close(NGHTTP2_CANCEL);
  }

  destroy(): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    const s = this.#stream;
    if (s !== undefined && !s.closed) s.close(NGHTTP2_CANCEL);
  }

  #detach(): void {
    const { conn } = this.ex;
    conn.io.source(undefined);
    this.#stream?.resume();
    conn.blockReading(false);
  }
}
