/**
 * One HTTP/2 stream from the sandbox as one exchange of the relay's core (src/http/exchange.ts):
 * the stream's pseudo-header fields become the request a sandbox would have sent over HTTP/1.1
 * (:method, :path, :authority as Host), and this object is both the exchange's connection
 * (ExchangeConn) and its SandboxIo, carrying out on the stream what the core decides: a response
 * head, DATA, trailers, the end of the stream or its reset (RST_STREAM).
 *
 * A refusal answers the stream alone: 403 JSON with the reason, or, when the request is gRPC
 * (`content-type: application/grpc*`), a trailers-only response (HTTP 200, grpc-status and
 * grpc-message) that gRPC clients report as the call's status.
 */
import http2 from 'node:http2';
import { who, type ConnInfo } from '../net/conn-info.js';
import { MAX_HEADER_SIZE } from './attempt.js';
import { httpLine } from './http-audit.js';
import { Exchange, type ExchangeConn } from './exchange.js';
import { HOP_BY_HOP, pathOnly } from './headers.js';
import { Incoming } from './incoming.js';
import type { DecodeSink, Decoder, Pausable, SandboxIo, UpstreamWaiter } from './io.js';
import type { Head } from './llhttp.js';
import { connectUpstream, decoderFor } from './relay.js';
import type { Framing, ResponseFacts } from './response-head.js';
import { MAX_BUFFERED_BODY } from './sandbox-conn.js';
import { scrubString } from './scrub.js';
import type { Target } from '../upstream/pool.js';

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;

/** A sandbox's HTTP/2 session as its streams see it. */
export interface H2Session {
  readonly info: ConnInfo;
  /** Exchanges in flight on the session (src/http/h2-front.ts bounds them). */
  active: number;
}

/**
 * gRPC status for a refusal's HTTP status, as gRPC's own HTTP-to-gRPC status mapping does:
 * 7 PERMISSION_DENIED for a denial, 14 UNAVAILABLE for a gateway failure.
 */
function grpcStatus(status: number): number {
  if (status === 403 || status === 405) return 7;
  if (status === 401) return 16;
  if (status === 400 || status === 431 || status === 413) return 13;
  if (status === 429 || status === 502 || status === 503 || status === 504) return 14;
  return 2;
}

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"): printable ASCII but '%' as is. */
function grpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8'))
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/**
 * The request as the core reads one (llhttp's head shape): :authority as Host (a `host` field that
 * differs is a second Host, which admission refuses), cookie fields joined (RFC 9113 §8.2.3), and
 * a body without Content-Length marked chunked, so an HTTP/1.1 upstream gets it framed.
 */
export function streamRequest(headers: http2.IncomingHttpHeaders, flags: number, raw: readonly string[]): Head {
  const method = String(headers[':method'] ?? '');
  const authority = headers[':authority'];
  const fields: string[] = [];
  let host: string | undefined;
  let cookie: string | undefined;
  let length = false;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    const v = raw[i + 1] as string;
    if (k.charCodeAt(0) === 58 /* ':' */) continue;
    if (k === 'host') host = v;
    else if (k === 'cookie') cookie = cookie === undefined ? v : `${cookie}; ${v}`;
    else {
      if (k === 'content-length') length = true;
      fields.push(k, v);
    }
  }
  const hosts: string[] = [];
  if (authority !== undefined) hosts.push('host', authority);
  if (host !== undefined && (authority === undefined || host.toLowerCase() !== authority.toLowerCase())) hosts.push('host', host);
  if (cookie !== undefined) fields.push('cookie', cookie);
  if ((flags & NGHTTP2_FLAG_END_STREAM) === 0 && !length) fields.push('transfer-encoding', 'chunked');
  return {
    versionMajor: 2,
    versionMinor: 0,
    rawHeaders: [...hosts, ...fields],
    method,
    // CONNECT carries no :path (RFC 9113 §8.5): its target is the authority, refused as over HTTP/1.1.
    url: String(headers[':path'] ?? authority ?? ''),
    statusCode: 0,
    statusMessage: '',
    upgrade: false,
    shouldKeepAlive: true,
  };
}

export class H2StreamConn implements ExchangeConn, SandboxIo {
  readonly info: ConnInfo;
  readonly io: SandboxIo = this;
  readonly framesBodies = true;

  whenAnswered(fn: () => void): void {
    const s = this.#stream;
    if (s.closed || s.destroyed) fn();
    else s.once('close', fn);
  }
  readonly #front: H2Session;
  readonly #stream: http2.ServerHttp2Stream;
  readonly #inc: Incoming;
  readonly #grpc: boolean;
  /** The client said it takes trailers (`te: trailers`): the response waits for the upstream's. */
  readonly #teTrailers: boolean;
  #exchange: Exchange | undefined;
  #done = false;
  #source: Pausable | undefined;
  #sourcePaused = false;
  #readBlocked = false;
  #trailers: Record<string, string | string[]> | undefined;

  constructor(front: H2Session, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, raw: readonly string[]) {
    this.#front = front;
    this.info = front.info;
    this.#stream = stream;
    this.#inc = new Incoming(streamRequest(headers, flags, raw));
    const ct = headers['content-type'];
    this.#grpc = typeof ct === 'string' && ct.toLowerCase().startsWith('application/grpc');
    const te = headers.te;
    this.#teTrailers = typeof te === 'string' && te.trim().toLowerCase() === 'trailers';
    // Counted as RFC 9113 §6.5.2 counts it: names and values, plus 32 octets per field.
    let size = 0;
    for (const f of raw) size += f.length + 16;
    this.#headerListSize = size;
  }

  run(): void {
    const stream = this.#stream;
    const inc = this.#inc;
    this.#front.active++;
    // The header list limit (SETTINGS_MAX_HEADER_LIST_SIZE) binds nghttp2 only once the client has
    // acknowledged it; a request sent before that is held to the same 16 KiB here, as over HTTP/1.1.
    if (this.#headerListSize > MAX_HEADER_SIZE) {
      this.#tooLarge();
      return;
    }
    stream.on('data', (c: Buffer) => {
      inc.body(c);
      this.#updateReading();
    });
    stream.on('end', () => {
      inc.end();
    });
    stream.on('drain', () => {
      if (!this.#sourcePaused) return;
      this.#sourcePaused = false;
      this.#source?.resume();
    });
    stream.on('error', () => {
      /* 'close' follows */
    });
    stream.on('close', () => {
      this.#source = undefined;
      this.#over();
      this.#exchange?.sandboxClosed();
    });
    // A stream that ended at its HEADERS frame has no body to wait for.
    if (stream.readableEnded || (!inc.hasBody && stream.endAfterHeaders)) inc.end();
    const ex = new Exchange(this, inc);
    this.#exchange = ex;
    ex.run();
  }

  readonly #headerListSize: number;

  /** 431, as llhttp's header limit answers over HTTP/1.1 (src/http/sandbox-conn.ts). */
  #tooLarge(): void {
    const { info } = this;
    info.rt.audit.write(
      httpLine(
        { event: 'http', ...who(info), proto: 'tls', alpn: 'h2', method: this.#inc.method, path: pathOnly(this.#inc.url) },
        { host: info.sni, decision: 'deny', status: 431, reason: 'malformed request (HPE_HEADER_OVERFLOW)' },
      ),
    );
    this.respond(431, { error: 'request header fields too large' });
    this.exchangeDone();
  }

  #over(): void {
    if (this.#done) return;
    this.#done = true;
    this.#front.active--;
  }

  // ExchangeConn

  respond(status: number, body: Record<string, unknown>): void {
    const s = this.#stream;
    if (s.headersSent || s.destroyed) return;
    const reason = typeof body.reason === 'string' ? body.reason : String(body.error ?? '');
    if (this.#grpc) {
      // Trailers-only (gRPC over HTTP/2, "Responses"): the status is the call's outcome.
      s.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus(status)), 'grpc-message': grpcMessage(reason) },
        { endStream: true },
      );
      return;
    }
    const text = JSON.stringify({ ...body, by: 'sandgate' });
    const headers: http2.OutgoingHttpHeaders = { ':status': status, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
    if (status === 503) headers['retry-after'] = '1';
    s.respond(headers);
    s.end(text);
  }

  exchangeDone(): void {
    const s = this.#stream;
    this.#exchange = undefined;
    this.#over();
    if (!s.destroyed && !s.writableEnded) {
      if (!s.headersSent) s.respond({ ':status': 502 }, { endStream: true });
      else s.end();
    }
    // What the sandbox still sends of a body nobody takes is read and dropped, so the stream's
    // flow-control window stays open for the session's other streams.
    this.#readBlocked = false;
    if (!s.destroyed) s.resume();
  }

  blockReading(blocked: boolean): void {
    this.#readBlocked = blocked;
    this.#updateReading();
  }

  checkBuffered(): void {
    this.#updateReading();
  }

  #updateReading(): void {
    const s = this.#stream;
    if (s.destroyed) return;
    if (this.#readBlocked || this.#inc.bufferedBytes > MAX_BUFFERED_BODY) s.pause();
    else s.resume();
  }

  /** HTTP/2 has no Upgrade (RFC 9113 §8.6); Incoming.upgrade is never set here. */
  upgrade(): void {
    this.cutShort();
  }

  cutShort(): void {
    this.#exchange = undefined;
    this.#over();
    if (!this.#stream.destroyed) this.#stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  sendContinue(): void {
    if (!this.#stream.destroyed && !this.#stream.headersSent) this.#stream.additionalHeaders({ ':status': 100 });
  }

  sendHead(
    status: number,
    _message: string,
    raw: readonly string[],
    facts: ResponseFacts,
    needles: readonly string[] | undefined,
    decoded: boolean,
    framing: Framing,
  ): void {
    const s = this.#stream;
    if (s.destroyed) return;
    const headers: http2.OutgoingHttpHeaders = { ':status': status };
    let grpcReply = false;
    let announced = false;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const l = (raw[i] as string).toLowerCase();
      // Connection-specific fields do not exist in HTTP/2 (RFC 9113 §8.2.2); hop-by-hop never cross.
      if (HOP_BY_HOP.has(l) || facts.named?.has(l) === true || l === 'host' || l.charCodeAt(0) === 58) continue;
      if (decoded && (l === 'content-encoding' || l === 'content-length')) continue;
      const v = needles !== undefined ? scrubString(raw[i + 1] as string, needles) : (raw[i + 1] as string);
      if (l === 'content-type' && v.toLowerCase().startsWith('application/grpc')) grpcReply = true;
      if (l === 'trailer') announced = true;
      const had = headers[l];
      if (had === undefined) headers[l] = v;
      else if (Array.isArray(had)) had.push(v);
      else headers[l] = [String(had), v];
    }
    const endStream = framing === 'none';
    const waitForTrailers = !endStream && (grpcReply || announced || this.#teTrailers);
    try {
      s.respond(headers, { endStream, waitForTrailers });
    } catch {
      // A field node:http2 will not send (a value it rejects): the response cannot be relayed as is.
      s.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (waitForTrailers) {
      s.once('wantTrailers', () => {
        try {
          s.sendTrailers(this.#trailers ?? {});
        } catch {
          // A trailer field node:http2 will not send: the response ends reset, never complete-looking.
          s.close(NGHTTP2_INTERNAL_ERROR);
        }
      });
    }
  }

  sendTrailers(raw: readonly string[]): void {
    const t: Record<string, string | string[]> = {};
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const l = (raw[i] as string).toLowerCase();
      if (HOP_BY_HOP.has(l) || l.charCodeAt(0) === 58) continue;
      const v = raw[i + 1] as string;
      const had = t[l];
      if (had === undefined) t[l] = v;
      else if (Array.isArray(had)) had.push(v);
      else t[l] = [had, v];
    }
    this.#trailers = t;
  }

  // SandboxIo

  /** Body bytes (views of a shared read buffer, src/upstream/pool.ts): copied, as the stream keeps them until sent. */
  write(data: string | Buffer, encoding: 'latin1' | 'utf8' = 'latin1'): void {
    const s = this.#stream;
    if (s.destroyed || s.writableEnded) return;
    if (!s.write(typeof data === 'string' ? Buffer.from(data, encoding) : Buffer.from(data))) this.flush();
  }

  flush(): void {
    if (this.#source !== undefined && !this.#sourcePaused && this.#stream.writableNeedDrain) {
      this.#sourcePaused = true;
      this.#source.pause();
    }
  }

  reading(on: boolean): void {
    if (on) this.#stream.resume();
    else this.#stream.pause();
  }

  stopReading(): void {
    this.#stream.pause();
  }

  close(): void {
    if (!this.#stream.destroyed && !this.#stream.writableEnded) this.#stream.end();
  }

  destroy(): void {
    if (!this.#stream.destroyed) this.#stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  gone(): boolean {
    return this.#stream.destroyed || this.#stream.closed;
  }

  source(up: Pausable | undefined): void {
    if (this.#sourcePaused && this.#source !== undefined && this.#source !== up) this.#source.resume();
    this.#source = up;
    this.#sourcePaused = false;
  }

  connect(info: ConnInfo, target: Target, waiter: UpstreamWaiter): (() => void) | undefined {
    return connectUpstream(info, target, waiter);
  }

  decoder(coding: string, sink: DecodeSink): Decoder {
    return decoderFor(coding, sink, this.#stream);
  }

  now(): number {
    return performance.now();
  }
}
