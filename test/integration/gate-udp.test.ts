/**
 * The packet path (docs/packets.md): everything neither TCP nor DNS goes through sandgate's
 * NFQUEUE verdict. UDP to a listed destination (by cidr or by host name) arrives and its
 * replies come back; UDP elsewhere, ICMP and IPv6 of every kind are dropped with a `packet`
 * audit line; without the binding, or with sandgate dead, the kernel drops (fail closed); a
 * flood is bounded and does not starve TCP. Runs with the backend SANDGATE_TEST_BACKEND names
 * (scripts/test.sh runs this file with nft and with iptables).
 *
 * Accepted flows are forwarded, so forwarding is switched on inside this test's host
 * namespace only (topology.ts turns it off there by default; the root namespace is untouched).
 */
import test from 'ava';
import { createWorld, startGate, baseConfig, NAMES, TEST_BACKEND, type World, type Gate, type Line } from '../helpers/gate.js';
import { recorder, sendUdp, tryTcp, udpFlood, type Recorder } from '../helpers/packet-tools.js';

let w: World;
let g: Gate;
const recorders: Recorder[] = [];
const settle = (ms = 500): Promise<void> => new Promise((r) => setTimeout(r, ms));

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const c = baseConfig(w, {
    allow: [{ host: 'api.example.test' }, { protocol: 'udp', cidr: `${w.a}/32`, ports: [5301] }, { protocol: 'udp', host: 'ntp.example.test', ports: [5302] }],
    upstream: { hosts: { ...Object.fromEntries(NAMES.map((n) => [n, w.a])), 'ntp.example.test': w.a } },
  });
  return { ...c, ...extra };
}

async function rec(ns: string, family: 4 | 6, ports: number[]): Promise<Recorder> {
  const r = await recorder(w.topo, ns, family, ports);
  recorders.push(r);
  return r;
}

/** One recorder on a:5301 (the listed cidr rule's port) for the whole file: the port can be bound once. */
let a5301: Recorder | undefined;
async function recA5301(): Promise<Recorder> {
  a5301 ??= await rec(w.topo.ns('a'), 4, [5301]);
  return a5301;
}

const packets = (pred: (l: Line) => boolean): Line[] => g.log.lines.filter((l) => l.event === 'packet' && pred(l));

test.before(async () => {
  w = await createWorld({ ipv6: true });
  const fwd = await w.topo.exec(w.topo.hostNs, '/usr/sbin/sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  if (fwd.code !== 0) throw new Error(`sysctl in the host namespace: ${fwd.stderr}`);
  g = await startGate(w.topo, w.dir, config());
});

test.after.always(async () => {
  for (const r of recorders) r.proc.kill('SIGKILL');
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test.serial('ready: the backend in use and packet verdicts on', (t) => {
  const ready = g.log.find((l) => l.event === 'ready');
  t.is(ready?.packets, 'verdicts', JSON.stringify(g.log.lines.filter((l) => l.event === 'error')));
  if (TEST_BACKEND === 'nft' || TEST_BACKEND === 'iptables') t.is(ready?.backend, TEST_BACKEND);
  t.log(`backend: ${String(ready?.backend)}`);
});

test.serial("UDP to a listed cidr:port arrives, from the host's address, and the reply comes back; later packets skip the queue", async (t) => {
  const ra = await recA5301();
  const echoes = await sendUdp(w.topo, w.sandbox, w.a, 5301, 'listed', 3);
  const got = ra.hits(5301, 'udp').filter((l) => l.data === 'listed');
  t.is(got.length, 3, JSON.stringify(got));
  // Masqueraded: the upstream sees the host's address on its link, as for proxied TCP.
  t.is(got[0]?.from, w.topo.hostAddr('a'));
  t.deepEqual(echoes, ['ECHO listed', 'ECHO listed', 'ECHO listed']);
  const lines = packets((l) => l.dst === `${w.a}:5301`);
  t.is(lines.length, 1, JSON.stringify(lines));
  t.like(lines[0], { decision: 'allow', sandbox: 'agent', user: 'alice', proto: 'udp', port: 5301, rule: 'policies.default.allow[1]' });
  await settle(1200); // a summary would say the flow's later packets were queued too
  t.deepEqual(
    packets((l) => l.summary === true && JSON.stringify(l.top ?? {}).includes(`${w.a}:5301`)),
    [],
  );
});

test.serial('UDP by host name: sandgate answers the name and accepts the address it resolved', async (t) => {
  const dig = await w.topo.exec(w.sandbox, 'dig', ['+short', '+time=2', '+tries=1', `@${w.topo.hostAddr('sbx')}`, 'ntp.example.test']);
  t.is(dig.stdout.trim(), w.a, dig.stderr);
  const ra = await rec(w.topo.ns('a'), 4, [5302]);
  const echoes = await sendUdp(w.topo, w.sandbox, w.a, 5302, 'by-name', 1);
  t.is(ra.hits(5302, 'udp').length, 1);
  t.deepEqual(echoes, ['ECHO by-name']);
  const line = await g.log.waitFor((l) => l.event === 'packet' && l.dst === `${w.a}:5302`);
  t.like(line, { decision: 'allow', rule: 'policies.default.allow[2]' });
});

test.serial('UDP to an unlisted destination or port never arrives, and is audited', async (t) => {
  const [ra, rb] = await Promise.all([rec(w.topo.ns('a'), 4, [5399]), rec(w.topo.ns('b'), 4, [5301])]);
  // Control: from the host namespace (not governed by the firewall) both arrive.
  await sendUdp(w.topo, w.topo.hostNs, w.b, 5301, 'control', 1);
  await rb.log.waitFor((l) => l.kind === 'udp' && l.data === 'control', 3000, 'control at b');
  const [eb, ea] = await Promise.all([sendUdp(w.topo, w.sandbox, w.b, 5301, 'unlisted'), sendUdp(w.topo, w.sandbox, w.a, 5399, 'wrong-port')]);
  await settle();
  t.deepEqual(
    rb.hits(5301).filter((l) => l.data === 'unlisted'),
    [],
  );
  t.deepEqual(ra.hits(5399), []);
  t.deepEqual([...eb, ...ea], []);
  const denyB = await g.log.waitFor((l) => l.event === 'packet' && l.dst === `${w.b}:5301`);
  t.like(denyB, { decision: 'deny', sandbox: 'agent', proto: 'udp', port: 5301 });
  t.regex(String(denyB.reason), /udp 10\.77\.3\.2:5301 is not allowed/);
  t.like(await g.log.waitFor((l) => l.event === 'packet' && l.dst === `${w.a}:5399`), { decision: 'deny', proto: 'udp' });
});

test.serial('ICMP echo is dropped and audited', async (t) => {
  const control = await w.topo.exec(w.topo.hostNs, '/usr/bin/ping', ['-c1', '-W1', w.b], { timeoutMs: 4000 });
  t.is(control.code, 0, 'control: the host namespace can ping b');
  for (const addr of [w.b, w.a, w.topo.hostAddr('sbx')]) {
    const r = await w.topo.exec(w.sandbox, '/usr/bin/ping', ['-c1', '-W1', addr], { timeoutMs: 4000 });
    t.not(r.code, 0, `ping ${addr}: ${r.stdout}`);
    const line = await g.log.waitFor((l) => l.event === 'packet' && l.proto === 'icmp' && l.dst === addr, 3000, `icmp line for ${addr}`);
    t.like(line, { decision: 'deny', sandbox: 'agent', icmpType: 8 });
  }
});

test.serial("IPv6: link-local, ULA, the host's own, NAT64 and IPv4-mapped destinations; TCP, UDP, ICMPv6: nothing gets through, all audited", async (t) => {
  const host = w.topo.hostNs;
  const ll = await w.topo.exec(host, '/usr/sbin/ip', ['-6', '-j', 'addr', 'show', 'dev', w.topo.hostIface('sbx'), 'scope', 'link']);
  const hostLinkLocal = (JSON.parse(ll.stdout) as { addr_info: { local?: string }[] }[])[0]?.addr_info.find((a) => a.local !== undefined)?.local;
  t.truthy(hostLinkLocal, ll.stdout);
  // A NAT64-style address (RFC 6052 64:ff9b::/96, here embedding b's IPv4) made local to the
  // host namespace, so that if anything let it through, the host's listener would see it.
  const nat64 = '64:ff9b::a4d:302';
  t.is((await w.topo.exec(host, '/usr/sbin/ip', ['-6', 'addr', 'add', `${nat64}/128`, 'dev', 'lo', 'nodad'])).code, 0);
  const [rh, rb] = await Promise.all([rec(host, 6, [6443, 6053]), rec(w.topo.ns('b'), 6, [6443, 6053])]);
  const targets: [string, Recorder][] = [
    [`${hostLinkLocal}%eth0`, rh],
    [w.topo.hostAddr6('sbx')!, rh], // the host's own ULA on the sandbox link
    [w.topo.hostAddr6('b')!, rh], // the host's own address on another link
    [w.topo.addr6('b')!, rb], // an upstream's ULA
    [nat64, rh],
  ];
  // Controls from the host namespace: TCP and UDP listeners answer over IPv6.
  t.regex(await tryTcp(w.topo, host, w.topo.addr6('b')!, 6443), /DATA HELLO-6443/);
  t.regex(await tryTcp(w.topo, host, nat64, 6443), /DATA HELLO-6443/);
  const before = { h: rh.log.lines.length, b: rb.log.lines.length };
  for (const [addr] of targets) {
    const tcp = await tryTcp(w.topo, w.sandbox, addr, 6443, 800);
    t.notRegex(tcp, /connected|DATA/, `tcp ${addr}: ${tcp}`);
    t.deepEqual(await sendUdp(w.topo, w.sandbox, addr, 6053, 'v6', 1), [], `udp ${addr}`);
    const ping = await w.topo.exec(w.sandbox, '/usr/bin/ping', ['-6', '-c1', '-W1', addr], { timeoutMs: 4000 });
    t.not(ping.code, 0, `ping ${addr}: ${ping.stdout}`);
  }
  await settle();
  t.deepEqual(rh.log.lines.slice(before.h), [], 'the host recorded nothing');
  t.deepEqual(rb.log.lines.slice(before.b), [], 'b recorded nothing');
  // Audited: one line per kind per destination (sampling writes distinct flows individually).
  for (const [addr] of targets) {
    const ip = addr.replace(/%.*/, '');
    for (const proto of ['tcp', 'udp', 'icmpv6']) {
      const line = await g.log.waitFor(
        (l) => l.event === 'packet' && l.proto === proto && String(l.dst).replace(/^\[(.*)\]:\d+$/, '$1') === ip,
        3000,
        `${proto} line for ${ip}`,
      );
      t.like(line, { decision: 'deny', family: 6, sandbox: 'agent', reason: 'IPv6 is not carried' });
    }
  }
  // IPv4-mapped (RFC 4291 §2.5.5.2): a dual-stack socket sends these as IPv4, so they meet the
  // IPv4 policy: b is not listed, so nothing arrives and the denial names b's IPv4 address.
  const rb4 = await rec(w.topo.ns('b'), 4, [6054]);
  t.deepEqual(await sendUdp(w.topo, w.sandbox, `::ffff:${w.b}`, 6054, 'mapped', 1), []);
  await settle();
  t.deepEqual(rb4.hits(6054), []);
  t.like(await g.log.waitFor((l) => l.event === 'packet' && l.dst === `${w.b}:6054`), { decision: 'deny', proto: 'udp' });
  // Nothing IPv6 was ever allowed.
  t.deepEqual(
    packets((l) => l.family === 6 && l.decision !== 'deny'),
    [],
  );
});

test.serial('a UDP flood is bounded (rate limit, sampled audit) and TCP through sandgate keeps working', async (t) => {
  const curlOnce = async (tag: string): Promise<number> => {
    const r = await w.curl(['-o', '/dev/null', '-w', '%{time_total}', '--resolve', `api.example.test:443:${w.a}`, `https://api.example.test/${tag}`]);
    if (r.code !== 0) throw new Error(`curl ${tag}: ${r.stderr}`);
    return Number(r.stdout) * 1000;
  };
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const idle: number[] = [];
  for (let i = 0; i < 5; i++) idle.push(await curlOnce(`idle-${i}`));
  const startLine = g.log.lines.length;
  const flood = udpFlood(w.topo, w.sandbox, w.b, 30_000, 3000);
  const loaded: number[] = [];
  await settle(200);
  for (let i = 0; i < 10; i++) loaded.push(await curlOnce(`flood-${i}`));
  const { sent, ms } = await flood;
  await settle(1500); // the last summary
  const after = g.log.lines
    .slice(startLine)
    .filter((l) => (l.event === 'packet' && String(l.dst ?? '').startsWith(`${w.b}:`)) || (l.event === 'packet' && l.summary === true));
  const written = after.filter((l) => l.summary !== true).length;
  const summarised = after.filter((l) => l.summary === true).reduce((n, l) => n + Number(l.count ?? 0), 0);
  const pps = 100;
  const burst = 200;
  // Kernel-side per-source limit: at most burst + pps x duration reach sandgate.
  t.true(written + summarised <= burst + (pps * (ms + 1500)) / 1000 + 50, `verdicts ${written + summarised} for ${sent} sent in ${ms} ms`);
  t.true(written <= 50 + 20 * ((ms + 1500) / 1000) + 10, `audit lines written individually: ${written}`);
  t.log(`flood: ${sent} datagrams in ${ms} ms; verdicts ${written + summarised} (lines ${written}, summarised ${summarised})`);
  t.log(
    `TCP request latency (curl time_total): idle median ${median(idle).toFixed(1)} ms, under flood median ${median(loaded).toFixed(1)} ms, max ${Math.max(...loaded).toFixed(1)} ms`,
  );
  t.is(g.proc.exitCode, null);
});

test.serial('measurement: packet verdicts per second with the rate limit lifted', async (t) => {
  const r = await g.reload(config({ packets: { rateLimit: { pps: 50_000, burst: 20_000 }, auditSampling: { linesPerSecond: 1_000_000, burst: 1_000_000 } } }));
  t.is(r.action, 'reloaded', String(r.reason));
  const startLine = g.log.lines.length;
  const { sent, ms } = await udpFlood(w.topo, w.sandbox, w.b, 20_000, 4000);
  await settle(1500);
  const after = g.log.lines.slice(startLine).filter((l) => l.event === 'packet');
  const lines = after.filter((l) => l.summary !== true && String(l.dst ?? '').startsWith(`${w.b}:`));
  const total = lines.length + after.filter((l) => l.summary === true).reduce((n, l) => n + Number(l.count ?? 0), 0);
  const times = lines.map((l) => Date.parse(String(l.time)));
  const span = times.length > 1 ? Math.max(...times) - Math.min(...times) : 0;
  t.true(lines.length > 0);
  t.true(total <= sent);
  t.log(
    `${sent} datagrams, each a new flow, sent in ${ms} ms: ${total} verdicts (the rest overflowed the kernel queue, 1024 packets, and were dropped); ` +
      `the first ${lines.length}, each written as its own audit line, took ${span} ms = ${span > 0 ? Math.round((lines.length * 1000) / span) : 'n/a'} verdicts/s`,
  );
  t.is((await g.reload(config())).action, 'reloaded');
});

test.serial('binding absent (SANDGATE_NFQUEUE=off): listed UDP is dropped by the kernel, said once at start', async (t) => {
  g.proc.kill('SIGTERM');
  await new Promise((r) => g.proc.once('exit', r));
  g = await startGate(w.topo, w.dir, config(), 'no-binding.json', { env: { SANDGATE_NFQUEUE: 'off' } });
  const ready = g.log.find((l) => l.event === 'ready');
  t.is(ready?.packets, 'dropped');
  const err = g.log.find((l) => l.event === 'error' && /packet verdicts are off/.test(String(l.reason)));
  t.regex(String(err?.reason), /SANDGATE_NFQUEUE=off/);
  const ra = await recA5301();
  t.deepEqual(await sendUdp(w.topo, w.sandbox, w.a, 5301, 'no-binding'), []);
  await settle();
  t.deepEqual(
    ra.hits(5301).filter((l) => l.data === 'no-binding'),
    [],
  );
  t.deepEqual(
    packets(() => true),
    [],
  );
  // TCP is unaffected.
  const ok = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/no-binding']);
  t.is(ok.code, 0, ok.stderr);
});

test.serial('a queue with no reader drops: sandgate killed, listed UDP goes nowhere', async (t) => {
  g.proc.kill('SIGTERM');
  await new Promise((r) => g.proc.once('exit', r));
  g = await startGate(w.topo, w.dir, config(), 'again.json');
  const ra = await recA5301();
  t.deepEqual(await sendUdp(w.topo, w.sandbox, w.a, 5301, 'alive', 1), ['ECHO alive'], 'control: with a reader it passes');
  g.proc.kill('SIGKILL');
  await new Promise((r) => g.proc.once('exit', r));
  // A new flow (new source port): its first packet is queued, and nobody reads the queue.
  t.deepEqual(await sendUdp(w.topo, w.sandbox, w.a, 5301, 'dead'), []);
  await settle();
  t.deepEqual(
    ra.hits(5301).filter((l) => l.data === 'dead'),
    [],
  );
});
