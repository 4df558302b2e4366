/**
 * The packet path's pure parts: IP header parsing, the verdict (decide.ts) against a real
 * Runtime built from a config, and audit sampling under a flood.
 */
import test from 'ava';
import { parsePacket } from '../../src/packets/ip-header.js';
import { decidePacket, type DecideContext } from '../../src/packets/decide.js';
import { PacketAuditSampler } from '../../src/packets/packet-audit.js';
import { parseConfig } from '../../src/config/load.js';
import { buildRuntime } from '../../src/runtime.js';
import type { Audit } from '../../src/audit/logger.js';

function ipv4(proto: number, src: number[], dst: number[], l4: number[], fragOffset = 0): Buffer {
  const b = Buffer.alloc(20 + l4.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(fragOffset, 6);
  b[8] = 64;
  b[9] = proto;
  Buffer.from(src).copy(b, 12);
  Buffer.from(dst).copy(b, 16);
  Buffer.from(l4).copy(b, 20);
  return b;
}

function ipv6(next: number, dst: string, l4: number[]): Buffer {
  const b = Buffer.alloc(40 + l4.length);
  b[0] = 0x60;
  b.writeUInt16BE(l4.length, 4);
  b[6] = next;
  b[7] = 64;
  Buffer.from('fd770001000000000000000000000002', 'hex').copy(b, 8);
  Buffer.from(dst, 'hex').copy(b, 24);
  Buffer.from(l4).copy(b, 40);
  return b;
}

const udp = (sport: number, dport: number): number[] => [sport >> 8, sport & 255, dport >> 8, dport & 255, 0, 8, 0, 0];

test('IPv4: UDP ports, ICMP type, other protocols; later fragments carry no ports; junk is undefined', (t) => {
  t.deepEqual(parsePacket(ipv4(17, [10, 77, 1, 2], [10, 77, 2, 2], udp(40000, 123))), {
    family: 4,
    protocol: 17,
    proto: 'udp',
    src: '10.77.1.2',
    dst: '10.77.2.2',
    srcPort: 40000,
    dstPort: 123,
  });
  t.like(parsePacket(ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], [8, 0, 0, 0])), { proto: 'icmp', icmpType: 8, icmpCode: 0 });
  t.like(parsePacket(ipv4(47, [10, 0, 0, 1], [10, 0, 0, 2], [])), { proto: 'ip', protocol: 47 });
  t.is(parsePacket(ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], udp(1, 2), 100))?.dstPort, undefined);
  t.is(parsePacket(Buffer.from([0x45, 0])), undefined);
  t.is(parsePacket(Buffer.from([0x46, ...new Array(19).fill(0)])), undefined); // IHL 24 > length
  t.is(parsePacket(Buffer.alloc(0)), undefined);
  t.is(parsePacket(Buffer.from([0x20, 1, 2, 3])), undefined);
});

test('IPv6: addresses (RFC 5952 text), extension headers walked, ICMPv6 and UDP', (t) => {
  const p = parsePacket(ipv6(17, '0064ff9b00000000000000000a4d0302', udp(1000, 53)));
  t.like(p, { family: 6, proto: 'udp', src: 'fd77:1::2', dst: '64:ff9b::a4d:302', dstPort: 53 });
  // Hop-by-hop (8 octets) then ICMPv6 echo request.
  const hbh = [58, 0, 1, 4, 0, 0, 0, 0];
  t.like(parsePacket(ipv6(0, 'fe800000000000000000000000000001', [...hbh, 128, 0, 0, 0])), { proto: 'icmpv6', icmpType: 128, dst: 'fe80::1' });
  // A later fragment: no ports.
  const frag = [17, 0, 0, 8, 0, 0, 0, 1];
  t.like(parsePacket(ipv6(44, '00000000000000000000ffff0a4d0302', [...frag, ...udp(1, 2)])), { proto: 'udp', dst: '::ffff:a4d:302', dstPort: undefined });
  t.is(parsePacket(Buffer.from([0x60, 0, 0, 0])), undefined);
});

const CONFIG = `upstream:
  hosts:
    ntp.example.test: 10.77.2.2
  allowPrivate: [10.77.0.0/16]
sandboxes:
  - name: agent
    interface: "sbx-*"
    cidr: 10.77.1.0/24
    policy: default
    user: alice
  - name: watcher
    interface: "obs-*"
    policy: watch
policies:
  default:
    allow:
      - protocol: udp
        cidr: 10.77.3.0/24
        ports: [5301]
      - protocol: udp
        host: ntp.example.test
        ports: [123]
  watch:
    mode: report
    allow: []
`;

const silent: Audit = { write() {}, flush() {}, logger: undefined as never };

function ctx(iface: string | undefined, local: string[] = []): DecideContext {
  const config = parseConfig(CONFIG, 'sg.yaml');
  const rt = buildRuntime(config, silent);
  return { rt, iface, isLocal: (ip) => local.includes(ip), resolveTimeoutMs: 500 };
}

test('decide: udp by cidr and by host name, port must match; ICMP, IPv6 and local addresses denied', async (t) => {
  const c = ctx('sbx-1', ['10.77.1.1']);
  const h = (dst: number[], dport: number, proto = 17): ReturnType<typeof parsePacket> =>
    parsePacket(ipv4(proto, [10, 77, 1, 2], dst, proto === 1 ? [8, 0, 0, 0] : udp(40000, dport)));
  const byCidr = await decidePacket(c, h([10, 77, 3, 9], 5301)!);
  t.true(byCidr.accept);
  t.like(byCidr.line, {
    decision: 'allow',
    rule: 'policies.default.allow[0]',
    sandbox: 'agent',
    user: 'alice',
    proto: 'udp',
    dst: '10.77.3.9:5301',
    port: 5301,
  });
  t.is(byCidr.what, 'udp 10.77.3.9:5301');
  t.like((await decidePacket(c, h([10, 77, 2, 2], 123)!)).line, { decision: 'allow', rule: 'policies.default.allow[1]' });
  const wrongPort = await decidePacket(c, h([10, 77, 3, 9], 5302)!);
  t.false(wrongPort.accept);
  t.like(wrongPort.line, { decision: 'deny', reason: 'udp 10.77.3.9:5302 is not allowed' });
  t.false((await decidePacket(c, h([10, 77, 4, 4], 123)!)).accept, "not the name's address");
  t.like((await decidePacket(c, h([10, 77, 3, 9], 0, 1)!)).line, { decision: 'deny', proto: 'icmp', reason: 'icmp is not allowed', icmpType: 8 });
  t.like((await decidePacket(c, h([10, 77, 1, 1], 5301)!)).line, { decision: 'deny', reason: "the gate host's own addresses are not reachable" });
  const v6 = await decidePacket(c, parsePacket(ipv6(6, 'fd770003000000000000000000000002', udp(1, 443)))!);
  t.false(v6.accept);
  t.like(v6.line, { decision: 'deny', family: 6, sandbox: 'agent', reason: 'IPv6 is not carried', dst: '[fd77:3::2]:443' });
});

test('decide: guarded ranges denied even when a rule lists them; unknown sources denied; report mode passes with would-deny', async (t) => {
  const c = ctx('sbx-1');
  // 127.0.0.0/8 is refused by the SSRF guard and not in allowPrivate.
  const loop = await decidePacket(c, parsePacket(ipv4(17, [10, 77, 1, 2], [127, 0, 0, 1], udp(1, 5301)))!);
  t.false(loop.accept);
  t.like(loop.line, { decision: 'deny', sandbox: 'agent' });
  const stranger = await decidePacket(ctx('eth9'), parsePacket(ipv4(17, [10, 77, 1, 2], [10, 77, 3, 9], udp(1, 5301)))!);
  t.like(stranger.line, { decision: 'deny', reason: 'source is not a configured sandbox' });
  const report = await decidePacket(ctx('obs-1'), parsePacket(ipv4(17, [10, 88, 0, 2], [10, 77, 3, 9], udp(1, 9)))!);
  t.true(report.accept);
  t.like(report.line, { decision: 'would-deny', sandbox: 'watcher' });
  const report6 = await decidePacket(ctx('obs-1'), parsePacket(ipv6(17, 'fd770003000000000000000000000002', udp(1, 9)))!);
  t.false(report6.accept, 'IPv6 is never carried, report mode or not');
});

test("decide: a packet no rule allows is denied for that reason, not the SSRF guard's, even to a guarded address; report mode still meets the guard", async (t) => {
  const c = ctx('sbx-1');
  // 192.168.5.5 is private and not in allowPrivate: the guard would refuse it, but ICMP is
  // denied by the policy whatever the address.
  const ping = await decidePacket(c, parsePacket(ipv4(1, [10, 77, 1, 2], [192, 168, 5, 5], [8, 0, 0, 0]))!);
  t.false(ping.accept);
  t.like(ping.line, { decision: 'deny', proto: 'icmp', reason: 'icmp is not allowed' });
  t.false(String(ping.line.reason).includes('allowPrivate'));
  const gre = await decidePacket(c, parsePacket(ipv4(47, [10, 77, 1, 2], [127, 0, 0, 1], [0, 0, 0, 0]))!);
  t.like(gre.line, { decision: 'deny', reason: 'IP protocol 47 is not allowed' });
  const udpOff = await decidePacket(c, parsePacket(ipv4(17, [10, 77, 1, 2], [192, 168, 5, 5], udp(1, 9)))!);
  t.like(udpOff.line, { decision: 'deny', reason: 'udp 192.168.5.5:9 is not allowed' });
  // Report mode would let it pass: there the guard's refusal is the reason it does not.
  const report = await decidePacket(ctx('obs-1'), parsePacket(ipv4(1, [10, 88, 0, 2], [192, 168, 5, 5], [8, 0, 0, 0]))!);
  t.false(report.accept);
  t.like(report.line, { decision: 'deny', sandbox: 'watcher' });
  t.true(String(report.line.reason).includes('upstream.allowPrivate'));
});

test('audit sampling: repeats once per window, distinct lines within the bucket, the rest summarised and counted', (t) => {
  const s = new PacketAuditSampler();
  const spec = { rate: 10, burst: 3 };
  const line = (port: number) => ({ decision: 'deny' as const, sandbox: 'agent', proto: 'udp' as const, port });
  t.true(s.admit(line(1), 'udp x:1', spec, 0));
  t.false(s.admit(line(1), 'udp x:1', spec, 1), 'a repeat in the same window');
  t.true(s.admit(line(2), 'udp x:2', spec, 2));
  t.true(s.admit(line(3), 'udp x:3', spec, 3));
  let written = 3;
  for (let p = 4; p < 1000; p++) if (s.admit(line(p), `udp x:${p}`, spec, 4)) written++;
  t.is(written, 3, 'the bucket is empty');
  const summary = s.flush();
  t.is(summary.length, 1);
  t.like(summary[0], { summary: true, sandbox: 'agent', decision: 'deny', count: 997 });
  t.is(Object.keys(summary[0]!.top).length, 9, 'eight destinations and (other)');
  t.is(
    Object.values(summary[0]!.top).reduce((a, b) => a + b, 0),
    997,
  );
  t.is(s.totals.deny, 1000);
  // A new window: the repeat may be written again (tokens refilled after 1 s).
  t.true(s.admit(line(1), 'udp x:1', spec, 1004));
  t.deepEqual(s.flush(), []);
});

test('decide: a quarantined sandbox gets no packet through, even one a rule allows; released, it passes again', async (t) => {
  const c = ctx('sbx-1');
  const h = parsePacket(ipv4(17, [10, 77, 1, 2], [10, 77, 3, 9], udp(40000, 5301)))!;
  t.true((await decidePacket(c, h)).accept);
  c.rt.quarantine.trip({ sandbox: 'agent', since: '2026-01-01T00:00:00.000Z', credential: 'k', reason: 'tripwire' });
  const held = await decidePacket(c, h);
  t.false(held.accept);
  t.like(held.line, { decision: 'deny', reason: 'quarantined', sandbox: 'agent' });
  c.rt.quarantine.release('agent');
  t.true((await decidePacket(c, h)).accept);
});
