/**
 * `sandgate audit [FILE]`: the I/O shell around src/audit/query.ts. Reads FILE (or stdin), or
 * follows FILE (-f) across rotation and truncation (src/audit/follow.ts); prints a table, the
 * matching lines unchanged (--json) or a per-sandbox summary. Exit 2 for bad flags or an
 * unreadable file; malformed lines are counted on stderr, never fatal.
 */
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { eachLine, unreadable } from './log-input.js';
import { Follower } from '../audit/follow.js';
import {
  COLUMNS,
  DECISIONS,
  EVENTS,
  hostGlob,
  matches,
  parseLine,
  parseTimeArg,
  renderRows,
  renderSummary,
  rowOf,
  summarise,
  summaryJson,
  type AuditFilter,
  type DecisionName,
  type SandboxSummary,
} from '../audit/query.js';

export const AUDIT_USAGE = `usage: sandgate audit [FILE | -] [filters] [--json | --summary] [-f]

  FILE (or - / nothing: stdin) is sandgate's JSON audit log (log.file).
  filters (all must hold; a comma list or a repeated flag is any-of):
    --sandbox NAME    --user NAME    --host GLOB (* any characters, ? one)
    --decision allow|deny|would-deny    --event ${EVENTS.join('|')}
    --since T, --until T   T: 30s, 10m, 2h, 7d before now, or ISO 8601 (2026-11-28T23:12:01Z)
  --json      the matching lines, unchanged (one JSON object a line)
  --summary   per sandbox: hosts and decisions, denials by reason, bytes in/out, credentials
              (with --json: the same as one JSON document)
  -f          follow FILE like tail -F (from its first line; across rotation and truncation)
              until interrupted
`;

/**
 * `sandgate audit ... | head`: once the reader is gone, stop quietly (as grep does) instead of
 * dying with an EPIPE stack trace.
 */
export function exitQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

function bad(message: string): never {
  throw new SandgateError(`audit: ${message}\n${AUDIT_USAGE}`, 'USAGE');
}

const list = (v: string[] | undefined): string[] | undefined =>
  v === undefined
    ? undefined
    : v
        .flatMap((x) => x.split(','))
        .map((x) => x.trim())
        .filter((x) => x !== '');

export interface AuditOptions {
  readonly file: string | undefined;
  readonly filter: AuditFilter;
  /** summary-json: --summary --json, the summary as one JSON document. */
  readonly output: 'table' | 'json' | 'summary' | 'summary-json';
  readonly follow: boolean;
}

/** argv -> options; throws USAGE (exit 2) with the reason. `now` anchors --since/--until durations. */
export function parseAuditArgs(args: string[], now: number): AuditOptions {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        sandbox: { type: 'string', multiple: true },
        user: { type: 'string', multiple: true },
        host: { type: 'string', multiple: true },
        decision: { type: 'string', multiple: true },
        event: { type: 'string', multiple: true },
        since: { type: 'string' },
        until: { type: 'string' },
        json: { type: 'boolean' },
        summary: { type: 'boolean' },
        follow: { type: 'boolean', short: 'f' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    bad((err as Error).message);
  }
  if (positionals.length > 1) bad(`one FILE at most, got ${positionals.length}`);
  const file = positionals[0] === '-' ? undefined : positionals[0];
  const decisions = list(values.decision);
  for (const d of decisions ?? []) if (!(DECISIONS as readonly string[]).includes(d)) bad(`--decision must be one of ${DECISIONS.join(', ')}, got "${d}"`);
  const events = list(values.event);
  for (const e of events ?? []) if (!EVENTS.includes(e)) bad(`--event must be one of ${EVENTS.join(', ')}, got "${e}"`);
  const time = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const t = parseTimeArg(v, now);
    if (t === undefined) bad(`--${flag} needs a duration (30s, 10m, 2h, 7d) or an ISO 8601 time, got "${v}"`);
    return t;
  };
  const hosts = list(values.host);
  const sandboxes = list(values.sandbox);
  const users = list(values.user);
  const filter: AuditFilter = {
    ...(sandboxes ? { sandboxes } : {}),
    ...(users ? { users } : {}),
    ...(hosts ? { hosts: hosts.map(hostGlob) } : {}),
    ...(decisions ? { decisions: decisions as DecisionName[] } : {}),
    ...(events ? { events } : {}),
    ...(values.since !== undefined ? { since: time('since', values.since) as number } : {}),
    ...(values.until !== undefined ? { until: time('until', values.until) as number } : {}),
  };
  if (values.follow === true && file === undefined) bad('-f needs a FILE (stdin cannot be followed across rotation)');
  if (values.follow === true && values.summary === true) bad('-f and --summary: a summary needs the end of the input');
  const output = values.summary === true ? (values.json === true ? 'summary-json' : 'summary') : values.json === true ? 'json' : 'table';
  return { file, filter, output, follow: values.follow === true };
}

/** Table rows that set the column widths before the rest streams. */
const TABLE_SAMPLE = 1000;

/** Counts what was read, for the closing stderr line. */
interface Tally {
  read: number;
  malformed: number;
  firstMalformed: number | undefined;
}

export async function cmdAudit(args: string[]): Promise<number | undefined> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(AUDIT_USAGE);
    return 0;
  }
  const opts = parseAuditArgs(args, Date.now());
  exitQuietlyOnClosedStdout();
  if (opts.file === undefined && opts.follow === false && process.stdin.isTTY === true) bad('give a FILE, or pipe the log on stdin');
  // Fail before any output: a missing or unreadable file is bad input (exit 2), not a runtime error.
  const cannot = opts.file !== undefined ? unreadable(opts.file) : undefined;
  if (cannot !== undefined) bad(cannot);
  const tally: Tally = { read: 0, malformed: 0, firstMalformed: undefined };
  const sums = new Map<string, SandboxSummary>();
  const widths: number[] = [];
  let headerDone = false;
  const out = (text: string): void => {
    process.stdout.write(text);
  };
  const onLine = (text: string): void => {
    tally.read++;
    const p = parseLine(text);
    if (!p.ok) {
      if (!p.empty) {
        tally.malformed++;
        tally.firstMalformed ??= tally.read;
        if (opts.follow) process.stderr.write(`sandgate audit: line ${tally.read} is not an audit line (skipped)\n`);
      }
      return;
    }
    if (!matches(opts.filter, p.line)) return;
    switch (opts.output) {
      case 'json':
        out(`${p.line.text}\n`);
        return;
      case 'summary':
      case 'summary-json':
        summarise(sums, p.line.fields);
        return;
      case 'table':
        if (headerDone) {
          out(renderRows([rowOf(p.line.fields)], widths));
          return;
        }
        if (opts.follow) {
          // Followed: fixed starting widths, so early rows need not wait for the widest one.
          widths.push(24, 6, 10, 8, 10, 28, 5, 24, 6);
          out(renderRows([[...COLUMNS]], widths));
          headerDone = true;
          out(renderRows([rowOf(p.line.fields)], widths));
          return;
        }
        // Read once: the first TABLE_SAMPLE rows set the widths, then rows stream (a log of any
        // size in bounded memory; a wider cell later widens its column from that row on).
        rows.push(rowOf(p.line.fields));
        if (rows.length >= TABLE_SAMPLE) {
          out(renderRows([[...COLUMNS], ...rows.splice(0)], widths));
          headerDone = true;
        }
        return;
      default: {
        const never: never = opts.output;
        return never;
      }
    }
  };
  const rows: string[][] = [];

  if (opts.follow && opts.file !== undefined) {
    const file = opts.file;
    let follower: Follower;
    try {
      follower = new Follower(file, { line: onLine, notice: (m) => process.stderr.write(`sandgate audit: ${m}\n`) });
    } catch (err) {
      bad(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const stop = (): void => {
      follower.stop();
      reportMalformed(tally);
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    follower.start();
    return undefined;
  }

  await eachLine('audit', opts.file, onLine);
  if (opts.output === 'table' && !headerDone) out(renderRows([[...COLUMNS], ...rows], widths));
  if (opts.output === 'summary') out(renderSummary(sums));
  if (opts.output === 'summary-json') out(`${JSON.stringify(summaryJson(sums), null, 2)}\n`);
  reportMalformed(tally);
  return 0;
}

function reportMalformed(t: Tally): void {
  if (t.malformed > 0)
    process.stderr.write(
      `sandgate audit: ${t.malformed} of ${t.read} lines are not audit lines (JSON objects with an "event"), skipped; the first is line ${t.firstMalformed}\n`,
    );
}
