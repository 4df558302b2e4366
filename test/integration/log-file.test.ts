/**
 * log.file in operation: log.level governs operational lines only (the audit trail is always
 * written), operational lines also reach stderr, and SIGUSR1 reopens the file after a rotation
 * without losing a line. One world, one sandgate writing to a file; tests run in order.
 */
import test from 'ava';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createWorld, baseConfig, CLI, type World, type Line } from '../helpers/gate.js';

let w: World;
let proc: ChildProcess;
let stdout = '';
let stderr = '';
let logFile: string;
let cfgPath: string;

const read = (file: string): Line[] =>
  (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

async function until<T>(get: () => T | undefined, what: string, ms = 5000): Promise<T> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    const v = get();
    if (v !== undefined) return v;
    if (proc.exitCode !== null) throw new Error(`sandgate exited ${proc.exitCode}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; stderr: ${stderr}`);
}

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...baseConfig(w, { allow: [{ host: 'api.example.test' }], log: { file: logFile, level: 'warn' } }),
    dns: { rateLimit: { qps: 1_000_000, burst: 1_000_000 }, auditSampling: { linesPerSecond: 1_000_000, burst: 1_000_000 } },
    ...extra,
  };
}

test.before(async () => {
  w = await createWorld();
  logFile = join(w.dir, 'logs', 'audit.log');
  cfgPath = join(w.dir, 'file-log.json');
  writeFileSync(cfgPath, JSON.stringify(config()));
  proc = w.topo.spawn(w.topo.hostNs, process.execPath, [CLI, 'run', '-c', cfgPath]);
  proc.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  await until(() => read(logFile).find((l) => l.event === 'ready'), 'ready line', 10000);
});

test.after.always(async () => {
  proc?.kill('SIGKILL');
  await w?.cleanup();
});

test.serial(
  'log.level warn: every audit line is still written; a rejected reload is a warn line in the file and on stderr, audit lines are not on stderr',
  async (t) => {
    const ok = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/level']);
    t.is(ok.code, 0, ok.stderr);
    await w.curl(['--resolve', `evil.example.test:443:${w.a}`, 'https://evil.example.test/level']);
    const allow = await until(() => read(logFile).find((l) => l.event === 'conn' && l.decision === 'allow' && l.host === 'api.example.test'), 'allow line');
    t.is(allow.level, 'info');
    await until(() => read(logFile).find((l) => l.event === 'conn' && l.decision === 'deny' && l.host === 'evil.example.test'), 'deny line');

    writeFileSync(cfgPath, '{"listen": {"port": "nope"}}');
    proc.kill('SIGHUP');
    const rejected = await until(() => read(logFile).find((l) => l.event === 'config' && l.action === 'rejected'), 'rejected line');
    t.is(rejected.level, 'warn');
    const onStderr = await until(
      () =>
        stderr
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Line)
          .find((l) => l.action === 'rejected'),
      'rejected on stderr',
    );
    t.is(onStderr.reason, rejected.reason);
    t.false(stderr.includes('"event":"conn"'), 'audit lines stay in the file');
    t.is(stdout, '', 'nothing on stdout');
    writeFileSync(cfgPath, JSON.stringify(config()));
  },
);

test.serial('SIGUSR1 after a rename: later lines land in a new file at the path, none lost, none torn', async (t) => {
  const rotated = `${logFile}.1`;
  // A sandbox client sends DNS queries without pause (up to 32 outstanding); after PHASE
  // answers it prints "half", keeps asking, and once told "go" asks PHASE more and stops.
  const PHASE = 1500;
  const client = w.topo.spawn(w.sandbox, process.execPath, [
    '-e',
    `
    const dgram = require('node:dgram');
    const s = dgram.createSocket('udp4');
    const q = (id) => {
      const name = Buffer.concat([...'api.example.test'.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
      const h = Buffer.alloc(12); h.writeUInt16BE(id, 0); h.writeUInt16BE(0x0100, 2); h.writeUInt16BE(1, 4);
      return Buffer.concat([h, name, Buffer.from([0, 1, 0, 1])]);
    };
    let sent = 0, answered = 0, go = false, extra = 0, outstanding = 0;
    const pending = new Set();
    process.stdin.on('data', () => { go = true; pump(); });
    const pump = () => {
      while (outstanding < 32 && (!go || extra < ${PHASE})) {
        if (go) extra++;
        const id = (sent++ % 65535) + 1; pending.add(id); outstanding++;
        s.send(q(id), 53, '10.77.1.1');
      }
    };
    s.on('message', (m) => {
      const id = m.readUInt16BE(0);
      if (!pending.delete(id)) return;
      outstanding--; answered++;
      if (answered === ${PHASE}) console.log('half');
      if (go && extra >= ${PHASE} && outstanding === 0) { console.log(JSON.stringify({ answered })); s.close(); process.exit(0); }
      pump();
    });
    pump();
  `,
  ]);
  let out = '';
  client.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((r) => client.once('exit', () => r()));
  try {
    await until(() => (out.includes('half') ? true : undefined), 'the first half of the queries', 30000);
    renameSync(logFile, rotated);
    proc.kill('SIGUSR1');
    await until(() => (existsSync(logFile) ? true : undefined), 'a new file at the path');
    client.stdin?.write('go\n');
    await Promise.race([exited, new Promise((_, rej) => setTimeout(() => rej(new Error(`client hung: ${out}`)), 30000))]);
  } finally {
    client.kill('SIGKILL');
  }
  const answered = Number(JSON.parse(out.trim().split('\n').pop() ?? '{}').answered);
  t.true(answered >= 2 * PHASE, out);
  // Every answered query has its line, in one file or the other; every line parses (read() would throw).
  const dnsLines = (f: string): number => read(f).filter((l) => l.event === 'dns' && l.host === 'api.example.test').length;
  const total = await until(() => {
    const n = dnsLines(rotated) + dnsLines(logFile);
    return n >= answered ? n : undefined;
  }, `${answered} dns lines`);
  t.is(total, answered);
  t.true(dnsLines(rotated) >= PHASE, 'the lines before the rotation stay in the renamed file');
  t.true(dnsLines(logFile) >= PHASE, 'the lines after it are in the new file at the path');
  t.is(proc.exitCode, null, 'SIGUSR1 did not end the daemon');
});
