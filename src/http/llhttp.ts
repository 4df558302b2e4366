/**
 * llhttp, the HTTP/1.1 parser node:http uses, as a WebAssembly build this project pins (the one
 * undici ships in its npm package; package.json names an exact version, package-lock.json its
 * hash), driven directly: the relay (src/http/relay.ts) gets each message's head and body bytes
 * from a strict parser without the IncomingMessage / ServerResponse / ClientRequest objects
 * node:http builds around it, and without Node's internal `_http_common` binding.
 *
 * Strict: no lenient flag is ever set, so Content-Length with Transfer-Encoding, two different
 * Content-Lengths, a Transfer-Encoding whose last coding is not chunked (in a request), bad chunk
 * sizes, bare LF or CR, obs-fold and spaces before a colon are all errors (RFC 9112 §6.1, §6.3,
 * §5.1, §5.2, §2.2).
 *
 * One WebAssembly instance serves every parser of the process. Each execute() copies its bytes
 * into the instance's memory; the callbacks report positions there, which map back onto the
 * caller's buffer, so header strings are read from it directly. Strings are made during the call:
 * a head split across two reads of one reused buffer is intact.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface ParseError extends Error {
  readonly code?: string;
  readonly bytesParsed?: number;
  readonly reason?: string;
}

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

/** The instance's exports this driver uses (llhttp's api.h; malloc/free from its libc). */
interface Llhttp {
  readonly memory: WebAssembly.Memory;
  _initialize(): void;
  malloc(size: number): number;
  free(ptr: number): void;
  llhttp_alloc(type: number): number;
  llhttp_free(parser: number): void;
  llhttp_reset(parser: number): void;
  llhttp_execute(parser: number, data: number, len: number): number;
  llhttp_finish(parser: number): number;
  llhttp_get_http_major(parser: number): number;
  llhttp_get_http_minor(parser: number): number;
  llhttp_get_method(parser: number): number;
  llhttp_get_error_reason(parser: number): number;
  llhttp_get_error_pos(parser: number): number;
  llhttp_errno_name(errno: number): number;
  llhttp_method_name(method: number): number;
}

// llhttp_type_t and llhttp_errno_t (llhttp.h).
const TYPE_REQUEST = 1;
const TYPE_RESPONSE = 2;
const HPE_OK = 0;
const HPE_PAUSED_UPGRADE = 22;
const HPE_USER = 24;

/**
 * Bytes handed to llhttp per call: larger inputs are parsed in slices, so the instance's input
 * area stays this size whatever a caller passes (socket reads are at most 64 KiB).
 */
const SLICE = 64 * 1024;

const EMPTY = Buffer.alloc(0);

/**
 * Header text, byte for byte (latin1). Buffer's own decoder, which toString('latin1', s, e) calls
 * after checking its arguments, saves a tenth of the driver's time; toString if it is ever gone.
 */
type Latin1 = Buffer & { latin1Slice?(start: number, end: number): string };
const latin1: (b: Buffer, start: number, end: number) => string =
  typeof (Buffer.prototype as Latin1).latin1Slice === 'function'
    ? (b, start, end) => (b as Required<Latin1>).latin1Slice(start, end)
    : (b, start, end) => b.toString('latin1', start, end);

let wasm: Llhttp | undefined;
/** The parser whose execute() or finish() is running: the callbacks are its. */
let current: Parser | undefined;
/** The input area every execute() copies into (one at a time; a nested call gets its own). */
let inputPtr = 0;
/** How many execute() calls are running (a callback may parse on another connection's parser). */
let depth = 0;
let heap = new Uint8Array(0);
const methodNames: string[] = [];
/** Compiles and instantiates the build, with the callbacks (set up inside Parser, which owns them). */
let instantiate: () => Llhttp;

/**
 * Parsers that were never freed (a connection the GC collected) give their llhttp state back;
 * free() does so at once.
 */
const finalizer = new FinalizationRegistry<number>((ptr) => {
  wasm?.llhttp_free(ptr);
  live--;
});
let live = 0;

function memory(w: Llhttp): Uint8Array {
  // malloc may have grown the memory, which detaches the previous buffer (its length becomes 0).
  if (heap.byteLength === 0) heap = new Uint8Array(w.memory.buffer);
  return heap;
}

function cString(w: Llhttp, ptr: number): string {
  if (ptr === 0) return '';
  const m = memory(w);
  const end = m.indexOf(0, ptr);
  return Buffer.from(m.buffer, ptr, (end < 0 ? m.length : end) - ptr).toString('latin1');
}

function parseError(code: string, reason: string, bytesParsed: number): ParseError {
  return Object.assign(new Error(`Parse Error: ${reason}`), { code, reason, bytesParsed });
}

/** RFC 9110 §5.5: a field value excludes trailing whitespace (SP / HTAB; 0xA0 is obs-text, kept). */
function trimOws(v: string): string {
  let end = v.length;
  for (let c = v.charCodeAt(end - 1); c === 0x20 || c === 0x09; c = v.charCodeAt(end - 1)) end--;
  return end === v.length ? v : v.slice(0, end);
}

/** A strict HTTP/1.1 parser for one connection's messages (requests or responses). */
export class Parser {
  #ptr: number;
  readonly #events: ParserEvents;
  readonly #request: boolean;
  readonly #maxHeaderSize: number;
  /** The bytes being parsed, and where in them the current slice starts (input area offset 0). */
  #data: Buffer = EMPTY;
  #offset = 0;
  #base = 0;
  #running = false;
  #freeAfter = false;
  /** The parser stopped at the end of a head (upgrade, CONNECT, 'raw'): what follows is not its. */
  #stopped = false;
  /** A callback threw while llhttp was running: its state is unknown, nothing more is parsed. */
  #broken = false;
  /** Between a message's start and the end of its head (afterwards: body, trailers). */
  #inHead = false;
  /** Bytes of the request line's target / status reason and header fields seen: the head limit. */
  #headerBytes = 0;
  #overflow = false;
  #url = '';
  #status = '';
  #rawHeaders: string[] = [];
  #field = '';
  #value = '';
  /** The last piece seen was a value: the next name piece starts a new field. */
  #inValue = false;

  constructor(kind: 'request' | 'response', maxHeaderSize: number, events: ParserEvents) {
    const w = instance();
    this.#events = events;
    this.#request = kind === 'request';
    this.#maxHeaderSize = maxHeaderSize;
    this.#ptr = w.llhttp_alloc(kind === 'request' ? TYPE_REQUEST : TYPE_RESPONSE);
    if (this.#ptr === 0) throw new Error('llhttp: out of memory');
    live++;
    finalizer.register(this, this.#ptr, this);
  }

  /** Parse `data`: the bytes consumed, or the parse error. An upgrade stops at the end of its head. */
  execute(data: Buffer): number | ParseError {
    if (this.#ptr === 0 || this.#broken || this.#running) {
      return parseError('HPE_INTERNAL', this.#running ? 'execute() while parsing' : 'parser no longer usable', 0);
    }
    if (this.#stopped) return 0;
    const w = wasm as Llhttp;
    let done = 0;
    while (done < data.length) {
      if (this.#ptr === 0) return parseError('HPE_INTERNAL', 'parser freed while parsing', done);
      const n = Math.min(data.length - done, SLICE);
      const r = this.#slice(w, data, done, n);
      if (r !== n) return typeof r === 'number' ? done + r : r;
      done += n;
    }
    return done;
  }

  /** Parses data[offset, offset + n): n, fewer bytes if an upgrade stopped it, or the error. */
  #slice(w: Llhttp, data: Buffer, offset: number, n: number): number | ParseError {
    const nested = depth > 0;
    if (inputPtr === 0) inputPtr = w.malloc(SLICE);
    const base = nested ? w.malloc(n) : inputPtr;
    if (base === 0) return parseError('HPE_INTERNAL', 'out of memory', offset);
    memory(w).set(offset === 0 && n === data.length ? data : data.subarray(offset, offset + n), base);
    const prev = current;
    current = this;
    this.#data = data;
    this.#offset = offset;
    this.#base = base;
    this.#running = true;
    depth++;
    let ret: number;
    let pos: number;
    try {
      ret = w.llhttp_execute(this.#ptr, base, n);
      pos = ret === HPE_OK ? n : w.llhttp_get_error_pos(this.#ptr) - base;
    } catch (err) {
      // An exception from a callback unwound llhttp mid-parse: the caller hears of it as node:http's
      // parser did (it propagates), and this parser is not trusted with more bytes.
      this.#broken = true;
      throw err;
    } finally {
      depth--;
      this.#running = false;
      this.#data = EMPTY;
      current = prev;
      if (nested) w.free(base);
      if (this.#freeAfter) this.free();
    }
    if (ret === HPE_OK) return n;
    if (this.#ptr === 0) return ret === HPE_PAUSED_UPGRADE ? pos : parseError('HPE_INTERNAL', 'parser freed while parsing', offset + pos);
    if (ret === HPE_PAUSED_UPGRADE) {
      // The head asked the parser to stop (an upgrade, CONNECT, or 'raw'): what follows is not
      // HTTP for this parser, which takes no more bytes until reset().
      this.#stopped = true;
      return pos;
    }
    return this.#error(w, ret, offset + pos);
  }

  #error(w: Llhttp, ret: number, bytesParsed: number): ParseError {
    // The header limit is enforced by this driver (the callbacks return HPE_USER); it reports
    // as node:http's parser does, HPE_HEADER_OVERFLOW, which the relay answers with 431.
    if (ret === HPE_USER && this.#overflow) return parseError('HPE_HEADER_OVERFLOW', 'Header overflow', bytesParsed);
    return parseError(cString(w, w.llhttp_errno_name(ret)), cString(w, w.llhttp_get_error_reason(this.#ptr)), bytesParsed);
  }

  /** Ready for the next message after a 'raw' body the caller read itself. */
  reset(): void {
    if (this.#ptr === 0 || this.#running) return;
    (wasm as Llhttp).llhttp_reset(this.#ptr);
    this.#broken = false;
    this.#stopped = false;
    this.#overflow = false;
    this.#clearHead();
    this.#inHead = false;
  }

  /** The peer ended the stream: completes a close-delimited response, or reports a truncated message. */
  finish(): ParseError | undefined {
    // After a stop, the stream's end is the new protocol's (or the caller's raw body's) to judge.
    if (this.#ptr === 0 || this.#running || this.#stopped) return undefined;
    if (this.#broken) return parseError('HPE_INTERNAL', 'parser no longer usable', 0);
    const w = wasm as Llhttp;
    const prev = current;
    current = this;
    this.#running = true;
    let ret: number;
    try {
      ret = w.llhttp_finish(this.#ptr);
    } finally {
      this.#running = false;
      current = prev;
      if (this.#freeAfter) this.free();
    }
    if (this.#ptr === 0) return undefined;
    return ret === HPE_OK || ret === HPE_PAUSED_UPGRADE ? undefined : this.#error(w, ret, 0);
  }

  free(): void {
    if (this.#ptr === 0) return;
    if (this.#running) {
      this.#freeAfter = true;
      return;
    }
    finalizer.unregister(this);
    (wasm as Llhttp).llhttp_free(this.#ptr);
    this.#ptr = 0;
    live--;
  }

  #clearHead(): void {
    this.#headerBytes = 0;
    this.#url = '';
    this.#status = '';
    this.#rawHeaders = [];
    this.#field = '';
    this.#value = '';
    this.#inValue = false;
  }

  #text(at: number, len: number): string {
    const start = this.#offset + at - this.#base;
    return latin1(this.#data, start, start + len);
  }

  /** Counts head bytes as node:http's parser does (target, reason, names, values; trailers apart). */
  #track(len: number): number {
    this.#headerBytes += len;
    if (this.#headerBytes < this.#maxHeaderSize) return 0;
    this.#overflow = true;
    return HPE_USER;
  }

  static {
    // The callbacks llhttp's WebAssembly build imports (api.c, `wasm_settings`). Their return
    // values are llhttp's: 0 goes on, anything else stops the parse with that error code.
    const env = {
      wasm_on_message_begin: (_p: number): number => {
        const p = current as Parser;
        p.#clearHead();
        p.#inHead = true;
        return 0;
      },
      wasm_on_url: (_p: number, at: number, len: number): number => {
        const p = current as Parser;
        p.#url += p.#text(at, len);
        return p.#track(len);
      },
      wasm_on_status: (_p: number, at: number, len: number): number => {
        const p = current as Parser;
        p.#status += p.#text(at, len);
        return p.#track(len);
      },
      // A name or value cut by the end of a read arrives in pieces; an empty value arrives as one
      // empty piece, so a name after a value always starts a new field.
      wasm_on_header_field: (_p: number, at: number, len: number): number => {
        const p = current as Parser;
        // Trailer fields (after a chunked body) are counted against the limit, then dropped.
        if (!p.#inHead) return p.#track(len);
        if (p.#inValue) {
          p.#rawHeaders.push(p.#field, trimOws(p.#value));
          p.#field = '';
          p.#value = '';
          p.#inValue = false;
        }
        p.#field += p.#text(at, len);
        return p.#track(len);
      },
      wasm_on_header_value: (_p: number, at: number, len: number): number => {
        const p = current as Parser;
        if (!p.#inHead) return p.#track(len);
        p.#inValue = true;
        p.#value += p.#text(at, len);
        return p.#track(len);
      },
      wasm_on_headers_complete: (ptr: number, statusCode: number, upgrade: number, keepAlive: number): number => {
        const p = current as Parser;
        const w = wasm as Llhttp;
        if (p.#inValue) p.#rawHeaders.push(p.#field, trimOws(p.#value));
        const rawHeaders = p.#rawHeaders;
        const url = p.#url;
        const statusMessage = p.#status;
        p.#clearHead();
        p.#inHead = false;
        let method = '';
        if (p.#request) {
          const m = w.llhttp_get_method(ptr);
          method = methodNames[m] ??= cString(w, w.llhttp_method_name(m));
        }
        const after = p.#events.onHead({
          versionMajor: w.llhttp_get_http_major(ptr),
          versionMinor: w.llhttp_get_http_minor(ptr),
          rawHeaders,
          method,
          url,
          statusCode,
          statusMessage,
          upgrade: upgrade === 1,
          shouldKeepAlive: keepAlive === 1,
        });
        // llhttp's on_headers_complete: 0 = a body as framed; 1 = no body; 2 = no body, and stop
        // (as for an upgrade): execute() returns where the head ended.
        return after === 'body' ? 0 : after === 'none' ? 1 : 2;
      },
      wasm_on_body: (_p: number, at: number, len: number): number => {
        const p = current as Parser;
        const start = p.#offset + at - p.#base;
        // A copy: the caller's buffer may be read into again while the chunk is still queued.
        const chunk = Buffer.allocUnsafe(len);
        p.#data.copy(chunk, 0, start, start + len);
        p.#events.onBody(chunk);
        return 0;
      },
      wasm_on_message_complete: (_p: number): number => {
        const p = current as Parser;
        p.#clearHead();
        p.#events.onComplete();
        return 0;
      },
    };
    instantiate = (): Llhttp => {
      const bytes = require('undici/lib/llhttp/llhttp-wasm.js') as Uint8Array<ArrayBuffer>;
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env });
      const w = inst.exports as unknown as Llhttp;
      w._initialize();
      return w;
    };
  }
}

function instance(): Llhttp {
  wasm ??= instantiate();
  return wasm;
}

/** Parsers not yet freed or collected, and the instance's memory: for tests of the cleanup. */
export function parserStats(): { live: number; memoryBytes: number } {
  return { live, memoryBytes: wasm?.memory.buffer.byteLength ?? 0 };
}
