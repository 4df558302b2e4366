/**
 * The reference the parity test (test/unit/llhttp-parity.test.ts) compares src/http/llhttp.ts
 * with: Node's own llhttp binding (`_http_common`), driven the way sandgate drove it before it
 * pinned a build of its own. Node is making the binding internal; when it is gone, `available` is
 * false and the comparison is skipped.
 */
import type { ParseError, ParserEvents } from '../../src/http/llhttp.js';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface ParserBinding {
  new (): RawParser;
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

function binding(): { HTTPParser: ParserBinding; methods: string[] } | undefined {
  try {
    return require('node:_http_common') as { HTTPParser: ParserBinding; methods: string[] };
  } catch {
    return undefined;
  }
}

const common = binding();
/** False once Node no longer exposes the binding: the parity test then has nothing to compare with. */
export const available = common !== undefined;

/** The same interface as src/http/llhttp.ts's Parser, over Node's own binding. */
export class NodeParser {
  readonly #p: RawParser;
  readonly #kLenientNone: number;
  readonly #type: number;
  readonly #maxHeaderSize: number;
  #extraHeaders: string[] = [];
  #extraUrl = '';

  constructor(kind: 'request' | 'response', maxHeaderSize: number, events: ParserEvents) {
    const { HTTPParser, methods: METHODS } = common as NonNullable<typeof common>;
    const p = new HTTPParser();
    this.#type = kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE;
    this.#maxHeaderSize = maxHeaderSize;
    this.#kLenientNone = HTTPParser.kLenientNone;
    p.initialize(this.#type, {}, maxHeaderSize, HTTPParser.kLenientNone);
    // More than 32 header fields arrive in pieces through kOnHeaders before kOnHeadersComplete.
    p[HTTPParser.kOnHeaders] = (headers: string[], url: string): void => {
      for (const h of headers) this.#extraHeaders.push(h);
      this.#extraUrl += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      versionMajor: number,
      versionMinor: number,
      headers: string[] | undefined,
      method: number | undefined,
      url: string | undefined,
      statusCode: number | undefined,
      statusMessage: string | undefined,
      upgrade: boolean,
      shouldKeepAlive: boolean,
    ): number => {
      let rawHeaders = headers ?? [];
      if (this.#extraHeaders.length > 0) {
        rawHeaders = this.#extraHeaders.concat(rawHeaders);
        this.#extraHeaders = [];
      }
      const u = this.#extraUrl + (url ?? '');
      this.#extraUrl = '';
      const after = events.onHead({
        versionMajor,
        versionMinor,
        rawHeaders,
        method: method !== undefined ? (METHODS[method] ?? '') : '',
        url: u,
        statusCode: statusCode ?? 0,
        statusMessage: statusMessage ?? '',
        upgrade,
        shouldKeepAlive,
      });
      // llhttp's on_headers_complete: 1 = no body; 2 = no body and stop, as for an upgrade.
      return after === 'body' ? 0 : after === 'none' ? 1 : 2;
    };
    p[HTTPParser.kOnBody] = (chunk: Buffer): void => {
      events.onBody(chunk);
    };
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
    this.#p.initialize(this.#type, {}, this.#maxHeaderSize, this.#kLenientNone);
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
