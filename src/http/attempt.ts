/**
 * The upstream half of the relay's core: a response reader per upstream connection (one parser,
 * reused by every request the connection carries) and an attempt, one request and its response
 * on one connection. Sans-io: bytes and socket events come in through UpstreamReader's methods,
 * writes go out through UpstreamIo (src/http/io.ts).
 */
import { Parser, type AfterHead, type Head, type ParseError } from './llhttp.js';
import type { BodySink } from './incoming.js';
import type { UpstreamIo } from './io.js';
import type { Exchange } from './exchange.js';

export const MAX_HEADER_SIZE = 16 * 1024;

/**
 * An upstream connection's response parser: made once per connection and reused by every
 * attempt it carries (a keep-alive connection serves thousands of requests), so an attempt
 * allocates neither a parser nor listeners. Events go to the attempt that holds it.
 */
export class UpstreamReader {
  readonly #up: { destroy(): void };
  readonly #parser: Parser;
  owner: Attempt | undefined;
  /** The current response's body has a Content-Length: its bytes bypass the parser (no copies). */
  #raw = false;
  /** Set while the parser reports a 'raw' head; the body starts where execute() stopped. */
  #rawNext = false;

  constructor(up: { destroy(): void }) {
    this.#up = up;
    this.#parser = new Parser('response', MAX_HEADER_SIZE, {
      onHead: (h) => {
        // A response while no request is outstanding: the upstream answered what was never asked.
        if (this.owner === undefined) {
          up.destroy();
          return 'none';
        }
        const after = this.owner.onHead(h);
        if (after === 'raw') this.#rawNext = true;
        return after;
      },
      onBody: (c) => {
        this.owner?.onBody(c);
      },
      // A 'raw' head completes at once in llhttp; its body has not been read yet.
      onComplete: () => {
        if (!this.#rawNext) this.owner?.onComplete();
      },
    });
  }

  /** Bytes the upstream sent: `c` is a view of a shared read buffer, valid during this call only. */
  data(c: Buffer): void {
    const o = this.owner;
    // Idle in the pool: an upstream may not answer what was never asked.
    if (o === undefined) {
      this.#up.destroy();
      return;
    }
    if (this.#raw) {
      o.rawBody(c);
      return;
    }
    const r = this.#parser.execute(c);
    if (typeof r !== 'number') {
      // A parser that failed never reads again: the connection closes even if the response it
      // belonged to was complete (then the failure is only the connection's, not the request's).
      this.#up.destroy();
      if (this.owner === o) o.malformed(r);
      return;
    }
    if (this.#rawNext) {
      this.#rawNext = false;
      this.#parser.reset();
      this.#raw = true;
      if (r < c.length && this.owner === o) o.rawBody(c.subarray(r));
    }
  }

  /** The upstream finished sending (FIN). */
  end(): void {
    const o = this.owner;
    if (o === undefined) return;
    if (this.#raw) {
      o.ended(undefined);
      return;
    }
    // A body delimited by the connection's close ends here; anything else is truncated.
    const err = this.#parser.finish();
    if (this.owner === o) o.ended(err);
  }

  error(err: NodeJS.ErrnoException): void {
    this.owner?.onError(err);
  }

  drain(): void {
    this.owner?.onDrain();
  }

  /** The connection is gone. */
  closed(): void {
    const o = this.owner;
    this.owner = undefined;
    this.#parser.free();
    o?.onClose();
  }

  /** The raw body is complete: the next bytes are the next response's head. */
  rawDone(): void {
    this.#raw = false;
  }
}

/**
 * What an exchange holds of the attempt carrying it: an HTTP/1.1 request on one upstream
 * connection (Attempt) or one stream of an HTTP/2 upstream session (H2Attempt, src/http/h2-attempt.ts).
 */
export interface UpstreamAttempt {
  /** The connection or session served requests before (a stale one may fail on first use). */
  readonly reused: boolean;
  readonly mayRetry: boolean;
  /** A final response head arrived. */
  readonly responded: boolean;
  /** The response is complete: give the connection back (or close the stream) cleanly. */
  finish(requestComplete: boolean): void;
  /** Abandon the attempt: the connection closes (HTTP/1.1) or the stream is reset (HTTP/2). */
  destroy(): void;
}

export function failure(message: string, code: string | undefined): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/** One upstream connection carrying one request and its response. */
export class Attempt implements BodySink, UpstreamAttempt {
  readonly ex: Exchange;
  readonly up: UpstreamIo;
  readonly reused: boolean;
  readonly mayRetry: boolean;
  readonly #reader: UpstreamReader;
  responded = false;
  #mode: 'body' | 'skip' | 'discard' | 'info' = 'body';
  #done = false;
  #sentAll = false;
  #lastChunkDone = false;
  /** The upstream's own keep-alive verdict on the response (HTTP/1.0, Connection: close). */
  #keepAlive = true;
  #error: NodeJS.ErrnoException | undefined;
  #remaining = 0;

  constructor(ex: Exchange, up: UpstreamIo, reused: boolean, mayRetry: boolean) {
    this.ex = ex;
    this.up = up;
    this.reused = reused;
    this.mayRetry = mayRetry;
    this.#reader = up.reader;
  }

  /** Send the head, then the body: `replay` (a kept body, after a 401), or the request's as it arrives. */
  start(head: string, replay: Buffer | undefined): void {
    const { up, ex } = this;
    this.#reader.owner = this;
    ex.conn.io.source(up);
    const inc = ex.inc;
    up.cork();
    up.write(head, 'latin1');
    if (replay !== undefined) {
      if (replay.length > 0) ex.writeBody(up, replay);
      ex.endBody(up);
      this.#sentAll = true;
      up.uncork();
      return;
    }
    if (!inc.hasBody) {
      this.#sentAll = true;
      up.uncork();
      return;
    }
    inc.take(this);
    up.uncork();
    ex.conn.checkBuffered();
  }

  bodyChunk(c: Buffer): void {
    if (this.#done) return;
    if (!this.ex.writeBody(this.up, c)) this.ex.conn.blockReading(true);
  }

  bodyDone(): void {
    if (this.#done) return;
    this.ex.endBody(this.up);
    this.#sentAll = true;
  }

  onDrain(): void {
    this.ex.conn.blockReading(false);
  }

  onError(err: NodeJS.ErrnoException): void {
    this.#error ??= err;
  }

  malformed(r: ParseError): void {
    this.destroy();
    this.ex.upstreamFailed(failure(`upstream sent a malformed response (${r.code ?? 'parse error'})`, r.code), this);
  }

  ended(err: ParseError | undefined): void {
    if (this.#done) return;
    // The response is complete and only its decoding is still running: the close cuts nothing short.
    if (this.#lastChunkDone && err === undefined) {
      this.#keepAlive = false;
      return;
    }
    this.destroy();
    this.ex.upstreamFailed(err ?? failure('upstream closed before the response was complete', 'ERR_STREAM_PREMATURE_CLOSE'), this);
  }

  onClose(): void {
    if (this.#done) return;
    if (this.#lastChunkDone) {
      this.#keepAlive = false;
      return;
    }
    this.#done = true;
    this.#detach();
    this.ex.upstreamFailed(
      this.#error ?? failure('upstream closed before the response was complete', this.responded ? 'ERR_STREAM_PREMATURE_CLOSE' : 'ECONNRESET'),
      this,
    );
  }

  onHead(h: Head): AfterHead {
    // A head after the final response (whose body a decoder may still be working on, so this
    // attempt still holds the reader): an answer to nothing asked, never relayed; the connection closes.
    if (this.responded) {
      this.destroy();
      return 'none';
    }
    const status = h.statusCode;
    if (status >= 100 && status < 200) {
      // 1xx (RFC 9110 §15.2): informational, not relayed (sandgate answered any 100 itself);
      // the final response follows. 101 without an upgrade request is a protocol error.
      if (status === 101) {
        this.destroy();
        this.ex.upstreamFailed(failure('upstream switched protocols unasked', 'HPE_UNEXPECTED_101'), this);
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
      this.#reader.rawDone();
      this.onComplete();
    }
  }

  onBody(c: Buffer): void {
    if (this.#mode === 'body') this.ex.onResponseBody(c);
  }

  onComplete(): void {
    if (this.#mode === 'info') {
      this.#mode = 'body';
      return;
    }
    if (this.#done) return;
    this.#lastChunkDone = true;
    if (this.#mode === 'discard') {
      this.finish(this.#sentAll);
      return;
    }
    this.ex.onResponseComplete(this);
  }

  /** The response is complete: the connection goes back to the pool if it is clean. */
  finish(requestComplete: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    // Back to the pool only once the parser has finished with what this read brought: bytes
    // after the response (an upstream answering twice) are unasked, close the connection
    // (UpstreamReader), and must never be taken for the next request's answer.
    if (this.#lastChunkDone && requestComplete && this.#sentAll && this.#keepAlive) this.up.releaseSoon();
    else this.up.destroy();
  }

  destroy(): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach();
    this.up.destroy();
  }

  #detach(): void {
    if (this.#reader.owner === this) this.#reader.owner = undefined;
    const { conn } = this.ex;
    conn.io.source(undefined);
    this.up.resume();
    conn.blockReading(false);
  }
}
