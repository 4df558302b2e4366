/**
 * Node's own HTTP/1.1 parser (llhttp, the one node:http uses), driven directly: the relay
 * (src/http/relay.ts) gets each message's head and body bytes from the same strict parser, without
 * the IncomingMessage / ServerResponse / ClientRequest objects node:http builds around it per
 * request. `_http_common` is a public legacy module name (require('_http_common')); its
 * HTTPParser is what http-parser-js also imitates, and its callback slots have been stable since
 * Node 12. Strict mode (kLenientNone): Content-Length with Transfer-Encoding, two different
 * Content-Lengths, bad chunk sizes, bare LF, obs-fold and spaces before colons are all errors.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface ParserBinding {
  new(): RawParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnMessageBegin: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
}

interface RawParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | ParseError;
  finish(): number | ParseError | undefined;
  close(): void;
  free(): void;
  [slot: number]: unknown;
}

export interface ParseError extends Error {
  readonly code?: string;
  readonly bytesParsed?: number;
  readonly reason?: string;
}

const common = require('_http_common') as { HTTPParser: ParserBinding; methods: string[] };
const HTTPParser = common.HTTPParser;
const METHODS = common.methods;

/** One message's head, as the parser delivers it. */
export interface Head {
  readonly versionMajor: number;
  readonly versionMinor: number;
  /** Names and values alternating, as sent (case kept, duplicates kept). */
  readonly rawHeaders: string[];
  /** Requests: method and target. */
  readonly method: string;
  readonly url: string;
  /** Responses: status and reason phrase. */
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly upgrade: boolean;
  readonly shouldKeepAlive: boolean;
}

/**
 * What follows a head: 'body' (parsed as framed), 'none' (the message has no body: a response to
 * HEAD, a 1xx) or 'raw' (the parser stops at the end of the head, execute() returns the head's
 * length and the caller reads the body itself, then calls reset() before the next message).
 */
export type AfterHead = 'body' | 'none' | 'raw';

export interface ParserEvents {
  onHead(head: Head): AfterHead;
  onBody(chunk: Buffer): void;
  onComplete(): void;
}

/** A strict HTTP/1.1 parser for one connection's messages (requests or responses). */
export class Parser {
  readonly #p: RawParser;
  readonly #type: number;
  readonly #maxHeaderSize: number;
  #extraHeaders: string[] = [];
  #extraUrl = '';

  constructor(kind: 'request' | 'response', maxHeaderSize: number, events: ParserEvents) {
    const p = new HTTPParser();
    this.#type = kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE;
    this.#maxHeaderSize = maxHeaderSize;
    p.initialize(this.#type, {}, maxHeaderSize, HTTPParser.kLenientNone);
    // More than 32 header fields arrive in pieces through kOnHeaders before kOnHeadersComplete.
    p[HTTPParser.kOnHeaders] = (headers: string[], url: string): void => {
      for (const h of headers) this.#extraHeaders.push(h);
      this.#extraUrl += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (versionMajor: number, versionMinor: number, headers: string[] | undefined, method: number | undefined,
      url: string | undefined, statusCode: number | undefined, statusMessage: string | undefined, upgrade: boolean, shouldKeepAlive: boolean): number => {
      let rawHeaders = headers ?? [];
      if (this.#extraHeaders.length > 0) {
        rawHeaders = this.#extraHeaders.concat(rawHeaders);
        this.#extraHeaders = [];
      }
      const u = this.#extraUrl + (url ?? '');
      this.#extraUrl = '';
      const after = events.onHead({
        versionMajor, versionMinor, rawHeaders,
        method: method !== undefined ? (METHODS[method] ?? '') : '',
        url: u, statusCode: statusCode ?? 0, statusMessage: statusMessage ?? '',
        upgrade, shouldKeepAlive,
      });
      // llhttp's on_headers_complete: 1 = no body; 2 = no body and stop, as for an upgrade.
      return after === 'body' ? 0 : after === 'none' ? 1 : 2;
    };
    p[HTTPParser.kOnBody] = (chunk: Buffer): void => { events.onBody(chunk); };
    p[HTTPParser.kOnMessageComplete] = (): void => {
      // Trailer fields arrive through kOnHeaders after the body: they are dropped, never carried
      // over into the next message's head (node's own http clears them here too).
      this.#extraHeaders = [];
      this.#extraUrl = '';
      events.onComplete();
    };
    p[HTTPParser.kOnExecute] = undefined;
    p[HTTPParser.kOnMessageBegin] = undefined;
    this.#p = p;
  }

  /** Parse `data`: the bytes consumed, or the parse error. An upgrade stops at the end of its head. */
  execute(data: Buffer): number | ParseError {
    return this.#p.execute(data);
  }

  /** Ready for the next message after a 'raw' body the caller read itself. */
  reset(): void {
    this.#p.initialize(this.#type, {}, this.#maxHeaderSize, HTTPParser.kLenientNone);
  }

  /** The peer ended the stream: completes a close-delimited response, or reports a truncated message. */
  finish(): ParseError | undefined {
    const r = this.#p.finish();
    return r instanceof Error ? r : undefined;
  }

  free(): void {
    this.#p.close();
  }
}
