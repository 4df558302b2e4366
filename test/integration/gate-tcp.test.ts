/**
 * Raw TCP rules (`protocol: tcp`) and the SSRF guard on upstream addresses.
 * Tests run serially: some of them reload sandgate's config.
 */
import test from 'ava';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, type World, type Gate } from '../helpers/gate.js';

let w: World;
let g: Gate;

const SSH = 'ssh.example.test';

function config(upstream: Record<string, unknown> = {}): Record<string, unknown> {
  return baseConfig(w, {
    allow: [{ host: 'api.example.test' }, { host: SSH, ports: [2222], protocol: 'tcp' }],
    upstream: { hosts: Object.fromEntries([...NAMES, SSH].map((n) => [n, w.a])), ...upstream },
  });
}

/**
 * Connects from the sandbox and never writes first; prints BANNER:<text> if the server speaks,
 * then writes "ping" and prints ECHO:<text> for the echo. Prints error/timeout/closed otherwise.
 */
async function talk(addr: string, port: number): Promise<string> {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(${port}, '${addr}');
    let n = 0;
    s.setTimeout(2000, () => { console.log('timeout'); s.destroy(); });
    s.on('data', (d) => {
      const text = String(d).trim();
      if (n++ === 0) { console.log('BANNER:' + text); s.write('ping\\n'); }
      else { console.log('ECHO:' + text); s.end(); }
    });
    s.on('error', (e) => console.log('error', e.code));
    s.on('close', () => console.log('closed'));`,
    ],
    { timeoutMs: 6000 },
  );
  return r.stdout;
}

test.before(async () => {
  w = await createWorld();
  await Promise.all([
    startUpstream(w.topo, 'a', ['--name', 'a-ssh', '--port', '2222', '--banner', 'SSH-2.0-a']),
    startUpstream(w.topo, 'a', ['--name', 'a-2223', '--port', '2223', '--banner', 'SSH-2.0-a2223']),
    startUpstream(w.topo, 'b', ['--name', 'b-ssh', '--port', '2222', '--banner', 'SSH-2.0-b']),
  ]);
  g = await startGate(w.topo, w.dir, config());
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test.serial('raw TCP to the resolved address: the server speaks first and the client gets it without sending a byte', async (t) => {
  const out = await talk(w.a, 2222);
  t.regex(out, /^BANNER:SSH-2\.0-a$/m, out);
  t.regex(out, /^ECHO:ping$/m, 'bytes flow both ways');
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.proto === 'tcp' && l.decision === 'allow');
  t.is(line.host, SSH);
  t.is(line.rule, 'policies.default.allow[1]');
  t.is(line.dst, `${w.a}:2222`);
  t.is(line.sandbox, 'agent');
});

test.serial('raw TCP to an address sandgate did not resolve for the name (b) is reset', async (t) => {
  const out = await talk(w.b, 2222);
  t.notRegex(out, /BANNER/, out);
  t.regex(out, /ECONNRESET|closed/);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.b}:2222`);
  t.is(line.decision, 'deny');
  t.regex(String(line.reason), /port 2222 is not allowed/);
});

test.serial('raw TCP to the right address on an unlisted port (a:2223) is reset', async (t) => {
  const out = await talk(w.a, 2223);
  t.notRegex(out, /BANNER/, out);
  t.regex(out, /ECONNRESET|closed/);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:2223`);
  t.is(line.decision, 'deny');
});

/**
 * Connects from the sandbox, waits for the banner, then either resets the connection itself
 * (`hangup`: RST, as clients that close with unread data or SO_LINGER 0 do) or asks the upstream
 * to reset it (`upstream`). Prints the client's local port, then "done".
 */
async function resetBy(who: 'hangup' | 'upstream'): Promise<number> {
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect(2222, '${w.a}');
    s.setTimeout(3000, () => { console.log('timeout'); s.destroy(); });
    s.on('error', () => {});
    s.once('data', () => {
      console.log(s.localPort);
      if (${JSON.stringify(who)} === 'hangup') s.resetAndDestroy();
      else s.write('reset\\n');
    });
    s.on('close', () => console.log('done'));`,
    ],
    { timeoutMs: 6000 },
  );
  const port = Number(r.stdout.split('\n')[0]);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`sandbox client failed: ${r.stdout}${r.stderr}`);
  return port;
}

test.serial('a sandbox that hangs up with a reset is a normal close, not an error; an upstream reset is one', async (t) => {
  const mine = await resetBy('hangup');
  const line = await g.log.waitFor((l) => l.event === 'close' && l.src === `10.77.1.2:${mine}`, 5000, 'close line of the hang-up');
  t.is(line.error, undefined, JSON.stringify(line));
  t.true(Number(line.bytesIn) > 0, 'the banner went through');
  const theirs = await resetBy('upstream');
  const up = await g.log.waitFor((l) => l.event === 'close' && l.src === `10.77.1.2:${theirs}`, 5000, 'close line of the upstream reset');
  t.is(up.error, 'upstream: ECONNRESET', JSON.stringify(up));
});

test.serial('a private upstream is refused unless allowPrivate covers it, then allowed once it does', async (t) => {
  // allowPrivate lists b's subnet only: a (10.77.2.2) is in 10.0.0.0/8 and not listed.
  const r1 = await g.reload(config({ allowPrivate: ['10.77.3.0/24'] }));
  t.is(r1.action, 'reloaded', JSON.stringify(r1));

  const tls = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/private']);
  t.not(tls.code, 0, 'allowed SNI, forbidden upstream address: refused');
  t.regex(tls.stderr, /tlsv1 alert access denied/, 'with a TLS alert the client can read');
  const tlsLine = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'api.example.test' && l.decision === 'deny', 5000, 'TLS deny line');
  t.regex(String(tlsLine.reason), /10\.77\.2\.2 is in 10\.0\.0\.0\/8/);
  t.regex(String(tlsLine.reason), /allowPrivate/);

  const raw = await talk(w.a, 2222);
  t.notRegex(raw, /BANNER/, raw);
  const rawLine = await g.log.waitFor((l) => l.event === 'conn' && l.proto === 'tcp' && l.host === SSH && l.decision === 'deny', 5000, 'raw deny line');
  t.regex(String(rawLine.reason), /10\.0\.0\.0\/8/);

  const r2 = await g.reload(config({ allowPrivate: ['10.77.2.0/24'] }));
  t.is(r2.action, 'reloaded', JSON.stringify(r2));
  const ok = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/private-ok']);
  t.is(ok.code, 0, ok.stderr);
  t.is(JSON.parse(ok.stdout).server, 'a');
  t.regex(await talk(w.a, 2222), /BANNER:SSH-2\.0-a/);
});
