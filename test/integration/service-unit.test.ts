/**
 * The shipped systemd unit: `sandgate install-service` writes what `systemd-analyze verify`
 * accepts without a word, the copy in packaging/ is the same text, and sandgate really runs with
 * only the capabilities the unit leaves it (CapabilityBoundingSet), with `wait-ready` (the unit's
 * readiness step) returning once it serves. This machine's PID 1 is not systemd, so the unit is
 * verified, not started.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, LineLog, createWorld, baseConfig, bodyOf, type World } from '../helpers/gate.js';
import { renderUnit, DEFAULT_UNIT_PATHS } from '../../src/cli/service-unit.js';

const ANALYZE = '/usr/bin/systemd-analyze';
let dir: string;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-unit-'));
});
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('install-service writes a unit that systemd-analyze verify accepts without a word', async (t) => {
  if (!existsSync(ANALYZE)) {
    t.fail(`${ANALYZE} is missing (scripts/provision.sh installs systemd)`);
    return;
  }
  const config = join(dir, 'sandgate.yaml');
  writeFileSync(config, 'sandboxes: []\npolicies: {}\n');
  const r = await run(process.execPath, [CLI, 'install-service', '--unit-dir', join(dir, 'units'), '-c', config]);
  t.is(r.code, 0, r.stderr);
  const unit = join(dir, 'units', 'sandgate.service');
  t.is(r.stdout, `installed ${unit}\nnext: systemctl daemon-reload && systemctl enable --now sandgate\n`);
  const text = readFileSync(unit, 'utf8');
  t.true(text.includes(`ExecStart=${process.execPath} ${CLI} run -c ${config}\n`), text);
  t.regex(text, /^ExecStartPost=.* wait-ready -c .* --timeout 60$/m);
  t.regex(text, /^ExecReload=.* reload -c /m);
  t.regex(text, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW$/m);
  const v = await run(ANALYZE, ['verify', unit]);
  t.is(v.code, 0, v.stderr);
  t.is(v.stdout + v.stderr, '', 'no warnings (an unknown or misspelt key would be one)');
  const printed = await run(process.execPath, [CLI, 'install-service', '--print', '-c', config]);
  t.is(printed.code, 0, printed.stderr);
  t.is(printed.stdout, text, '--print writes the same unit to stdout');
  // The check would catch a misspelt key: the same unit with one is not silent.
  writeFileSync(join(dir, 'units', 'bad.service'), text.replace('ProtectSystem=strict', 'ProtectSystm=strict'));
  const bad = await run(ANALYZE, ['verify', join(dir, 'units', 'bad.service')]);
  t.regex(bad.stdout + bad.stderr, /Unknown key 'ProtectSystm'/);
});

test('the unit in packaging/ is the one install-service renders for the default paths, and verifies', async (t) => {
  const shipped = join(ROOT, 'packaging/systemd/sandgate.service');
  t.is(readFileSync(shipped, 'utf8'), renderUnit(DEFAULT_UNIT_PATHS));
  const v = await run(ANALYZE, ['verify', shipped]);
  t.is(v.code, 0, v.stderr);
  t.is(v.stdout + v.stderr, '');
});

let w: World | undefined;
test.after.always(async () => {
  await w?.cleanup();
});

test("with only CAP_NET_ADMIN and CAP_NET_RAW (the unit's bounding set) sandgate serves; wait-ready returns once it does", async (t) => {
  w = await createWorld();
  const config = join(w.dir, 'caps.json');
  writeFileSync(config, JSON.stringify(baseConfig(w), null, 2));
  const sock = join(w.dir, 'control.sock');
  // Before the daemon: wait-ready gives up after its timeout with one line.
  const early = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'wait-ready', '--socket', sock, '--timeout', '0.3'], { timeoutMs: 15_000 });
  t.is(early.code, 1);
  t.regex(early.stderr, /^sandgate: wait-ready: no sandgate answered on .*control\.sock within 0\.3 s\n$/);

  const proc = w.topo.spawn(w.topo.hostNs, '/usr/bin/setpriv', ['--bounding-set', '-all,+net_admin,+net_raw', process.execPath, CLI, 'run', '-c', config]);
  const log = new LineLog();
  log.attach(proc);
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  try {
    const ready = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'wait-ready', '-c', config, '--timeout', '20'], { timeoutMs: 30_000 });
    t.is(ready.code, 0, `${ready.stderr} / sandgate: ${err}`);
    t.regex(ready.stdout, /^sandgate is serving \(control socket .*control\.sock\)\n$/);
    t.truthy(
      log.find((l) => l.event === 'ready'),
      'the ready line was written before the socket answered',
    );
    const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
    t.regex(status, /^CapBnd:\s+0000000000003000$/m, 'bounding set: CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only');
    const r = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/caps']);
    t.is(r.code, 0, r.stderr);
    t.is(bodyOf(r)?.server, 'a');
  } finally {
    proc.kill('SIGKILL');
  }
});
