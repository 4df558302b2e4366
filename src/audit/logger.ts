import pino, { type Logger } from 'pino';

export type AuditEvent = 'ready' | 'conn' | 'close' | 'http' | 'dns' | 'packet' | 'config' | 'error' | 'stop';
export type Decision = 'allow' | 'deny' | 'would-deny';

/** The audit line's fields (shared/contract.md); every key optional but `event`. */
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
  write(fields: AuditFields): void;
  flush(): void;
  readonly logger: Logger;
}

/**
 * Header and token fields are redacted by pino wherever they would appear, as a second line of
 * defence: the code never puts a secret into an audit line in the first place.
 */
const REDACT = [
  'headers.authorization', 'headers["proxy-authorization"]', 'headers.cookie', 'headers["x-api-key"]',
  'authorization', 'token', 'secret', 'password', '*.authorization', '*.token', '*.secret', '*.password',
];
/** The REDACT paths that name a top-level key; every other path reaches into a nested object. */
const TOP_LEVEL_REDACT = new Set(REDACT.filter((p) => /^[A-Za-z_$][\w$]*$/.test(p)));

/**
 * Whether redaction could change this line: only if it has a nested object or a top-level key a
 * REDACT path names. Audit lines are flat, so the hot path (one line per request) skips the
 * redactor (about 5 µs a line here, measured by the bench) only where it would be a no-op.
 */
function mayNeedRedaction(fields: AuditFields): boolean {
  for (const k in fields) {
    const v = fields[k];
    if ((typeof v === 'object' && v !== null) || TOP_LEVEL_REDACT.has(k)) return true;
  }
  return false;
}

/** The daemon's audit: also takes whole lines formatted elsewhere (a worker's, see createLineAudit). */
export interface PrimaryAudit extends Audit {
  /** Appends `text`, one or more complete JSON lines each ending in "\n", to the same destination. */
  raw(text: string): void;
  /** Resolves once the destination is open and every line written so far is on it (before an early exit). */
  settle(): Promise<void>;
}

export function createAudit(file: string | undefined, level = 'info'): PrimaryAudit {
  const dest = file
    ? pino.destination({ dest: file, mkdir: true, sync: false, minLength: 0 })
    : pino.destination({ dest: 1, sync: false, minLength: 0 });
  const batch = new LineBatch((text) => { dest.write(text); });
  const audit = auditOn(batch, level, undefined);
  const flush = (): void => {
    batch.flush();
    try { dest.flushSync(); } catch { /* not yet open, already closed, or a write in flight */ }
  };
  // Whatever way the process ends (a startup failure exits at once), waiting lines are written.
  process.once('exit', flush);
  // A file opens asynchronously; until it has, flushSync throws (and pino's own exit hook with
  // it). A start-up failure waits for this before the process exits.
  let opened: Promise<void> | undefined;
  const open = (): Promise<void> => {
    opened ??= (dest as unknown as { fd: number }).fd >= 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => { dest.once('ready', () => resolve()); dest.once('error', () => resolve()); });
    return opened;
  };
  return {
    ...audit,
    async settle() {
      await open();
      flush();
    },
    // One writer (this process) appends to one buffer: a worker's lines land between ours, never inside one.
    raw(text) { batch.write(text); },
    flush,
  };
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
    const text = this.#lines.length === 1 ? this.#lines[0] as string : this.#lines.join('');
    this.#lines = [];
    this.#out(text);
  }
}

/**
 * An audit whose lines (formatted exactly as createAudit's, plus the `base` fields) go to `out`
 * instead of a file: a worker process hands them to the primary, the one writer of the audit
 * stream (src/cluster/worker.ts).
 */
export function createLineAudit(level: string, base: Record<string, unknown>, out: (line: string) => void): Audit {
  return auditOn({ write: (s: string) => { out(s); return true; } }, level, base);
}

function auditOn(dest: pino.DestinationStream, level: string, base: Record<string, unknown> | undefined): Audit {
  const options = {
    level,
    base,
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const logger = pino({ ...options, redact: { paths: REDACT, censor: '[redacted]' } }, dest);
  // Same options and destination, no redactor: lines stay in order (both append to one buffer).
  const flat = pino(options, dest);
  return {
    logger,
    write(fields) {
      (mayNeedRedaction(fields) ? logger : flat).info(fields);
    },
    flush() { /* the destination's owner flushes */ },
  };
}
