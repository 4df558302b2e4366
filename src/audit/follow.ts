/**
 * Reading an audit log as lines, once or followed like `tail -F`: across a rotation (the file
 * renamed and a new one created at the path, logrotate's default and sandgate's SIGUSR1 reopen)
 * and a truncation (`copytruncate`). The decisions are pure (followStep, LineSplitter); the
 * Follower only stats, reads and sleeps.
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

/** Bytes into lines; a partial last line waits for its newline; UTF-8 split across chunks is kept whole. */
export class LineSplitter {
  #decoder = new StringDecoder('utf8');
  #partial = '';

  push(chunk: Buffer): string[] {
    const text = this.#partial + this.#decoder.write(chunk);
    const lines = text.split('\n');
    this.#partial = lines.pop() ?? '';
    return lines;
  }

  /** What is left once the input ended: a last line without a newline. */
  end(): string[] {
    const rest = this.#partial + this.#decoder.end();
    this.#partial = '';
    return rest === '' ? [] : [rest];
  }

  /** Drops a partial line (the file it came from was truncated or replaced). */
  reset(): void {
    this.#decoder = new StringDecoder('utf8');
    this.#partial = '';
  }
}

export interface FileId {
  readonly dev: number;
  readonly ino: number;
}

/**
 * What to do next, given the open file (its identity and size), how far it was read, and what
 * the path names now (undefined: nothing, between a rename and the new file's creation):
 * - `read`: the open file grew;
 * - `truncated`: it shrank below what was read (copytruncate): read again from 0;
 * - `rotated`: the path names another file and the open one is read to its end: switch;
 * - `wait`: nothing new.
 */
export type FollowAction = 'read' | 'truncated' | 'rotated' | 'wait';

export function followStep(open: FileId & { readonly size: number }, pos: number, atPath: FileId | undefined): FollowAction {
  if (open.size < pos) return 'truncated';
  if (open.size > pos) return 'read';
  if (atPath !== undefined && (atPath.dev !== open.dev || atPath.ino !== open.ino)) return 'rotated';
  return 'wait';
}

export interface FollowEvents {
  line(text: string): void;
  /** A rotation or truncation, for the operator (stderr). */
  notice(message: string): void;
}

const CHUNK = 64 * 1024;

/** Follows `path` from its first byte until stop(); polls every `intervalMs`. */
export class Follower {
  readonly #path: string;
  readonly #events: FollowEvents;
  readonly #intervalMs: number;
  #fd: number;
  #id: FileId;
  #pos = 0;
  #splitter = new LineSplitter();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #buf = Buffer.allocUnsafe(CHUNK);

  /** Opens the file now (throws if it cannot be read: the caller reports that as bad input). */
  constructor(path: string, events: FollowEvents, intervalMs = 200) {
    this.#path = path;
    this.#events = events;
    this.#intervalMs = intervalMs;
    this.#fd = openSync(path, 'r');
    const st = fstatSync(this.#fd);
    this.#id = { dev: st.dev, ino: st.ino };
  }

  start(): void {
    this.#tick();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    try {
      closeSync(this.#fd);
    } catch {
      /* already closed */
    }
  }

  readonly #tick = (): void => {
    if (this.#stopped) return;
    try {
      this.#poll();
    } catch (err) {
      this.#events.notice(`cannot read ${this.#path}: ${(err as Error).message}; retrying`);
    }
    if (!this.#stopped) this.#timer = setTimeout(this.#tick, this.#intervalMs);
  };

  #poll(): void {
    for (;;) {
      const st = fstatSync(this.#fd);
      let atPath: FileId | undefined;
      try {
        const p = statSync(this.#path);
        atPath = { dev: p.dev, ino: p.ino };
      } catch {
        atPath = undefined;
      }
      const action = followStep({ ...this.#id, size: st.size }, this.#pos, atPath);
      switch (action) {
        case 'read':
          // It may have grown meanwhile, or been rotated once read to its end; nothing read (a
          // truncation racing the read): the next poll sees the new size.
          if (this.#readTo(st.size) === 0) return;
          continue;
        case 'truncated':
          this.#events.notice(`${this.#path} was truncated; reading it from the start`);
          this.#pos = 0;
          this.#splitter.reset();
          continue;
        case 'rotated': {
          // The old file is read to its end (a line the writer finished there counts), then the new one.
          for (const l of this.#splitter.end()) this.#events.line(l);
          let fd: number;
          try {
            fd = openSync(this.#path, 'r');
          } catch {
            return; // gone again between stat and open: next poll
          }
          closeSync(this.#fd);
          this.#fd = fd;
          const nst = fstatSync(fd);
          this.#id = { dev: nst.dev, ino: nst.ino };
          this.#pos = 0;
          this.#events.notice(`${this.#path} was replaced (rotated); following the new file`);
          continue;
        }
        case 'wait':
          return;
        default: {
          const never: never = action;
          return never;
        }
      }
    }
  }

  /** Reads up to `size`; returns the bytes read. */
  #readTo(size: number): number {
    let total = 0;
    while (this.#pos < size && !this.#stopped) {
      const n = readSync(this.#fd, this.#buf, 0, Math.min(CHUNK, size - this.#pos), this.#pos);
      if (n === 0) break;
      this.#pos += n;
      total += n;
      for (const l of this.#splitter.push(this.#buf.subarray(0, n))) this.#events.line(l);
    }
    return total;
  }
}
