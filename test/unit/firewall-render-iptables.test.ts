/** render-iptables.ts: the iptables backend's text, its state parsing, and up/down scripts (pure). */
import test from 'ava';
import { DEFAULT_PACKET_PLAN, FirewallError, type FirewallPlan, type SandboxMatch } from '../../src/firewall/plan.js';
import {
  BUILTINS,
  EMPTY_STATE,
  allChains,
  chainPrefix,
  iptablesSpec,
  parseIptablesSave,
  queueCompanionSpec,
  renderRestoreDown,
  renderRestoreUp,
  type IptSpec,
} from '../../src/firewall/render-iptables.js';

function plan(sandboxes: SandboxMatch[], overrides: Partial<FirewallPlan> = {}): FirewallPlan {
  return { table: 'sandgate', tproxyPort: 15001, dnsPort: 15053, mark: 0x5347, routeTable: 5347, ...DEFAULT_PACKET_PLAN, sandboxes, ...overrides };
}

function rules(spec: IptSpec, family: 'v4' | 'v6', chain: string): readonly string[] {
  for (const t of spec[family]) for (const c of t.chains) if (c.name === chain) return c.rules;
  throw new Error(`no chain ${chain}`);
}

test('mangle: per-sandbox goto, then rpfilter, DNS over its rate dropped, DNS returns, TPROXY, accepted flows, rate limit, NFQUEUE without bypass', (t) => {
  const spec = iptablesSpec(
    plan([
      { name: 'agent', interface: 'sbx-*', cidr: '10.77.1.0/24' },
      { name: 'net', cidr: '10.77.5.0/24' },
    ]),
  );
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-PRE'), [
    '-i sbx-+ -s 10.77.1.0/24 -m comment --comment "sandbox agent" -g SANDGATE-SBX',
    '-s 10.77.5.0/24 -m comment --comment "sandbox net" -g SANDGATE-SBX',
    '-i sbx-+ -m comment --comment "sandbox agent: a source outside its cidr" -j DROP',
  ]);
  const sbx = rules(spec, 'v4', 'SANDGATE-SBX');
  t.is(sbx[0], '-m rpfilter --invert -j DROP');
  // DNS: one hashlimit table (the same name) for UDP and TCP, per source address, before the returns.
  const dnsLimit =
    /^-p (tcp|udp) -m \1 --dport 53 -m hashlimit --hashlimit-above 1000\/sec --hashlimit-burst 2000 --hashlimit-mode srcip --hashlimit-name (sg-[0-9a-z]+-d) --hashlimit-htable-expire 60000 -j DROP$/;
  t.is(dnsLimit.exec(sbx[1] ?? '')?.[1], 'tcp');
  t.is(dnsLimit.exec(sbx[2] ?? '')?.[1], 'udp');
  t.is(dnsLimit.exec(sbx[1] ?? '')?.[2], dnsLimit.exec(sbx[2] ?? '')?.[2]);
  t.deepEqual(sbx.slice(3, 7), [
    '-p tcp -m tcp --dport 53 -j RETURN',
    '-p udp -m udp --dport 53 -j RETURN',
    '-p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x5347/0xffffffff',
    '-m connmark --mark 0x5348 -j RETURN',
  ]);
  t.regex(sbx[7] ?? '', /^-m hashlimit --hashlimit-above 100\/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name sg-[0-9a-z]+-4 .* -j DROP$/);
  t.is(sbx[8], '-j NFQUEUE --queue-num 5347');
  t.is(sbx.length, 9);
});

test('DNS rate: from the plan, and a new hashlimit name when it changes (a table keeps the parameters it was made with)', (t) => {
  const dnsRule = (p: FirewallPlan): string => rules(iptablesSpec(p), 'v4', 'SANDGATE-SBX')[2] ?? '';
  const a = dnsRule(plan([]));
  const b = dnsRule(plan([], { dnsRate: { pps: 7, burst: 9 } }));
  t.regex(b, /--hashlimit-above 7\/sec --hashlimit-burst 9 --hashlimit-mode srcip /);
  t.not(/hashlimit-name (\S+)/.exec(a)?.[1], /hashlimit-name (\S+)/.exec(b)?.[1]);
  // Never the packet path's table, even at the same rate.
  const same = plan([], { dnsRate: { pps: 100, burst: 200 } });
  t.not(
    /hashlimit-name (\S+)/.exec(dnsRule(same))?.[1]?.replace(/-d$/, ''),
    /hashlimit-name (\S+)/.exec(rules(iptablesSpec(same), 'v4', 'SANDGATE-SBX')[7] ?? '')?.[1]?.replace(/-4$/, ''),
  );
  t.throws(() => iptablesSpec(plan([], { dnsRate: { pps: 0, burst: 1 } })), { instanceOf: FirewallError, message: /dnsRate.pps/ });
});

test('nat, filter: DNS redirect, masquerade of accepted flows, input and forward only RETURN what the nft ruleset accepts', (t) => {
  const spec = iptablesSpec(plan([{ name: 'agent', interface: 'sbx-*' }]));
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-NAT'), [
    '-i sbx-+ -m comment --comment "sandbox agent" -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053',
    '-i sbx-+ -m comment --comment "sandbox agent" -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053',
  ]);
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-POST'), ['-m connmark --mark 0x5348 -j MASQUERADE']);
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-SBXIN'), [
    '-p tcp -m mark --mark 0x5347 -j RETURN',
    '-p udp -m udp --dport 15053 -m conntrack --ctstate DNAT -j RETURN',
    '-p tcp -m tcp --dport 15053 -m conntrack --ctstate DNAT -j RETURN',
    '-j DROP',
  ]);
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-FWD'), [
    '-i sbx-+ -m comment --comment "sandbox agent" -g SANDGATE-SBXFWD',
    '-o sbx-+ -m connmark ! --mark 0x5348 -m comment --comment "sandbox agent: only replies of accepted flows" -j DROP',
  ]);
  t.deepEqual(rules(spec, 'v4', 'SANDGATE-SBXFWD'), [
    '-m connmark --mark 0x5348 -j RETURN',
    '-m mark --mark 0x5348 -j CONNMARK --set-xmark 0x5348/0xffffffff',
    '-m mark --mark 0x5348 -j RETURN',
    '-j DROP',
  ]);
  // Nothing of ours ever ACCEPTs: the host's own rules still apply after ours.
  const all = [...spec.v4, ...spec.v6].flatMap((tb) => tb.chains.flatMap((c) => c.rules));
  t.false(all.some((r) => r.endsWith('-j ACCEPT')));
});

test('IPv6: neighbour discovery returns, RD/MLD drop, the rest queued then dropped; cidr-only sandboxes have no IPv6 rules', (t) => {
  const spec = iptablesSpec(
    plan([
      { name: 'agent', interface: 'sbx-*' },
      { name: 'net', cidr: '10.77.5.0/24' },
    ]),
  );
  t.deepEqual(rules(spec, 'v6', 'SANDGATE-PRE'), ['-i sbx-+ -m comment --comment "sandbox agent" -g SANDGATE-SBX']);
  const sbx = rules(spec, 'v6', 'SANDGATE-SBX');
  t.deepEqual(sbx.slice(0, 2), [
    '-p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j RETURN',
    '-p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j RETURN',
  ]);
  t.true(sbx.includes('-p ipv6-icmp -m icmp6 --icmpv6-type 133 -j DROP'));
  t.is(sbx.at(-1), '-j NFQUEUE --queue-num 5347');
  t.deepEqual(rules(spec, 'v6', 'SANDGATE-IN').slice(-1), ['-i sbx-+ -m comment --comment "sandbox agent: IPv6 is never carried" -j DROP']);
  t.deepEqual(rules(spec, 'v6', 'SANDGATE-FWD'), [
    '-i sbx-+ -m comment --comment "sandbox agent: IPv6 is never carried" -j DROP',
    '-o sbx-+ -m comment --comment "sandbox agent: IPv6 is never carried" -j DROP',
  ]);
});

test('restore up: chains declared, rules, jumps only where missing; down: jumps, flushes, deletes', (t) => {
  const spec = queueCompanionSpec(plan([]));
  t.is(
    renderRestoreUp(spec.v4, EMPTY_STATE),
    '*mangle\n:SANDGATE-Q - [0:0]\n-A SANDGATE-Q -m mark --mark 0x5349 -j NFQUEUE --queue-num 5347\n-I PREROUTING 1 -j SANDGATE-Q\nCOMMIT\n',
  );
  const state = parseIptablesSave(
    '# Generated\n*mangle\n:PREROUTING ACCEPT [0:0]\n:SANDGATE-Q - [0:0]\n-A PREROUTING -p udp -j MARK --set-mark 7\n-A PREROUTING -j SANDGATE-Q\n-A PREROUTING -j SANDGATE-Q\n-A SANDGATE-Q -m mark --mark 0x5349 -j NFQUEUE --queue-num 5347\nCOMMIT\n',
  );
  t.true(state.chains.has('mangle/SANDGATE-Q'));
  t.is(state.jumps.get('mangle/PREROUTING/SANDGATE-Q'), 2);
  t.false(renderRestoreUp(spec.v4, state).includes('-I PREROUTING'), 'present: not inserted again');
  t.is(
    renderRestoreDown(allChains(plan([])).v4, BUILTINS, state),
    '*mangle\n-D PREROUTING -j SANDGATE-Q\n-D PREROUTING -j SANDGATE-Q\n-F SANDGATE-Q\n-X SANDGATE-Q\nCOMMIT\n',
  );
  t.is(renderRestoreDown(allChains(plan([])).v4, BUILTINS, EMPTY_STATE), '', 'nothing installed: nothing to do');
});

test('chain prefix: the table upper-cased, short enough for 28-character chain names', (t) => {
  t.is(chainPrefix({ table: 'sg_alt-1' }), 'SG_ALT-1');
  t.throws(() => chainPrefix({ table: 'a'.repeat(22) }), { instanceOf: FirewallError, message: /too long for the iptables backend/ });
  for (const names of Object.values(allChains({ table: 'a'.repeat(21) }).v4)) for (const n of names) t.true(n.length <= 28, n);
  // The hashlimit name changes with the rate: an existing table keeps its old parameters otherwise.
  const a = rules(iptablesSpec(plan([])), 'v4', 'SANDGATE-SBX')[7];
  const b = rules(iptablesSpec(plan([], { packetRate: { pps: 5, burst: 5 } })), 'v4', 'SANDGATE-SBX')[7];
  t.not(/hashlimit-name (\S+)/.exec(a ?? '')?.[1], /hashlimit-name (\S+)/.exec(b ?? '')?.[1]);
  t.throws(() => iptablesSpec(plan([{ name: 'x"y', interface: 'sbx0' }])), { instanceOf: FirewallError });
});
