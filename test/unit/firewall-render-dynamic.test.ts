import test from 'ava';
import { FirewallError, type FirewallPlan, type SandboxMatch } from '../../src/firewall/plan.js';
import { dynamicElements, renderRuleset, renderSetChanges } from '../../src/firewall/render-nft.js';
import { iptablesSpec } from '../../src/firewall/render-iptables.js';
import { chainLines, testPlan } from '../helpers/firewall.js';

function plan(sandboxes: SandboxMatch[], dynamic: SandboxMatch[] | undefined): FirewallPlan {
  return testPlan({ sandboxes, ...(dynamic ? { dynamic } : {}) });
}

const STATIC: SandboxMatch[] = [{ name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24' }];
const MANY = (n: number): SandboxMatch[] => Array.from({ length: n }, (_, i) => ({ name: `s${i}`, cidr: `10.200.${Math.floor(i / 250)}.${(i % 250) + 1}/32` }));

test('no dynamic part: no sets, no set rules (static-only configs render as before)', (t) => {
  const text = renderRuleset(plan(STATIC, undefined));
  t.false(text.includes('dyn_'));
});

test("the dynamic part: four interval sets, and set rules before the config's in every chain", (t) => {
  const text = renderRuleset(plan(STATIC, []));
  for (const [set, type] of [
    ['dyn_pair', 'ifname . ipv4_addr'],
    ['dyn_pair_iface', 'ifname'],
    ['dyn_iface', 'ifname'],
    ['dyn_addr4', 'ipv4_addr'],
  ]) {
    t.true(text.includes(`\tset ${set} {\n\t\ttype ${type}\n\t\tflags interval\n\t}`), set);
  }
  t.deepEqual(chainLines(text, 'pre_mangle'), [
    'type filter hook prerouting priority mangle - 5; policy accept;',
    'iifname . ip saddr @dyn_pair goto sandbox_pre comment "registered sandboxes: interface and cidr"',
    'iifname @dyn_iface goto sandbox_pre comment "registered sandboxes: interface"',
    'ip saddr @dyn_addr4 goto sandbox_pre comment "registered sandboxes: cidr"',
    'iifname "sbx-sbx" ip saddr 10.77.1.0/24 goto sandbox_pre comment "sandbox agent"',
    'iifname @dyn_iface meta nfproto ipv6 goto sandbox_pre6 comment "registered sandboxes: IPv6"',
    'iifname @dyn_pair_iface meta nfproto ipv6 goto sandbox_pre6 comment "registered sandboxes: IPv6"',
    'iifname "sbx-sbx" meta nfproto ipv6 goto sandbox_pre6 comment "sandbox agent"',
    'iifname @dyn_pair_iface counter drop comment "registered sandboxes: a source outside its cidr"',
    'iifname "sbx-sbx" counter drop comment "sandbox agent: a source outside its cidr"',
  ]);
  t.deepEqual(chainLines(text, 'pre_nat').slice(1, 4), [
    'iifname . ip saddr @dyn_pair meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "registered sandboxes: interface and cidr"',
    'iifname @dyn_iface meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "registered sandboxes: interface"',
    'ip saddr @dyn_addr4 meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "registered sandboxes: cidr"',
  ]);
  t.deepEqual(chainLines(text, 'input').slice(1), [
    'iifname . ip saddr @dyn_pair jump sandbox_in comment "registered sandboxes: interface and cidr"',
    'iifname @dyn_iface jump sandbox_in comment "registered sandboxes: interface"',
    'ip saddr @dyn_addr4 jump sandbox_in comment "registered sandboxes: cidr"',
    'iifname "sbx-sbx" ip saddr 10.77.1.0/24 jump sandbox_in comment "sandbox agent"',
  ]);
  t.deepEqual(chainLines(text, 'forward').slice(1), [
    'iifname . ip saddr @dyn_pair goto sandbox_fwd comment "registered sandboxes: interface and cidr"',
    'iifname @dyn_iface goto sandbox_fwd comment "registered sandboxes: interface"',
    'ip saddr @dyn_addr4 goto sandbox_fwd comment "registered sandboxes: cidr"',
    'iifname "sbx-sbx" ip saddr 10.77.1.0/24 goto sandbox_fwd comment "sandbox agent"',
    'oifname @dyn_pair_iface ct mark 0x5348 accept comment "registered sandboxes: replies of accepted flows"',
    'oifname @dyn_iface ct mark 0x5348 accept comment "registered sandboxes: replies of accepted flows"',
    'ip daddr @dyn_addr4 ct mark 0x5348 accept comment "registered sandboxes: replies of accepted flows"',
    'oifname "sbx-sbx" ct mark 0x5348 accept comment "sandbox agent: replies of accepted flows"',
    'oifname @dyn_pair_iface counter drop comment "registered sandboxes: nothing else is forwarded to it"',
    'oifname @dyn_iface counter drop comment "registered sandboxes: nothing else is forwarded to it"',
    'ip daddr @dyn_addr4 counter drop comment "registered sandboxes: nothing else is forwarded to it"',
    'oifname "sbx-sbx" counter drop comment "sandbox agent: nothing else is forwarded to it"',
  ]);
  t.deepEqual(chainLines(text, 'pre_verdict').slice(2, 6), [
    'iifname @dyn_iface icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "registered sandboxes: neighbour discovery with the host"',
    'iifname @dyn_pair_iface icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "registered sandboxes: neighbour discovery with the host"',
    'iifname "sbx-sbx" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "sandbox agent: neighbour discovery with the host"',
    'iifname @dyn_iface meta nfproto ipv6 counter drop comment "registered sandboxes: IPv6 is never carried"',
  ]);
});

test('registered sandboxes meet the DNS rate limit: each of their IPv4 rules in pre_mangle leads to sandbox_pre, which drops DNS over the rate before the redirect', (t) => {
  const text = renderRuleset(plan(STATIC, []));
  const dynV4 = chainLines(text, 'pre_mangle').filter((l) => l.includes('@dyn_') && !l.includes('ipv6') && !l.includes('drop'));
  t.is(dynV4.length, 3);
  t.true(dynV4.every((l) => l.includes(' goto sandbox_pre ')));
  const pre = chainLines(text, 'sandbox_pre');
  const limit = pre.findIndex((l) => l.startsWith('meta l4proto { tcp, udp } th dport 53 update @dns_rate4 { ip saddr limit rate over '));
  t.true(limit >= 0 && limit < pre.indexOf('meta l4proto { tcp, udp } th dport 53 return'));
});

test('registered sandboxes are elements, never rules: the rules are the same for 0, 1 and 1000', (t) => {
  const rules = (text: string): string =>
    text
      .split('\n')
      .filter((l) => !l.includes('elements = '))
      .join('\n');
  const none = renderRuleset(plan(STATIC, []));
  t.is(rules(renderRuleset(plan(STATIC, MANY(1)))), none);
  const big = renderRuleset(plan(STATIC, MANY(1000)));
  t.is(rules(big), none);
  t.true(big.includes('\t\telements = { 10.200.0.1/32, 10.200.0.10/32,'));
});

test('dynamicElements: pairs also name their interface (once), each kind in its own set', (t) => {
  t.deepEqual(
    dynamicElements([
      { name: 'a', interface: 'tap0', cidr: '10.9.1.0/24' },
      { name: 'b', interface: 'tap0', cidr: '10.9.2.0/24' },
      { name: 'c', interface: 'vm-*' },
      { name: 'd', cidr: '10.9.9.9/32' },
    ]),
    {
      dyn_pair: ['"tap0" . 10.9.1.0/24', '"tap0" . 10.9.2.0/24'],
      dyn_pair_iface: ['"tap0"'],
      dyn_iface: ['"vm-*"'],
      dyn_addr4: ['10.9.9.9/32'],
    },
  );
});

test('renderSetChanges: one transaction of deletes then adds; a shared pair interface stays while used', (t) => {
  const a = { name: 'a', interface: 'tap0', cidr: '10.9.1.0/24' };
  const b = { name: 'b', interface: 'tap0', cidr: '10.9.2.0/24' };
  t.is(
    renderSetChanges('sandgate', [], [a]),
    'add element inet sandgate dyn_pair { "tap0" . 10.9.1.0/24 }\nadd element inet sandgate dyn_pair_iface { "tap0" }\n',
  );
  t.is(renderSetChanges('sandgate', [a], [a, b]), 'add element inet sandgate dyn_pair { "tap0" . 10.9.2.0/24 }\n');
  t.is(renderSetChanges('sandgate', [a, b], [b]), 'delete element inet sandgate dyn_pair { "tap0" . 10.9.1.0/24 }\n');
  t.is(
    renderSetChanges('sandgate', [b], []),
    'delete element inet sandgate dyn_pair { "tap0" . 10.9.2.0/24 }\ndelete element inet sandgate dyn_pair_iface { "tap0" }\n',
  );
  // An update that moves a sandbox: its old elements go, the new ones come, in one script.
  t.is(
    renderSetChanges('sandgate', [{ name: 'x', cidr: '10.9.9.9/32' }], [{ name: 'x', interface: 'sbx-x' }]),
    'delete element inet sandgate dyn_addr4 { 10.9.9.9/32 }\nadd element inet sandgate dyn_iface { "sbx-x" }\n',
  );
  t.is(renderSetChanges('sandgate', [a], [a]), '', 'no change, no script');
});

test('renderSetChanges: a set losing an interface glob is flushed and refilled in the same transaction (nft cannot delete a prefix)', (t) => {
  const glob = { name: 'g', interface: 'sbx-g*' };
  const other = { name: 'o', interface: 'sbx-o' };
  t.is(renderSetChanges('sandgate', [glob, other], [other]), 'flush set inet sandgate dyn_iface\nadd element inet sandgate dyn_iface { "sbx-o" }\n');
  t.is(renderSetChanges('sandgate', [glob], []), 'flush set inet sandgate dyn_iface\n', 'the last one: flushed, nothing re-added');
  t.is(renderSetChanges('sandgate', [], [glob]), 'add element inet sandgate dyn_iface { "sbx-g*" }\n', 'adding one is a plain add');
});

test('renderSetChanges checks what it splices in', (t) => {
  t.throws(() => renderSetChanges('sandgate', [], [{ name: 'x', interface: 'a"b' }]), { instanceOf: FirewallError });
  t.throws(() => renderSetChanges('sandgate', [], [{ name: 'x', cidr: '10.9.9.9/24' }]), { instanceOf: FirewallError, message: /host bits/ });
  t.throws(() => renderSetChanges('sandgate', [], [{ name: 'x' }]), { instanceOf: FirewallError });
  t.throws(() => renderSetChanges('bad table', [], []), { instanceOf: FirewallError });
  t.throws(() => renderRuleset(plan(STATIC, [{ name: 'agent', cidr: '10.9.0.0/24' }])), { instanceOf: FirewallError, message: /appears twice/ });
});

test("the iptables backend: the same places as nft's set rules, as `-m set --match-set`, before the config's rules", (t) => {
  const spec = iptablesSpec(plan(STATIC, MANY(3)));
  const rules = (family: 'v4' | 'v6', chain: string): readonly string[] => {
    for (const tb of spec[family]) for (const c of tb.chains) if (c.name === chain) return c.rules;
    throw new Error(`no chain ${chain}`);
  };
  const R = (set: string, dirs: string, note: string, tail: string): string =>
    `-m set --match-set SANDGATE-${set} ${dirs} -m comment --comment "registered sandboxes: ${note}" ${tail}`;
  const per = (tail: string): string[] => [
    R('PAIR4', 'src,src', 'interface and cidr', tail),
    R('IF4', 'src,src', 'interface', tail),
    R('ADDR4', 'src', 'cidr', tail),
  ];
  t.deepEqual(rules('v4', 'SANDGATE-PRE'), [
    ...per('-g SANDGATE-SBX'),
    '-i sbx-sbx -s 10.77.1.0/24 -m comment --comment "sandbox agent" -g SANDGATE-SBX',
    R('PAIRIF4', 'src,src', 'a source outside its cidr', '-j DROP'),
    '-i sbx-sbx -m comment --comment "sandbox agent: a source outside its cidr" -j DROP',
  ]);
  const udp = '-p udp -m udp --dport 53 -j REDIRECT --to-ports 15053';
  const tcp = '-p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053';
  t.deepEqual(rules('v4', 'SANDGATE-NAT'), [
    ...per(udp),
    `-i sbx-sbx -s 10.77.1.0/24 -m comment --comment "sandbox agent" ${udp}`,
    ...per(tcp),
    `-i sbx-sbx -s 10.77.1.0/24 -m comment --comment "sandbox agent" ${tcp}`,
  ]);
  t.deepEqual(rules('v4', 'SANDGATE-IN'), [...per('-g SANDGATE-SBXIN'), '-i sbx-sbx -s 10.77.1.0/24 -m comment --comment "sandbox agent" -g SANDGATE-SBXIN']);
  const replies = '-m connmark ! --mark 0x5348 -j DROP';
  t.deepEqual(rules('v4', 'SANDGATE-FWD'), [
    ...per('-g SANDGATE-SBXFWD'),
    '-i sbx-sbx -s 10.77.1.0/24 -m comment --comment "sandbox agent" -g SANDGATE-SBXFWD',
    R('PAIRIF4', 'dst,dst', 'only replies of accepted flows', replies),
    R('IF4', 'dst,dst', 'only replies of accepted flows', replies),
    R('ADDR4', 'dst', 'only replies of accepted flows', replies),
    '-o sbx-sbx -m connmark ! --mark 0x5348 -m comment --comment "sandbox agent: only replies of accepted flows" -j DROP',
  ]);
  // IPv6: by interface alone, both interface sets; queued for an audit line, then dropped.
  t.deepEqual(rules('v6', 'SANDGATE-PRE'), [
    R('IF6', 'src,src', 'IPv6', '-g SANDGATE-SBX'),
    R('PAIRIF6', 'src,src', 'IPv6', '-g SANDGATE-SBX'),
    '-i sbx-sbx -m comment --comment "sandbox agent" -g SANDGATE-SBX',
  ]);
  const nd = (type: number): string => `-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -m hl --hl-eq 255 -j RETURN`;
  t.deepEqual(
    rules('v6', 'SANDGATE-IN').filter((r) => r.includes('registered')),
    [
      R('IF6', 'src,src', 'neighbour discovery with the host', nd(135)),
      R('PAIRIF6', 'src,src', 'neighbour discovery with the host', nd(135)),
      R('IF6', 'src,src', 'neighbour discovery with the host', nd(136)),
      R('PAIRIF6', 'src,src', 'neighbour discovery with the host', nd(136)),
      R('IF6', 'src,src', 'IPv6 is never carried', '-j DROP'),
      R('PAIRIF6', 'src,src', 'IPv6 is never carried', '-j DROP'),
    ],
  );
  t.deepEqual(
    rules('v6', 'SANDGATE-FWD').filter((r) => r.includes('registered')),
    [
      R('IF6', 'src,src', 'IPv6 is never carried', '-j DROP'),
      R('PAIRIF6', 'src,src', 'IPv6 is never carried', '-j DROP'),
      R('IF6', 'dst,dst', 'IPv6 is never carried', '-j DROP'),
      R('PAIRIF6', 'dst,dst', 'IPv6 is never carried', '-j DROP'),
    ],
  );
  // The shared chains (DNS rate limit, TPROXY, the packet path) are the config sandboxes' own.
  t.true(rules('v4', 'SANDGATE-SBX').some((r) => r.includes('--dport 53 -m hashlimit')));
});

test('the iptables backend: registered sandboxes are set elements, never rules; no dynamic part, no set rules', (t) => {
  const all = (p: FirewallPlan): string => JSON.stringify(iptablesSpec(p));
  t.is(all(plan(STATIC, MANY(1000))), all(plan(STATIC, [])));
  t.false(all(plan(STATIC, undefined)).includes('--match-set'));
});
