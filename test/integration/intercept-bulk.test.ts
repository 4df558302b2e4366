/**
 * Interception under load: 20 MiB up and down through the scrubbing pipeline with sandgate's
 * memory bounded (bodies are streamed, never buffered), and the latency one intercepted
 * keep-alive request adds compared with the same client talking to the upstream directly.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes, createHash } from 'node:crypto';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, type World, type Gate, type Line } from '../helpers/gate.js';

const SECRET = `sk-real-${randomBytes(12).toString('hex')}`;
const MIB = 1024 * 1024;
let w: World;
let g: Gate;

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue(['bulk.example.test'], { tag: 'bulk' });
  await startUpstream(w.topo, 'a', ['--name', 'bulk', '--port', '8443', '--tls', cert.cert, cert.key, '--expect-auth', `Bearer ${SECRET}`]);
  const config = {
    ...baseConfig(w, {
      allow: [{ host: 'bulk.example.test', ports: [8443], inject: 'k' }],
      upstream: { hosts: Object.fromEntries([...NAMES, 'bulk.example.test'].map((n) => [n, w.a])), allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    }),
    credentials: { k: { secret: { env: 'SG_TEST_K' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_K: SECRET } });
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, `${w.a}\tbulk.example.test\n`);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** sandgate's resident set now and at its peak, in MiB (`ip netns exec` execs, so the pid is node's). */
function memory(): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${g.proc.pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** A download and an upload of `size` bytes with curl speaking `proto` (--http1.1 or --http2) to sandgate. */
async function roundTrip(t: ExecutionContext, size: number, proto: string): Promise<void> {
  const ca = join(w.dir, 'ca', 'ca.pem');
  const down = await w.topo.exec(
    w.sandbox,
    '/usr/bin/curl',
    [
      proto,
      '-sS',
      '--max-time',
      '30',
      '--cacert',
      ca,
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{size_download}',
      `https://bulk.example.test:8443/_sg/bytes/${size}`,
    ],
    { timeoutMs: 35000 },
  );
  t.is(down.stdout, `200 ${size}`, down.stderr);
  const file = join(w.dir, 'upload.bin');
  const data = randomBytes(size);
  writeFileSync(file, data);
  const upl = await w.topo.exec(
    w.sandbox,
    '/usr/bin/curl',
    [
      proto,
      '-sS',
      '--max-time',
      '30',
      '--cacert',
      ca,
      '--data-binary',
      `@${file}`,
      '-H',
      'content-type: application/octet-stream',
      `https://bulk.example.test:8443/_sg/upload?size=${size}`,
    ],
    { timeoutMs: 35000 },
  );
  const res = JSON.parse(upl.stdout) as { bytes: number; sha256: string };
  t.is(res.bytes, size, upl.stderr);
  t.is(res.sha256, createHash('sha256').update(data).digest('hex'));
  rmSync(file);
}

for (const [proto, alpn] of [
  ['--http1.1', undefined],
  ['--http2', 'h2'],
] as const) {
  test.serial(`20 MiB download and 20 MiB upload are streamed through interception with bounded memory (curl ${proto})`, async (t) => {
    const ca = join(w.dir, 'ca', 'ca.pem');
    // Warm up (TLS, leaf minting, JIT), then measure the peak from here.
    await w.topo.exec(w.sandbox, '/usr/bin/curl', [proto, '-sS', '--cacert', ca, '-o', '/dev/null', 'https://bulk.example.test:8443/_sg/bytes/1048576']);
    const before = memory();
    const seen = g.log.lines.length;
    await roundTrip(t, 20 * MIB, proto);
    const mid = memory();
    // Five times as much: if any body were buffered, the peak would grow by at least 100 MiB more.
    // Streamed, it stays where it was: what remains is garbage awaiting collection (V8 collects
    // Buffers' external memory in batches of a few tens of MiB), not a function of body size.
    await roundTrip(t, 100 * MIB, proto);
    const after = memory();
    t.log(
      `sandgate RSS before ${before.rss.toFixed(1)} MiB; peak after 2 x 20 MiB ${mid.hwm.toFixed(1)} MiB; peak after 2 x 100 MiB more ${after.hwm.toFixed(1)} MiB`,
    );
    t.true(mid.hwm - before.hwm < 64, `20 MiB each way raised the peak by ${(mid.hwm - before.hwm).toFixed(1)} MiB`);
    t.true(after.hwm - mid.hwm < 32, `100 MiB each way raised the peak by another ${(after.hwm - mid.hwm).toFixed(1)} MiB`);
    const mine = (l: Line): boolean => g.log.lines.indexOf(l) >= seen && l.event === 'http';
    const line = await g.log.waitFor((l) => mine(l) && l.path === '/_sg/upload' && l.bytesOut === 20 * MIB);
    t.is(line.status, 200);
    t.is(line.alpn, alpn);
    t.is((await g.log.waitFor((l) => mine(l) && l.path === `/_sg/bytes/${20 * MIB}`)).bytesIn, 20 * MIB);
  });
}

/** sandgate's CPU time so far (user + system), in ms. */
function cpuMs(): number {
  const fields = readFileSync(`/proc/${g.proc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // Fields 14 and 15 (utime, stime) counted from 1 over the whole line; here index 11 and 12.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

/** A client doing N sequential GETs on one keep-alive connection; prints {median, p99} in ms. */
const LATENCY_CLIENT = `
  const https = require('https');
  const [host, ca, n, auth] = process.argv.slice(1);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const one = () => new Promise((resolve, reject) => {
    const t0 = performance.now();
    https.get({ host, port: 8443, servername: 'bulk.example.test', path: '/lat', agent, ca: require('fs').readFileSync(ca), headers: { host: 'bulk.example.test', ...(auth ? { authorization: auth } : {}) } }, (res) => {
      res.resume(); res.on('end', () => res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error('status ' + res.statusCode)));
    }).on('error', reject);
  });
  (async () => {
    for (let i = 0; i < 50; i++) await one();
    const xs = [];
    for (let i = 0; i < Number(n); i++) xs.push(await one());
    xs.sort((a, b) => a - b);
    console.log(JSON.stringify({ median: xs[Math.floor(xs.length / 2)], p99: xs[Math.floor(xs.length * 0.99)] }));
  })().catch((e) => { console.log(JSON.stringify({ error: String(e) })); });`;

test.serial('latency: one intercepted keep-alive request vs direct (500 sequential requests)', async (t) => {
  const n = '500';
  // Direct: the same client in the host namespace, straight to the upstream (one veth, no sandgate).
  const direct = await w.topo.exec(w.topo.hostNs, process.execPath, ['-e', LATENCY_CLIENT, w.a, w.pki.caFile, n, `Bearer ${SECRET}`], { timeoutMs: 30000 });
  // Intercepted: from the sandbox, with no key; sandgate terminates TLS, injects, re-encrypts.
  const cpu0 = cpuMs();
  const icpt = await w.topo.exec(w.sandbox, process.execPath, ['-e', LATENCY_CLIENT, 'bulk.example.test', join(w.dir, 'ca', 'ca.pem'), n, ''], {
    timeoutMs: 30000,
  });
  const cpu = cpuMs() - cpu0;
  const d = JSON.parse(direct.stdout) as { median: number; p99: number; error?: string };
  const i = JSON.parse(icpt.stdout) as { median: number; p99: number; error?: string };
  t.is(d.error, undefined);
  t.is(i.error, undefined);
  t.log(`direct:      median ${d.median.toFixed(3)} ms, p99 ${d.p99.toFixed(3)} ms`);
  t.log(`intercepted: median ${i.median.toFixed(3)} ms, p99 ${i.p99.toFixed(3)} ms`);
  t.log(`sandgate CPU: ${((cpu * 1000) / (Number(n) + 50)).toFixed(0)} µs per intercepted request (user+system)`);
  t.log(`added:       median ${(i.median - d.median).toFixed(3)} ms, p99 ${(i.p99 - d.p99).toFixed(3)} ms`);
  t.pass();
});
