import type net from 'node:net';

/**
 * What the relay writes toward a sandbox in one event-loop turn (response heads, body bytes,
 * chunk framing) is copied into one buffer and leaves as one socket write at the end of the turn:
 * one TLS record batch and one write(2) instead of one per piece, and no JS object per piece.
 *
 * Copying is what lets the upstream side read into a single reused buffer (src/upstream/pool.ts,
 * `onread`): a chunk handed to write() is referenced until the write completes, so without the
 * copy every read would need a fresh buffer. Fresh buffers are what drove V8's major collections
 * at hundreds of MB/s (external memory; docs/performance.md). A memcpy of 16 KiB costs about a
 * microsecond.
 *
 * The buffers (slabs) come from one process-wide free list: a connection holds one only while
 * it has bytes queued or being written, so ten thousand idle connections hold none, and a busy
 * one reuses the same few.
 */
const SIZE = 64 * 1024;
/** Slabs kept for reuse (4 MiB): enough for this many connections writing at the same moment. */
const MAX_FREE = 64;
const free: Buffer[] = [];

function takeSlab(min: number): Buffer {
  if (min <= SIZE) {
    const b = free.pop();
    if (b !== undefined) return b;
  }
  return Buffer.allocUnsafeSlow(Math.max(SIZE, min));
}

function giveSlab(b: Buffer): void {
  if (b.length === SIZE && free.length < MAX_FREE) free.push(b);
}

interface Slab {
  readonly buf: Buffer;
  /** Writes of this slab's bytes not yet completed (the bytes may not be overwritten). */
  inFlight: number;
  /** No longer the connection's current slab: back to the free list once its writes complete. */
  retired: boolean;
}

export class OutBuffer {
  readonly #socket: net.Socket;
  #slab: Slab | undefined;
  #used = 0;
  #flushed = 0;

  constructor(socket: net.Socket) {
    this.#socket = socket;
  }

  /** Queue bytes until flush(). Strings: latin1 (header bytes as the parser gave them) unless told. */
  write(data: string | Buffer, encoding: 'latin1' | 'utf8' = 'latin1'): void {
    const len = typeof data === 'string' ? (encoding === 'latin1' ? data.length : Buffer.byteLength(data, 'utf8')) : data.length;
    if (len === 0) return;
    const slab = this.#room(len);
    if (typeof data === 'string') slab.buf.write(data, this.#used, len, encoding);
    else data.copy(slab.buf, this.#used);
    this.#used += len;
  }

  /** Write what is queued, as one socket write. */
  flush(): void {
    const slab = this.#slab;
    if (slab === undefined || this.#used === this.#flushed) return;
    if (this.#socket.destroyed) {
      this.#release(slab);
      return;
    }
    const view = slab.buf.subarray(this.#flushed, this.#used);
    this.#flushed = this.#used;
    slab.inFlight++;
    this.#socket.write(view, () => {
      this.#written(slab);
    });
  }

  #written(slab: Slab): void {
    slab.inFlight--;
    if (slab.inFlight > 0) return;
    if (slab.retired) {
      giveSlab(slab.buf);
      return;
    }
    // All written and nothing queued: the connection holds no slab while it is idle.
    if (slab === this.#slab && this.#used === this.#flushed) this.#release(slab);
  }

  #release(slab: Slab): void {
    if (slab !== this.#slab) return;
    this.#slab = undefined;
    this.#used = this.#flushed = 0;
    if (slab.inFlight === 0) giveSlab(slab.buf);
    else slab.retired = true;
  }

  /** The current slab, with `len` free bytes after what is queued. */
  #room(len: number): Slab {
    const cur = this.#slab;
    if (cur !== undefined && cur.buf.length - this.#used >= len) return cur;
    if (cur !== undefined) {
      this.flush();
      if (cur.inFlight === 0 && cur.buf.length >= len) {
        this.#used = this.#flushed = 0;
        return cur;
      }
      // Still being written (the sandbox reads slowly): a fresh slab; this one returns to the
      // free list once its writes complete.
      cur.retired = true;
    }
    const slab: Slab = { buf: takeSlab(len), inFlight: 0, retired: false };
    this.#slab = slab;
    this.#used = this.#flushed = 0;
    return slab;
  }
}
