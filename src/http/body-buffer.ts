/**
 * A request body held whole, up to a limit, for the rewrites that must see all of it before the
 * head can be sent: an AWS signed payload (its SHA-256 goes into the signature) and a placeholder
 * replaced in a body (Content-Length changes). Everything else streams (docs/interception.md).
 * Past the limit the bytes are dropped and `over` is told once; the caller answers 413
 * (RFC 9110 §15.5.14).
 */
import type { BodySink } from './incoming.js';

export interface BufferWaiter {
  /** The whole body, once it is complete. */
  bodyBuffered(body: Buffer): void;
  /** The body went past `limit` bytes. */
  bodyTooLarge(limit: number): void;
}

export class BodyBuffer implements BodySink {
  readonly #limit: number;
  readonly #waiter: BufferWaiter;
  #chunks: Buffer[] = [];
  #size = 0;
  #over = false;

  constructor(limit: number, waiter: BufferWaiter) {
    this.#limit = limit;
    this.#waiter = waiter;
  }

  bodyChunk(c: Buffer): void {
    if (this.#over) return;
    this.#size += c.length;
    if (this.#size > this.#limit) {
      this.#over = true;
      this.#chunks = [];
      this.#waiter.bodyTooLarge(this.#limit);
      return;
    }
    this.#chunks.push(c);
  }

  bodyDone(): void {
    if (this.#over) return;
    const body = Buffer.concat(this.#chunks, this.#size);
    this.#chunks = [];
    this.#waiter.bodyBuffered(body);
  }
}
