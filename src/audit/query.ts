/**
 * `sandgate audit`'s pure core: audit lines in (as text), filtered lines, a table or a per-sandbox
 * summary out. No file, clock or terminal here: the shell (src/cli/audit.ts) reads, follows and
 * writes; `now` is an argument.
 */
import type { AuditFields } from './logger.js';
import { decisionsIn } from '../metrics/audit-metrics.js';

/** One parsed line: the text exactly as read (for --json) and its fields. */
export interface ParsedLine {
  readonly text: string;
  readonly fields: AuditFields;
  /** `time` as milliseconds since the epoch; undefined when absent or unparsable. */
  readonly at: number | undefined;
}

/** A line that is not a JSON object with a string `event`: counted, never fatal. */
export type Parsed = { readonly ok: true; readonly line: ParsedLine } | { readonly ok: false; readonly empty: boolean };

export function parseLine(text: string): Parsed {
  if (text.trim() === '') return { ok: false, empty: true };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, empty: false };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || typeof (v as { event?: unknown }).event !== 'string') return { ok: false, empty: false };
  const fields = v as AuditFields;
  const at = typeof fields.time === 'string' ? Date.parse(fields.time) : typeof fields.time === 'number' ? fields.time : Number.NaN;
  return { ok: true, line: { text, fields, at: Number.isFinite(at) ? at : undefined } };
}

export type DecisionName = 'allow' | 'deny' | 'would-deny';
export const DECISIONS: readonly DecisionName[] = ['allow', 'deny', 'would-deny'];
export const EVENTS: readonly string[] = ['ready', 'conn', 'close', 'http', 'dns', 'packet', 'config', 'error', 'stop'];

/** Every criterion given must hold (AND); a list within one criterion is any-of (OR). */
export interface AuditFilter {
  readonly sandboxes?: readonly string[];
  readonly users?: readonly string[];
  /** Host globs: `*` any run of characters (dots included), `?` one character; case-insensitive. */
  readonly hosts?: readonly RegExp[];
  readonly decisions?: readonly DecisionName[];
  readonly events?: readonly string[];
  /** Inclusive bounds in ms since the epoch; a line without a usable `time` never matches them. */
  readonly since?: number;
  readonly until?: number;
}

export function hostGlob(glob: string): RegExp {
  const re = glob
    .toLowerCase()
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${re}$`);
}

export function matches(f: AuditFilter, line: ParsedLine): boolean {
  const l = line.fields;
  if (f.events && !f.events.includes(l.event)) return false;
  if (f.sandboxes && !(typeof l.sandbox === 'string' && f.sandboxes.includes(l.sandbox))) return false;
  if (f.users && !(typeof l.user === 'string' && f.users.includes(l.user))) return false;
  if (f.decisions && !(typeof l.decision === 'string' && (f.decisions as readonly string[]).includes(l.decision))) return false;
  if (f.hosts) {
    const host = typeof l.host === 'string' ? l.host.toLowerCase() : undefined;
    if (host === undefined || !f.hosts.some((re) => re.test(host))) return false;
  }
  if (f.since !== undefined && (line.at === undefined || line.at < f.since)) return false;
  if (f.until !== undefined && (line.at === undefined || line.at > f.until)) return false;
  return true;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`/`--until`: a duration before `now` ("90s", "10m", "2h", "7d") or an absolute ISO 8601
 * time ("2026-11-28T23:12:01Z"; a date alone is midnight UTC). Undefined when it is neither.
 */
export function parseTimeArg(arg: string, now: number): number | undefined {
  const rel = /^(\d+(?:\.\d+)?)([smhd])$/.exec(arg.trim());
  if (rel) return now - Number(rel[1]) * (UNIT_MS[rel[2] as string] as number);
  // ISO 8601 only: Date.parse also takes "March 7" and the like, which would be a guess.
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(arg.trim())) return undefined;
  const t = Date.parse(arg.trim());
  return Number.isFinite(t) ? t : undefined;
}

/* --------------------------------- the table --------------------------------- */

export const COLUMNS = ['TIME', 'EVENT', 'SANDBOX', 'USER', 'DECISION', 'HOST', 'PORT', 'REQUEST', 'STATUS', 'DETAIL'] as const;

/** The port of `dst` ("10.0.0.1:443", "[fd00::1]:443"). */
export function portOf(dst: unknown): number | undefined {
  if (typeof dst !== 'string') return undefined;
  const m = /:(\d+)$/.exec(dst);
  return m ? Number(m[1]) : undefined;
}

/**
 * Control characters (C0, DEL, C1) as "?": host names, paths and reasons come from what a sandbox
 * sent, and an escape sequence printed raw would drive the operator's terminal.
 */
export function printable(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0) as number;
    out += c < 0x20 || (c >= 0x7f && c < 0xa0) ? '?' : ch;
  }
  return out;
}

const s = (v: unknown): string => (v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

/**
 * One row of the table. DETAIL is what explains the line: the reason of a denial, an error, the
 * rule that allowed it, the credential injected, bytes of a close, a config action.
 */
export function rowOf(l: AuditFields): string[] {
  const detail: string[] = [];
  if (l.reason !== undefined) detail.push(s(l.reason));
  if (l.error !== undefined) detail.push(`error: ${s(l.error)}`);
  if (l.action !== undefined) detail.push(s(l.action));
  if (l.credential !== undefined) detail.push(`credential ${s(l.credential)}`);
  if (l.event === 'close' || (l.event === 'http' && (l.bytesIn !== undefined || l.bytesOut !== undefined)))
    detail.push(`in ${s(l.bytesIn ?? 0)} B, out ${s(l.bytesOut ?? 0)} B`);
  if (l.rule !== undefined && l.decision === 'allow') detail.push(s(l.rule));
  if (l.event === 'dns' && l.qtype !== undefined) detail.push(`${s(l.qtype)}${l.rcode !== undefined ? ` ${s(l.rcode)}` : ''}`);
  const port = l.event === 'packet' && l.port !== undefined ? l.port : portOf(l.dst);
  return [
    s(l.time),
    s(l.event),
    s(l.sandbox),
    s(l.user),
    s(l.decision),
    s(l.host),
    s(port),
    l.method !== undefined ? `${s(l.method)} ${s(l.path)}` : '',
    s(l.status),
    detail.join('; '),
  ].map((c) => printable(c));
}

/**
 * Columns padded to `widths` (grown in place to fit these rows, so a followed stream keeps its
 * columns aligned as long as nothing wider arrives); the last column is never padded.
 */
export function renderRows(rows: readonly string[][], widths: number[]): string {
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map(
      (r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join('  ')
          .trimEnd() + '\n',
    )
    .join('');
}

/** Header plus rows, every column as wide as its widest cell. */
export function renderTable(lines: readonly AuditFields[]): string {
  return renderRows([[...COLUMNS], ...lines.map(rowOf)], []);
}

/* -------------------------------- the summary -------------------------------- */

export interface HostTally {
  allow: number;
  deny: number;
  wouldDeny: number;
}

export interface SandboxSummary {
  readonly sandbox: string;
  lines: number;
  /** Per host: decisions (allow, deny, would-deny) from conn, http, dns and packet lines. */
  readonly hosts: Map<string, HostTally>;
  /** "reason" -> count, for deny and would-deny lines. */
  readonly denials: Map<string, number>;
  bytesIn: number;
  bytesOut: number;
  /** Credential id -> requests it was injected into. */
  readonly credentials: Map<string, number>;
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);

/** Adds one line to the per-sandbox summaries (lines with no sandbox, e.g. ready/config, are skipped). */
export function summarise(into: Map<string, SandboxSummary>, l: AuditFields): void {
  if (typeof l.sandbox !== 'string') return;
  let sum = into.get(l.sandbox);
  if (!sum) {
    sum = { sandbox: l.sandbox, lines: 0, hosts: new Map(), denials: new Map(), bytesIn: 0, bytesOut: 0, credentials: new Map() };
    into.set(l.sandbox, sum);
  }
  sum.lines++;
  // Bytes as the metrics count them: close lines (passthrough, raw TCP) and http lines.
  if (l.event === 'close' || l.event === 'http') {
    sum.bytesIn += num(l.bytesIn);
    sum.bytesOut += num(l.bytesOut);
  }
  if (l.event === 'http' && typeof l.credential === 'string') sum.credentials.set(l.credential, (sum.credentials.get(l.credential) ?? 0) + 1);
  const d = l.decision;
  if (d !== 'allow' && d !== 'deny' && d !== 'would-deny') return;
  const n = decisionsIn(l);
  const host = typeof l.host === 'string' ? l.host : typeof l.dst === 'string' ? l.dst : '(none)';
  const key = `${host} [${l.event}]`;
  const t = sum.hosts.get(key) ?? { allow: 0, deny: 0, wouldDeny: 0 };
  if (d === 'allow') t.allow += n;
  else if (d === 'deny') t.deny += n;
  else t.wouldDeny += n;
  sum.hosts.set(key, t);
  if (d !== 'allow') {
    const reason = `${d}: ${typeof l.reason === 'string' ? l.reason : '(no reason)'}`;
    sum.denials.set(reason, (sum.denials.get(reason) ?? 0) + n);
  }
}

const byCount = <K>(m: Map<K, number>): [K, number][] => [...m].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));

export function renderSummary(sums: ReadonlyMap<string, SandboxSummary>): string {
  if (sums.size === 0) return 'no sandbox lines matched\n';
  const out: string[] = [];
  for (const sum of [...sums.values()].sort((a, b) => a.sandbox.localeCompare(b.sandbox))) {
    out.push(`sandbox ${sum.sandbox}: ${sum.lines} lines, bytes in ${sum.bytesIn}, out ${sum.bytesOut}`);
    out.push('  hosts (allow / deny / would-deny):');
    const hosts = [...sum.hosts].sort((a, b) => a[0].localeCompare(b[0]));
    const w = Math.max(0, ...hosts.map(([h]) => h.length));
    for (const [h, t] of hosts) out.push(`    ${h.padEnd(w)}  ${t.allow} / ${t.deny} / ${t.wouldDeny}`);
    if (hosts.length === 0) out.push('    (none)');
    out.push('  denials:');
    for (const [r, n] of byCount(sum.denials)) out.push(`    ${String(n).padStart(6)}  ${r}`);
    if (sum.denials.size === 0) out.push('    (none)');
    out.push('  credentials injected:');
    for (const [c, n] of byCount(sum.credentials)) out.push(`    ${String(n).padStart(6)}  ${c}`);
    if (sum.credentials.size === 0) out.push('    (none)');
  }
  return `${out.map(printable).join('\n')}\n`;
}

/** The summary as plain JSON (for --summary --json). */
export function summaryJson(sums: ReadonlyMap<string, SandboxSummary>): unknown {
  return [...sums.values()].map((s) => ({
    sandbox: s.sandbox,
    lines: s.lines,
    bytesIn: s.bytesIn,
    bytesOut: s.bytesOut,
    hosts: Object.fromEntries(s.hosts),
    denials: Object.fromEntries(s.denials),
    credentials: Object.fromEntries(s.credentials),
  }));
}
