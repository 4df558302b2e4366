import test from 'ava';
import { createLineAudit, operationalLevel, type AuditFields } from '../../src/audit/logger.js';

/** Lines written through a worker-style audit at `level`, parsed; and what reached stderr. */
function capture(level: string, stderr: boolean, write: (a: ReturnType<typeof createLineAudit>) => void): { lines: Record<string, unknown>[]; err: string } {
  const lines: Record<string, unknown>[] = [];
  let err = '';
  const orig = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    err += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    write(
      createLineAudit(
        level,
        {},
        (l) => {
          for (const s of l.split('\n').filter(Boolean)) lines.push(JSON.parse(s) as Record<string, unknown>);
        },
        { stderr },
      ),
    );
  } finally {
    process.stderr.write = orig;
  }
  return { lines, err };
}

const DECISIONS: AuditFields[] = [
  { event: 'conn', decision: 'allow', host: 'api.example.test' },
  { event: 'conn', decision: 'deny', host: 'evil.example.test', reason: 'evil.example.test:443 is not allowed' },
  { event: 'dns', decision: 'allow', host: 'api.example.test' },
  { event: 'config', action: 'loaded' },
  { event: 'config', action: 'sandbox-rejected', status: 409 },
  { event: 'ready' },
  { event: 'stop' },
];
const FAILURE: AuditFields = { event: 'error', reason: 'connection handler failed: boom' };
const REJECTED: AuditFields = { event: 'config', action: 'rejected', reason: 'sg.yaml:3:5: listen.port: expected a port' };

test('audit lines are written at level info whatever log.level says; operational lines obey it', (t) => {
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace']) {
    const { lines } = capture(level, false, (a) => {
      for (const d of [...DECISIONS, FAILURE, REJECTED]) a.write(d);
    });
    const audit = lines.filter((l) => operationalLevel(l as AuditFields) === undefined);
    t.is(audit.length, DECISIONS.length, `log.level ${level}: every audit line`);
    t.true(audit.every((l) => l.level === 'info'));
    const ops = lines.filter((l) => operationalLevel(l as AuditFields) !== undefined).map((l) => `${String(l.event)}:${String(l.level)}`);
    const want = level === 'fatal' ? [] : level === 'error' ? ['error:error'] : ['error:error', 'config:warn'];
    t.deepEqual(ops, want, `log.level ${level}`);
  }
});

test('with a log file, operational lines also go to stderr (audit lines do not); without, stderr stays quiet', (t) => {
  const withFile = capture('info', true, (a) => {
    for (const d of [...DECISIONS, FAILURE, REJECTED]) a.write(d);
  });
  const errLines = withFile.err
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(
    errLines.map((l) => [l.event, l.level, l.reason]),
    [
      ['error', 'error', FAILURE.reason],
      ['config', 'warn', REJECTED.reason],
    ],
  );
  t.is(withFile.lines.length, DECISIONS.length + 2, 'and into the log as well');
  const quiet = capture('warn', true, (a) => {
    a.write(FAILURE);
    a.write(DECISIONS[0]!);
  });
  t.is(quiet.err.split('\n').filter(Boolean).length, 1);
  t.is(
    capture('info', false, (a) => {
      a.write(FAILURE);
    }).err,
    '',
  );
  t.is(
    capture('fatal', true, (a) => {
      a.write(FAILURE);
    }).err,
    '',
    'log.level fatal: not even on stderr',
  );
});
