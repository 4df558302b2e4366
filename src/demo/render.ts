/**
 * Text rendering for `sandgate demo`: colours (only on a terminal), wrapping to the screen width,
 * and the audit log as one-liners and as a summary table. Pure functions: no I/O here.
 */
import type { JsonLine } from './json-lines.js';

export interface Style {
  bold(s: string): string;
  dim(s: string): string;
  green(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
}

/** ANSI SGR colours (ECMA-48 §8.3.117) when enabled, the identity otherwise (CI logs, pipes). */
export function makeStyle(enabled: boolean): Style {
  const sgr =
    (on: number, off: number) =>
    (s: string): string =>
      enabled && s !== '' ? `\x1b[${on}m${s}\x1b[${off}m` : s;
  return { bold: sgr(1, 22), dim: sgr(2, 22), green: sgr(32, 39), red: sgr(31, 39), yellow: sgr(33, 39) };
}

/** Cuts `text` to `width` characters, marking the cut with an ellipsis. */
export function fit(text: string, width: number): string {
  if (width <= 0) return '';
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

/** Word-wraps one paragraph to `width` columns; words longer than a line are split. */
export function wrap(text: string, width: number): string[] {
  const w = Math.max(10, width);
  const out: string[] = [];
  let line = '';
  for (let word of text.split(/\s+/).filter((x) => x !== '')) {
    while (word.length > w) {
      if (line !== '') {
        out.push(line);
        line = '';
      }
      out.push(word.slice(0, w));
      word = word.slice(w);
    }
    if (line === '') line = word;
    else if (line.length + 1 + word.length <= w) line += ` ${word}`;
    else {
      out.push(line);
      line = word;
    }
  }
  if (line !== '' || out.length === 0) out.push(line);
  return out;
}

/** Wraps `text` into lines of `width` columns starting with `indent` (continuations too). */
export function para(text: string, width: number, indent = ''): string[] {
  return wrap(text, width - indent.length).map((l) => indent + l);
}

/* ------------------------------------------------------------------------------------------ */
/* Audit lines                                                                                */
/* ------------------------------------------------------------------------------------------ */

/** Audit lines that carry a verdict (conn, http, dns, packet), as opposed to ready/config/close. */
export function isDecision(line: JsonLine): boolean {
  return typeof line.decision === 'string';
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
}

function ipOf(hostPort: string | undefined): string | undefined {
  if (hostPort === undefined) return undefined;
  const i = hostPort.lastIndexOf(':');
  return i > 0 ? hostPort.slice(0, i) : hostPort;
}

/** "policies.default.allow[0]" reads as "allow[0]": the policy name is in the config shown above. */
function shortRule(rule: string): string {
  const m = /^policies\.[^.]+\.(allow\[\d+\])$/.exec(rule);
  return m?.[1] ?? rule;
}

/** HOST / DST column: the name the decision was about, else the address the sandbox dialled. */
export function target(line: JsonLine): string {
  return str(line.host) ?? str(line.dst) ?? '-';
}

/**
 * REASON / RULE column: why it was denied; for an allowed line, the rule, the HTTP status, and
 * where sandgate actually connected when that differs from what the sandbox dialled.
 */
export function detail(line: JsonLine): string {
  const parts: string[] = [];
  const status = str(line.status);
  if (status !== undefined) parts.push(status);
  const reason = str(line.reason);
  const rule = str(line.rule);
  if (line.decision === 'allow' && rule !== undefined) parts.push(`rule ${shortRule(rule)}`);
  if (reason !== undefined) parts.push(reason);
  const dialled = ipOf(str(line.dst));
  const went = ipOf(str(line.upstream));
  if (dialled !== undefined && went !== undefined && dialled !== went) parts.push(`dialled ${dialled}, sent to ${went}`);
  const error = str(line.error);
  if (error !== undefined) parts.push(`error: ${error}`);
  if (str(line.credential) !== undefined) parts.push(`credential ${str(line.credential) ?? ''}`);
  return parts.join('; ') || '-';
}

/** HH:MM:SS of pino's ISO timestamp (UTC). */
export function clock(line: JsonLine): string {
  const t = str(line.time);
  const m = t === undefined ? null : /T(\d\d:\d\d:\d\d)/.exec(t);
  return m?.[1] ?? '--:--:--';
}

function paintDecision(decision: string, style: Style): (s: string) => string {
  if (decision === 'allow') return style.green;
  if (decision === 'deny') return style.red;
  return style.yellow;
}

/**
 * One audit line as "<decision> <proto> <target>: <detail>", after `lead` on the first line and
 * wrapped with continuation lines indented to the same column.
 */
export function auditOneLiner(line: JsonLine, width: number, style: Style, lead: string): string[] {
  const decision = str(line.decision) ?? '-';
  const rest = ` ${str(line.proto) ?? str(line.event) ?? '-'} ${target(line)}: ${detail(line)}`;
  const pad = ' '.repeat(lead.length);
  const lines = wrap(decision + rest, width - lead.length).map((l, i) => (i === 0 ? lead : pad) + l);
  // Colour only the decision word at the start of the first line.
  const first = lines[0] ?? '';
  lines[0] = lead + paintDecision(decision, style)(decision) + first.slice(lead.length + decision.length);
  return lines;
}

interface Column {
  title: string;
  get(line: JsonLine): string;
  /** Upper bound on the column's width; the last column takes what is left and wraps. */
  max: number;
}

const COLUMNS: Column[] = [
  { title: 'TIME', get: clock, max: 8 },
  { title: 'SANDBOX', get: (l) => str(l.sandbox) ?? '-', max: 12 },
  { title: 'DECISION', get: (l) => str(l.decision) ?? '-', max: 10 },
  { title: 'PROTO', get: (l) => str(l.proto) ?? str(l.event) ?? '-', max: 6 },
  { title: 'HOST / DST', get: target, max: 24 },
  { title: 'REASON / RULE', get: detail, max: Number.POSITIVE_INFINITY },
];

/**
 * The audit summary: one row per decision line, columns sized to their content (within their
 * bounds), the last column wrapped onto continuation lines so nothing runs past `width`.
 */
export function auditTable(lines: readonly JsonLine[], width: number, style: Style, indent = '  '): string[] {
  const rows = lines.map((l) => COLUMNS.map((c) => c.get(l)));
  const fixed = COLUMNS.slice(0, -1).map((c, i) => Math.min(c.max, Math.max(c.title.length, ...rows.map((r) => (r[i] ?? '').length))));
  const lastStart = indent.length + fixed.reduce((a, w) => a + w + 2, 0);
  const lastWidth = Math.max(12, width - lastStart);
  const out: string[] = [];
  const header = COLUMNS.map((c, i) => (i < fixed.length ? c.title.padEnd(fixed[i] ?? 0) : c.title)).join('  ');
  out.push(style.bold(indent + header));
  rows.forEach((row, r) => {
    const cells = fixed.map((w, i) => fit(row[i] ?? '', w).padEnd(w));
    const decision = str(lines[r]?.decision) ?? '-';
    cells[2] = paintDecision(decision, style)(cells[2] ?? '');
    const wrapped = wrap(row[fixed.length] ?? '', lastWidth);
    out.push(indent + cells.join('  ') + '  ' + (wrapped[0] ?? ''));
    for (const more of wrapped.slice(1)) out.push(' '.repeat(lastStart) + more);
  });
  return out;
}
