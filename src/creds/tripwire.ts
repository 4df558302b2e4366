/**
 * The tripwire: a credential's placeholder is what the sandbox may send in place of the secret,
 * and only toward the hosts whose rule injects that credential (there sandgate swaps it for the
 * secret). The same string anywhere else (a request to another host, a DNS name) has no use but
 * one: an agent talked into sending its "API key" somewhere. Such a request or query is refused
 * and audited as `tripwire`, and under `onTripwire: quarantine` the sandbox is cut off
 * (src/control/quarantine.ts).
 *
 * One matcher over every placeholder of the config, compiled once per load, and only when some
 * credential has a placeholder: a single regular expression (an alternation of the escaped
 * placeholders, longest first, in any case) run over each field of a request head or over a DNS name. The
 * common case (no placeholder anywhere) is one failed search per field, no allocation.
 *
 * The matcher reads a request's head (method, target, header names and values); it is a
 * function of that head and of the credential the request is bound to, so a body scan can be
 * added beside it without changing its callers' shape.
 */
import type { CredentialConfig } from '../config/types.js';

/** A placeholder found where its credential is not bound. Never carries the placeholder or a secret. */
export interface TripwireHit {
  /** The credential whose placeholder it is. */
  readonly credential: string;
  /** Where: "request target", "header NAME", "header name", "method" or "name" (DNS). */
  readonly where: string;
}

/** What the matcher reads of a request: the relay's parsed head has this shape. */
export interface TripwireHead {
  readonly method: string;
  readonly url: string;
  /** Names and values alternating, as sent. */
  readonly rawHeaders: readonly string[];
}

function literal(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

export class Tripwire {
  /** Lower-cased placeholder -> credential id (the first in config order, if two share one). */
  readonly #owner = new Map<string, string>();
  /** Credential id -> its lower-cased placeholder: the one a request bound to that credential may carry. */
  readonly #own = new Map<string, string>();
  /** Any placeholder, in any case (no state: test() on a non-global expression). */
  readonly #any: RegExp;
  /** The same, global, to walk past the bound credential's own placeholder (only after a hit). */
  readonly #every: RegExp;

  private constructor(pairs: readonly (readonly [string, string])[]) {
    for (const [id, ph] of pairs) {
      const lower = ph.toLowerCase();
      if (!this.#owner.has(lower)) this.#owner.set(lower, id);
      this.#own.set(id, lower);
    }
    // Longest first: where one placeholder contains another, the longer one is the match. Any
    // case: a placeholder shouted or whispered is still the same signal, and DNS names are
    // case-insensitive anyway (RFC 4343).
    const alternation = [...this.#owner.keys()]
      .sort((a, b) => b.length - a.length)
      .map(literal)
      .join('|');
    this.#any = new RegExp(alternation, 'i');
    this.#every = new RegExp(alternation, 'gi');
  }

  /** The matcher for these credentials; undefined when none has a placeholder (nothing to look for). */
  static compile(credentials: Readonly<Record<string, CredentialConfig>>): Tripwire | undefined {
    const pairs = Object.entries(credentials).flatMap(([id, c]) => (c.placeholder !== undefined ? [[id, c.placeholder] as const] : []));
    return pairs.length === 0 ? undefined : new Tripwire(pairs);
  }

  /**
   * The first placeholder in the request head that is not `bound`'s own (`bound`: the credential
   * the request's rule injects, whose placeholder sandgate replaces; undefined: none may appear).
   * The target and header values are also searched percent-decoded, so "%2D" cannot hide a "-".
   */
  inRequest(head: TripwireHead, bound: string | undefined): TripwireHit | undefined {
    const allowed = bound !== undefined ? this.#own.get(bound) : undefined;
    let id = this.#find(head.method, allowed);
    if (id !== undefined) return { credential: id, where: 'method' };
    id = this.#find(head.url, allowed);
    if (id === undefined && head.url.includes('%')) id = this.#find(decoded(head.url), allowed);
    if (id !== undefined) return { credential: id, where: 'request target' };
    const raw = head.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i] as string;
      id = this.#find(name, allowed);
      if (id !== undefined) return { credential: id, where: 'header name' };
      const value = raw[i + 1] as string;
      id = this.#find(value, allowed);
      // Percent-decoded too, as the target is: a Cookie or a form-style value carries "%2D" as easily.
      if (id === undefined && value.includes('%')) id = this.#find(decoded(value), allowed);
      if (id !== undefined) return { credential: id, where: `header ${name}` };
    }
    return undefined;
  }

  /** A placeholder anywhere in a DNS query name (no credential is bound to a name). */
  inName(name: string): TripwireHit | undefined {
    const id = this.#find(name, undefined);
    return id !== undefined ? { credential: id, where: 'name' } : undefined;
  }

  /** The credential of the first placeholder in `s` other than `allowed` (lower-cased). */
  #find(s: string, allowed: string | undefined): string | undefined {
    if (!this.#any.test(s)) return undefined;
    const re = this.#every;
    re.lastIndex = 0;
    for (let m = re.exec(s); m !== null; m = re.exec(s)) {
      const found = m[0].toLowerCase();
      if (found !== allowed) {
        re.lastIndex = 0;
        return this.#owner.get(found);
      }
    }
    return undefined;
  }
}

function decoded(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    // A malformed escape elsewhere must not hide a well-formed one: decode what decodes.
    return s.replace(/%[0-9A-Fa-f]{2}/g, (e) => String.fromCharCode(Number.parseInt(e.slice(1), 16)));
  }
}
