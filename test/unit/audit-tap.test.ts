import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAudit } from '../../src/audit/logger.js';

test("the tap sees this process's lines exactly as written and a worker's text as received, only while set", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-tap-'));
  try {
    const file = join(dir, 'audit.log');
    const audit = createAudit(file);
    const seen: string[] = [];
    audit.write({ event: 'conn', decision: 'allow', host: 'before.example.test' });
    audit.tap((text) => seen.push(text));
    audit.write({ event: 'conn', decision: 'deny', host: 'during.example.test' });
    const worker = '{"level":"info","time":"2026-12-04T10:00:00.000Z","worker":1,"event":"conn","decision":"allow"}\n';
    audit.raw(worker);
    audit.tap(undefined);
    audit.write({ event: 'conn', decision: 'allow', host: 'after.example.test' });
    await audit.settle();
    const logged = readFileSync(file, 'utf8').split(/(?<=\n)/);
    t.is(logged.length, 4);
    t.deepEqual(seen, [logged[1], worker]);
    t.regex(seen[0] ?? '', /"host":"during\.example\.test"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
