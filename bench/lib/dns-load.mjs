#!/usr/bin/env node
/**
 * A small closed-loop DNS load client (UDP): keeps --window queries for --name (type A) in flight
 * against --server:--port for --seconds, and counts answers by RCODE. A query unanswered after
 * --timeout-ms counts as lost and its slot is reused. Bounded in time; used by scripts/bench.mjs.
 * With --pace-qps N the client is open-loop instead: N queries per second (a well-behaved
 * sandbox below its limits), still at most --window in flight.
 *
 * stdout: one JSON line {"sent","answered","lost","seconds","qps","rcodes":{...},"p50_us","p99_us"}.
 *
 * Usage: node dns-load.mjs --server IP --port 53 --name HOST [--seconds 5] [--window 32] [--timeout-ms 1000] [--pace-qps N]
 */
import dgram from 'node:dgram';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const server = args.get('server');
const port = Number(args.get('port') ?? 53);
const name = args.get('name');
const seconds = Number(args.get('seconds') ?? 5);
const window = Number(args.get('window') ?? 32);
const timeoutMs = Number(args.get('timeout-ms') ?? 1000);
const paceQps = Number(args.get('pace-qps') ?? 0);

/** A standard query, RD set, one question (RFC 1035 §4.1). Bytes 0-1 (the id) are filled per send. */
function query(host) {
  const labels = host.split('.').filter(Boolean);
  const qname = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const header = Buffer.from([0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, qname, Buffer.from([0, 1, 0, 1])]);
}

const template = query(name);
const sock = dgram.createSocket('udp4');
const inflight = new Map(); // id -> send time (ns)
const rcodes = {};
const lat = [];
let sent = 0;
let answered = 0;
let lost = 0;
let nextId = 1;
let running = true;

function send() {
  if (!running) return;
  let id = nextId;
  // 16-bit ids; skip ones still in flight.
  for (let i = 0; i < 65536 && inflight.has(id); i++) id = (id % 65535) + 1;
  nextId = (id % 65535) + 1;
  const msg = Buffer.from(template);
  msg.writeUInt16BE(id, 0);
  inflight.set(id, process.hrtime.bigint());
  sent++;
  sock.send(msg, port, server);
}

sock.on('message', (msg) => {
  if (msg.length < 12) return;
  const id = msg.readUInt16BE(0);
  const t = inflight.get(id);
  if (t === undefined) return;
  inflight.delete(id);
  answered++;
  if (lat.length < 200000) lat.push(Number(process.hrtime.bigint() - t) / 1000);
  const rc = msg[3] & 0x0f;
  rcodes[rc] = (rcodes[rc] ?? 0) + 1;
  if (!paceQps) send();
});

sock.bind(0, () => {
  const t0 = process.hrtime.bigint();
  let pacer;
  if (paceQps) {
    // Every 10 ms, the queries due by now by the clock (timers drift), if a slot is free.
    let paced = 0;
    pacer = setInterval(() => {
      const due = Math.floor((Number(process.hrtime.bigint() - t0) / 1e9) * paceQps);
      for (; paced < due; paced++) if (inflight.size < window) send();
    }, 10);
  } else {
    for (let i = 0; i < window; i++) send();
  }
  const sweep = setInterval(() => {
    const now = process.hrtime.bigint();
    for (const [id, t] of inflight) {
      if (Number(now - t) / 1e6 > timeoutMs) {
        inflight.delete(id);
        lost++;
        if (!paceQps) send();
      }
    }
  }, 100);
  setTimeout(() => {
    running = false;
    clearInterval(sweep);
    clearInterval(pacer);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    lat.sort((a, b) => a - b);
    const pct = (p) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))]) : null);
    const names = { 0: 'NOERROR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 5: 'REFUSED' };
    const byName = Object.fromEntries(Object.entries(rcodes).map(([k, v]) => [names[k] ?? `rcode${k}`, v]));
    process.stdout.write(
      JSON.stringify({ sent, answered, lost, seconds: secs, qps: answered / secs, rcodes: byName, p50_us: pct(50), p99_us: pct(99) }) + '\n',
    );
    sock.close();
  }, seconds * 1000);
});
