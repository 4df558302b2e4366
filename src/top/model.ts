/**
 * `sandgate top`'s state, pure: audit lines, approval events and keys in, a view model out. The
 * terminal shell (view.ts, run.ts) only feeds this and draws what viewModel() returns, so every
 * behaviour of the view is unit-tested without a terminal.
 */

/** How many decisions are kept to scroll through; older ones fall off. */
export const MAX_ROWS = 1000;
/** Rates are per second over this many seconds. */
export const RATE_WINDOW_S = 10;

export interface DecisionRow {
  readonly seq: number;
  /** HH:MM:SS of the audit line's `time` (UTC, as logged). */
  readonly time: string;
  readonly sandbox: string;
  /** tls, http, tcp, dns, pkt/udp, ... */
  readonly kind: string;
  readonly host: string;
  /** `METHOD /path` for HTTP lines, else empty. */
  readonly request: string;
  readonly decision: string;
  readonly reason: string;
}

export interface Pending {
  readonly id: string;
  readonly sandbox: string;
  readonly user: string;
  readonly host: string;
  readonly port: number;
  readonly via: string;
  readonly since: string;
  readonly expires: string;
}

/** One second's counts for a sandbox. */
interface Bucket {
  readonly sec: number;
  readonly requests: number;
  readonly denials: number;
}

interface SandboxStats {
  readonly total: number;
  readonly denied: number;
  /** The last RATE_WINDOW_S seconds with traffic, oldest first. */
  readonly buckets: readonly Bucket[];
}

export type ApprovalAction = 'once' | 'sandbox' | 'policy' | 'deny';

export interface TopState {
  readonly seq: number;
  readonly rows: readonly DecisionRow[];
  readonly stats: ReadonlyMap<string, SandboxStats>;
  /** Paused: rows after this seq are held back (they show on resume). */
  readonly pausedAt: number | undefined;
  readonly denialsOnly: boolean;
  /** Applied filter, lower-cased; '' shows everything. */
  readonly filter: string;
  /** The filter being typed after `/`; undefined when not typing. */
  readonly input: string | undefined;
  /** 'unknown' until GET /approvals answers; 'absent' when the daemon has no approvals (404). */
  readonly approvals: 'unknown' | 'absent' | 'present';
  readonly pending: readonly Pending[];
  readonly selected: number;
  /** Lines the daemon dropped because this view read too slowly. */
  readonly dropped: number;
  /** One line of feedback (an answer sent, an error). */
  readonly message: string;
}

export const INITIAL: TopState = {
  seq: 0,
  rows: [],
  stats: new Map(),
  pausedAt: undefined,
  denialsOnly: false,
  filter: '',
  input: undefined,
  approvals: 'unknown',
  pending: [],
  selected: 0,
  dropped: 0,
  message: '',
};

const str = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');

function kindOf(line: Record<string, unknown>): string {
  const event = str(line.event);
  const proto = str(line.proto);
  if (event === 'conn') return proto || 'conn';
  if (event === 'packet') return `pkt/${proto}`;
  // An HTTP request line: inside intercepted TLS, or plain HTTP.
  if (event === 'http') return proto === 'tls' ? 'https' : 'http';
  return event;
}

function timeOf(line: Record<string, unknown>): string {
  const t = str(line.time);
  const m = /T(\d\d:\d\d:\d\d)/.exec(t);
  return m ? (m[1] as string) : t.slice(0, 8);
}

/** An audit line from GET /events. Lines without a decision (ready, config, close) only count drops. */
export function onAuditLine(s: TopState, line: Record<string, unknown>, nowMs: number): TopState {
  if (line.event === 'dropped') return { ...s, dropped: s.dropped + (typeof line.count === 'number' ? line.count : 0) };
  const decision = str(line.decision);
  if (decision === '') return s;
  const seq = s.seq + 1;
  const sandbox = str(line.sandbox) || '-';
  const method = str(line.method);
  const row: DecisionRow = {
    seq,
    time: timeOf(line),
    sandbox,
    kind: kindOf(line),
    host: str(line.host) || str(line.dst),
    request: method ? `${method} ${str(line.path)}` : '',
    decision,
    reason: str(line.reason),
  };
  const rows = s.rows.length >= MAX_ROWS ? [...s.rows.slice(s.rows.length - MAX_ROWS + 1), row] : [...s.rows, row];
  const sec = Math.floor(nowMs / 1000);
  const denial = decision === 'deny' ? 1 : 0;
  const old = s.stats.get(sandbox) ?? { total: 0, denied: 0, buckets: [] };
  const kept = old.buckets.filter((b) => b.sec > sec - RATE_WINDOW_S);
  const last = kept[kept.length - 1];
  const buckets =
    last !== undefined && last.sec === sec
      ? [...kept.slice(0, -1), { sec, requests: last.requests + 1, denials: last.denials + denial }]
      : [...kept, { sec, requests: 1, denials: denial }];
  const stats = new Map(s.stats);
  stats.set(sandbox, { total: old.total + 1, denied: old.denied + denial, buckets });
  return { ...s, seq, rows, stats };
}

function asPending(line: Record<string, unknown>): Pending | undefined {
  const id = str(line.id);
  if (id === '') return undefined;
  return {
    id,
    sandbox: str(line.sandbox),
    user: str(line.user),
    host: str(line.host),
    port: typeof line.port === 'number' ? line.port : 0,
    via: str(line.via),
    since: str(line.since),
    expires: str(line.expires),
  };
}

/** A line of GET /approvals?watch=1: `pending` adds (or replaces) one, `decided` removes it. */
export function onApprovalLine(s: TopState, line: Record<string, unknown>): TopState {
  const base: TopState = s.approvals === 'present' ? s : { ...s, approvals: 'present' };
  if (line.event === 'pending') {
    const p = asPending(line);
    if (p === undefined) return base;
    const pending = [...base.pending.filter((x) => x.id !== p.id), p];
    return { ...base, pending };
  }
  if (line.event === 'decided') {
    const id = str(line.id);
    const pending = base.pending.filter((x) => x.id !== id);
    const selected = Math.min(base.selected, Math.max(0, pending.length - 1));
    const gone = base.pending.find((x) => x.id === id);
    const message = gone ? `${gone.host}:${gone.port} (${gone.sandbox}): ${str(line.action)}${line.approver ? ` by ${str(line.approver)}` : ''}` : base.message;
    return { ...base, pending, selected, message };
  }
  return base;
}

/** GET /approvals?watch=1 answered 200: the panel shows, empty until a `pending` line. */
export function onApprovalsPresent(s: TopState): TopState {
  return s.approvals === 'present' ? s : { ...s, approvals: 'present' };
}

export function onApprovalsAbsent(s: TopState): TopState {
  return { ...s, approvals: 'absent', pending: [], selected: 0 };
}

export function withMessage(s: TopState, message: string): TopState {
  return { ...s, message };
}

/** A key as the shell reports it: one printable character, or a named key. */
export type Key = { readonly ch: string } | { readonly name: 'up' | 'down' | 'return' | 'escape' | 'backspace' };

/**
 * Printable text as the terminal delivered it, as keys. Keys typed (or pasted, or sent by tmux)
 * faster than the view reads arrive as one chunk, "evil\r" say: Enter, Backspace and Escape inside
 * it are keys, other control characters are ignored (a carriage return drawn as text would move
 * the cursor).
 */
export function keysOf(input: string): Key[] {
  const out: Key[] = [];
  for (const ch of input) {
    if (ch === '\r' || ch === '\n') out.push({ name: 'return' });
    else if (ch === '\x7f' || ch === '\b') out.push({ name: 'backspace' });
    else if (ch === '\x1b') out.push({ name: 'escape' });
    else if (ch >= ' ') out.push({ ch });
  }
  return out;
}

export type Effect = { readonly t: 'quit' } | { readonly t: 'answer'; readonly id: string; readonly action: ApprovalAction; readonly label: string };

const ANSWERS: Readonly<Record<string, ApprovalAction>> = { a: 'once', s: 'sandbox', P: 'policy', x: 'deny' };

export function onKey(s: TopState, k: Key): { state: TopState; effect?: Effect } {
  if (s.input !== undefined) {
    // Typing a filter: Enter applies it, Escape cancels, everything printable is text.
    if ('name' in k) {
      if (k.name === 'return') return { state: { ...s, filter: s.input.trim().toLowerCase(), input: undefined } };
      if (k.name === 'escape') return { state: { ...s, input: undefined } };
      if (k.name === 'backspace') return { state: { ...s, input: s.input.slice(0, -1) } };
      return { state: s };
    }
    return { state: { ...s, input: (s.input + k.ch).slice(0, 128) } };
  }
  if ('name' in k) {
    if (k.name === 'up') return { state: { ...s, selected: Math.max(0, s.selected - 1) } };
    if (k.name === 'down') return { state: { ...s, selected: Math.min(Math.max(0, s.pending.length - 1), s.selected + 1) } };
    if (k.name === 'escape') return { state: { ...s, filter: '' } };
    return { state: s };
  }
  switch (k.ch) {
    case 'q':
      return { state: s, effect: { t: 'quit' } };
    case 'p':
      return { state: { ...s, pausedAt: s.pausedAt === undefined ? s.seq : undefined } };
    case 'd':
      return { state: { ...s, denialsOnly: !s.denialsOnly } };
    case '/':
      return { state: { ...s, input: s.filter } };
    case 'j':
      return onKey(s, { name: 'down' });
    case 'k':
      return onKey(s, { name: 'up' });
    default: {
      const action = ANSWERS[k.ch];
      const p = s.pending[s.selected];
      if (action === undefined || s.approvals !== 'present' || p === undefined) return { state: s };
      const label = `${p.host}:${p.port} (${p.sandbox})`;
      return { state: { ...s, message: `${label}: sending ${action}` }, effect: { t: 'answer', id: p.id, action, label } };
    }
  }
}

export interface SandboxView {
  readonly name: string;
  /** Per second over the last RATE_WINDOW_S seconds. */
  readonly requestRate: number;
  readonly denialRate: number;
  readonly total: number;
  readonly denied: number;
}

/** Panels never push the decision list off the screen: at most this many lines each. */
export const MAX_SANDBOX_LINES = 8;
export const MAX_PENDING_LINES = 6;

export interface ViewModel {
  readonly rows: readonly DecisionRow[];
  /** The busiest MAX_SANDBOX_LINES (rate, then total), by name; `moreSandboxes` not shown. */
  readonly sandboxes: readonly SandboxView[];
  readonly moreSandboxes: number;
  readonly paused: boolean;
  /** Decisions received while paused (shown on resume). */
  readonly held: number;
  readonly denialsOnly: boolean;
  readonly filter: string;
  readonly input: string | undefined;
  readonly showApprovals: boolean;
  /** A window of MAX_PENDING_LINES around the selected one; `pendingFrom` is its first index. */
  readonly pending: readonly Pending[];
  readonly pendingFrom: number;
  readonly pendingTotal: number;
  readonly selected: number;
  readonly dropped: number;
  readonly message: string;
}

export function rowMatches(s: Pick<TopState, 'filter' | 'denialsOnly'>, r: DecisionRow): boolean {
  if (s.denialsOnly && r.decision !== 'deny' && r.decision !== 'would-deny') return false;
  if (s.filter !== '' && !r.sandbox.toLowerCase().includes(s.filter) && !r.host.toLowerCase().includes(s.filter)) return false;
  return true;
}

/** The newest `height` rows that pass the view's filters, oldest first; rates as of `nowMs`. */
export function viewModel(s: TopState, nowMs: number, height: number): ViewModel {
  const shown: DecisionRow[] = [];
  for (let i = s.rows.length - 1; i >= 0 && shown.length < height; i--) {
    const r = s.rows[i] as DecisionRow;
    if (s.pausedAt !== undefined && r.seq > s.pausedAt) continue;
    if (rowMatches(s, r)) shown.push(r);
  }
  shown.reverse();
  const sec = Math.floor(nowMs / 1000);
  const all = [...s.stats.entries()]
    .map(([name, st]) => {
      let requests = 0;
      let denials = 0;
      for (const b of st.buckets)
        if (b.sec > sec - RATE_WINDOW_S && b.sec <= sec) {
          requests += b.requests;
          denials += b.denials;
        }
      return { name, requestRate: requests / RATE_WINDOW_S, denialRate: denials / RATE_WINDOW_S, total: st.total, denied: st.denied };
    })
    .sort((a, b) => b.requestRate - a.requestRate || b.total - a.total || a.name.localeCompare(b.name));
  const sandboxes = all.slice(0, MAX_SANDBOX_LINES).sort((a, b) => a.name.localeCompare(b.name));
  const pendingFrom = Math.max(0, Math.min(s.selected - Math.floor(MAX_PENDING_LINES / 2), s.pending.length - MAX_PENDING_LINES));
  return {
    rows: shown,
    sandboxes,
    moreSandboxes: all.length - sandboxes.length,
    paused: s.pausedAt !== undefined,
    held: s.pausedAt === undefined ? 0 : s.seq - s.pausedAt,
    denialsOnly: s.denialsOnly,
    filter: s.filter,
    input: s.input,
    showApprovals: s.approvals === 'present',
    pending: s.pending.slice(pendingFrom, pendingFrom + MAX_PENDING_LINES),
    pendingFrom,
    pendingTotal: s.pending.length,
    selected: s.selected,
    dropped: s.dropped,
    message: s.message,
  };
}
