import type net from 'node:net';

/**
 * Reads of an upstream socket into one reused buffer, for the byte relay (splice.ts).
 *
 * By default every read of a net.Socket gets a fresh 64 KiB ArrayBuffer. For a relay moving
 * hundreds of MB/s that is pure garbage: V8 counts it as external memory, and the pressure
 * triggers major (mark-compact) collections; fresh pages also fault in. The bench's passthrough
 * bulk scenario spent about a quarter of its CPU there (docs/performance.md). With Node's `onread`
 * option (net.connect), reads land in a buffer we supply instead, and the relay writes each chunk
 * on at once.
 *
 * The one rule: a buffer may be read into again only when nothing still references it. The relay
 * reports that a chunk is still queued for writing (the sandbox is slow: the kernel did not take
 * it all at once) with retain(); the next read then gets a new buffer and the old one is left to
 * the pending write (and the GC).
 *
 * Bytes that arrive before the relay is attached (a server that speaks first, e.g. an SSH banner,
 * right after connect) are copied aside and reading is paused until attach().
 */
const SIZE = 64 * 1024;

export type Sink = (chunk: Buffer) => boolean;

export class PooledReader {
  #buf: Buffer = Buffer.allocUnsafe(SIZE);
  #retained = false;
  #sink: Sink | undefined;
  #early: Buffer[] = [];

  /** For net.connect({ onread }). The callback's return value false pauses reading. */
  readonly onread = {
    buffer: (): Buffer => {
      if (this.#retained) {
        this.#buf = Buffer.allocUnsafe(SIZE);
        this.#retained = false;
      }
      return this.#buf;
    },
    callback: (n: number, buf: Uint8Array): boolean => {
      const chunk = Buffer.from(buf.buffer, buf.byteOffset, n); // a view, no copy
      if (this.#sink) return this.#sink(chunk);
      this.#early.push(Buffer.from(chunk)); // a copy: `buf` is read into again
      return false;
    },
  };

  /** The chunk passed to the sink is still referenced (queued for writing): do not reuse it. */
  retain(): void {
    this.#retained = true;
  }

  /**
   * Starts delivering reads to `sink` (synchronously, in order): first what arrived early, then
   * every read. `sink` returns false to pause reading; the caller resumes the socket later.
   */
  attach(socket: net.Socket, sink: Sink): void {
    this.#sink = sink;
    const early = this.#early;
    this.#early = [];
    let flowing = true;
    for (const c of early) flowing = sink(c) && flowing;
    if (flowing) socket.resume();
  }
}

const readers = new WeakMap<net.Socket, PooledReader>();

/** Records that `socket` was created with `reader.onread`, for the relay to find (pooledReader). */
export function usePooledReader(socket: net.Socket, reader: PooledReader): void {
  readers.set(socket, reader);
}

export function pooledReader(socket: net.Socket): PooledReader | undefined {
  return readers.get(socket);
}
