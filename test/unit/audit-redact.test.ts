import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAudit } from '../../src/audit/logger.js';

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
