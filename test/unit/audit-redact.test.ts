import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createAudit, createLineAudit, flatLine, type AuditFields } from '../../src/audit/logger.js';

/**
 * Writes lines through createAudit to a file and returns them parsed once `count` whole lines are
 * there (pino writes asynchronously; a loaded machine may take a while: waits up to 10 s).
 */
async function lines(count: number, write: (a: ReturnType<typeof createAudit>) => void): Promise<Record<string, unknown>[]> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-audit-'));
  try {
    const file = join(dir, 'audit.log');
    const a = createAudit(file);
    write(a);
    const whole = (): string[] => {
      let text = '';
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        /* not created yet */
      }
      return text.split('\n').slice(0, -1);
    };
    for (const deadline = Date.now() + 10_000; whole().length < count && Date.now() < deadline; ) {
      a.flush();
      await new Promise((r) => setTimeout(r, 20));
    }
    return whole().map((l) => JSON.parse(l) as Record<string, unknown>);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('flat lines are written unchanged and in order; sensitive keys and nested objects are still redacted', async (t) => {
  const out = await lines(6, (a) => {
    a.write({ event: 'http', host: 'api.example.test', status: 200, bytesIn: 17 });
    a.write({ event: 'http', token: 'sk-live-123', host: 'x' });
    a.write({ event: 'http', headers: { authorization: 'Bearer sk-live-456', accept: '*/*' } });
    a.write({ event: 'http', extra: { secret: 'sk-live-789', ok: 1 } });
    a.write({ event: 'conn', decision: 'allow', password: 'hunter2' });
    a.write({ event: 'close', bytesIn: 1 });
  });
  t.is(out.length, 6);
  t.like(out[0], { level: 'info', event: 'http', host: 'api.example.test', status: 200, bytesIn: 17 });
  t.is(typeof out[0]?.time, 'string');
  t.is(out[1]?.token, '[redacted]');
  t.deepEqual(out[2]?.headers, { authorization: '[redacted]', accept: '*/*' });
  t.deepEqual(out[3]?.extra, { secret: '[redacted]', ok: 1 });
  t.is(out[4]?.password, '[redacted]');
  t.is(out[5]?.event, 'close');
  t.false(JSON.stringify(out).includes('sk-live'));
  t.false(JSON.stringify(out).includes('hunter2'));
});

/** pino's own line for `fields` (the options auditOn gives it), with the time masked. */
function pinoLine(fields: AuditFields, base: Record<string, unknown> | undefined): string {
  let line = '';
  const logger = pino(
    { base, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg', formatters: { level: (label: string) => ({ level: label }) }, level: 'info' },
    {
      write: (s: string) => {
        line = s;
      },
    },
  );
  logger.info(fields);
  return maskTime(line);
}

const maskTime = (line: string): string => line.replace(/"time":"[^"]*"/, '"time":"T"');

const FLAT_LINES: AuditFields[] = [
  {
    event: 'http',
    sandbox: 'a',
    src: '10.0.0.2:5000',
    dst: '10.0.0.1:443',
    proto: 'tls',
    method: 'GET',
    path: '/x?y=1',
    status: 200,
    bytesIn: 17,
    ms: 0.123456,
  },
  { event: 'http', host: undefined, decision: 'deny', reason: 'quote " backslash \\ tab \t nl \n nul \u0000 é 日本 😀', status: 403 },
  { event: 'conn', decision: 'allow', ms: Number.NaN, bytesOut: Number.POSITIVE_INFINITY, websocket: true, retried: false, extra: null },
  { event: 'close', bytesIn: -0, bytesOut: 1e21, ms: 5e-7 },
];

test('flatLine builds the line pino builds, byte for byte (time apart), with and without fixed fields', (t) => {
  for (const f of FLAT_LINES) {
    t.is(maskTime(flatLine(f, '') ?? ''), pinoLine(f, undefined));
    t.is(maskTime(flatLine(f, ',"worker":3') ?? ''), pinoLine(f, { worker: 3 }));
  }
  // Through a worker's audit (createLineAudit), its base fields included.
  const got: string[] = [];
  const a = createLineAudit('info', { worker: 3 }, (l) => got.push(l));
  for (const f of FLAT_LINES) a.write(f);
  t.deepEqual(
    got.map(maskTime),
    FLAT_LINES.map((f) => pinoLine(f, { worker: 3 })),
  );
});

test('flatLine leaves to pino (and its redactor) every line with a nested value or a key a redact path names', (t) => {
  t.is(flatLine({ event: 'http', token: 'sk-live-1' }, ''), undefined);
  t.is(flatLine({ event: 'http', password: 7 }, ''), undefined);
  t.is(flatLine({ event: 'http', headers: { accept: '*/*' } }, ''), undefined);
  t.is(flatLine({ event: 'http', list: ['a'] }, ''), undefined);
  // An absent sensitive key changes nothing: pino omits undefined values too.
  t.is(maskTime(flatLine({ event: 'http', token: undefined }, '') ?? ''), pinoLine({ event: 'http' }, undefined));
});
