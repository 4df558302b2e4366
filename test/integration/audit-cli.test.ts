/**
 * `sandgate audit` and `sandgate suggest` as operators run them: `node dist/cli.js` on files and
 * stdin; exit codes; malformed lines counted on stderr; `audit -f` following a log across a
 * rotation by rename (logrotate, then sandgate's SIGUSR1 reopen) and a truncation
 * (copytruncate). Files only: no namespace, no network.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../helpers/gate.js';

/** A hang detector, not a speed limit. */
const HANG_MS = 60_000;
let dir: string;

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-audit-'));
});
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], stdin?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: HANG_MS }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

const line = (o: Record<string, unknown>): string => `${JSON.stringify({ level: 'info', time: new Date().toISOString(), ...o })}\n`;
const conn = (host: string, decision = 'allow'): string =>
  line({ event: 'conn', sandbox: 'agent', user: 'alice', src: '10.77.1.2:40000', dst: '10.77.2.2:443', decision, proto: 'tls', host });

test('audit: filters, --json prints the matching lines unchanged, stdin works, malformed lines are counted on stderr (exit 0)', async (t) => {
  const file = join(dir, 'a.log');
  const text = `${conn('api.example.test')}not json\n${conn('evil.example.test', 'deny')}{"event":\n${line({ event: 'ready' })}`;
  writeFileSync(file, text);
  const r = await run(['audit', file, '--decision', 'deny', '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, text.split('\n')[2] + '\n');
  t.regex(r.stderr, /2 of 5 lines are not audit lines .* skipped; the first is line 2/);
  const s = await run(['audit', '--host', 'api.*', '--event', 'conn'], text);
  t.is(s.code, 0, s.stderr);
  t.regex(s.stdout, /^TIME +EVENT +SANDBOX +USER +DECISION +HOST +PORT/);
  t.regex(s.stdout, /conn +agent +alice +allow +api\.example\.test +443/);
  t.notRegex(s.stdout, /evil/);
});

test('audit and suggest: bad flags and unreadable files exit 2 with one clear line', async (t) => {
  const file = join(dir, 'b.log');
  writeFileSync(file, conn('api.example.test'));
  const cases: [string[], RegExp][] = [
    [['audit', join(dir, 'missing.log')], /^sandgate: audit: cannot read .*missing\.log \(ENOENT\)$/m],
    [['audit', dir], /^sandgate: audit: cannot read .* \(EISDIR\)$/m],
    [['audit', file, '--bogus'], /^sandgate: audit: Unknown option '--bogus'/m],
    [['audit', file, '--decision', 'maybe'], /--decision must be one of allow, deny, would-deny, got "maybe"/],
    [['audit', file, '--since', 'yesterday'], /--since needs a duration .* got "yesterday"/],
    [['audit', file, '--event', 'nope'], /--event must be one of/],
    [['audit', '-f'], /-f needs a FILE/],
    [['suggest', join(dir, 'missing.log')], /^sandgate: suggest: cannot read .*missing\.log \(ENOENT\)$/m],
    [['suggest', file, '--wildcard-min', 'x'], /--wildcard-min needs a whole number/],
    [['suggest', file, '--diff', join(dir, 'missing.yaml')], /cannot read config file \(ENOENT\)/],
  ];
  for (const [args, re] of cases) {
    const r = await run(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re, args.join(' '));
    t.is(r.stdout, '', args.join(' '));
  }
});

test('audit -f: follows the log across a rename-and-recreate rotation and a truncation', async (t) => {
  const file = join(dir, 'follow.log');
  writeFileSync(file, conn('one.example.test'));
  const child = spawn(process.execPath, [CLI, 'audit', '-f', file, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hang = setTimeout(() => child.kill('SIGKILL'), HANG_MS);
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    for (const w of waiters.splice(0)) w();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    for (const w of waiters.splice(0)) w();
  });
  child.once('exit', () => {
    for (const w of waiters.splice(0)) w();
  });
  const until = async (pred: () => boolean, what: string): Promise<void> => {
    while (!pred()) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`audit -f exited (${child.exitCode ?? child.signalCode}) waiting for ${what}: ${err}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  const hosts = (): string[] =>
    out
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l).host as string);
  try {
    await until(() => hosts().length === 1, 'the first line');
    appendFileSync(file, conn('two.example.test'));
    await until(() => hosts().length === 2, 'an appended line');
    // Rotation: the file is renamed, a line still lands in the renamed file (written before the
    // writer reopened), then the writer creates a new file at the path.
    renameSync(file, `${file}.1`);
    appendFileSync(`${file}.1`, conn('three.example.test'));
    writeFileSync(file, conn('four.example.test'));
    await until(() => hosts().length === 4, 'the lines around the rotation');
    await until(() => err.includes('was replaced (rotated)'), 'the rotation notice');
    appendFileSync(file, conn('five.example.test'));
    await until(() => hosts().length === 5, 'a line in the new file');
    // copytruncate: the same file emptied, then written again from its start.
    truncateSync(file, 0);
    await until(() => err.includes('was truncated'), 'the truncation notice');
    appendFileSync(file, `garbage\n${conn('six.example.test')}`);
    await until(() => hosts().length === 6, 'a line after the truncation');
    t.deepEqual(
      hosts(),
      ['one', 'two', 'three', 'four', 'five', 'six'].map((h) => `${h}.example.test`),
    );
    await until(() => err.includes('is not an audit line'), 'the malformed line on stderr');
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    t.is(await exited, 0);
    t.regex(err, /1 of 7 lines are not audit lines/);
  } finally {
    clearTimeout(hang);
    child.kill('SIGKILL');
  }
});

test('audit | head: a reader that goes away ends audit quietly (exit 0, no stack trace)', async (t) => {
  const file = join(dir, 'many.log');
  writeFileSync(file, conn('api.example.test').repeat(20_000));
  const child = spawn(process.execPath, [CLI, 'audit', file, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hang = setTimeout(() => child.kill('SIGKILL'), HANG_MS);
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(hang);
  t.is(code, 0, err);
  t.notRegex(err, /EPIPE|at /);
});

test('suggest --json --sandbox --policy --include-denied, audit --summary --json', async (t) => {
  const file = join(dir, 'two.log');
  const other = (host: string): string => line({ event: 'conn', sandbox: 'bot', dst: '10.77.2.2:443', decision: 'would-deny', proto: 'tls', host });
  writeFileSync(file, `${conn('api.example.test')}${conn('evil.example.test', 'deny')}${other('pkgs.example.test')}`);
  const one = await run(['suggest', file, '--json', '--sandbox', 'agent', '--policy', 'p1']);
  t.is(one.code, 0, one.stderr);
  t.deepEqual(JSON.parse(one.stdout), { policies: { p1: { mode: 'enforce', allow: [{ host: 'api.example.test', ports: [443] }] } } });
  const denied = await run(['suggest', file, '--json', '--sandbox', 'agent', '--include-denied']);
  t.deepEqual(
    (JSON.parse(denied.stdout).policies.agent.allow as { host: string }[]).map((r) => r.host),
    ['api.example.test', 'evil.example.test'],
  );
  // One policy per sandbox without --sandbox; --policy then names which one? Refused.
  const all = await run(['suggest', file, '--json']);
  t.deepEqual(Object.keys(JSON.parse(all.stdout).policies), ['agent', 'bot']);
  const two = await run(['suggest', file, '--policy', 'p1']);
  t.is(two.code, 2);
  t.regex(two.stderr, /--policy names one policy, but the log has 2 sandboxes/);
  const sum = await run(['audit', file, '--summary', '--json']);
  t.is(sum.code, 0, sum.stderr);
  t.deepEqual(
    (JSON.parse(sum.stdout) as { sandbox: string; denials: Record<string, number> }[]).map((s) => [s.sandbox, Object.keys(s.denials).length]),
    [
      ['agent', 1],
      ['bot', 1],
    ],
  );
});

test('the CLI help lists audit and suggest; each has its own --help (exit 0)', async (t) => {
  const help = await run(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^ {2}audit \[FILE\]/m);
  t.regex(help.stdout, /^ {2}suggest \[FILE\]/m);
  for (const cmd of ['audit', 'suggest']) {
    const r = await run([cmd, '--help']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^usage: sandgate ${cmd} `));
  }
});

test('suggest: two sandboxes whose lines name one policy get a draft each, named after the sandbox', async (t) => {
  const file = join(dir, 'shared.log');
  const as = (sandbox: string, host: string): string =>
    line({ event: 'conn', sandbox, dst: '10.77.2.2:443', decision: 'allow', rule: 'policies.default.allow[0]', proto: 'tls', host });
  writeFileSync(file, `${as('agent1', 'a.example.test')}${as('agent2', 'b.example.test')}`);
  const r = await run(['suggest', file, '--json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(Object.keys(JSON.parse(r.stdout).policies), ['agent1', 'agent2']);
  t.regex(r.stderr, /several sandboxes used policy "default": each drafted policy is named after its sandbox/);
  const one = await run(['suggest', file, '--json', '--sandbox', 'agent2']);
  t.deepEqual(Object.keys(JSON.parse(one.stdout).policies), ['default']);
});

test('audit: the table streams once its first 1000 rows have set the widths (rows appear before the input ends)', async (t) => {
  const child = spawn(process.execPath, [CLI, 'audit', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const hang = setTimeout(() => child.kill('SIGKILL'), HANG_MS);
  let out = '';
  const firstRows = new Promise<void>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.split('\n').length > 1000) resolve();
    });
    child.once('exit', () => resolve());
  });
  child.stdin.write(conn('a.example.test').repeat(1000));
  await firstRows;
  // The input is still open: what arrived so far is already printed.
  t.is(child.exitCode, null);
  t.is(out.split('\n').filter((l) => l.includes('a.example.test')).length, 1000);
  child.stdin.end(conn('a-much-longer-name.example.test'));
  const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));
  clearTimeout(hang);
  t.is(code, 0);
  const lines = out.trimEnd().split('\n');
  t.is(lines.length, 1002);
  t.is(lines.filter((l) => l.startsWith('TIME')).length, 1);
  t.regex(lines[1001] as string, /allow +a-much-longer-name\.example\.test +443$/);
});
