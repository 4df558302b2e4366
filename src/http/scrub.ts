import { Transform, type TransformCallback } from 'node:stream';

/**
 * Response scrubbing: whatever sandgate injected (the secret, the exact header value, its Basic
 * base64 form...) must never reach the sandbox, even if the upstream echoes it back (debug
 * endpoints, error pages that quote the request, httpbin-style services).
 *
 * Each occurrence is replaced by a mask of the SAME length. That keeps Content-Length, chunk
 * sizes and WebSocket frame lengths valid, so framing never has to be rewritten and nothing is
 * buffered: bodies stay streams. The mask reads "[redacted]" padded with "*" (or "*"s only for
 * needles shorter than that).
 *
 * Streaming across chunk boundaries: an occurrence may be split between two chunks. Instead of
 * holding back a fixed len(needle)-1 bytes (which would delay the end of every SSE event until the
 * next one arrives), a chunk is held back only from the earliest position where its tail could
 * still grow into a needle, i.e. the longest suffix that is a proper prefix of some needle. For
 * typical traffic (an event ending in "\n\n") nothing is held at all.
 */
export class Scrubber {
  readonly #needles: readonly Needle[];
  readonly #scan: readonly Scan[];
  readonly #maxLen: number;
  /** Bytes that may start a needle (quick reject in the tail scan). */
  readonly #firstBytes: Uint8Array;
  #carry: Buffer = EMPTY;

  /** `needles`: non-empty ASCII strings; duplicates and empties are dropped, longest first. */
  constructor(needles: readonly string[]) {
    const c = compile(needles);
    this.#needles = c.needles;
    this.#scan = c.scan;
    this.#maxLen = c.maxLen;
    this.#firstBytes = c.firstBytes;
  }

  /** Feed one chunk; returns the bytes that can be sent now (possibly empty). */
  push(chunk: Buffer): Buffer {
    if (this.#maxLen === 0) return chunk;
    const data = this.#mask(this.#carry.length > 0 ? Buffer.concat([this.#carry, chunk]) : chunk, this.#carry.length > 0, false);
    const hold = this.#heldTail(data);
    this.#carry = hold > 0 ? Buffer.from(data.subarray(data.length - hold)) : EMPTY;
    return hold > 0 ? data.subarray(0, data.length - hold) : data;
  }

  /** End of stream: what was held back is masked where it holds a needle, and released. */
  end(): Buffer {
    const rest = this.#carry;
    this.#carry = EMPTY;
    return rest.length > 0 ? this.#mask(rest, true, true) : rest;
  }

  /**
   * Masks every needle in `data`. Only needles that contain no other needle are searched for:
   * every occurrence of a longer one ("Bearer <secret>") contains a shorter one ("<secret>"), and
   * is masked whole when found around it. One pass over the data per independent needle instead of
   * one per needle. A longer needle that may still complete past the end of `data` (unless
   * `final`) leaves its occurrence unmasked for now: the tail is held (#heldTail) and masked whole
   * once the rest arrives.
   */
  #mask(input: Buffer, owned: boolean, final: boolean): Buffer {
    let data = input;
    let copied = owned;
    for (const s of this.#scan) {
      let at = data.indexOf(s.bytes);
      while (at >= 0) {
        let hit: Needle = s;
        let start = at;
        let pending = false;
        for (const c of s.covers) {
          const from = at - c.offset;
          if (from < 0) continue;
          const end = from + c.needle.bytes.length;
          if (end <= data.length) {
            if (data.compare(c.needle.bytes, 0, c.needle.bytes.length, from, end) === 0) {
              hit = c.needle;
              start = from;
              break;
            }
          } else if (!final && data.compare(c.needle.bytes, 0, data.length - from, from, data.length) === 0) pending = true;
        }
        // Wait for the rest only when no longer needle is complete here (one that is wins, as before).
        if (pending && hit === s) {
          at = data.indexOf(s.bytes, at + 1);
          continue;
        }
        // Never write into a buffer the caller still owns: copy once, on the first hit.
        if (!copied) {
          data = Buffer.from(data);
          copied = true;
        }
        hit.mask.copy(data, start);
        at = data.indexOf(s.bytes, start + hit.bytes.length);
      }
    }
    return data;
  }

  /** Length of the longest suffix of `data` that is a proper prefix of some needle. */
  #heldTail(data: Buffer): number {
    const len = data.length;
    for (let k = Math.min(this.#maxLen - 1, len); k > 0; k--) {
      const start = len - k;
      if (this.#firstBytes[data[start] ?? 0] === 0) continue;
      for (const n of this.#needles) {
        if (n.bytes.length > k && data.compare(n.bytes, 0, k, start, len) === 0) return k;
      }
    }
    return 0;
  }
}

const EMPTY = Buffer.alloc(0);

interface Needle {
  readonly bytes: Buffer;
  readonly mask: Buffer;
}

/** A needle searched for, and the longer needles that contain it (at `offset`), longest first. */
interface Scan extends Needle {
  readonly covers: readonly { readonly needle: Needle; readonly offset: number }[];
}

interface Compiled {
  readonly needles: readonly Needle[];
  readonly scan: readonly Scan[];
  readonly maxLen: number;
  /** Read-only once built: shared by every Scrubber for the same needles. */
  readonly firstBytes: Uint8Array;
}

/**
 * One Scrubber per response, but the needles' bytes, masks and first-byte table depend only on
 * the credential: compiled once per needles array (a credential's is built at load), not per
 * response. Weak keys: a replaced credential's entry goes with it.
 */
const compiled = new WeakMap<readonly string[], Compiled>();

function compile(needles: readonly string[]): Compiled {
  let c = compiled.get(needles);
  if (c) return c;
  const uniq = [...new Set(needles.filter((n) => n.length > 0))].sort((a, b) => b.length - a.length);
  const list = uniq.map((n) => ({ bytes: Buffer.from(n, 'latin1'), mask: Buffer.from(maskFor(n.length), 'latin1') }));
  const firstBytes = new Uint8Array(256);
  for (const n of list) firstBytes[n.bytes[0] ?? 0] = 1;
  const scan: Scan[] = [];
  for (const n of list) {
    if (list.some((o) => o !== n && o.bytes.length < n.bytes.length && n.bytes.includes(o.bytes))) continue;
    const covers: { needle: Needle; offset: number }[] = [];
    for (const o of list) {
      if (o.bytes.length <= n.bytes.length) continue;
      for (let at = o.bytes.indexOf(n.bytes); at >= 0; at = o.bytes.indexOf(n.bytes, at + 1)) covers.push({ needle: o, offset: at });
    }
    covers.sort((x, y) => y.needle.bytes.length - x.needle.bytes.length);
    scan.push({ ...n, covers });
  }
  c = { needles: list, scan, maxLen: uniq[0]?.length ?? 0, firstBytes };
  compiled.set(needles, c);
  return c;
}
const MASK_WORD = '[redacted]';

/** A mask as long as the needle it replaces. */
export function maskFor(length: number): string {
  return length >= MASK_WORD.length ? MASK_WORD + '*'.repeat(length - MASK_WORD.length) : '*'.repeat(length);
}

/** Scrub a whole string (header values, status text, error messages). */
export function scrubString(s: string, needles: readonly string[]): string {
  let out = s;
  for (const n of needles) if (n.length > 0 && out.includes(n)) out = out.split(n).join(maskFor(n.length));
  return out;
}

/** A Transform applying a Scrubber: for response bodies and WebSocket frames from upstream. */
export function scrubStream(needles: readonly string[]): Transform {
  const s = new Scrubber(needles);
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      const out = s.push(chunk);
      cb(null, out.length > 0 ? out : undefined);
    },
    flush(cb: TransformCallback): void {
      const rest = s.end();
      cb(null, rest.length > 0 ? rest : undefined);
    },
  });
}
