import { Transform, type TransformCallback } from 'node:stream';
import { Scrubber } from './scrub.js';

/**
 * Scrubbing of the upstream's WebSocket frames (RFC 6455 §5.2) on their way to the sandbox.
 *
 * A byte-stream scrubber over the raw connection misses a secret whose bytes are split between
 * two frames of one message (fragmentation, §5.4): the second frame's header sits between the
 * halves. So the frames are parsed: headers pass unchanged, and the payloads of a message's frames
 * are scrubbed as one contiguous stream. Masks have the needle's length, so no frame length
 * changes and nothing is re-framed.
 *
 * A message ends at a data frame with FIN set; what the scrubber held back then is released (a
 * message ending in the first letters of a needle must not wait for the next message, which may
 * never come). Control frames (ping, pong, close: at most 125 bytes, §5.5) may arrive between
 * the fragments of a message: each is collected whole, scrubbed on its own, and sent after the
 * message bytes before it, so it neither hides a secret split around it nor joins its bytes.
 *
 * A server must not mask its frames (§5.1); a masked one would hide its payload from the scan,
 * so it fails the stream.
 */
export class WsFrameScrubber {
  readonly #needles: readonly string[];
  readonly #scrubber: Scrubber;
  /** Bytes of an incomplete frame header. */
  #head: Buffer = EMPTY;
  /** Payload bytes of the current frame still to come. */
  #left = 0;
  /** The current frame is a data frame with FIN set: it ends a message. */
  #endsMessage = false;
  /** The current control frame (header, then payload), collected whole. */
  #control: Buffer[] | undefined;
  /** Payload bytes fed to the scrubber, and payload bytes it has released. */
  #fed = 0;
  #released = 0;
  /** Frame headers waiting for the payload bytes before them to be released, by payload offset. */
  readonly #headers: { at: number; bytes: Buffer }[] = [];

  constructor(needles: readonly string[]) {
    this.#needles = needles;
    this.#scrubber = new Scrubber(needles);
  }

  /** Feed raw bytes from the upstream; returns the bytes that can go to the sandbox now. */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, chunk.length - at);
        if (this.#control) this.#control.push(Buffer.from(chunk.subarray(at, at + n)));
        else this.#payload(chunk.subarray(at, at + n), out);
        this.#left -= n;
        at += n;
        if (this.#left === 0) this.#frameDone(out);
        continue;
      }
      const take = Math.min(chunk.length - at, MAX_HEADER - this.#head.length);
      const head = this.#head.length > 0 ? Buffer.concat([this.#head, chunk.subarray(at, at + take)]) : chunk.subarray(at, at + take);
      const parsed = parseHeader(head);
      if (parsed === undefined) {
        this.#head = Buffer.from(head);
        at += take;
        continue;
      }
      at += parsed.size - this.#head.length;
      this.#head = EMPTY;
      if ((parsed.opcode & 0x8) !== 0) {
        if (parsed.length > 125) throw new UnscrubbableFrame('the upstream sent a WebSocket control frame longer than 125 bytes (RFC 6455 §5.5)');
        this.#control = [Buffer.from(head.subarray(0, parsed.size))];
      } else {
        this.#header(Buffer.from(head.subarray(0, parsed.size)), out);
        this.#endsMessage = parsed.fin;
      }
      this.#left = parsed.length;
      if (this.#left === 0) this.#frameDone(out);
    }
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** End of the upstream's stream: release what is held. */
  end(): Buffer {
    const out: Buffer[] = [];
    this.#release(this.#scrubber.end(), out);
    for (const h of this.#headers.splice(0)) out.push(h.bytes);
    if (this.#head.length > 0) out.push(this.#head);
    this.#head = EMPTY;
    if (this.#control) out.push(...this.#control);
    this.#control = undefined;
    return Buffer.concat(out);
  }

  /** Bytes that go out unchanged once the payload before them has been released. */
  #header(bytes: Buffer, out: Buffer[]): void {
    if (this.#released === this.#fed && this.#headers.length === 0) out.push(bytes);
    else this.#headers.push({ at: this.#fed, bytes });
  }

  #payload(bytes: Buffer, out: Buffer[]): void {
    this.#fed += bytes.length;
    this.#release(this.#scrubber.push(bytes), out);
  }

  #frameDone(out: Buffer[]): void {
    const control = this.#control;
    if (control) {
      this.#control = undefined;
      const [head, ...payload] = control;
      const own = new Scrubber(this.#needles);
      this.#header(Buffer.concat([head as Buffer, own.push(Buffer.concat(payload)), own.end()]), out);
    } else if (this.#endsMessage) this.#release(this.#scrubber.end(), out);
  }

  /** Emit released payload bytes, with the frame headers that sit between them, in order. */
  #release(bytes: Buffer, out: Buffer[]): void {
    let from = 0;
    while (from < bytes.length) {
      const next = this.#headers[0];
      const upTo = next === undefined ? bytes.length : Math.min(bytes.length, from + (next.at - this.#released));
      if (upTo > from) {
        out.push(bytes.subarray(from, upTo));
        this.#released += upTo - from;
        from = upTo;
      }
      this.#flushHeaders(out);
    }
    this.#flushHeaders(out);
  }

  #flushHeaders(out: Buffer[]): void {
    while (this.#headers.length > 0 && (this.#headers[0] as { at: number }).at <= this.#released) out.push((this.#headers.shift() as { bytes: Buffer }).bytes);
  }
}

/** Thrown (as the stream's error) for a frame that cannot be scrubbed. */
export class UnscrubbableFrame extends Error {}

const EMPTY = Buffer.alloc(0);
/** 2 bytes, 8 of extended length, 4 of masking key (§5.2). */
const MAX_HEADER = 14;

interface FrameHeader {
  readonly fin: boolean;
  readonly opcode: number;
  readonly length: number;
  readonly size: number;
}

/** Parse a frame header from the start of `b`; undefined while incomplete. */
function parseHeader(b: Buffer): FrameHeader | undefined {
  if (b.length < 2) return undefined;
  const b0 = b[0] as number;
  const b1 = b[1] as number;
  if ((b1 & 0x80) !== 0) throw new UnscrubbableFrame('the upstream sent a masked WebSocket frame (RFC 6455 §5.1 forbids it)');
  const len7 = b1 & 0x7f;
  const size = len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
  if (b.length < size) return undefined;
  let length = len7;
  if (len7 === 126) length = b.readUInt16BE(2);
  else if (len7 === 127) {
    const big = b.readBigUInt64BE(2);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new UnscrubbableFrame('the upstream sent a WebSocket frame longer than 2^53 bytes');
    length = Number(big);
  }
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, length, size };
}

/** A Transform applying a WsFrameScrubber; a frame it cannot scrub fails the stream. */
export function scrubFrames(needles: readonly string[]): Transform {
  const s = new WsFrameScrubber(needles);
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      let out: Buffer;
      try {
        out = s.push(chunk);
      } catch (err) {
        cb(err as Error);
        return;
      }
      cb(null, out.length > 0 ? out : undefined);
    },
    flush(cb: TransformCallback): void {
      const rest = s.end();
      cb(null, rest.length > 0 ? rest : undefined);
    },
  });
}
