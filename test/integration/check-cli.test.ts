/**
 * The CLI as operators meet it: `node dist/cli.js check|firewall ...` as a child process, exit
 * codes and output lines as docs/policy.md and docs/operations.md state them. Everything that touches the kernel (firewall up,
 * show, down; run) happens inside a throwaway namespace made here (sg-<pid>-cli), never in the
 * root namespace.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT } from '../helpers/gate.js';
import { sweepStale } from '../../src/demo/topology.js';

const IP = '/usr/sbin/ip';
const NFT = '/usr/sbin/nft';
const NS = `sg-${process.pid}-cli`;
let dir: string;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A hang detector, not a speed limit: this file starts some 30 CLI processes at once, and on a
 * shared 2-core machine under load a single one has been seen to need more than 15 s.
 */
const HANG_MS = 60_000;

function run(cmd: string, args: string[], timeoutMs = HANG_MS): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

const cli = (args: string[]): Promise<Result> => run(process.execPath, [CLI, ...args]);
const inNs = (cmd: string, args: string[]): Promise<Result> => run(IP, ['netns', 'exec', NS, cmd, ...args]);

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const OK = `listen:
  port: 15001
  dnsPort: 15053
firewall:
  table: sgcli
  routeTable: 4242
sandboxes:
  - name: agent
    interface: "sbx-*"
    cidr: 10.77.1.0/24
    policy: default
policies:
  default:
    allow:
      - host: api.example.test
`;

/**
 * OK without the control API, for what touches the kernel: the default socket path is shared by
 * every network namespace on this machine, and run / firewall up refuse while a sandgate answers
 * there (test/integration/run-alone.test.ts).
 */
const OK_NO_CONTROL = OK.replace('dnsPort: 15053\n', 'dnsPort: 15053\n  control: false\n');

/** No "    at fn (file:line)" frames, no "Error:" class dumps. */
function noStack(t: { notRegex: (s: string, re: RegExp, m?: string) => void }, r: Result): void {
  t.notRegex(r.stdout + r.stderr, /^\s+at .+[(:]\d+/m, 'no stack trace');
  t.notRegex(r.stdout + r.stderr, /\b(?:TypeError|ReferenceError|SyntaxError|SandgateError|ConfigError)\b/, 'no error class names');
}

test.before(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
  await sweepStale();
  // sweepStale() only knows topology names (sg-<pid>-<hex>-...); sweep this file's own leftovers too.
  const list = await run(IP, ['netns', 'list']);
  for (const line of list.stdout.split('\n')) {
    const m = /^sg-(\d+)-cli\b/.exec(line);
    if (m && !isAlive(Number(m[1]))) await run(IP, ['netns', 'del', `sg-${m[1]}-cli`]);
  }
  const add = await run(IP, ['netns', 'add', NS]);
  if (add.code !== 0) throw new Error(`ip netns add ${NS}: ${add.stderr}`);
  dir = mkdtempSync(join(tmpdir(), 'sg-cli-'));
});

test.after.always(async () => {
  await run(IP, ['netns', 'del', NS]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

test('check: a valid config exits 0 and says so', async (t) => {
  const f = file('ok.yaml', OK);
  const r = await cli(['check', '-c', f]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `${f}: ok (1 sandboxes, 1 policies)\n`);
  t.is(r.stderr, '');
});

test('check: the long flag --config works too', async (t) => {
  const r = await cli(['check', '--config', file('ok2.yaml', OK)]);
  t.is(r.code, 0, r.stderr);
});

/** Each broken config: [name, text, expected line, expected key path, message pattern]. */
const BROKEN: [string, string, number, string, RegExp][] = [
  ['bad-yaml', OK.replace('cidr: 10.77.1.0/24', 'cidr: 10.77.1.0/24: x'), 10, '(root)', /nested mappings/i],
  ['unknown-key', OK.replace('    policy: default\n', '    policy: default\n    polisy: x\n'), 12, 'sandboxes[0].polisy', /unknown key "polisy"/],
  ['bad-cidr', OK.replace('10.77.1.0/24', '10.77.1.0/40'), 10, 'sandboxes[0].cidr', /invalid prefix length/],
  ['host-bits', OK.replace('10.77.1.0/24', '10.77.1.1/24'), 10, 'sandboxes[0].cidr', /host bits set/],
  ['unknown-policy', OK.replace('policy: default', 'policy: strict'), 11, 'sandboxes[0].policy', /unknown policy "strict"/],
  ['unknown-credential', OK + '        inject: llm\n', 16, 'policies.default.allow[0].inject', /unknown credential "llm"/],
  ['wildcard-suffix', OK.replace('api.example.test', '"*.co.uk"'), 15, 'policies.default.allow[0].host', /public suffix/],
  ['duplicate-key', OK + 'sandboxes: []\n', 16, '(root)', /unique/i],
];

for (const [name, text, line, path, message] of BROKEN) {
  test(`check: ${name} -> exit 2 and FILE:LINE:COL: key.path: message`, async (t) => {
    const f = file(`${name}.yaml`, text);
    const r = await cli(['check', '-c', f]);
    t.is(r.code, 2);
    t.is(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    t.true(lines.length >= 1);
    for (const l of lines) t.regex(l, /^.+:\d+:\d+: \S+: .+$/, `every line is located: ${l}`);
    const first = lines[0]!;
    const m = /^(.+):(\d+):(\d+): (\S+): (.+)$/.exec(first);
    t.truthy(m, first);
    t.is(m?.[1], f);
    t.is(Number(m?.[2]), line, first);
    t.true(Number(m?.[3]) >= 1);
    t.is(m?.[4], path, first);
    t.regex(m?.[5] ?? '', message);
    noStack(t, r);
  });
}

test('check: several problems give one line each', async (t) => {
  const f = file('multi.yaml', OK.replace('10.77.1.0/24', 'x').replace('policy: default', 'policy: nope') + 'extra: 1\n');
  const r = await cli(['check', '-c', f]);
  t.is(r.code, 2);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 3, r.stderr);
  t.true(lines.some((l) => l.startsWith(`${f}:10:`) && l.includes(': sandboxes[0].cidr: ')));
  t.true(lines.some((l) => l.startsWith(`${f}:11:`) && l.includes(': sandboxes[0].policy: ')));
  t.true(lines.some((l) => l.startsWith(`${f}:16:1: extra: `)));
});

test('check: a missing file is one line naming it, exit 2', async (t) => {
  const f = join(dir, 'does-not-exist.yaml');
  const r = await cli(['check', '-c', f]);
  t.is(r.code, 2);
  t.is(r.stdout, '');
  t.is(r.stderr, `sandgate: ${f}: cannot read config file (ENOENT)\n`);
});

test('check: a directory instead of a file is one line, exit 2', async (t) => {
  const r = await cli(['check', '-c', dir]);
  t.is(r.code, 2);
  t.is(r.stderr.trimEnd().split('\n').length, 1);
  t.regex(r.stderr, /cannot read config file/);
  noStack(t, r);
});

test('usage errors exit 2 with a sentence naming the command or flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['check'], /check: missing -c FILE/],
    [['check', '-c', 'x.yaml', '--verbose'], /check:.*--verbose/],
    [['check', '-c'], /check:.*-c/],
    [['check', '-c', 'x.yaml', 'extra'], /check:.*extra/],
    [['firewall', 'sideways', '-c', 'x.yaml'], /firewall: expected up, down, show or render/],
    [['firewall'], /firewall: expected/],
    [['ca', 'burn'], /ca: expected init or cert/],
    [['ca', 'init', '--bogus'], /ca:.*--bogus/],
    [['reload', '--socket', 'a.sock', '-c', 'x.yaml'], /^sandgate: reload: give --socket or -c, not both$/m],
    [['reload', 'extra'], /reload:.*extra/],
    [['wait-ready', '--timeout', 'soon'], /wait-ready: --timeout needs a number of seconds, got "soon"/],
    [['install-service', '--bogus'], /install-service:.*--bogus/],
    [['firewall', 'show', '--force', '-c', 'x.yaml'], /firewall show:.*--force/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr.split('\n')[0] ?? '', /^sandgate: /, args.join(' '));
    t.regex(r.stderr, re, args.join(' '));
    noStack(t, r);
  }
});

test('no command prints usage and exits 2; help exits 0', async (t) => {
  const none = await cli([]);
  t.is(none.code, 2);
  t.regex(none.stdout + none.stderr, /usage: sandgate/);
  const help = await cli(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /usage: sandgate/);
});

test('firewall render prints the ruleset without touching the system', async (t) => {
  const r = await cli(['firewall', 'render', '-c', file('render.yaml', OK)]);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith('table inet sgcli {\n'));
  t.regex(r.stdout, /iifname "sbx-\*" ip saddr 10\.77\.1\.0\/24 goto sandbox_pre comment "sandbox agent"/);
  t.regex(r.stdout, /iifname "sbx-\*" counter drop comment "sandbox agent: a source outside its cidr"/);
  t.regex(r.stdout, /tproxy ip to :15001 meta mark set 0x5347/);
  t.regex(r.stdout, /redirect to :15053/);
  // And it parses as nft would take it (checked inside the throwaway namespace; -c changes nothing).
  const c = await run(IP, ['netns', 'exec', NS, NFT, '-c', '-f', file('render.nft', r.stdout)]);
  t.is(c.code, 0, c.stderr);
});

test('firewall render with the iptables backend prints the ipsets first, then the chains that name them', async (t) => {
  const r = await cli(['firewall', 'render', '-c', file('render-ipt.yaml', OK.replace('  table: sgcli\n', '  table: sgcli\n  backend: iptables\n'))]);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith('# ipset -exist restore\ncreate SGCLI-PAIR4 hash:net,iface family inet\n'), r.stdout.slice(0, 200));
  t.true(r.stdout.indexOf('# iptables-restore --noflush\n') > r.stdout.indexOf('swap SGCLI-IF6-T SGCLI-IF6\n'));
  t.regex(r.stdout, /-A SGCLI-PRE -m set --match-set SGCLI-IF4 src,src /);
  // The control API off: no sets, no set rules.
  const off = await cli([
    'firewall',
    'render',
    '-c',
    file('render-ipt-off.yaml', OK_NO_CONTROL.replace('  table: sgcli\n', '  table: sgcli\n  backend: iptables\n')),
  ]);
  t.is(off.code, 0, off.stderr);
  t.true(off.stdout.startsWith('# iptables-restore --noflush\n'));
  t.false(off.stdout.includes('--match-set'));
});

test('firewall render on a broken config: exit 2 with the located line', async (t) => {
  const f = file('render-bad.yaml', OK.replace('10.77.1.0/24', '10.77.1.0/40'));
  const r = await cli(['firewall', 'render', '-c', f]);
  t.is(r.code, 2);
  t.regex(r.stderr, new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:10:\\d+: sandboxes\\[0\\]\\.cidr: `));
});

test.serial('firewall up / show / down inside a namespace; down leaves nothing behind', async (t) => {
  const f = file('fw.yaml', OK_NO_CONTROL);
  const up = await inNs(process.execPath, [CLI, 'firewall', 'up', '-c', f]);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stdout, /firewall installed: table inet sgcli, 1 sandboxes/);
  // Idempotent: a second up leaves one table, one rule, one route.
  const again = await inNs(process.execPath, [CLI, 'firewall', 'up', '-c', f]);
  t.is(again.code, 0, again.stderr);

  // Ours, and iptables-nft's mangle tables holding the one NFQUEUE rule (docs/packets.md).
  const tables = await inNs(NFT, ['list', 'tables']);
  t.deepEqual(tables.stdout.trim().split('\n').sort(), ['table inet sgcli', 'table ip mangle', 'table ip6 mangle']);
  const rules = await inNs(IP, ['-4', 'rule', 'show']);
  t.is(rules.stdout.split('\n').filter((l) => /fwmark 0x5347 lookup 4242/.test(l)).length, 1, rules.stdout);
  const routes = await inNs(IP, ['-4', 'route', 'show', 'table', '4242']);
  t.regex(routes.stdout, /^local default dev lo/m);

  const show = await inNs(process.execPath, [CLI, 'firewall', 'show', '-c', f]);
  t.is(show.code, 0, show.stderr);
  t.regex(show.stdout, /table inet sgcli \{/);
  t.regex(show.stdout, /tproxy ip to :15001/);
  t.regex(show.stdout, /from all fwmark 0x5347 lookup 4242/);
  t.regex(show.stdout, /local default dev lo/);

  const down = await inNs(process.execPath, [CLI, 'firewall', 'down', '-c', f]);
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, /firewall removed/);
  t.is((await inNs(NFT, ['list', 'tables'])).stdout.trim(), '', 'no nft table left');
  t.notRegex((await inNs(IP, ['-4', 'rule', 'show'])).stdout, /fwmark/, 'no fwmark rule left');
  const left = await inNs(IP, ['-4', 'route', 'show', 'table', '4242']);
  t.is(left.stdout.trim(), '', 'route table empty');

  // down again on a clean namespace is a no-op, not an error.
  const down2 = await inNs(process.execPath, [CLI, 'firewall', 'down', '-c', f]);
  t.is(down2.code, 0, down2.stderr);
  const show2 = await inNs(process.execPath, [CLI, 'firewall', 'show', '-c', f]);
  t.regex(show2.stdout, /table inet sgcli is not installed/);
});

test.serial('run that fails part-way through startup (dnsPort taken) exits 1 with one line, and does not hang', async (t) => {
  const f = file(
    'run-busy.yaml',
    OK_NO_CONTROL.replace('listen:\n', `tls:\n  caDir: ${join(dir, 'ca')}\nlisten:\n`).replace('dnsPort: 15053', 'dnsPort: 15099'),
  );
  // Something else holds the DNS port (UDP and TCP), inside the throwaway namespace.
  const blocker = spawn(IP, [
    'netns',
    'exec',
    NS,
    process.execPath,
    '-e',
    "require('dgram').createSocket('udp4').bind(15099, () => require('net').createServer().listen(15099, () => console.log('up')))",
  ]);
  try {
    await new Promise((resolve, reject) => {
      blocker.stdout.once('data', resolve);
      blocker.once('exit', reject);
    });
    const started = Date.now();
    const r = await run(IP, ['netns', 'exec', NS, process.execPath, CLI, 'run', '-c', f], 8000);
    t.is(r.code, 1, `exit code (-1 = still running after 8 s): ${r.stderr}`);
    t.true(Date.now() - started < 8000);
    t.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, /^sandgate: .*15099.*listen\.dnsPort.*EADDRINUSE/);
    noStack(t, r);
  } finally {
    blocker.kill('SIGKILL');
    await inNs(process.execPath, [CLI, 'firewall', 'down', '-c', f]);
  }
});

test('run on a broken config exits 2 before installing anything', async (t) => {
  const f = file('run-bad.yaml', OK.replace('policy: default', 'policy: strict'));
  const r = await inNs(process.execPath, [CLI, 'run', '-c', f]);
  t.is(r.code, 2);
  t.regex(r.stderr, /:11:\d+: sandboxes\[0\]\.policy: unknown policy "strict"/);
  noStack(t, r);
  t.is((await inNs(NFT, ['list', 'tables'])).stdout.trim(), '');
});

/** `check`/`run` with this environment (the test's own, plus `env`). */
function cliEnv(args: string[], env: Record<string, string | undefined>, timeoutMs = HANG_MS): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

const WITH_SECRET = (source: string): string => `${OK}        inject: llm\ncredentials:\n  llm:\n    secret:\n      ${source}\n`;

test('check: an unset secret variable is exit 2 naming the key and variable; --offline skips secrets', async (t) => {
  const f = file('secret-env.yaml', WITH_SECRET('env: SG_CHECK_UNSET_SECRET'));
  const r = await cliEnv(['check', '-c', f], { SG_CHECK_UNSET_SECRET: undefined });
  t.is(r.code, 2, r.stdout);
  t.is(r.stderr, `${f}: credentials.llm.secret: environment variable SG_CHECK_UNSET_SECRET is not set\n`);
  noStack(t, r);
  const offline = await cliEnv(['check', '--offline', '-c', f], { SG_CHECK_UNSET_SECRET: undefined });
  t.is(offline.code, 0, offline.stderr);
  const set = await cliEnv(['check', '-c', f], { SG_CHECK_UNSET_SECRET: 'sk-long-enough-secret' });
  t.is(set.code, 0, set.stderr);
  const short = await cliEnv(['check', '-c', f], { SG_CHECK_UNSET_SECRET: 'sh0rt' });
  t.is(short.code, 2);
  t.regex(short.stderr, /credentials\.llm\.secret: environment variable SG_CHECK_UNSET_SECRET is shorter than 8 characters/);
  t.notRegex(short.stderr, /sh0rt/, 'the value itself is never printed');
});

test('check: a missing secret file is exit 2 naming the file', async (t) => {
  const missing = join(dir, 'no-such-secret');
  const f = file('secret-file.yaml', WITH_SECRET(`file: ${missing}`));
  const r = await cli(['check', '-c', f]);
  t.is(r.code, 2);
  t.is(r.stderr, `${f}: credentials.llm.secret: cannot read ${missing} (ENOENT)\n`);
  writeFileSync(missing, 'sk-from-a-file-0123\n');
  t.is((await cli(['check', '-c', f])).code, 0);
});

test('check: a caDir or log directory that cannot be written or created is exit 2 naming the key', async (t) => {
  const blocker = file('a-plain-file', 'x');
  const cases: [string, string, RegExp][] = [
    ['ca-proc', `tls:\n  caDir: /proc/sandgate-ca\n`, /: tls\.caDir: \/proc\/sandgate-ca is on the kernel's proc file system/],
    ['ca-under-file', `tls:\n  caDir: ${blocker}/ca\n`, /: tls\.caDir: .*a-plain-file is not a directory, so .* cannot be created/],
    ['log-under-file', `log:\n  file: ${blocker}/logs/audit.log\n`, /: log\.file: .*a-plain-file is not a directory/],
    ['log-is-dir', `log:\n  file: ${dir}\n`, /: log\.file: .* is a directory/],
    ['log-sys', `log:\n  file: /sys/sandgate.log\n`, /: log\.file: \/sys is on the kernel's sysfs file system/],
  ];
  for (const [name, extra, re] of cases) {
    const f = file(`${name}.yaml`, extra + OK);
    const r = await cli(['check', '-c', f]);
    t.is(r.code, 2, name);
    t.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, re, name);
    noStack(t, r);
  }
  // A directory that does not exist yet but can be created is fine.
  t.is((await cli(['check', '-c', file('ca-new.yaml', `tls:\n  caDir: ${join(dir, 'new', 'ca')}\n` + OK)])).code, 0);
});

test.serial('run with a caDir under /proc fails at once with exit 2, before touching the firewall', async (t) => {
  const f = file('run-proc.yaml', `tls:\n  caDir: /proc/sandgate-ca\n` + OK);
  const r = await run(IP, ['netns', 'exec', NS, process.execPath, CLI, 'run', '-c', f], 20_000);
  t.is(r.code, 2, `exit code (-1 = still running after 20 s: a hang): ${r.stderr}`);
  t.regex(r.stderr, /^.*: tls\.caDir: \/proc\/sandgate-ca is on the kernel's proc file system/);
  t.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  noStack(t, r);
  t.is((await inNs(NFT, ['list', 'tables'])).stdout.trim(), '');
});

test.serial('start-up failures with log.file set: one stderr line, the exit code, an audit error line, no stack', async (t) => {
  const cases: [string, string, number, RegExp][] = [
    // Fails at once, while the log file is still opening.
    [
      'missing-secret',
      WITH_SECRET('env: SG_CHECK_UNSET_SECRET').replace('listen:\n', 'listen:\n  control: false\n'),
      2,
      /credentials\.llm\.secret: environment variable SG_CHECK_UNSET_SECRET is not set/,
    ],
    // Fails later, part-way through start-up.
    ['dns-port-taken', OK_NO_CONTROL.replace('dnsPort: 15053', 'dnsPort: 15098'), 1, /15098.*listen\.dnsPort.*EADDRINUSE/],
  ];
  const blocker = spawn(IP, [
    'netns',
    'exec',
    NS,
    process.execPath,
    '-e',
    "require('dgram').createSocket('udp4').bind(15098, () => require('net').createServer().listen(15098, () => console.log('up')))",
  ]);
  try {
    await new Promise((resolve, reject) => {
      blocker.stdout.once('data', resolve);
      blocker.once('exit', reject);
    });
    for (const [name, text, code, re] of cases) {
      const log = join(dir, `logs-${name}`, 'audit.log');
      const f = file(`start-${name}.yaml`, `tls:\n  caDir: ${join(dir, 'ca')}\nlog:\n  file: ${log}\n` + text);
      const r = await run(IP, ['netns', 'exec', NS, process.execPath, CLI, 'run', '-c', f], 20_000);
      t.is(r.code, code, `${name}: exit code (-1 = still running after 20 s): ${r.stderr}`);
      t.is(r.stderr.trimEnd().split('\n').length, 1, `${name}: ${r.stderr}`);
      t.regex(r.stderr, new RegExp(`^sandgate: .*${re.source}`), name);
      noStack(t, r);
      t.notRegex(r.stderr, /sonic boom/);
      const lines = readFileSync(log, 'utf8')
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const err = lines.filter((l) => l.event === 'error' && String(l.reason).startsWith('start-up failed: '));
      t.is(err.length, 1, `${name}: ${JSON.stringify(lines)}`);
      t.regex(String(err[0]?.reason), re, name);
      // Both fail before the firewall: the listeners are bound first, the secrets read before that.
      t.is((await inNs(NFT, ['list', 'tables'])).stdout.trim(), '', `${name}: no table installed`);
    }
  } finally {
    blocker.kill('SIGKILL');
    await inNs(process.execPath, [CLI, 'firewall', 'down', '--force', '-c', file('start-down.yaml', OK_NO_CONTROL)]);
  }
});

test('--version prints the version from package.json', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', 'version']) {
    const r = await cli([flag]);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `sandgate ${pkg.version}\n`);
  }
});

test.serial('firewall up/down refuse while something listens on listen.port (control API off); --force goes ahead', async (t) => {
  const f = file('fw-busy.yaml', OK_NO_CONTROL);
  const listener = spawn(IP, ['netns', 'exec', NS, process.execPath, '-e', "require('net').createServer().listen(15001, () => console.log('up'))"]);
  try {
    await new Promise((resolve, reject) => {
      listener.stdout.once('data', resolve);
      listener.once('exit', reject);
    });
    for (const action of ['up', 'down']) {
      const r = await inNs(process.execPath, [CLI, 'firewall', action, '-c', f]);
      t.is(r.code, 1, r.stderr);
      t.is(
        r.stderr,
        `sandgate: firewall ${action}: something listens on listen.port 15001 (a running sandgate?); stop it first, or give --force (nothing was changed)\n`,
      );
    }
    t.is((await inNs(NFT, ['list', 'tables'])).stdout.trim(), '', 'the refused up installed nothing');
    const forced = await inNs(process.execPath, [CLI, 'firewall', 'up', '--force', '-c', f]);
    t.is(forced.code, 0, forced.stderr);
    t.regex((await inNs(NFT, ['list', 'tables'])).stdout, /table inet sgcli/);
  } finally {
    listener.kill('SIGKILL');
    await inNs(process.execPath, [CLI, 'firewall', 'down', '--force', '-c', f]);
  }
});
