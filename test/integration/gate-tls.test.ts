import test from 'ava';
import net from 'node:net';
import { createWorld, startGate, baseConfig, bodyOf, type World, type Gate } from '../helpers/gate.js';

// One world and one sandgate for this file; the tests below are independent requests into it.
let w: World;
let g: Gate;

test.before(async () => {
  w = await createWorld();
  g = await startGate(w.topo, w.dir, baseConfig(w));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test('allowed SNI passes through undecrypted: the client verifies the upstream\'s own certificate', async (t) => {
  const r = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/v1/x', '-w', '\n%{ssl_verify_result} %{http_code}']);
  t.is(r.code, 0, r.stderr);
  const [body, tail] = r.stdout.split('\n');
  t.is(JSON.parse(body ?? '{}').server, 'a');
  t.is(tail, '0 200'); // verify result 0: the chain is the test PKI's, not sandgate's CA
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'api.example.test' && l.decision === 'allow' && l.dst === `${w.a}:443`);
  t.is(line.sandbox, 'agent');
  t.is(line.user, 'alice');
  t.is(line.proto, 'tls');
  t.is(line.rule, 'policies.default.allow[0]');
  t.is(line.dst, `${w.a}:443`);
});

test('an unlisted SNI is reset before any byte reaches an upstream', async (t) => {
  const before = w.upstreams[1]!.log.lines.length;
  const r = await w.curl(['--resolve', `evil.example.test:443:${w.b}`, 'https://evil.example.test/']);
  t.not(r.code, 0);
  t.regex(r.stderr, /reset|SSL_ERROR_SYSCALL|Connection reset|35|56/i);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'evil.example.test');
  t.is(line.decision, 'deny');
  t.regex(String(line.reason), /not allowed/);
  t.is(w.upstreams[1]!.log.lines.length, before, 'upstream b saw no request');
});

test('the listed SNI sent to the unlisted upstream\'s address reaches the listed host instead', async (t) => {
  const r = await w.curl(['--resolve', `api.example.test:443:${w.b}`, 'https://api.example.test/steer']);
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
});

test('TLS to an IP literal (no SNI) is denied', async (t) => {
  const r = await w.curl(['-k', `https://${w.a}/`]);
  t.not(r.code, 0);
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:443` && l.reason === 'no SNI');
  t.is(line.decision, 'deny');
});

test('wildcard rules cover subdomains at any depth but not the apex', async (t) => {
  const sub = await w.curl(['--resolve', `x.wild.example.test:443:${w.a}`, 'https://x.wild.example.test/']);
  t.is(sub.code, 0, sub.stderr);
  const deep = await w.curl(['--resolve', `deep.x.wild.example.test:443:${w.a}`, 'https://deep.x.wild.example.test/']);
  t.is(deep.code, 0, deep.stderr);
  const apex = await w.curl(['--resolve', `wild.example.test:443:${w.a}`, 'https://wild.example.test/']);
  t.not(apex.code, 0);
});

test('SNI matching is case-insensitive and ignores one trailing dot', async (t) => {
  const r = await w.curl(['--resolve', `API.Example.TEST.:443:${w.a}`, 'https://API.Example.TEST./up']);
  t.is(r.code, 0, r.stderr);
  t.is(bodyOf(r)?.server, 'a');
});

test('plain HTTP: Host decides, every request on a keep-alive connection is checked', async (t) => {
  const ok = await w.curl(['--resolve', `plain.example.test:80:${w.b}`, 'http://plain.example.test/hello']);
  t.is(ok.code, 0, ok.stderr);
  t.is(bodyOf(ok)?.server, 'a-plain', 'sandgate chose the upstream from Host, not the dialled address');
  const bad = await w.curl(['-H', 'Host: evil.example.test', `http://${w.a}/`, '-w', '\n%{http_code}']);
  t.regex(bad.stdout, /403$/);
  t.regex(bad.stdout, /not allowed/);
  // Second request on the same connection names another host: it gets its own verdict.
  const two = await w.curl(['--resolve', `plain.example.test:80:${w.a}`, '--resolve', `evil.example.test:80:${w.a}`,
    'http://plain.example.test/one', '--next', 'http://plain.example.test/two', '-H', 'Host: evil.example.test', '-w', '%{http_code}\n']);
  t.regex(two.stdout, /"server":"a-plain".*"path":"\/one"/);
  t.regex(two.stdout, /not allowed by policy.*403\s*$/s);
  const line = await g.log.waitFor((l) => l.event === 'http' && l.path === '/hello');
  t.is(line.decision, 'allow');
  t.is(line.status, 200);
});

test('plain HTTP with an absolute-form target or two Host headers is refused', async (t) => {
  const abs = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
    const s = require('net').connect(80, '${w.a}', () => s.write('GET http://evil.example.test/ HTTP/1.1\\r\\nHost: plain.example.test\\r\\n\\r\\n'));
    s.on('data', d => { process.stdout.write(d); s.destroy(); });`], { timeoutMs: 5000 });
  t.regex(abs.stdout, /^HTTP\/1.1 400/);
  const dup = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
    const s = require('net').connect(80, '${w.a}', () => s.write('GET / HTTP/1.1\\r\\nHost: plain.example.test\\r\\nHost: evil.example.test\\r\\n\\r\\n'));
    s.on('data', d => { process.stdout.write(d); s.destroy(); });`], { timeoutMs: 5000 });
  t.regex(dup.stdout, /^HTTP\/1.1 400/);
});

test('a port no rule lists is reset without reading', async (t) => {
  const r = await w.curl([`http://${w.a}:8080/`]);
  t.not(r.code, 0);
  await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:8080` && l.decision === 'deny');
  t.pass();
});

test('a Node https client in the sandbox works through the gate', async (t) => {
  const r = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
    const https = require('https');
    https.get({ host: '${w.b}', servername: 'api.example.test', path: '/node', headers: { host: 'api.example.test' }, ca: require('fs').readFileSync('${w.pki.caFile}') }, (res) => {
      let b = ''; res.on('data', (c) => b += c); res.on('end', () => { console.log(res.statusCode, JSON.parse(b).server); });
    }).on('error', (e) => { console.log('error', e.code); });`], { timeoutMs: 8000 });
  t.is(r.stdout.trim(), '200 a', r.stderr);
});

test('the host\'s own addresses and sandgate\'s ports are unreachable from the sandbox', async (t) => {
  const hostAddr = w.topo.hostAddr('sbx');
  // A service on the host (in the host namespace), on a port no rule lists.
  const svc = w.topo.spawn(w.topo.hostNs, process.execPath, ['-e', `require('net').createServer(c => c.end('host-secret\\n')).listen(8081, '0.0.0.0', () => console.log('up'))`]);
  await new Promise((r) => svc.stdout?.once('data', r));
  try {
    for (const port of [8081, 15001, 15053, 22]) {
      const r = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
        const s = require('net').connect(${port}, '${hostAddr}');
        s.setTimeout(1500, () => { console.log('timeout'); s.destroy(); });
        s.on('data', d => { console.log('DATA', String(d).trim()); s.destroy(); });
        s.on('error', e => console.log('error', e.code));
        s.on('close', () => console.log('closed'));`], { timeoutMs: 5000 });
      t.notRegex(r.stdout, /DATA/, `port ${port}: ${r.stdout}`);
    }
  } finally {
    svc.kill('SIGKILL');
  }
});

test('raw TCP bytes that are neither TLS nor HTTP are reset on a listed port', async (t) => {
  const r = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
    const s = require('net').connect(443, '${w.a}', () => s.write('\\x00\\x01garbage'));
    s.on('data', () => console.log('DATA'));
    s.on('error', e => console.log('error', e.code));
    s.on('close', () => console.log('closed'));`], { timeoutMs: 5000 });
  t.regex(r.stdout, /ECONNRESET|closed/);
  t.notRegex(r.stdout, /DATA/);
  t.truthy(await g.log.waitFor((l) => l.event === 'conn' && l.reason === 'neither TLS nor HTTP'));
});

test('a socket that connects and says nothing does not hold anything open forever: it gets a verdict', async (t) => {
  // The peek timeout is 10 s; just check that an idle connection is not allowed through meanwhile.
  const s = await w.topo.exec(w.sandbox, process.execPath, ['-e', `
    const s = require('net').connect(443, '${w.a}');
    s.on('data', () => console.log('DATA'));
    setTimeout(() => { console.log('alive'); s.destroy(); }, 500);`], { timeoutMs: 5000 });
  t.regex(s.stdout, /alive/);
  t.notRegex(s.stdout, /DATA/);
});

void net;
