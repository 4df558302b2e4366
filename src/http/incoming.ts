/**
 * One request as the sandbox sent it: the facts its head gives (read in one pass over the raw
 * fields), and its body as it arrives, held until the exchange takes it.
 */
import { addConnectionTokens } from './headers.js';
import type { Head } from './llhttp.js';

export class Incoming {
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
  #sink: BodySink | undefined;

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

  /** Route body bytes (and what was buffered) to `sink`; its bodyDone() once the body is complete. */
  take(sink: BodySink): void {
    this.#sink = sink;
    const b = this.buffered;
    this.buffered = [];
    this.bufferedBytes = 0;
    for (const c of b) sink.bodyChunk(c);
    if (this.complete) sink.bodyDone();
  }

  /** Body bytes from here on are dropped (the exchange is over; the parser still frames them). */
  discard(): void {
    this.#sink = DISCARD;
    this.buffered = [];
    this.bufferedBytes = 0;
  }

  body(chunk: Buffer): void {
    if (this.#sink !== undefined) {
      this.#sink.bodyChunk(chunk);
      return;
    }
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  end(): void {
    this.complete = true;
    this.#sink?.bodyDone();
  }
}

/** Where a request body goes once taken: toward the upstream, or kept for a retry. */
export interface BodySink {
  bodyChunk(chunk: Buffer): void;
  bodyDone(): void;
}

const DISCARD: BodySink = {
  bodyChunk() {
    /* discarded */
  },
  bodyDone() {
    /* nothing waits */
  },
};
