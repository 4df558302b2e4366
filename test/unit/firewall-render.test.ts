import test from 'ava';
import { FirewallError, type FirewallPlan, type SandboxMatch } from '../../src/firewall/plan.js';
import { renderApplyScript, renderDeleteScript, renderRuleset } from '../../src/firewall/render-nft.js';
import { chainLines, testPlan } from '../helpers/firewall.js';

function plan(sandboxes: SandboxMatch[], overrides: Partial<FirewallPlan> = {}): FirewallPlan {
  return testPlan({ sandboxes, ...overrides });
}

test('one interface sandbox: every hook matches it by iifname', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }]));
  t.true(text.startsWith('table inet sandgate {\n'));
  t.true(text.endsWith('}\n'));
  t.deepEqual(chainLines(text, 'pre_mangle'), [
    'type filter hook prerouting priority mangle - 5; policy accept;',
    'iifname "sbx-*" goto sandbox_pre comment "sandbox agent"',
    'iifname "sbx-*" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox agent"',
  ]);
  t.deepEqual(chainLines(text, 'pre_nat'), [
    'type nat hook prerouting priority dstnat; policy accept;',
    'iifname "sbx-*" meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "sandbox agent"',
  ]);
  t.deepEqual(chainLines(text, 'input'), ['type filter hook input priority filter; policy accept;', 'iifname "sbx-*" jump sandbox_in comment "sandbox agent"']);
  t.deepEqual(chainLines(text, 'forward'), [
    'type filter hook forward priority filter; policy accept;',
    'iifname "sbx-*" goto sandbox_fwd comment "sandbox agent"',
    'oifname "sbx-*" ct mark 0x5348 accept comment "sandbox agent: replies of accepted flows"',
    'oifname "sbx-*" counter drop comment "sandbox agent: nothing else is forwarded to it"',
  ]);
});

test('sandbox_pre: v6 aside, anti-spoofing, DNS over its per-source rate dropped, the rest skipped, TCP tproxied, accepted flows pass, the rest queued within the rate', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }]));
  t.deepEqual(chainLines(text, 'sandbox_pre'), [
    'meta nfproto ipv6 goto sandbox_pre6',
    'fib saddr . iif oif missing drop',
    'meta l4proto { tcp, udp } th dport 53 update @dns_rate4 { ip saddr limit rate over 1000/second burst 2000 packets } counter drop',
    'meta l4proto { tcp, udp } th dport 53 return',
    'meta l4proto tcp tproxy ip to :15001 meta mark set 0x5347 accept',
    'ct mark 0x5348 return',
    'update @packet_rate4 { ip saddr limit rate over 100/second burst 200 packets } counter drop',
    'meta mark set 0x5349',
  ]);
});

test('DNS rate: a bounded, self-cleaning per-source set; the rate from the plan', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }], { dnsRate: { pps: 7, burst: 9 } }));
  t.true(text.includes('\tset dns_rate4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 60s\n\t}'));
  t.true(text.includes('th dport 53 update @dns_rate4 { ip saddr limit rate over 7/second burst 9 packets } counter drop'));
  throwsInvalid(t, plan([], { dnsRate: { pps: 1, burst: 0 } }), /dnsRate.burst/);
});

test('IPv6: neighbour discovery with the host passes, RD/MLD dropped silently, the rest queued (rate-limited) and then dropped whatever the verdict', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }]));
  const nd = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255';
  const pre6 = chainLines(text, 'sandbox_pre6');
  t.is(pre6[0], `${nd} return`);
  t.regex(pre6[1] ?? '', /^icmpv6 type \{ mld-listener-query.*nd-router-solicit.*mld2-listener-report \} counter drop$/);
  t.false((pre6[1] ?? '').includes('neighbor'));
  t.deepEqual(pre6.slice(2), ['limit rate over 100/second burst 200 packets counter drop', 'meta mark set 0x5349']);
  t.deepEqual(chainLines(text, 'pre_verdict'), [
    'type filter hook prerouting priority mangle + 5; policy accept;',
    'meta mark 0x5349 counter drop',
    `iifname "sbx-*" ${nd} accept comment "sandbox agent: neighbour discovery with the host"`,
    'iifname "sbx-*" meta nfproto ipv6 counter drop comment "sandbox agent: IPv6 is never carried"',
  ]);
});

test('forward and postrouting: only flows the verdict accepted, remembered in the connmark, masqueraded', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }], { flowMark: 0x77 }));
  t.deepEqual(chainLines(text, 'sandbox_fwd'), ['ct mark 0x77 accept', 'meta mark 0x77 ct mark set 0x77 accept', 'counter drop']);
  t.deepEqual(chainLines(text, 'post_nat'), ['type nat hook postrouting priority srcnat; policy accept;', 'ct mark 0x77 masquerade']);
});

test('packet plan values come from the plan; the marks must differ', (t) => {
  const text = renderRuleset(plan([{ name: 'a', interface: 'veth1' }], { queueMark: 0x10, flowMark: 0x20, packetRate: { pps: 7, burst: 9 } }));
  t.true(text.includes('meta mark set 0x10'));
  t.true(text.includes('ct mark 0x20 return'));
  t.true(text.includes('limit rate over 7/second burst 9 packets'));
  throwsInvalid(t, plan([], { queueMark: 0x5347 }), /must differ/);
  throwsInvalid(t, plan([], { flowMark: 0 }), /flowMark/);
  throwsInvalid(t, plan([], { queueNum: 65536 }), /queueNum/);
  throwsInvalid(t, plan([], { packetRate: { pps: 0, burst: 1 } }), /packetRate.pps/);
});

test('sandbox_in: marked TCP and redirected DNS only, then drop', (t) => {
  const text = renderRuleset(plan([{ name: 'agent', interface: 'sbx-*' }]));
  t.deepEqual(chainLines(text, 'sandbox_in'), [
    'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept',
    'meta l4proto tcp meta mark 0x5347 accept',
    'meta l4proto { tcp, udp } th dport 15053 ct status dnat accept',
    'counter drop',
  ]);
});

test('ports and mark come from the plan', (t) => {
  const text = renderRuleset(plan([{ name: 'a', interface: 'veth1' }], { tproxyPort: 4000, dnsPort: 5353, mark: 0xff00 }));
  t.true(text.includes('meta l4proto tcp tproxy ip to :4000 meta mark set 0xff00 accept'));
  t.true(text.includes('redirect to :5353 comment "sandbox a"'));
  t.true(text.includes('meta l4proto tcp meta mark 0xff00 accept'));
  t.true(text.includes('th dport 5353 ct status dnat accept'));
  t.false(text.includes('15001'));
  t.false(text.includes('15053'));
});

test('one cidr sandbox: matched by ip saddr only', (t) => {
  const text = renderRuleset(plan([{ name: 'net', cidr: '10.77.0.0/24' }]));
  t.deepEqual(chainLines(text, 'pre_mangle').slice(1), ['ip saddr 10.77.0.0/24 goto sandbox_pre comment "sandbox net"']);
  t.deepEqual(chainLines(text, 'forward').slice(1), [
    'ip saddr 10.77.0.0/24 goto sandbox_fwd comment "sandbox net"',
    'ip daddr 10.77.0.0/24 ct mark 0x5348 accept comment "sandbox net: replies of accepted flows"',
    'ip daddr 10.77.0.0/24 counter drop comment "sandbox net: nothing else is forwarded to it"',
  ]);
  t.false(text.includes('iifname'));
});

test('a bare address is a single-host cidr', (t) => {
  const text = renderRuleset(plan([{ name: 'h', cidr: '10.77.0.9' }]));
  t.true(text.includes('ip saddr 10.77.0.9 goto sandbox_pre'));
});

test('interface and cidr together: one rule that requires both', (t) => {
  const text = renderRuleset(plan([{ name: 'both', interface: 'sbx0', cidr: '10.77.1.0/24' }]));
  t.deepEqual(chainLines(text, 'pre_mangle').slice(1), [
    'iifname "sbx0" ip saddr 10.77.1.0/24 goto sandbox_pre comment "sandbox both"',
    // IPv6 never matches `ip saddr`: it goes to the IPv6 chain by interface.
    'iifname "sbx0" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox both"',
    // What arrives on the interface but failed the cidr (foreign sources) is dropped.
    'iifname "sbx0" counter drop comment "sandbox both: a source outside its cidr"',
  ]);
  t.deepEqual(chainLines(text, 'pre_nat').slice(1), [
    'iifname "sbx0" ip saddr 10.77.1.0/24 meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "sandbox both"',
  ]);
});

test('several sandboxes: one rule each per hook, in plan order; shared chains rendered once', (t) => {
  const text = renderRuleset(
    plan([
      { name: 'a', interface: 'sbx-a*' },
      { name: 'b', cidr: '10.77.2.0/24' },
      { name: 'c.d_e-f', interface: 'tap3', cidr: '10.77.3.0/28' },
    ]),
  );
  for (const [chain, verdict] of [
    ['pre_mangle', 'goto sandbox_pre'],
    ['input', 'jump sandbox_in'],
    ['forward', 'goto sandbox_fwd'],
  ] as const) {
    t.deepEqual(chainLines(text, chain).slice(1, 4), [
      `iifname "sbx-a*" ${verdict} comment "sandbox a"`,
      `ip saddr 10.77.2.0/24 ${verdict} comment "sandbox b"`,
      `iifname "tap3" ip saddr 10.77.3.0/28 ${verdict} comment "sandbox c.d_e-f"`,
    ]);
  }
  // Catch-all drops come after every sandbox's own rule (sandboxes may share an interface glob).
  t.deepEqual(chainLines(text, 'pre_mangle').slice(4), [
    'iifname "sbx-a*" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox a"',
    'iifname "tap3" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox c.d_e-f"',
    'iifname "tap3" counter drop comment "sandbox c.d_e-f: a source outside its cidr"',
  ]);
  t.is(chainLines(text, 'input').length, 4);
  t.deepEqual(chainLines(text, 'forward').slice(4), [
    'oifname "sbx-a*" ct mark 0x5348 accept comment "sandbox a: replies of accepted flows"',
    'ip daddr 10.77.2.0/24 ct mark 0x5348 accept comment "sandbox b: replies of accepted flows"',
    'oifname "tap3" ct mark 0x5348 accept comment "sandbox c.d_e-f: replies of accepted flows"',
    'oifname "sbx-a*" counter drop comment "sandbox a: nothing else is forwarded to it"',
    'ip daddr 10.77.2.0/24 counter drop comment "sandbox b: nothing else is forwarded to it"',
    'oifname "tap3" counter drop comment "sandbox c.d_e-f: nothing else is forwarded to it"',
  ]);
  t.is(chainLines(text, 'pre_nat').length, 4);
  t.is(text.split('chain sandbox_pre {').length, 2);
  t.is(text.split('tproxy ip to').length, 2);
});

test('no sandboxes: the base chains are empty, the shared chains still render', (t) => {
  const text = renderRuleset(plan([]));
  t.deepEqual(chainLines(text, 'pre_mangle'), ['type filter hook prerouting priority mangle - 5; policy accept;']);
  t.is(chainLines(text, 'sandbox_in').length, 4);
});

test('custom table name is used in the header', (t) => {
  t.true(renderRuleset(plan([], { table: 'sg_test-1' })).startsWith('table inet sg_test-1 {\n'));
});

test('render is deterministic', (t) => {
  const p = plan([
    { name: 'a', interface: 'sbx-*' },
    { name: 'b', cidr: '10.77.2.0/24' },
  ]);
  t.is(renderRuleset(p), renderRuleset(structuredClone(p)));
  t.is(renderApplyScript(p), renderApplyScript(structuredClone(p)));
});

test('apply script: create-then-delete prefix, then the ruleset, for one transaction', (t) => {
  const p = plan([{ name: 'agent', interface: 'sbx-*' }], { table: 'sgx' });
  const script = renderApplyScript(p);
  t.true(script.startsWith('table inet sgx {}\ndelete table inet sgx\ntable inet sgx {\n'));
  t.is(script, 'table inet sgx {}\ndelete table inet sgx\n' + renderRuleset(p));
  t.is(renderDeleteScript(p), 'table inet sgx {}\ndelete table inet sgx\n');
});

function throwsInvalid(t: import('ava').ExecutionContext, p: FirewallPlan, message: RegExp): void {
  const error = t.throws(() => renderRuleset(p), { instanceOf: FirewallError, message });
  t.is(error?.code, 'FIREWALL');
  t.throws(() => renderApplyScript(p), { instanceOf: FirewallError });
}

test('invalid sandbox names throw instead of rendering', (t) => {
  for (const name of ['', 'a"b', 'a b', 'x'.repeat(65), 'semi;colon', 'new\nline', 'back\\slash']) {
    throwsInvalid(t, plan([{ name, interface: 'sbx0' }]), /sandbox name/);
  }
  throwsInvalid(
    t,
    plan([
      { name: 'dup', interface: 'a0' },
      { name: 'dup', interface: 'b0' },
    ]),
    /appears twice/,
  );
});

test('invalid interface globs throw', (t) => {
  for (const glob of ['', '*', 'sbx*0', 'sb*x*', 'a"b', 'sbx 0', 'abcdefghijklmnop', 'abcdefghijklmno*', 'sbx+', 'a/b']) {
    throwsInvalid(t, plan([{ name: 'a', interface: glob }]), /interface/);
  }
  // 15 characters, with or without the '*', is the IFNAMSIZ limit and renders.
  t.notThrows(() => renderRuleset(plan([{ name: 'a', interface: 'abcdefghijklmno' }])));
  t.notThrows(() => renderRuleset(plan([{ name: 'a', interface: 'abcdefghijklmn*' }])));
});

test('invalid cidrs throw', (t) => {
  for (const cidr of [
    '',
    '10.77.0.0/33',
    '10.77.0.0/',
    '10.77.0/24',
    '256.0.0.0/8',
    '010.0.0.0/8',
    'fd00::/64',
    '10.77.0.0/24 accept',
    '10.77.0.0/24"',
    '10.77.0.0/-1',
  ]) {
    throwsInvalid(t, plan([{ name: 'a', cidr }]), /cidr/);
  }
  throwsInvalid(t, plan([{ name: 'a', cidr: '10.77.1.5/24' }]), /host bits set \(network is 10\.77\.1\.0\/24\)/);
  t.notThrows(() => renderRuleset(plan([{ name: 'a', cidr: '0.0.0.0/0' }])));
  t.notThrows(() => renderRuleset(plan([{ name: 'a', cidr: '255.255.255.255/32' }])));
});

test('a sandbox with neither interface nor cidr throws', (t) => {
  throwsInvalid(t, plan([{ name: 'empty' }]), /needs an interface, a cidr, or both/);
});

test('invalid table, ports, mark and route table throw', (t) => {
  const ok: SandboxMatch[] = [{ name: 'a', interface: 'sbx0' }];
  throwsInvalid(t, plan(ok, { table: 'bad name' }), /table/);
  throwsInvalid(t, plan(ok, { table: '1abc' }), /table/);
  throwsInvalid(t, plan(ok, { table: 'x"}' }), /table/);
  throwsInvalid(t, plan(ok, { tproxyPort: 0 }), /tproxyPort/);
  throwsInvalid(t, plan(ok, { tproxyPort: 65536 }), /tproxyPort/);
  throwsInvalid(t, plan(ok, { dnsPort: 1.5 }), /dnsPort/);
  throwsInvalid(t, plan(ok, { dnsPort: 15001 }), /both 15001/);
  throwsInvalid(t, plan(ok, { mark: 0 }), /mark/);
  throwsInvalid(t, plan(ok, { mark: 2 ** 32 }), /mark/);
  throwsInvalid(t, plan(ok, { routeTable: 254 }), /reserved/);
  throwsInvalid(t, plan(ok, { routeTable: 0 }), /routeTable/);
  t.throws(() => renderDeleteScript({ table: 'a;b' }), { instanceOf: FirewallError });
});
