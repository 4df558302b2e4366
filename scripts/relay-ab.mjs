#!/usr/bin/env node
/**
 * In-process A/B of the HTTP relay (plain HTTP, keep-alive, no namespaces, no root): two builds
 * loaded side by side in one process, the same loopback client (20 keep-alive connections) and
 * the same upstream, bursts of requests alternated between them; CPU of the whole process per
 * request (client and upstream cost the same for both, so a difference is the relay's). On a
 * shared, noisy machine the alternation is what makes the two comparable: both see the same noise.
 *
 * With --credential the rule injects a static credential and sandgate speaks verified TLS to the
 * upstream (a `plainHttp` rule; a throwaway certificate made with openssl): the intercepted
 * path's head building, injection and scrubbing, without the TLS toward the client.
 *
 * Usage: node scripts/relay-ab.mjs [--credential] OLD_DIST NEW_DIST [BURSTS=10] [REQUESTS_PER_BURST=4000]
 * (each DIST a `npm run build` output whose node_modules resolve, e.g. a worktree's dist/).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
const args = process.argv.slice(2);
const CREDENTIAL = args[0] === '--credential';
if (CREDENTIAL) args.shift();
const [oldDist, newDist, burstsArg, reqsArg] = args;
const dir = mkdtempSync(join(tmpdir(), 'sg-relay-ab-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const CERT = join(dir, 'cert.pem');
const KEY = join(dir, 'key.pem');
if (CREDENTIAL) {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-subj',
      '/CN=up.test',
      '-addext',
      'subjectAltName=DNS:up.test',
      '-days',
      '1',
      '-nodes',
      '-keyout',
      KEY,
      '-out',
      CERT,
    ],
    { stdio: 'ignore' },
  );
  process.env.SG_AB_KEY = 'sk-ab-0123456789abcdef';
}
const BURSTS = Number(burstsArg ?? 10),
  REQS = Number(reqsArg ?? 4000),
  CONNS = 20;

const serve = (s) => {
  s.setNoDelay(true);
  let buf = '';
  const body = 'hello, small body';
  const res = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  s.on('data', (c) => {
    buf += c.toString('latin1');
    let i;
    while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
      buf = buf.slice(i + 4);
      s.write(res);
    }
  });
};
const upstream = CREDENTIAL ? tls.createServer({ key: readFileSync(KEY), cert: readFileSync(CERT) }, serve) : net.createServer(serve);
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const UP = upstream.address().port;

async function variant(dist) {
  const { parseConfig } = await import(`${dist}/config/load.js`);
  const { buildRuntime } = await import(`${dist}/runtime.js`);
  const { createLineAudit } = await import(`${dist}/audit/logger.js`);
  const relay = await import(`${dist}/http/relay.js`);
  const ci = await import(`${dist}/net/conn-info.js`);
  const config = parseConfig(
    `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    allow:
      - { host: up.test, ports: [${UP}]${CREDENTIAL ? ', inject: k, plainHttp: true' : ''} }
upstream: { hosts: { up.test: [127.0.0.1] }, allowPrivate: [127.0.0.0/8]${CREDENTIAL ? `, caFile: ${CERT}` : ''} }
${CREDENTIAL ? 'credentials:\n  k: { secret: { env: SG_AB_KEY } }' : ''}
`,
    'ab.yaml',
  );
  let lines = 0;
  const rt = buildRuntime(
    config,
    createLineAudit('info', {}, () => {
      lines++;
    }),
  );
  const sandbox = rt.sandboxes.identify('10.77.1.2', undefined);
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    s.setNoDelay(true);
    const info = { rt, sandbox, src: `10.77.1.2:${s.remotePort}`, dst: `127.0.0.1:${UP}`, dstPort: UP };
    // Builds from before serveHttp(socket, info, head) took the connection's facts from a WeakMap.
    if (ci.setConnInfo) {
      ci.setConnInfo(s, info);
      relay.serveHttp(s, undefined);
    } else relay.serveHttp(s, info, undefined);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const conns = await Promise.all(
    Array.from(
      { length: CONNS },
      () =>
        new Promise((r) => {
          const c = net.connect(port, '127.0.0.1', () => r(c));
          c.setNoDelay(true);
        }),
    ),
  );
  const req = Buffer.from(`GET /small.txt HTTP/1.1\r\nHost: up.test\r\nUser-Agent: ab\r\nAccept: */*\r\n\r\n`);
  async function burst(n) {
    let left = n;
    const t0 = process.cpuUsage();
    const w0 = performance.now();
    await Promise.all(
      conns.map(
        (c) =>
          new Promise((done) => {
            let got = 0;
            const onData = (d) => {
              const s = d.toString('latin1');
              let i = -1;
              while ((i = s.indexOf('hello, small body', i + 1)) >= 0) got++;
              if (got > 0) {
                got = 0;
                if (left-- > 0) c.write(req);
                else {
                  c.off('data', onData);
                  done();
                }
              }
            };
            c.on('data', onData);
            if (left-- > 0) c.write(req);
            else {
              c.off('data', onData);
              done();
            }
          }),
      ),
    );
    const cpu = process.cpuUsage(t0);
    const ms = performance.now() - w0;
    return { us: (cpu.user + cpu.system) / n, rps: n / (ms / 1000) };
  }
  return { burst, lines: () => lines };
}

const A = await variant(oldDist),
  B = await variant(newDist);
await A.burst(2000);
await B.burst(2000); // warm-up
const res = { old: [], new: [] };
for (let i = 0; i < BURSTS; i++) {
  const order =
    i % 2
      ? [
          ['new', B],
          ['old', A],
        ]
      : [
          ['old', A],
          ['new', B],
        ];
  for (const [k, v] of order) res[k].push(await v.burst(REQS));
}
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
for (const k of ['old', 'new']) {
  const us = res[k].map((r) => r.us),
    rps = res[k].map((r) => r.rps);
  console.log(
    `${k}: CPU µs/req median ${med(us).toFixed(1)} (min ${Math.min(...us).toFixed(1)}, max ${Math.max(...us).toFixed(1)}); req/s median ${med(rps).toFixed(0)} (min ${Math.min(...rps).toFixed(0)}, max ${Math.max(...rps).toFixed(0)})`,
  );
}
const ratio = res.new.map((r, i) => r.us / res.old[i].us);
console.log(
  `paired new/old CPU ratio: median ${med(ratio).toFixed(3)} (min ${Math.min(...ratio).toFixed(3)}, max ${Math.max(...ratio).toFixed(3)}); audit lines old ${A.lines()} new ${B.lines()}`,
);
process.exit(0);
