/**
 * Reads a child process's stdout as JSON lines: sandgate's audit log, and what the demo's fake
 * upstreams report (requests served, datagrams received). Lines that are not JSON are kept apart
 * so an unexpected message can still be shown when something fails.
 */
import type { Readable } from 'node:stream';

export type JsonLine = Record<string, unknown>;
type Pred = (line: JsonLine) => boolean;

export class JsonLines {
  /** Every JSON object line, in arrival order; indexes into it mark "since when". */
  readonly lines: JsonLine[] = [];
  /** Lines that were not JSON objects (start-up errors, stray prints). */
  readonly other: string[] = [];
  #buf = '';
  #listeners = new Set<(line: JsonLine) => void>();

  attach(stream: Readable | null | undefined): this {
    if (!stream) return this;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.#buf += chunk;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const text = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#take(text);
      }
    });
    return this;
  }

  #take(text: string): void {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      if (text.trim() !== '') this.other.push(text);
      return;
    }
    const line = value as JsonLine;
    this.lines.push(line);
    for (const fn of this.#listeners) fn(line);
  }

  /** Calls fn for every line from now on; returns the function that stops it. */
  onLine(fn: (line: JsonLine) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Lines from index `from` on that match. */
  since(from: number, pred: Pred = () => true): JsonLine[] {
    return this.lines.slice(from).filter(pred);
  }

  /**
   * The first line from index `from` on that matches, waiting up to `timeoutMs` for it to arrive.
   * Resolves undefined on timeout: a missing line is an outcome the caller reports, not a crash.
   */
  waitFor(pred: Pred, opts: { from?: number; timeoutMs?: number } = {}): Promise<JsonLine | undefined> {
    const hit = this.lines.slice(opts.from ?? 0).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stop();
        resolve(undefined);
      }, opts.timeoutMs ?? 2000);
      const stop = this.onLine((line) => {
        if (!pred(line)) return;
        clearTimeout(timer);
        stop();
        resolve(line);
      });
    });
  }
}
