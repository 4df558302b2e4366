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
  proto?: 'tls' | 'http' | 'tcp' | 'udp' | 'icmp' | 'dns';
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

export function createAudit(file: string | undefined, level = 'info'): Audit {
  const dest = file
    ? pino.destination({ dest: file, mkdir: true, sync: false, minLength: 0 })
    : pino.destination({ dest: 1, sync: false, minLength: 0 });
  const logger = pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: 'msg',
      redact: { paths: REDACT, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
  return {
    logger,
    write(fields) {
      logger.info(fields);
    },
    flush() {
      try { dest.flushSync(); } catch { /* not yet open or already closed */ }
    },
  };
}
