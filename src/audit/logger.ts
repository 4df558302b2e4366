import pino, { type Logger } from 'pino';

export type AuditEvent =
  | 'ready'
  | 'conn'
  | 'close'
  | 'http'
  | 'dns'
  | 'packet'
  | 'metadata'
  | 'config'
  | 'error'
  | 'stop'
  | 'approval'
  | 'tripwire'
  | 'quarantine';
export type Decision = 'allow' | 'deny' | 'would-deny';

/** The audit line's fields (docs/operations.md); every key optional but `event`. */
export interface AuditFields {
  event: AuditEvent;
  decision?: Decision;
  sandbox?: string;
  user?: string;
  src?: string;
  dst?: string;
  host?: string;
  /** `packet` lines add icmpv6, sctp, and ip (any other IP protocol, number in `ipProto`). */
  proto?: 'tls' | 'http' | 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'sctp' | 'ip' | 'dns';
  reason?: string;
  rule?: string;
  method?: string;
  path?: string;
  status?: number;
  credential?: string;
  bytesIn?: number;
  bytesOut?: number;
  ms?: number;
  [extra: string]: unknown;
}

export interface Audit {
  /**
   * Writes one line. Audit lines (every decision, config change, ready, stop) are always written
   * at level `info`, whatever `log.level` says; operational ones (operationalLevel()) carry their
   * own level, are written only when `log.level` lets that level through, and with a log file
   * also go to stderr.
   */
  write(fields: AuditFields): void;
  flush(): void;
  /** The operational logger (honours `log.level`). */
  readonly logger: Logger;
}

export type OperationalLevel = 'error' | 'warn';

/**
 * Which lines are operational messages rather than audit records, and at which level: a handler
 * failure or a problem the daemon reports about itself (`error`), a rejected reload (`warn`).
 * Everything else is the audit trail, which a log level must never silence.
 */
export function operationalLevel(fields: AuditFields): OperationalLevel | undefined {
  if (fields.event === 'error') return 'error';
  if (fields.event === 'config' && fields.action === 'rejected') return 'warn';
  return undefined;
}

/** Called with every line as it is written (metrics count from the same objects the log holds). */
export type AuditObserver = (fields: AuditFields) => void;

/**
 * Header and token fields are redacted by pino wherever they would appear, as a second line of
 * defence: the code never puts a secret into an audit line in the first place.
 */
const REDACT = [
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers.cookie',
  'headers["x-api-key"]',
  'authorization',
  'token',
  'secret',
  'password',
  '*.authorization',
  '*.token',
  '*.secret',
  '*.password',
];
/** The REDACT paths that name a top-level key; every other path reaches into a nested object. */
const TOP_LEVEL_REDACT = new Set(REDACT.filter((p) => /^[A-Za-z_$][\w$]*$/.test(p)));

/** `,"key":` for each key seen: keys come from the code (a handful of names), escaped once. */
const keyPrefixes = new Map<string, string>();

function keyPrefix(k: string): string {
  let p = keyPrefixes.get(k);
  if (p === undefined) {
    p = `,${JSON.stringify(k)}:`;
    // Bounded: a field name is never taken from traffic, but a cache must not be able to grow.
    if (keyPrefixes.size < 1024) keyPrefixes.set(k, p);
  }
  return p;
}

/** pino's isoTime, computed once per millisecond (a busy gate writes several lines in one). */
let timeMs = -1;
let timeField = '';

function timeNow(): string {
  const now = Date.now();
  if (now !== timeMs) {
    timeMs = now;
    timeField = `,"time":"${new Date(now).toISOString()}"`;
  }
  return timeField;
}

/**
 * The line pino writes for a flat `fields` at level info, built directly: `{"level":"info",
 * "time":…` then the logger's fixed fields (`chindings`), then each field whose value is not
 * undefined, in order (strings JSON-escaped, non-finite numbers as null). Undefined when the line
 * needs pino: a value that is an object or of another type, or a key a REDACT path names (the
 * redactor must see it). test/unit/audit-redact.test.ts checks it against pino's own output.
 * Building it here takes pino's generic per-key dispatch off the one-line-per-request path.
 */
export function flatLine(fields: AuditFields, chindings: string): string | undefined {
  let out = `{"level":"info"${timeNow()}${chindings}`;
  for (const k in fields) {
    const v = fields[k];
    switch (typeof v) {
      case 'undefined':
        continue;
      case 'string':
        if (TOP_LEVEL_REDACT.has(k)) return undefined;
        out += keyPrefix(k) + JSON.stringify(v);
        continue;
      case 'number':
        if (TOP_LEVEL_REDACT.has(k)) return undefined;
        out += keyPrefix(k) + (Number.isFinite(v) ? String(v) : 'null');
        continue;
      case 'boolean':
        if (TOP_LEVEL_REDACT.has(k)) return undefined;
        out += keyPrefix(k) + (v ? 'true' : 'false');
        continue;
      default:
        if (v === null && !TOP_LEVEL_REDACT.has(k)) {
          out += `${keyPrefix(k)}null`;
          continue;
        }
        return undefined;
    }
  }
  return `${out}}\n`;
}

/** The daemon's audit: also takes whole lines formatted elsewhere (a worker's, see createLineAudit). */
export interface PrimaryAudit extends Audit {
  /** Appends `text`, one or more complete JSON lines each ending in "\n", to the same destination. */
  raw(text: string): void;
  /**
   * Reopens `log.file` at its path (after logrotate renamed it; SIGUSR1): lines waiting in the
   * batch go to the old file first, nothing is lost. A no-op when the log is stdout.
   */
  reopen(): void;
  /** Sets the one observer of every line written (own and workers'); undefined removes it. */
  observe(fn: AuditObserver | undefined): void;
  /**
   * Sets the one tap of the written text: each of this process's lines exactly as formatted, and
   * each batch of a worker's lines as received (complete lines); undefined removes it. The control
   * API's `/events` sets it only while someone subscribes.
   */
  tap(fn: ((text: string) => void) | undefined): void;
  /** Resolves once the destination is open and every line written so far is on it (before an early exit). */
  settle(): Promise<void>;
  /**
   * Writes a line like write(), but never mirrors it to stderr: for the start-up failure, whose
   * message the CLI prints to stderr itself (one line there, not two).
   */
  writeLogOnly(fields: AuditFields): void;
}

export function createAudit(file: string | undefined, level = 'info'): PrimaryAudit {
  const dest = file ? pino.destination({ dest: file, mkdir: true, sync: false, minLength: 0 }) : pino.destination({ dest: 1, sync: false, minLength: 0 });
  const batch = new LineBatch((text) => {
    dest.write(text);
  });
  let observer: AuditObserver | undefined;
  let tap: ((text: string) => void) | undefined;
  // Every line of this process passes here on its way to the batch, formatted as it is written.
  const tapped: pino.DestinationStream = {
    write(line: string) {
      tap?.(line);
      return batch.write(line);
    },
  };
  const audit = auditOn(tapped, level, undefined, { stderr: file !== undefined, observe: (f) => observer?.(f) });
  const logOnly = file !== undefined ? auditOn(tapped, level, undefined, { stderr: false, observe: (f) => observer?.(f) }) : audit;
  const flush = (): void => {
    batch.flush();
    try {
      dest.flushSync();
    } catch {
      /* not yet open, already closed, or a write in flight */
    }
  };
  // Whatever way the process ends (a startup failure exits at once), waiting lines are written.
  process.once('exit', flush);
  // A file opens asynchronously; until it has, flushSync throws (and pino's own exit hook with
  // it). A start-up failure waits for this before the process exits.
  let opened: Promise<void> | undefined;
  const open = (): Promise<void> => {
    opened ??=
      (dest as unknown as { fd: number }).fd >= 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            dest.once('ready', () => resolve());
            dest.once('error', () => resolve());
          });
    return opened;
  };
  return {
    ...audit,
    async settle() {
      await open();
      flush();
    },
    // One writer (this process) appends to one buffer: a worker's lines land between ours, never inside one.
    raw(text) {
      batch.write(text);
      tap?.(text);
      if (observer) observeText(text, observer);
    },
    flush,
    reopen() {
      if (file === undefined) return;
      // What the batch holds was written before the rename: it belongs in the old file. A write
      // still in flight finishes there too (sonic-boom reopens once it completes, buffering meanwhile).
      batch.flush();
      dest.reopen();
    },
    observe(fn) {
      observer = fn;
    },
    tap(fn) {
      tap = fn;
    },
    writeLogOnly(fields) {
      logOnly.write(fields);
    },
  };
}

/** A worker's lines, as the primary receives them, back into objects for the observer. */
function observeText(text: string, fn: AuditObserver): void {
  let start = 0;
  for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
    const line = text.slice(start, nl);
    start = nl + 1;
    try {
      fn(JSON.parse(line) as AuditFields);
    } catch {
      /* not a JSON line: nothing to count */
    }
  }
}

/**
 * Lines go to the destination in batches: one write every BATCH_MS (or as soon as 64 KiB are
 * waiting), in order. Each write to the file is a thread-pool round trip, and waking a pool
 * thread costs more than formatting the line: written one by one, the lines of a busy gate were
 * a fifth of its CPU per new connection (docs/performance.md). A line waits at most BATCH_MS;
 * a stop flushes what is waiting (flush()).
 */
const BATCH_MS = 10;
const BATCH_BYTES = 64 * 1024;

class LineBatch implements pino.DestinationStream {
  #lines: string[] = [];
  #bytes = 0;
  #scheduled = false;
  readonly #out: (text: string) => void;

  constructor(out: (text: string) => void) {
    this.#out = out;
  }

  write(line: string): boolean {
    this.#lines.push(line);
    this.#bytes += line.length;
    if (this.#bytes >= BATCH_BYTES) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      // Unref'd: a waiting batch never keeps the process alive; stop() flushes it.
      setTimeout(this.#flushLater, BATCH_MS).unref();
    }
    return true;
  }

  readonly #flushLater = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  flush(): void {
    if (this.#lines.length === 0) return;
    this.#bytes = 0;
    const text = this.#lines.length === 1 ? (this.#lines[0] as string) : this.#lines.join('');
    this.#lines = [];
    this.#out(text);
  }
}

/**
 * An audit whose lines (formatted exactly as createAudit's, plus the `base` fields) go to `out`
 * instead of a file: a worker process hands them to the primary, the one writer of the audit
 * stream (src/cluster/worker.ts). `stderr`: operational lines also go to this process's stderr
 * (a worker inherits the primary's).
 */
export function createLineAudit(level: string, base: Record<string, unknown>, out: (line: string) => void, opts: { stderr?: boolean } = {}): Audit {
  return auditOn(
    {
      write: (s: string) => {
        out(s);
        return true;
      },
    },
    level,
    base,
    { stderr: opts.stderr === true },
  );
}

interface AuditOnOptions {
  /** Operational lines also go to stderr (the log itself is a file). */
  readonly stderr: boolean;
  readonly observe?: AuditObserver;
}

function auditOn(dest: pino.DestinationStream, level: string, base: Record<string, unknown> | undefined, opts: AuditOnOptions): Audit {
  const options = {
    base,
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const redact = { paths: REDACT, censor: '[redacted]' };
  // Audit lines: level `info`, always written (log.level governs operational lines only).
  const logger = pino({ ...options, level: 'info', redact }, dest);
  // Lines that need no redaction are built by flatLine() with this logger's fixed fields, and
  // go to the same destination: lines stay in order (both append to one buffer).
  const chindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
  // Operational lines: log.level applies; with a log file, each also goes to stderr, where
  // systemd's journal (or whoever started sandgate) sees it.
  const opsDest: pino.DestinationStream = opts.stderr
    ? {
        write: (s: string) => {
          dest.write(s);
          process.stderr.write(s);
        },
      }
    : dest;
  const ops = pino({ ...options, level, redact }, opsDest);
  return {
    logger: ops,
    write(fields) {
      // Counted whether or not log.level lets an operational line through.
      opts.observe?.(fields);
      const op = operationalLevel(fields);
      if (op === undefined) {
        const line = flatLine(fields, chindings);
        if (line !== undefined) dest.write(line);
        else logger.info(fields);
      } else if (ops.isLevelEnabled(op)) ops[op](fields);
    },
    flush() {
      /* the destination's owner flushes */
    },
  };
}
