/**
 * A sandbox's HTTP/1.1 connection, sans-io: parses its requests (llhttp, strict) and runs them
 * one at a time, in order (src/http/exchange.ts). Events come in as method calls (bytes read,
 * the sandbox ended or closed, the idle timer); what it decides goes out through SandboxIo
 * (src/http/io.ts), which the socket shell (src/http/relay.ts) carries out.
 */
import { who, type ConnInfo } from '../net/conn-info.js';
import type { Admitted } from './admit.js';
import { MAX_HEADER_SIZE } from './attempt.js';
import { Exchange, type ExchangeConn } from './exchange.js';
import { jsonResponse } from './headers.js';
import { httpLine } from './http-audit.js';
import { Incoming } from './incoming.js';
import type { SandboxIo } from './io.js';
import { Parser, type Head, type ParseError } from './llhttp.js';
import { responseHead, type Framing, type ResponseFacts } from './response-head.js';

/** A request head must be complete this long after its first byte (slow-header attacks). */
export const HEAD_MS = 30_000;
/** A request body sandgate holds while the upstream connection is being set up, before it stops reading. */
export const MAX_BUFFERED_BODY = 64 * 1024;

export class SandboxConn implements ExchangeConn {
  readonly io: SandboxIo;
  readonly info: ConnInfo;
  readonly #parser: Parser;
  /** Requests parsed and not started yet: pipelined behind the current one, or parsed in this read. */
  readonly #queue: Incoming[] = [];
  /** The request whose body the parser is reading. */
  #parsing: Incoming | undefined;
  /** An upgrade request whose head was just parsed: started once the parser has stopped. */
  #upgrade: Incoming | undefined;
  current: Exchange | undefined;
  closing = false;
  #headStart = 0;
  #peerEnded = false;
  /** Paused for the upstream's sake (backpressure); resumed on drain. */
  #readBlocked = false;
  /** The connection changed protocol: nothing more is read here. */
  #stopped = false;

  constructor(io: SandboxIo, info: ConnInfo) {
    this.io = io;
    this.info = info;
    this.#parser = new Parser('request', MAX_HEADER_SIZE, {
      onHead: (h) => {
        this.#onHead(h);
        return 'body';
      },
      onBody: (c) => {
        this.#parsing?.body(c);
      },
      onComplete: () => {
        const p = this.#parsing;
        this.#parsing = undefined;
        this.#headStart = 0;
        p?.end();
      },
    });
  }

  /** Bytes from the sandbox. */
  data(chunk: Buffer): void {
    if (this.closing) return;
    if (this.#parsing === undefined) {
      const now = this.io.now();
      if (this.#headStart === 0) this.#headStart = now;
      else if (now - this.#headStart > HEAD_MS) {
        this.#malformed(408, 'HEAD_TIMEOUT');
        return;
      }
    }
    const r = this.#parser.execute(chunk);
    if (typeof r !== 'number') {
      this.#parseError(r);
      return;
    }
    // An upgrade request ends the HTTP part of the connection: what follows its head is the
    // new protocol's, relayed once the upgrade is admitted and accepted. Nothing more is parsed.
    const up = this.#upgrade;
    if (up !== undefined) {
      this.#upgrade = undefined;
      up.rest = chunk.subarray(r);
      this.#parsing = undefined;
      this.#stopped = true;
      this.io.stopReading();
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

  /**
   * The sandbox finished sending (the listener allows half-open connections): a request in
   * flight is still answered, then the connection closes; nothing more will come.
   */
  ended(): void {
    this.#peerEnded = true;
    if (this.current === undefined) this.close();
  }

  /** No byte for the keep-alive time: an idle connection is dropped. */
  idle(): void {
    if (this.current === undefined) this.io.destroy();
  }

  /** The connection is gone. */
  closed(): void {
    this.closing = true;
    this.#parser.free();
    const cur = this.current;
    this.current = undefined;
    cur?.sandboxClosed();
  }

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

  exchangeDone(keepAlive: boolean): void {
    this.current = undefined;
    this.io.flush();
    if (!keepAlive || this.closing) {
      this.close();
      return;
    }
    // The next request starts in a microtask: after the upstream connection that carried this one
    // is back in the pool (Attempt.finish), so a pipelined request can reuse it.
    queueMicrotask(this.#startNext);
  }

  readonly #startNext = (): void => {
    if (this.current !== undefined || this.closing) return;
    const next = this.#queue.shift();
    if (next !== undefined) this.#start(next);
    else if (this.#peerEnded) {
      this.close();
      return;
    }
    if (this.current === undefined) this.#updateReading();
  };

  /** Stop reading, send what is queued, close. */
  close(): void {
    if (this.#parsing !== undefined) this.#parsing.discard();
    this.closing = true;
    this.io.close();
  }

  cutShort(): void {
    this.current = undefined;
    this.closing = true;
    this.io.flush();
    this.io.destroy();
  }

  blockReading(blocked: boolean): void {
    this.#readBlocked = blocked;
    this.#updateReading();
  }

  checkBuffered(): void {
    this.#updateReading();
  }

  #updateReading(): void {
    if (this.closing || this.io.gone()) return;
    const parsing = this.#parsing;
    const hold = this.#readBlocked || this.#queue.length > 0 || (parsing !== undefined && parsing.bufferedBytes > MAX_BUFFERED_BODY);
    if (hold) this.io.reading(false);
    else if (!this.#stopped) this.io.reading(true);
  }

  #parseError(err: ParseError): void {
    this.#malformed(err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400, err.code ?? 'parse error');
  }

  /** A request sandgate cannot parse: answered (if nothing else is being answered) and the connection closed. */
  #malformed(status: number, code: string): void {
    const { info } = this;
    const sni = info.sni;
    info.rt.audit.write(
      httpLine(
        { event: 'http', ...who(info), proto: sni !== undefined ? 'tls' : 'http' },
        {
          host: sni,
          decision: 'deny',
          status,
          reason: status === 408 ? 'request head not complete in time' : `malformed request (${code})`,
        },
      ),
    );
    const cur = this.current;
    if (cur?.headSent) {
      this.io.destroy();
      return;
    }
    cur?.abort();
    this.current = undefined;
    const error = status === 431 ? 'request header fields too large' : status === 408 ? 'request timeout' : 'malformed request';
    this.respond(status, { error });
    this.close();
  }

  readonly framesBodies = false;

  whenAnswered(fn: () => void): void {
    fn();
  }

  sendContinue(): void {
    this.io.write('HTTP/1.1 100 Continue\r\n\r\n');
  }

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
  ): void {
    this.io.write(responseHead(status, message, raw, facts, needles, decoded, framing, keepAlive, http10));
  }

  /** HTTP/1.1 toward the sandbox relays no trailer section (the last chunk goes without one). */
  sendTrailers(): void {
    /* dropped */
  }

  respond(status: number, body: Record<string, unknown>, close = true, extra = ''): void {
    this.io.write(jsonResponse(status, body, close, extra), 'utf8');
  }

  upgrade(inc: Incoming, adm: Admitted): void {
    this.closing = true;
    this.current = undefined;
    this.io.upgrade({
      method: inc.method,
      url: inc.url,
      rawHeaders: inc.rawHeaders,
      connectionNamed: inc.connectionNamed,
      rest: inc.rest ?? Buffer.alloc(0),
      adm,
    });
  }
}
