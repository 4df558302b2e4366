#!/usr/bin/env node
/**
 * Opens N TLS connections to one address (through whatever the sandbox's traffic goes through),
 * completes each handshake, verifies the certificate against --ca, and keeps them all idle until
 * its stdin closes (or --hold-s passes). Used by scripts/bench.mjs to measure a proxy's memory per
 * idle intercepted connection. Bounded: at most --count connections, --concurrency handshakes in
 * flight, each handshake --timeout-ms, the whole run --hold-s seconds.
 *
 * stdout, one JSON line each: {"phase":"opened","ok":N,"failed":M,"ms":T,"errors":{...}}, then
 * {"phase":"closed"} on exit.
 *
 * Usage: node idle-client.mjs --addr IP --port 443 --name HOST --ca FILE --count 10000
 *        [--concurrency 64] [--timeout-ms 10000] [--hold-s 120]
 */
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const addr = args.get('addr');
const port = Number(args.get('port') ?? 443);
const name = args.get('name');
const ca = readFileSync(args.get('ca'));
const count = Number(args.get('count') ?? 10000);
const concurrency = Number(args.get('concurrency') ?? 64);
const timeoutMs = Number(args.get('timeout-ms') ?? 10000);
const holdS = Number(args.get('hold-s') ?? 120);

const sockets = [];
const errors = {};
let ok = 0;
let failed = 0;
let next = 0;
const t0 = Date.now();

function openOne() {
  return new Promise((resolve) => {
    const s = tls.connect({ host: addr, port, servername: name, ca, ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => s.destroy(new Error('handshake timeout')), timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      ok++;
      sockets.push(s);
      // A later reset (proxy gave up on the idle connection) must not crash the client.
      s.on('error', () => {});
      resolve();
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      failed++;
      const k = err.code ?? err.message;
      errors[k] = (errors[k] ?? 0) + 1;
      s.destroy();
      resolve();
    });
  });
}

async function worker() {
  while (next < count) {
    next++;
    await openOne();
  }
}

const hold = setTimeout(finish, holdS * 1000);
await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
// Idle connections still open now (a proxy may have closed some meanwhile).
const open = sockets.filter((s) => !s.destroyed).length;
process.stdout.write(JSON.stringify({ phase: 'opened', ok, failed, open, ms: Date.now() - t0, errors }) + '\n');
process.stdin.resume();
process.stdin.on('end', finish);
process.stdin.on('close', finish);

function finish() {
  clearTimeout(hold);
  const stillOpen = sockets.filter((s) => !s.destroyed).length;
  for (const s of sockets) s.destroy();
  process.stdout.write(JSON.stringify({ phase: 'closed', stillOpen }) + '\n');
  process.exit(0);
}
