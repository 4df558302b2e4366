/**
 * A request body held whole, up to a limit, for the rewrites that must see all of it before the
 * head can be sent: an AWS signed payload (its SHA-256 goes into the signature) and a placeholder
 * replaced in a body (Content-Length changes). Everything else streams (docs/interception.md).
 * Past the limit the bytes are dropped and `bodyTooLarge` is told once; the caller answers 413
 * (RFC 9110 §15.5.14). Every held byte also counts against one budget per process, so many
 * concurrent uploads cannot hold more than MAX_HELD_BODIES between them: past it, `bodyBusy`
 * (the caller answers 503 with Retry-After, RFC 9110 §15.6.4).
 */
import type { BodySink } from './incoming.js';

/** What all the bodies held at once in one process may add up to. */
export const MAX_HELD_BODIES = 256 * 1024 * 1024;

export class BufferBudget {
  #used = 0;
  constructor(readonly limit: number) {}
  get used(): number {
    return this.#used;
  }
  take(n: number): boolean {
    if (this.#used + n > this.limit) return false;
    this.#used += n;
    return true;
  }
  give(n: number): void {
    this.#used -= n;
  }
}

/** The process's budget (each worker process has its own). */
export const heldBodies = new BufferBudget(MAX_HELD_BODIES);

export interface BufferWaiter {
  /** The whole body, once it is complete. */
  bodyBuffered(body: Buffer): void;
  /** The body went past `limit` bytes. */
  bodyTooLarge(limit: number): void;
  /** The process holds too many bodies already. */
  bodyBusy(): void;
}

export class BodyBuffer implements BodySink {
  readonly #limit: number;
  readonly #waiter: BufferWaiter;
  readonly #budget: BufferBudget;
  #chunks: Buffer[] = [];
  #size = 0;
  #done = false;

  constructor(limit: number, waiter: BufferWaiter, budget: BufferBudget = heldBodies) {
    this.#limit = limit;
    this.#waiter = waiter;
    this.#budget = budget;
  }

  bodyChunk(c: Buffer): void {
    if (this.#done) return;
    if (this.#size + c.length > this.#limit) {
      this.drop();
      this.#waiter.bodyTooLarge(this.#limit);
      return;
    }
    if (!this.#budget.take(c.length)) {
      this.drop();
      this.#waiter.bodyBusy();
      return;
    }
    this.#size += c.length;
    this.#chunks.push(c);
  }

  bodyDone(): void {
    if (this.#done) return;
    const body = Buffer.concat(this.#chunks, this.#size);
    // Handed on to be written upstream at once: no longer counted here.
    this.drop();
    this.#waiter.bodyBuffered(body);
  }

  /** Let go of what is held (also when the exchange ends before the body does). Idempotent. */
  drop(): void {
    if (this.#done) return;
    this.#done = true;
    this.#budget.give(this.#size);
    this.#size = 0;
    this.#chunks = [];
  }
}
