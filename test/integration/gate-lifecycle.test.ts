/**
 * sandgate over time: the ready line, SIGHUP reloads (good and bad), report mode, audit to a
 * file, and failing closed when the process dies or stops. The tests share one world and run
 * serially, in order: the later ones kill the gate.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createWorld,
  startGate,
  startFakeResolver,
  baseConfig,
  bodyOf,
  CLI,
  LineLog,
  ROOT,
  TEST_BACKEND,
  type World,
  type Gate,
  type Line,
} from '../helpers/gate.js';

let w: World;
let g: Gate;

const ONLY_API = [{ host: 'api.example.test' }];
const API_AND_EVIL = [{ host: 'api.example.test' }, { host: 'evil.example.test' }];

const get = (host: string, path: string, maxMs = 3000) => w.curl(['--resolve', `${host}:443:${w.a}`, `https://${host}${path}`], { timeoutMs: maxMs });

/** The config lines (other than the first `loaded`) seen so far. */
const reloads = (gate: Gate): Line[] => gate.log.lines.filter((l) => l.event === 'config' && l.action !== 'loaded');

/** Writes `text` verbatim as the config file, sends SIGHUP, resolves on the next config line. */
async function reloadText(gate: Gate, text: string): Promise<Line> {
  const n = reloads(gate).length;
  writeFileSync(gate.configPath, text);
  gate.proc.kill('SIGHUP');
  await gate.log.waitFor(() => reloads(gate).length > n, 5000, 'config line after SIGHUP');
  return reloads(gate)[n]!;
}

function exitOf(gate: Gate): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (gate.proc.exitCode !== null || gate.proc.signalCode !== null) return Promise.resolve({ code: gate.proc.exitCode, signal: gate.proc.signalCode });
  return new Promise((resolve) => gate.proc.once('exit', (code, signal) => resolve({ code, signal })));
}

/**
 * Is a sandgate ruleset named `table` installed in the host namespace, for the backend under test
 * (nft: `table inet <table>`; iptables: chains named after the table, e.g. SANDGATE-PRE)?
 */
function installed(table: string): Promise<boolean> {
  const iptables = TEST_BACKEND === 'iptables';
  const cmd = iptables ? ['/usr/sbin/iptables-save'] : ['/usr/sbin/nft', 'list', 'tables'];
  return new Promise((resolve) => {
    execFile('/usr/sbin/ip', ['netns', 'exec', w.topo.hostNs, ...cmd], { encoding: 'utf8' }, (_e, stdout) => {
      resolve(iptables ? stdout.includes(`:${table.toUpperCase()}-`) : new RegExp(`table inet ${table}\\b`).test(stdout));
    });
  });
}

test.before(async () => {
  w = await createWorld();
  g = await startGate(w.topo, w.dir, baseConfig(w, { allow: ONLY_API }));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test.serial('the ready line carries event, pid and ports, after the config line', (t) => {
  const ready = g.log.find((l) => l.event === 'ready');
  t.truthy(ready);
  t.is(ready?.pid, g.proc.pid, "ip netns exec execs in place: the pid is sandgate's own");
  t.is(ready?.port, 15001);
  t.is(ready?.dnsPort, 15053);
  t.is(ready?.level, 'info');
  t.false(Number.isNaN(Date.parse(String(ready?.time))));
  const loaded = g.log.lines.findIndex((l) => l.event === 'config' && l.action === 'loaded');
  t.true(loaded >= 0 && loaded < g.log.lines.indexOf(ready!), 'config loaded before ready');
});

test.serial('SIGHUP with a new allowed host: allowed at once, same process', async (t) => {
  t.not((await get('evil.example.test', '/before')).code, 0, 'not allowed yet');
  const line = await g.reload(baseConfig(w, { allow: API_AND_EVIL }));
  t.is(line.action, 'reloaded', JSON.stringify(line));
  t.is(line.sandboxes, 1);
  const r = await get('evil.example.test', '/after');
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
  t.is(g.proc.exitCode, null, 'no restart');
  t.is(g.log.lines.filter((l) => l.event === 'ready').length, 1);
});

test.serial('SIGHUP with an invalid config: rejected with the located reason, the old policy stays', async (t) => {
  // Valid YAML, invalid config: the reason names the file, line and key.
  const bad = JSON.stringify({ ...baseConfig(w, { allow: ONLY_API }), sandboxes: [{ name: 'agent', cidr: '10.77.1.0/33', policy: 'default' }] }, null, 2);
  const line = await reloadText(g, bad);
  t.is(line.action, 'rejected');
  t.is(line.file, g.configPath);
  t.regex(
    String(line.reason),
    new RegExp(`${g.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: sandboxes\\[0\\]\\.cidr: .*invalid prefix length`),
  );
  // Broken YAML.
  const yaml = await reloadText(g, 'sandboxes: [\n  - name: x\n');
  t.is(yaml.action, 'rejected');
  t.regex(String(yaml.reason), /:\d+:\d+: /);
  // A change that needs a restart.
  const port = await reloadText(g, JSON.stringify({ ...baseConfig(w, { allow: API_AND_EVIL }), listen: { port: 15002, dnsPort: 15053 } }));
  t.is(port.action, 'rejected');
  t.regex(String(port.reason), /listen\.port cannot change on reload/);
  const logFile = await reloadText(g, JSON.stringify({ ...baseConfig(w, { allow: API_AND_EVIL }), log: { file: join(w.dir, 'other-audit.log') } }));
  t.is(logFile.action, 'rejected');
  t.regex(String(logFile.reason), /log\.file cannot change on reload/);
  t.false(existsSync(join(w.dir, 'other-audit.log')));
  // Another nft table name would leave the old table installed with nothing to remove it.
  const table = await reloadText(g, JSON.stringify({ ...baseConfig(w, { allow: API_AND_EVIL }), firewall: { table: 'other' } }));
  t.is(table.action, 'rejected');
  t.regex(String(table.reason), /firewall\.table cannot change on reload/);
  t.false(await installed('other'));

  // Still the policy of the last good load: evil (added by the previous reload) allowed, others not.
  const evil = await get('evil.example.test', '/still');
  t.is(evil.code, 0, evil.stderr);
  const other = await get('x.other.example.test', '/never');
  t.not(other.code, 0);
  t.is(g.proc.exitCode, null);
});

/** `sandgate ARGS` from the host namespace (the control socket is a file; any namespace reaches it). */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return w.topo.exec(w.topo.hostNs, process.execPath, [CLI, ...args], { timeoutMs: 15_000 });
}

test.serial('sandgate reload: prints what the daemon loaded, or why it refused (exit 2, the old config stays)', async (t) => {
  writeFileSync(g.configPath, JSON.stringify(baseConfig(w, { allow: ONLY_API }), null, 2));
  const ok = await cli(['reload', '-c', g.configPath]);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stdout, `reloaded ${g.configPath}: 1 sandboxes, 1 policies, 0 registered\n`);
  t.not((await get('evil.example.test', '/reload-cli')).code, 0, 'evil is no longer allowed');
  const line = await g.log.waitFor((l) => l.event === 'config' && l.action === 'reloaded' && reloads(g).indexOf(l) === reloads(g).length - 1);
  t.is(line.file, g.configPath);

  writeFileSync(
    g.configPath,
    JSON.stringify({ ...baseConfig(w, { allow: API_AND_EVIL }), sandboxes: [{ name: 'agent', cidr: '10.77.1.0/33', policy: 'default' }] }, null, 2),
  );
  const bad = await cli(['reload', '--socket', join(w.dir, 'control.sock')]);
  t.is(bad.code, 2, bad.stderr);
  t.is(bad.stdout, '');
  t.is(bad.stderr.trimEnd().split('\n').length, 1, bad.stderr);
  t.regex(bad.stderr, /^sandgate: reload refused, the running config stays: .*:\d+:\d+: sandboxes\[0\]\.cidr: .*invalid prefix length/);
  const api = await get('api.example.test', '/after-refused');
  t.is(api.code, 0, api.stderr);
  t.not((await get('evil.example.test', '/after-refused')).code, 0, 'the refused config did not apply');

  // No daemon on the socket: exit 1 with one sentence.
  const none = await cli(['reload', '--socket', join(w.dir, 'nobody.sock')]);
  t.is(none.code, 1);
  t.regex(none.stderr, /^sandgate: cannot reach sandgate's control socket .*nobody\.sock \(ENOENT\)/);
  // SIGHUP stays: restore the good config that way.
  const again = await g.reload(baseConfig(w, { allow: API_AND_EVIL }));
  t.is(again.action, 'reloaded');
});

// BUG (fixed): Node's net.connect skips the `lookup` for an IP literal host, so in report mode a
// plain-HTTP request with `Host: 127.0.0.1` (or the metadata address) went upstream to that address
// past the SSRF guard, which sits in the lookup.
test.serial('report mode: a plain-HTTP Host that is a guarded IP literal (loopback, metadata) is denied by the SSRF guard, never connected', async (t) => {
  t.is((await g.reload(baseConfig(w, { mode: 'report' }))).action, 'reloaded');
  for (const literal of ['127.0.0.1', '169.254.169.254']) {
    const r = await w.curl(['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Host: ${literal}`, `http://${w.a}/literal-${literal}`]);
    t.is(r.stdout.trim(), '502', `${literal}: ${r.stderr}`);
    const line = await g.log.waitFor((l) => l.event === 'http' && l.path === `/literal-${literal}`);
    t.like(line, { decision: 'deny', status: 502, host: literal });
    t.regex(String(line.reason), new RegExp(`upstream address ${literal.replaceAll('.', '\\.')} is in .*not allowed`));
  }
  t.is((await g.reload(baseConfig(w, { allow: ONLY_API }))).action, 'reloaded');
});

test.serial('report mode: an unlisted SNI gets through, logged as would-deny', async (t) => {
  const line = await g.reload(baseConfig(w, { allow: ONLY_API, mode: 'report' }));
  t.is(line.action, 'reloaded', JSON.stringify(line));
  const r = await w.curl(['--resolve', `evil.example.test:443:${w.b}`, 'https://evil.example.test/report']);
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a', 'still to the SNI host as sandgate resolves it, not the dialled address');
  const audit = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'evil.example.test' && l.decision === 'would-deny');
  t.regex(String(audit.reason), /evil\.example\.test:443 is not allowed/);
  t.is(audit.sandbox, 'agent');
  // Allowed traffic is still plain "allow".
  t.is((await get('api.example.test', '/report-ok')).code, 0);
  await g.log.waitFor((l) => l.event === 'conn' && l.host === 'api.example.test' && l.decision === 'allow' && l.dst === `${w.a}:443`);
  // Back to enforce: the same request is reset again.
  t.is((await g.reload(baseConfig(w, { allow: ONLY_API }))).action, 'reloaded');
  t.not((await get('evil.example.test', '/enforce')).code, 0);
});

test.serial('fail closed: SIGKILL leaves the rules, and the allowed request now fails', async (t) => {
  const ok = await get('api.example.test', '/alive');
  t.is(ok.code, 0, ok.stderr);
  const upstreamA = w.upstreams[0]!;
  g.proc.kill('SIGKILL');
  t.is((await exitOf(g)).signal, 'SIGKILL');
  const seen = upstreamA.log.lines.length;
  const r = await get('api.example.test', '/dead', 2000);
  t.not(r.code, 0, 'no sandgate: nothing gets through');
  t.true(await installed('sandgate'));
  t.is(upstreamA.log.lines.length, seen, 'a saw no request');
  // DNS is still redirected to sandgate's closed port, even to a resolver that answers (on b):
  // the sandbox gets no answer, and the resolver sees no query.
  const resolver = await startFakeResolver(w.topo, 'b', ['--answer', `api.example.test=${w.a}`]);
  try {
    const control = await w.topo.exec(w.topo.hostNs, 'dig', ['+tries=1', '+time=2', `@${w.b}`, 'api.example.test'], { timeoutMs: 6000 });
    t.regex(control.stdout, /status: NOERROR/, 'control: the resolver answers the host namespace');
    const asked = resolver.log.lines.length;
    for (const server of [w.topo.hostAddr('sbx'), w.b]) {
      const dig = await w.topo.exec(w.sandbox, 'dig', ['+tries=1', '+time=1', `@${server}`, 'api.example.test'], { timeoutMs: 6000 });
      t.notRegex(dig.stdout, /status: |ANSWER SECTION/, `@${server}: ${dig.stdout}`);
    }
    t.is(resolver.log.lines.length, asked, 'the resolver saw nothing from the sandbox');
  } finally {
    resolver.proc.kill('SIGKILL');
  }
});

test.serial('SIGTERM: exits 0, the rules stay, requests fail', async (t) => {
  g = await startGate(w.topo, w.dir, baseConfig(w, { allow: ONLY_API }));
  t.is((await get('api.example.test', '/restarted')).code, 0);
  g.proc.kill('SIGTERM');
  const exit = await exitOf(g);
  t.is(exit.code, 0);
  const stop = await g.log.waitFor((l) => l.event === 'stop', 1000, 'stop line');
  t.regex(String(stop.reason), /fail closed/);
  t.is(stop.connectionsReset, undefined, 'the finished request left no connection open');
  t.true(await installed('sandgate'));
  const ip = await w.topo.exec(w.topo.hostNs, '/usr/sbin/ip', ['-4', 'rule', 'show']);
  t.regex(ip.stdout, /fwmark 0x5347 lookup 5347/);
  t.not((await get('api.example.test', '/stopped', 2000)).code, 0);
});

/** test/helpers/hold-client.mjs in the sandbox: one TLS connection to api.example.test it never closes; its lines. */
function holdOpen(ca: string, extra: string[]): LineLog {
  const hold = w.topo.spawn(w.sandbox, process.execPath, [
    join(ROOT, 'test/helpers/hold-client.mjs'),
    '--connect',
    w.a,
    '--host',
    'api.example.test',
    '--ca',
    ca,
    ...extra,
  ]);
  const held = new LineLog();
  held.attach(hold);
  return held;
}

/** SIGTERM, then the exit, or 'hung' after 15 s (a hang detector, not a speed check). */
function stopWithin(gate: Gate): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'hung'> {
  gate.proc.kill('SIGTERM');
  return Promise.race([exitOf(gate), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
}

test.serial('SIGTERM with a connection the sandbox keeps open: reset after the grace period, the stop line counts it', async (t) => {
  g = await startGate(w.topo, w.dir, baseConfig(w, { allow: ONLY_API }));
  // One keep-alive TLS connection (passthrough) that the client never closes.
  const held = holdOpen(w.pki.caFile, []);
  await held.waitFor((l) => l.event === 'response', 5000, "the held connection's first response");
  t.not(await stopWithin(g), 'hung', 'sandgate did not exit while a sandbox connection stayed open');
  const stop = await g.log.waitFor((l) => l.event === 'stop', 1000, 'stop line');
  t.is(stop.connectionsReset, 1);
  const closed = await held.waitFor((l) => l.event === 'closed', 5000, 'the held connection closing');
  t.is(closed.responses, 1);
});

test.serial('SIGTERM with an intercepted SSE stream in flight: the request still gets its http line, saying it was cut off', async (t) => {
  const config = {
    ...baseConfig(w, { allow: [{ host: 'api.example.test', inject: 'k' }], upstream: { caFile: w.pki.caFile } }),
    credentials: { k: { secret: { env: 'SG_TEST_SSE_K' } } },
  };
  g.proc.kill('SIGKILL'); // whichever gate ran before (run alone, the file's first one)
  await exitOf(g);
  g = await startGate(w.topo, w.dir, config, 'sse.json', { env: { SG_TEST_SSE_K: 'sk-sse-shutdown-0123456789' } });
  const held = holdOpen(join(w.dir, 'ca', 'ca.pem'), ['--path', '/_sg/sse?n=1000&interval=100', '--stream']);
  await held.waitFor((l) => l.event === 'chunk', 5000, 'the first event of the stream');
  t.not(await stopWithin(g), 'hung');
  const line = await g.log.waitFor((l) => l.event === 'http' && String(l.path) === '/_sg/sse', 1000, "the SSE request's http line");
  t.like(line, { decision: 'allow', status: 200, credential: 'k' });
  t.truthy(line.error, 'the line says the stream was cut off');
  t.true(Number(line.bytesIn) > 0);
  const stop = g.log.find((l) => l.event === 'stop');
  t.is(stop?.connectionsReset, 1);
});

test.serial('audit to log.file: lines go to the file, none to stdout', async (t) => {
  const logFile = join(w.dir, 'logs', 'audit.log');
  const cfgPath = join(w.dir, 'file-log.json');
  writeFileSync(cfgPath, JSON.stringify(baseConfig(w, { allow: ONLY_API, log: { file: logFile } })));
  const proc = w.topo.spawn(w.topo.hostNs, process.execPath, [CLI, 'run', '-c', cfgPath]);
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  try {
    const lines = (): Line[] =>
      (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Line);
    const until = async (pred: (l: Line) => boolean, what: string): Promise<Line> => {
      for (let i = 0; i < 100; i++) {
        const hit = lines().find(pred);
        if (hit) return hit;
        if (proc.exitCode !== null) throw new Error(`sandgate exited ${proc.exitCode}: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(
        `no ${what} in ${logFile}: ${lines()
          .map((l) => JSON.stringify(l))
          .join('\n')} ${stderr}`,
      );
    };
    const ready = await until((l) => l.event === 'ready', 'ready line');
    t.is(ready.pid, proc.pid);
    const r = await get('api.example.test', '/to-file');
    t.is(r.code, 0, r.stderr);
    await w.curl(['--resolve', `evil.example.test:443:${w.a}`, 'https://evil.example.test/denied']);
    const allow = await until((l) => l.event === 'conn' && l.decision === 'allow' && l.host === 'api.example.test', 'allow line');
    t.is(allow.sandbox, 'agent');
    const deny = await until((l) => l.event === 'conn' && l.decision === 'deny' && l.host === 'evil.example.test', 'deny line');
    t.regex(String(deny.reason), /not allowed/);
    t.is(stdout, '', 'nothing on stdout');
  } finally {
    proc.kill('SIGKILL');
  }
});
