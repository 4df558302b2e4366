/**
 * An aws-chunked request body (S3's "Transferring Payload in Multiple Chunks", with and without
 * trailing headers) re-signed on the fly: each chunk's `chunk-signature` is recomputed with the real
 * key, chained from the request's seed signature, and so is `x-amz-trailer-signature`. Every
 * signature is 64 hex digits, so the body keeps its length byte for byte (Content-Length and
 * x-amz-decoded-content-length stay right). A chunk is held until its data is complete (its
 * signature covers the data's hash and precedes it), up to `maxChunk` bytes. Malformed framing
 * throws SandgateError('...', 'AWS_CHUNKED'); the request is then refused, never passed on.
 */
import { createHash } from 'node:crypto';
import { SandgateError } from '../errors.js';
import { chunkSignature, EMPTY_SHA256, trailerSignature } from '../creds/sigv4.js';
import { type BufferBudget, heldBodies } from './body-buffer.js';

const MAX_LINE = 4096;
/**
 * What the trailing fields may add up to: the request header limit (src/http/attempt.ts). Their
 * canonical text is kept until x-amz-trailer-signature, so without a bound a sandbox could grow
 * it for as long as it sends lines.
 */
export const MAX_TRAILER = 16 * 1024;
const CHUNK_LINE = /^([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})$/;
const TRAILER_SIG = /^x-amz-trailer-signature:([0-9a-f]{64})$/i;

export interface ChunkSigning {
  readonly key: Buffer;
  readonly long: string;
  readonly scope: string;
  readonly seed: string;
  readonly trailer: boolean;
  readonly maxChunk: number;
  /**
   * Where the held chunk's bytes are counted (default: the process's, shared with the buffered
   * bodies of src/http/body-buffer.ts), so that many concurrent uploads cannot each hold a
   * `maxChunk` chunk past what the process allows.
   */
  readonly budget?: BufferBudget;
}

function bad(why: string): SandgateError {
  return new SandgateError(`aws-chunked body: ${why}`, 'AWS_CHUNKED');
}

export class AwsChunkedResigner {
  readonly #s: ChunkSigning;
  #prev: string;
  #state: 'line' | 'data' | 'trailer' | 'done' = 'line';
  /** Bytes of the current line (a chunk header or a trailer field). */
  #line = '';
  #size = 0;
  #lineText = '';
  #data: Buffer[] = [];
  #have = 0;
  #hash = createHash('sha256');
  #trailerText = '';
  readonly #budget: BufferBudget;
  /** Bytes of the budget taken for the chunk being held. */
  #taken = 0;
  #released = false;

  constructor(s: ChunkSigning) {
    this.#s = s;
    this.#prev = s.seed;
    this.#budget = s.budget ?? heldBodies;
  }

  /** The exchange is over: whatever is held is let go, and nothing more is taken. Idempotent. */
  release(): void {
    this.#released = true;
    this.#giveBack();
    this.#data = [];
  }

  #giveBack(): void {
    this.#budget.give(this.#taken);
    this.#taken = 0;
  }

  /** Bytes of the body in; bytes to send out (possibly none yet). */
  push(c: Buffer): Buffer {
    if (this.#released) throw bad('the request is over');
    const out: Buffer[] = [];
    let i = 0;
    while (i < c.length) {
      switch (this.#state) {
        case 'done':
          throw bad('bytes after the final chunk');
        case 'line':
        case 'trailer': {
          const nl = c.indexOf(0x0a, i);
          const end = nl < 0 ? c.length : nl + 1;
          this.#line += c.toString('latin1', i, end);
          i = end;
          if (this.#line.length > MAX_LINE) throw bad('a line is too long');
          if (nl < 0) break;
          if (!this.#line.endsWith('\r\n')) throw bad('a line does not end in CRLF');
          const line = this.#line.slice(0, -2);
          this.#line = '';
          out.push(this.#state === 'line' ? this.#chunkLine(line) : this.#trailerLine(line));
          break;
        }
        case 'data': {
          // The chunk's data, then its CRLF.
          const want = this.#size + 2 - this.#have;
          const take = Math.min(want, c.length - i);
          const part = c.subarray(i, i + take);
          i += take;
          const dataPart = part.subarray(0, Math.max(0, Math.min(part.length, this.#size - this.#have)));
          this.#hash.update(dataPart);
          this.#data.push(Buffer.from(part));
          this.#have += take;
          if (this.#have === this.#size + 2) out.push(this.#chunkDone());
          break;
        }
        default: {
          const never: never = this.#state;
          throw never;
        }
      }
    }
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** The body ended: it must have ended exactly after its final chunk (and trailer). */
  end(): void {
    if (this.#state !== 'done') throw bad('the body ended before its final chunk');
  }

  #chunkLine(line: string): Buffer {
    const m = CHUNK_LINE.exec(line);
    if (!m) throw bad('a chunk header is not "SIZE;chunk-signature=SIG"');
    const size = Number.parseInt(m[1] as string, 16);
    if (size > this.#s.maxChunk) throw bad(`a chunk is larger than ${this.#s.maxChunk} bytes`);
    // The chunk is held whole (its signature covers its data): counted before a byte of it is.
    if (size > 0 && !this.#budget.take(size + 2)) throw bad('sandgate holds too many request bodies at once; try again');
    this.#taken = size > 0 ? size + 2 : 0;
    this.#size = size;
    this.#lineText = m[1] as string;
    if (size === 0) {
      // The final chunk signs the empty string; with a trailer, its fields follow.
      const sig = chunkSignature(this.#s.key, this.#s.long, this.#s.scope, this.#prev, EMPTY_SHA256);
      this.#prev = sig;
      this.#state = this.#s.trailer ? 'trailer' : 'data';
      if (!this.#s.trailer) {
        this.#have = 0;
        this.#data = [];
        this.#size = 0;
        this.#hash = createHash('sha256');
        this.#final = true;
      }
      return Buffer.from(`${this.#lineText};chunk-signature=${sig}\r\n`, 'latin1');
    }
    this.#state = 'data';
    this.#have = 0;
    this.#data = [];
    this.#hash = createHash('sha256');
    return Buffer.alloc(0);
  }

  #final = false;

  #chunkDone(): Buffer {
    const all = Buffer.concat(this.#data);
    this.#data = [];
    this.#giveBack();
    if (all[all.length - 2] !== 0x0d || all[all.length - 1] !== 0x0a) throw bad('chunk data is not followed by CRLF');
    if (this.#final) {
      this.#state = 'done';
      return all;
    }
    const sig = chunkSignature(this.#s.key, this.#s.long, this.#s.scope, this.#prev, this.#hash.digest('hex'));
    this.#prev = sig;
    this.#state = 'line';
    return Buffer.concat([Buffer.from(`${this.#lineText};chunk-signature=${sig}\r\n`, 'latin1'), all]);
  }

  /** Trailing fields, then x-amz-trailer-signature, then the empty line. */
  #trailerLine(line: string): Buffer {
    if (line === '') {
      if (!this.#trailerSigned) throw bad('the trailer has no x-amz-trailer-signature');
      this.#state = 'done';
      return Buffer.from('\r\n', 'latin1');
    }
    if (this.#trailerSigned) throw bad('a field follows x-amz-trailer-signature');
    if (TRAILER_SIG.test(line)) {
      this.#trailerSigned = true;
      const sig = trailerSignature(this.#s.key, this.#s.long, this.#s.scope, this.#prev, this.#trailerText);
      return Buffer.from(`${line.slice(0, line.indexOf(':') + 1)}${sig}\r\n`, 'latin1');
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw bad('a trailer line is not a field');
    // The trailer's canonical form: "name:value\n" per field (what the client signed).
    this.#trailerText += `${line.slice(0, colon).toLowerCase()}:${line.slice(colon + 1).trim()}\n`;
    if (this.#trailerText.length > MAX_TRAILER) throw bad(`the trailer is larger than ${MAX_TRAILER} bytes`);
    return Buffer.from(`${line}\r\n`, 'latin1');
  }

  #trailerSigned = false;
}
