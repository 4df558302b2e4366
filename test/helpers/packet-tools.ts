/**
 * Small packet-level tools for the packet-path tests (gate-udp.test.ts): a recorder that logs
 * every TCP connection and UDP datagram it gets (and echoes UDP back), a UDP sender, a TCP
 * probe, and a bounded UDP flood. Everything runs inside the test's own namespaces.
 */
import type { ChildProcess } from 'node:child_process';
import type { Topology } from '../../src/demo/topology.js';
import { LineLog, type Line } from './gate.js';

/**
 * Records, one JSON line each, every TCP connection and UDP datagram on the given ports, on
 * IPv4 or IPv6: {kind, port, from, data} (kind tcp, tcp-data or udp); echoes each datagram back ("ECHO <data>").
 * Prints {"listening":[...]} once all are bound.
 */
const RECORDER = `
const net = require('net'), dgram = require('dgram');
const [family, ...ports] = process.argv.slice(1);
const host = family === '6' ? '::' : '0.0.0.0';
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let pending = ports.length * 2;
const up = () => { if (--pending === 0) say({ listening: ports.map(Number) }); };
for (const p of ports.map(Number)) {
  net.createServer((c) => {
    say({ kind: 'tcp', port: p, from: c.remoteAddress });
    c.on('data', (d) => say({ kind: 'tcp-data', port: p, from: c.remoteAddress, data: String(d) }));
    c.on('error', () => {});
    c.end('HELLO-' + p + '\\n');
  }).listen({ host, port: p, ipv6Only: family === '6' }, up);
  const u = dgram.createSocket({ type: family === '6' ? 'udp6' : 'udp4', ipv6Only: family === '6' });
  u.on('message', (m, r) => { say({ kind: 'udp', port: p, from: r.address, data: String(m) }); u.send('ECHO ' + String(m), r.port, r.address); });
  u.bind(p, host, up);
}`;

export interface Recorder {
  proc: ChildProcess;
  log: LineLog;
  hits(port: number, kind?: string): Line[];
}

export async function recorder(topo: Topology, ns: string, family: 4 | 6, ports: number[]): Promise<Recorder> {
  const proc = topo.spawn(ns, process.execPath, ['-e', RECORDER, String(family), ...ports.map(String)]);
  const log = new LineLog();
  log.attach(proc);
  await log.waitFor((l) => Array.isArray(l.listening), 5000, `recorder in ${ns}`);
  return { proc, log, hits: (port, kind) => log.lines.filter((l) => l.port === port && (kind === undefined || l.kind === kind)) };
}

/**
 * Sends `count` datagrams from one socket in `ns` and waits briefly for echoes; prints
 * {"echoes": [...]}. The address may be IPv6 or IPv4-mapped ("::ffff:a.b.c.d", sent from a
 * dual-stack udp6 socket).
 */
export async function sendUdp(topo: Topology, ns: string, addr: string, port: number, tag: string, count = 3): Promise<string[]> {
  const family = addr.includes(':') ? 'udp6' : 'udp4';
  const r = await topo.exec(
    ns,
    process.execPath,
    [
      '-e',
      `
    const s = require('dgram').createSocket({ type: '${family}' });
    const echoes = [];
    s.on('message', (m) => echoes.push(String(m)));
    s.on('error', (e) => { echoes.push('error ' + e.code); });
    s.bind(0, () => {
      let n = 0;
      const go = () => { s.send('${tag}', ${port}, '${addr}', () => {}); if (++n < ${count}) setTimeout(go, 50); };
      go();
      setTimeout(() => { console.log(JSON.stringify({ echoes })); s.close(); }, 600);
    });`,
    ],
    { timeoutMs: 15000 },
  ); // generous: node's own start-up on a loaded 2-core machine
  try {
    return (JSON.parse(r.stdout) as { echoes: string[] }).echoes;
  } catch {
    return [`no output: ${r.stdout} ${r.stderr}`];
  }
}

/** One TCP connection attempt; prints what happened (connected / DATA / error / timeout). */
export async function tryTcp(topo: Topology, ns: string, addr: string, port: number, waitMs = 1000): Promise<string> {
  const r = await topo.exec(
    ns,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect({ host: '${addr}', port: ${port} });
    s.setTimeout(${waitMs}, () => { console.log('timeout'); s.destroy(); });
    s.on('connect', () => console.log('connected'));
    s.on('data', (d) => { console.log('DATA', String(d).trim()); s.destroy(); });
    s.on('error', (e) => console.log('error', e.code));`,
    ],
    { timeoutMs: waitMs + 10000 },
  );
  return r.stdout.trim();
}

/**
 * A bounded UDP flood from `ns`: `count` datagrams, each to a different destination port
 * (base .. base+count-1, wrapping inside 10000-59999) so every one is a new flow, sent as fast
 * as the socket takes them but never for longer than `maxMs`. Prints {sent, ms}.
 */
export async function udpFlood(topo: Topology, ns: string, addr: string, count: number, maxMs: number): Promise<{ sent: number; ms: number }> {
  const r = await topo.exec(
    ns,
    process.execPath,
    [
      '-e',
      `
    const s = require('dgram').createSocket('udp4');
    const payload = Buffer.alloc(64, 120);
    const t0 = Date.now();
    let sent = 0, inflight = 0, done = false;
    const finish = () => { if (done) return; done = true; console.log(JSON.stringify({ sent, ms: Date.now() - t0 })); s.close(); };
    const pump = () => {
      while (sent < ${count} && inflight < 256) {
        if (Date.now() - t0 > ${maxMs}) return finish();
        inflight++;
        s.send(payload, 10000 + (sent % 50000), '${addr}', () => { inflight--; if (sent >= ${count} && inflight === 0) finish(); else if (inflight < 128) setImmediate(pump); });
        sent++;
      }
    };
    s.bind(0, pump);
    setTimeout(finish, ${maxMs} + 1000);`,
    ],
    { timeoutMs: maxMs + 5000 },
  );
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { sent: number; ms: number };
}
