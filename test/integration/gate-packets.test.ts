/**
 * Everything that is not TCP through sandgate goes nowhere: UDP (other than DNS), ICMP, IPv6,
 * packets to the host's own addresses, and packets with a source address the sandbox does not
 * own. Each check has a control: the same packet sent from a namespace the firewall does not
 * govern (the host namespace) does arrive, so "nothing arrived" means the gate stopped it.
 */
import test from 'ava';
import { createWorld, startGate, baseConfig, type World, type Gate } from '../helpers/gate.js';
import { recorder as startRecorder, type Recorder } from '../helpers/packet-tools.js';

let w: World;
let g: Gate;
const recorders: Recorder[] = [];

async function recorder(ns: string, family: 4 | 6, ports: number[]): Promise<Recorder> {
  const r = await startRecorder(w.topo, ns, family, ports);
  recorders.push(r);
  return r;
}

/** Sends a few UDP datagrams from `ns` (optionally from a given source address); exits on its own. */
function sendUdp(ns: string, addr: string, port: number, tag: string, from?: string): Promise<unknown> {
  const family = addr.includes(':') ? 'udp6' : 'udp4';
  return w.topo.exec(
    ns,
    process.execPath,
    [
      '-e',
      `
    const s = require('dgram').createSocket('${family}');
    const go = () => { for (let i = 0; i < 3; i++) s.send('${tag}', ${port}, '${addr}', () => {}); setTimeout(() => s.close(), 300); };
    s.on('error', (e) => { console.log('error', e.code); s.close(); });
    ${from ? `s.bind(0, '${from}', go);` : 'go();'}`,
    ],
    { timeoutMs: 4000 },
  );
}

/** One TCP connection attempt from `ns`; prints what happened (connected / data / error / timeout). */
async function tryTcp(ns: string, addr: string, port: number, opts: { from?: string; waitMs?: number } = {}): Promise<string> {
  const r = await w.topo.exec(
    ns,
    process.execPath,
    [
      '-e',
      `
    const s = require('net').connect({ host: '${addr}', port: ${port}${opts.from ? `, localAddress: '${opts.from}'` : ''} });
    s.setTimeout(${opts.waitMs ?? 1500}, () => { console.log('timeout'); s.destroy(); });
    s.on('connect', () => { console.log('connected'); s.write('PING'); });
    s.on('data', (d) => { console.log('DATA', String(d).trim()); s.destroy(); });
    s.on('error', (e) => console.log('error', e.code));`,
    ],
    { timeoutMs: (opts.waitMs ?? 1500) + 3000 },
  );
  return r.stdout;
}

const settle = (ms = 400): Promise<void> => new Promise((r) => setTimeout(r, ms));

test.before(async () => {
  // A second sandbox (sbx2, 10.77.4.0/24) with a wider policy: the one a spoofer would borrow.
  w = await createWorld({
    ipv6: true,
    sandboxes: [
      { name: 'sbx', subnet: 1 },
      { name: 'sbx2', subnet: 4 },
    ],
  });
  const config = baseConfig(w);
  config.sandboxes = [...(config.sandboxes as unknown[]), { name: 'other', interface: 'sbx-*', cidr: '10.77.4.0/24', policy: 'wide' }];
  config.policies = { ...(config.policies as Record<string, unknown>), wide: { allow: [{ host: 'evil.example.test' }] } };
  g = await startGate(w.topo, w.dir, config);
});

test.after.always(async () => {
  for (const r of recorders) r.proc.kill('SIGKILL');
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test('UDP from the sandbox reaches neither upstream (b unlisted, a listed)', async (t) => {
  const [ra, rb] = await Promise.all([recorder(w.topo.ns('a'), 4, [5301]), recorder(w.topo.ns('b'), 4, [5301])]);
  // Control: the same datagrams from the host namespace arrive.
  await sendUdp(w.topo.hostNs, w.b, 5301, 'control');
  await rb.log.waitFor((l) => l.kind === 'udp' && l.data === 'control', 3000, 'control datagram at b');
  await Promise.all([sendUdp(w.sandbox, w.b, 5301, 'from-sbx'), sendUdp(w.sandbox, w.a, 5301, 'from-sbx')]);
  await settle();
  t.deepEqual(
    rb.hits(5301).filter((l) => l.data === 'from-sbx'),
    [],
  );
  t.deepEqual(ra.hits(5301), []);
});

test("UDP to the host's own address reaches no host service", async (t) => {
  const rh = await recorder(w.topo.hostNs, 4, [5302]);
  await sendUdp(w.topo.hostNs, w.topo.hostAddr('sbx'), 5302, 'control');
  await rh.log.waitFor((l) => l.kind === 'udp' && l.data === 'control', 3000, 'control datagram at host');
  await sendUdp(w.sandbox, w.topo.hostAddr('sbx'), 5302, 'from-sbx');
  await sendUdp(w.sandbox, w.topo.hostAddr('a'), 5302, 'from-sbx');
  await settle();
  t.deepEqual(
    rh.hits(5302).filter((l) => l.data === 'from-sbx'),
    [],
  );
});

test('ICMP echo from the sandbox gets no answer: a, b, the host (v4 and v6)', async (t) => {
  // Control: the host namespace can ping b, so ICMP itself works in this topology.
  const control = await w.topo.exec(w.topo.hostNs, '/usr/bin/ping', ['-c1', '-W1', w.b], { timeoutMs: 4000 });
  t.is(control.code, 0, control.stdout + control.stderr);
  const targets = [w.a, w.b, w.topo.hostAddr('sbx'), w.topo.hostAddr('a'), w.topo.hostAddr6('sbx')!, w.topo.addr6('b')!];
  const results = await Promise.all(targets.map((addr) => w.topo.exec(w.sandbox, '/usr/bin/ping', ['-c1', '-W1', addr], { timeoutMs: 4000 })));
  results.forEach((r, i) => {
    t.not(r.code, 0, `ping ${targets[i]}: ${r.stdout}`);
    t.notRegex(r.stdout, /1 received/, `ping ${targets[i]}`);
  });
});

test("IPv6 TCP and UDP to b's v6 address and to the host's v6 address go nowhere", async (t) => {
  const b6 = w.topo.addr6('b')!;
  const h6 = w.topo.hostAddr6('sbx')!;
  const [rb, rh] = await Promise.all([recorder(w.topo.ns('b'), 6, [443, 5303]), recorder(w.topo.hostNs, 6, [8443, 5303])]);
  // Controls: from the host namespace, both listeners answer over IPv6.
  t.regex(await tryTcp(w.topo.hostNs, b6, 443), /DATA HELLO-443/);
  t.regex(await tryTcp(w.topo.hostNs, h6, 8443), /DATA HELLO-8443/);
  const before = { b: rb.log.lines.length, h: rh.log.lines.length };
  const [tb, th] = await Promise.all([tryTcp(w.sandbox, b6, 443, { waitMs: 1000 }), tryTcp(w.sandbox, h6, 8443, { waitMs: 1000 })]);
  await Promise.all([sendUdp(w.sandbox, b6, 5303, 'from-sbx'), sendUdp(w.sandbox, h6, 5303, 'from-sbx')]);
  await settle();
  t.notRegex(tb, /connected|DATA/, tb);
  t.notRegex(th, /connected|DATA/, th);
  t.deepEqual(rb.log.lines.slice(before.b), [], 'b recorded nothing');
  t.deepEqual(rh.log.lines.slice(before.h), [], 'the host recorded nothing');
});

test("TCP to the host's own IPv4 address on an unlisted port never reaches the host service", async (t) => {
  const rh = await recorder(w.topo.hostNs, 4, [8082]);
  t.regex(await tryTcp(w.topo.hostNs, w.topo.hostAddr('sbx'), 8082), /DATA HELLO-8082/, 'control from the host namespace');
  const before = rh.log.lines.length;
  for (const addr of [w.topo.hostAddr('sbx'), w.topo.hostAddr('a'), '127.0.0.1']) {
    const out = await tryTcp(w.sandbox, addr, 8082, { waitMs: 1000 });
    t.notRegex(out, /DATA/, `${addr}: ${out}`);
  }
  await settle(200);
  t.deepEqual(rh.log.lines.slice(before), []);
  // sandgate saw it (TPROXY) and denied it by port.
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.topo.hostAddr('sbx')}:8082`);
  t.is(line.decision, 'deny');
  t.regex(String(line.reason), /port 8082 is not allowed/);
});

test("TCP to the host's own address on a listed port goes through the policy, not to the host", async (t) => {
  // The host address on 443 with an allowed SNI is steered to the SNI's upstream (a), never to a host service.
  const r = await w.curl(['--resolve', `api.example.test:443:${w.topo.hostAddr('sbx')}`, 'https://api.example.test/host']);
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(r.stdout).server, 'a');
});

test('packet marks set inside the sandbox (SO_MARK: the TPROXY, accepted-flow and queue marks) open nothing', async (t) => {
  const [rb, rh] = await Promise.all([recorder(w.topo.ns('b'), 4, [5305]), recorder(w.topo.hostNs, 4, [5306])]);
  const send = (ns: string, addr: string, port: number, tag: string): Promise<unknown> =>
    w.topo.exec(
      ns,
      'python3',
      [
        '-c',
        `
import socket
for mark in (0x5347, 0x5348, 0x5349):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 36, mark)  # SO_MARK
    for _ in range(3):
        s.sendto(b'${tag}', ('${addr}', ${port}))
    s.close()
print('sent')`,
      ],
      { timeoutMs: 4000 },
    );
  // Control: datagrams from the host namespace arrive (unmarked: there the TPROXY mark would
  // route them to the host itself).
  await sendUdp(w.topo.hostNs, w.b, 5305, 'control');
  await rb.log.waitFor((l) => l.kind === 'udp' && l.data === 'control', 10000, 'control datagram at b');
  const sent = (await Promise.all([send(w.sandbox, w.b, 5305, 'marked'), send(w.sandbox, w.topo.hostAddr('sbx'), 5306, 'marked')])) as { stdout: string }[];
  for (const r of sent) t.regex(r.stdout, /sent/, 'the sandbox may set marks on its own sockets');
  await settle();
  t.deepEqual(
    rb.hits(5305).filter((l) => l.data === 'marked'),
    [],
    'b received nothing',
  );
  t.deepEqual(
    rh.hits(5306).filter((l) => l.data === 'marked'),
    [],
    'the host received nothing',
  );
  await g.log.waitFor((l) => l.event === 'packet' && l.decision === 'deny' && l.dst === `${w.b}:5305`, 3000, 'the marked datagrams met the packet verdict');
});

test('spoofed source: an address from another subnet added inside the sandbox gets nowhere', async (t) => {
  const spoof = '10.77.3.50'; // b's subnet: the host routes it to up-b, not back to the sandbox
  const add = await w.topo.exec(w.sandbox, '/usr/sbin/ip', ['addr', 'add', `${spoof}/32`, 'dev', 'eth0']);
  t.is(add.code, 0, add.stderr);
  const ra = await recorder(w.topo.ns('a'), 4, [8083]);
  const rh = await recorder(w.topo.hostNs, 4, [5304, 8084]);
  const before = g.log.lines.length;
  // TCP to a listed host's address and port, to an unlisted upstream port, and to a host service.
  const outs = await Promise.all([
    tryTcp(w.sandbox, w.a, 443, { from: spoof, waitMs: 1000 }),
    tryTcp(w.sandbox, w.a, 8083, { from: spoof, waitMs: 1000 }),
    tryTcp(w.sandbox, w.topo.hostAddr('sbx'), 8084, { from: spoof, waitMs: 1000 }),
  ]);
  // One-way UDP needs no reply to do harm: it must not reach the host's services either.
  await sendUdp(w.sandbox, w.topo.hostAddr('sbx'), 5304, 'spoofed', spoof);
  await sendUdp(w.sandbox, w.a, 8083, 'spoofed', spoof);
  await settle();
  for (const out of outs) t.notRegex(out, /connected|DATA/, out);
  t.deepEqual(ra.hits(8083), [], 'upstream a recorded nothing');
  t.deepEqual(
    rh.log.lines.filter((l) => l.port !== undefined),
    [],
    'the host recorded nothing',
  );
  t.deepEqual(
    g.log.lines.slice(before).filter((l) => String(l.src ?? '').startsWith(`${spoof}:`)),
    [],
    'nothing from the spoofed source reached sandgate',
  );
  // The sandbox's own address still works afterwards.
  const ok = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/after-spoof']);
  t.is(ok.code, 0, ok.stderr);
});

test("spoofed source: claiming the other sandbox's address does not borrow its policy", async (t) => {
  const sbx2 = w.topo.ns('sbx2');
  // Control: sbx2 itself may reach evil.example.test; sbx may not.
  const own = await w.topo.exec(
    sbx2,
    'curl',
    ['-sS', '--max-time', '3', '--cacert', w.pki.caFile, '--resolve', `evil.example.test:443:${w.a}`, 'https://evil.example.test/own'],
    { timeoutMs: 5000 },
  );
  t.is(own.code, 0, own.stderr);
  t.is(JSON.parse(own.stdout).server, 'a');
  t.not((await w.curl(['--resolve', `evil.example.test:443:${w.a}`, 'https://evil.example.test/sbx'], { timeoutMs: 2000 })).code, 0);

  const borrowed = '10.77.4.77';
  const add = await w.topo.exec(w.sandbox, '/usr/sbin/ip', ['addr', 'add', `${borrowed}/32`, 'dev', 'eth0']);
  t.is(add.code, 0, add.stderr);
  const before = g.log.lines.length;
  const out = await tryTcp(w.sandbox, w.a, 443, { from: borrowed, waitMs: 1000 });
  await settle(200);
  t.notRegex(out, /connected|DATA/, out);
  t.deepEqual(
    g.log.lines.slice(before).filter((l) => String(l.src ?? '').startsWith(`${borrowed}:`)),
    [],
    'the strict reverse-path check dropped it before sandgate',
  );
});
