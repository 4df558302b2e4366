/**
 * The decision stream behind `GET /events` (docs/control-api.md): every audit line, as written
 * (the primary's and its workers'), fanned out to the subscribers whose filter it passes.
 *
 * No sockets here. The hub takes the audit text and hands each subscriber's share to its Outbox;
 * the HTTP handler (events-http.ts) writes what an Outbox releases. A subscriber whose socket does
 * not keep up has a bounded queue: past it, lines are dropped and counted, and once the socket
 * drains it gets what was queued, then one `{"event":"dropped","count":N}` line where the gap is.
 * The daemon's memory never grows with a slow reader.
 */

export type DecisionFilter = 'allow' | 'deny' | 'would-deny';

export interface EventFilter {
  readonly sandbox?: string;
  /** Lower-cased glob: `*` is any run of characters (dots included). */
  readonly host?: string;
  readonly decision?: DecisionFilter;
}

export type FilterOutcome = { readonly ok: true; readonly filter: EventFilter } | { readonly ok: false; readonly error: string };

const DECISIONS: readonly string[] = ['allow', 'deny', 'would-deny'];
const KEYS: readonly string[] = ['sandbox', 'host', 'decision'];

/** `?sandbox=NAME&host=GLOB&decision=deny`, each at most once; anything else is a 400. */
export function parseEventFilter(params: URLSearchParams): FilterOutcome {
  const out: { sandbox?: string; host?: string; decision?: DecisionFilter } = {};
  for (const key of new Set(params.keys())) {
    if (!KEYS.includes(key)) return { ok: false, error: `unknown parameter ${JSON.stringify(key)} (/events takes sandbox, host, decision)` };
    const values = params.getAll(key);
    if (values.length !== 1 || values[0] === '') return { ok: false, error: `${key} must be given once, not empty` };
    const v = values[0] as string;
    if (v.length > 256) return { ok: false, error: `${key} is longer than 256 characters` };
    if (key === 'decision') {
      if (!DECISIONS.includes(v)) return { ok: false, error: `decision must be one of ${DECISIONS.join(', ')}` };
      out.decision = v as DecisionFilter;
    } else if (key === 'host') out.host = v.toLowerCase();
    else out.sandbox = v;
  }
  return { ok: true, filter: out };
}

export function isEmptyFilter(f: EventFilter): boolean {
  return f.sandbox === undefined && f.host === undefined && f.decision === undefined;
}

/** Glob match without a RegExp built from input: `*` matches any run, everything else itself. */
export function globMatch(glob: string, text: string): boolean {
  const parts = glob.split('*');
  const first = parts[0] as string;
  if (parts.length === 1) return text === glob;
  if (!text.startsWith(first)) return false;
  let at = first.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const p = parts[i] as string;
    const found = text.indexOf(p, at);
    if (found < 0) return false;
    at = found + p.length;
  }
  const last = parts[parts.length - 1] as string;
  return text.length - at >= last.length && text.endsWith(last);
}

/** Whether an audit line passes: a filter on a field the line lacks excludes it. */
export function matchesFilter(f: EventFilter, line: Record<string, unknown>): boolean {
  if (f.sandbox !== undefined && line.sandbox !== f.sandbox) return false;
  if (f.decision !== undefined && line.decision !== f.decision) return false;
  if (f.host !== undefined && (typeof line.host !== 'string' || !globMatch(f.host, line.host.toLowerCase()))) return false;
  return true;
}

export function droppedMarker(count: number): string {
  return `${JSON.stringify({ event: 'dropped', count })}\n`;
}

/**
 * One subscriber's queue. `offer` returns the text to write now, or undefined while the socket is
 * blocked (then the line is queued, or dropped once `maxBytes` are waiting). Once it drops, it
 * drops every line until the socket drains, so the marker stands exactly where lines are missing.
 */
export class Outbox {
  #queue: string[] = [];
  #bytes = 0;
  #dropped = 0;
  #blocked = false;
  readonly maxBytes: number;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get blocked(): boolean {
    return this.#blocked;
  }

  offer(line: string): string | undefined {
    if (!this.#blocked) return line;
    if (this.#dropped > 0 || this.#bytes + line.length > this.maxBytes) {
      this.#dropped++;
      return undefined;
    }
    this.#queue.push(line);
    this.#bytes += line.length;
    return undefined;
  }

  /** The socket's buffer is full (write() returned false). */
  block(): void {
    this.#blocked = true;
  }

  /** The socket drained: what to write now, the queued lines and then the marker (maybe empty). */
  drain(): string {
    const text = this.#queue.join('') + (this.#dropped > 0 ? droppedMarker(this.#dropped) : '');
    this.#queue = [];
    this.#bytes = 0;
    this.#dropped = 0;
    this.#blocked = false;
    return text;
  }
}

/** Open streams at most: each may hold its queue, so their number is bounded too. */
export const MAX_SUBSCRIBERS = 64;

export interface Subscriber {
  readonly filter: EventFilter;
  /** Takes one line (ending in "\n") that passed the filter. */
  readonly push: (line: string) => void;
}

/**
 * Subscribers and the fan-out. `onActive(true)` when the first subscribes, `(false)` when the last
 * leaves: the daemon taps the audit stream only in between, so with nobody watching no line is
 * split or parsed for this.
 */
export class EventHub {
  readonly #subs = new Set<Subscriber>();
  readonly #onActive: (active: boolean) => void;

  constructor(onActive: (active: boolean) => void) {
    this.#onActive = onActive;
  }

  get size(): number {
    return this.#subs.size;
  }

  /** undefined when MAX_SUBSCRIBERS are already subscribed. */
  subscribe(s: Subscriber): (() => void) | undefined {
    if (this.#subs.size >= MAX_SUBSCRIBERS) return undefined;
    this.#subs.add(s);
    if (this.#subs.size === 1) this.#onActive(true);
    return () => {
      if (this.#subs.delete(s) && this.#subs.size === 0) this.#onActive(false);
    };
  }

  /** `text`: one or more complete audit lines, each ending in "\n". */
  publish(text: string): void {
    if (this.#subs.size === 0) return;
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      const line = text.slice(start, nl + 1);
      start = nl + 1;
      let parsed: Record<string, unknown> | null | undefined;
      for (const s of this.#subs) {
        if (!isEmptyFilter(s.filter)) {
          if (parsed === undefined) {
            try {
              const v: unknown = JSON.parse(line);
              parsed = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
            } catch {
              parsed = null;
            }
          }
          if (parsed === null || !matchesFilter(s.filter, parsed)) continue;
        }
        // The tap runs inside the audit writer: one subscriber's failure must not reach the
        // data path that wrote the line, nor the other subscribers.
        try {
          s.push(line);
        } catch {
          this.#subs.delete(s);
          if (this.#subs.size === 0) this.#onActive(false);
        }
      }
    }
  }
}
