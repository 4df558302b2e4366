#!/usr/bin/env node
/**
 * A DNS flood from one sandbox (UDP): sends queries for random names as fast as one process can,
 * without waiting for answers, for at most --seconds (or until SIGTERM). Bounded in time; used by
 * test/integration/dns-flood.test.ts and scripts/bench.mjs to check that one sandbox's flood does
 * not starve another's queries. Run it only inside a namespace of a topology the caller built.
 *
 * Names are `<random>.<suffix>` from a pool of 8,192 built up front (building one per datagram
 * would slow the sender down), type A, random 16-bit ids.
 *
 * stdout: {"flooding":true} once the first batch is out, then at the end one JSON line
 *   {"sent","seconds","pps","answers"} (answers: replies this process happened to read).
 *
 * Usage: node dns-flood.mjs --server IP [--port 53] [--suffix flood.invalid] [--seconds 5]
 */
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const server = args.get('server');
const port = Number(args.get('port') ?? 53);
const suffix = args.get('suffix') ?? 'flood.invalid';
const seconds = Math.min(30, Number(args.get('seconds') ?? 5));
if (!server) {
  process.stderr.write('usage: node dns-flood.mjs --server IP [--port 53] [--suffix NAME] [--seconds S]\n');
  process.exit(2);
}

/** A standard query, RD set, one question (RFC 1035 §4.1). */
function query(host) {
  const labels = host.split('.').filter(Boolean);
  const qname = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const header = Buffer.from([0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  randomBytes(2).copy(header, 0);
  return Buffer.concat([header, qname, Buffer.from([0, 1, 0, 1])]);
}

const POOL = 8192;
const pool = Array.from({ length: POOL }, () => query(`${randomBytes(6).toString('hex')}.${suffix}`));
const BATCH = 256;

const sock = dgram.createSocket('udp4');
let sent = 0;
let answers = 0;
let running = true;
const t0 = performance.now();

function finish() {
  if (!running) return;
  running = false;
  const s = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ sent, seconds: Number(s.toFixed(3)), pps: Math.round(sent / s), answers })}\n`);
  process.exit(0);
}

function loop() {
  if (!running) return;
  for (let i = 0; i < BATCH; i++) sock.send(pool[sent++ % POOL], port, server);
  if (sent === BATCH) process.stdout.write('{"flooding":true}\n');
  // setImmediate, not a tight loop: let libuv drain its send queue and notice SIGTERM.
  setImmediate(loop);
}

sock.on('message', () => {
  answers++;
});
sock.on('error', () => {
  /* ICMP errors on an unconnected socket: keep sending */
});
process.on('SIGTERM', finish);
setTimeout(finish, seconds * 1000).unref();
sock.bind(0, loop);
