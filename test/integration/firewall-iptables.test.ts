/**
 * The iptables backend (and the nft backend's one iptables rule) against the real kernel,
 * each test in its own throwaway namespace (sg-<pid>-fi-<n>); the root namespace is never
 * touched. Uses the host's `iptables` alternative (nf_tables flavour on Debian 12).
 */
import test from 'ava';
import { iptablesDown, iptablesUp, iptablesBackendShow, iptablesMissing } from '../../src/firewall/apply-iptables.js';
import { firewallDown as nftDown, firewallUp as nftUp } from '../../src/firewall/apply-nft.js';
import { firewallDown, firewallShow, firewallUp, firewallUpdateDynamic, resolveBackend } from '../../src/firewall/backend.js';
import { sweepStale } from '../../src/demo/topology.js';
import { IP, NFT, inNs, testPlan, throwawayNamespaces } from '../helpers/firewall.js';
import { EMPTY_STATE, iptablesSpec, renderRestoreUp } from '../../src/firewall/render-iptables.js';

const { namespace } = throwawayNamespaces('fi');

// Namespaces a crashed run of this file left behind (sg-<dead pid>-*).
test.before(() => sweepStale());

const plan = testPlan;

/** iptables-save without counters and comments lines: what a rule set *is*. */
async function save(ns: string, v6 = false): Promise<string> {
  const out = await inNs(ns, v6 ? '/usr/sbin/ip6tables-save' : '/usr/sbin/iptables-save', []);
  return out
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

const jumps = (text: string, re: RegExp): string[] => text.split('\n').filter((l) => re.test(l));

test('iptables-restore --test accepts the rendered scripts for several plans', async (t) => {
  const ns = await namespace(t);
  for (const p of [
    plan(),
    plan({ sandboxes: [] }),
    plan({ sandboxes: [{ name: 'one', interface: 'eth9' }], table: 'sg_alt-1', tproxyPort: 1, dnsPort: 65535, queueNum: 0 }),
  ]) {
    const spec = iptablesSpec(p);
    await t.notThrowsAsync(inNs(ns, '/usr/sbin/iptables-restore', ['--test', '--noflush'], renderRestoreUp(spec.v4, EMPTY_STATE)), JSON.stringify(p));
    await t.notThrowsAsync(inNs(ns, '/usr/sbin/ip6tables-restore', ['--test', '--noflush'], renderRestoreUp(spec.v6, EMPTY_STATE)), JSON.stringify(p));
  }
  t.deepEqual(jumps(await save(ns), /SANDGATE/), [], '--test installs nothing');
});

test('up twice: one jump per built-in chain, our chains, one ip rule; show lists them with counters', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  await iptablesUp(p, { netns: ns });
  await iptablesUp(p, { netns: ns });
  const v4 = await save(ns);
  t.deepEqual(jumps(v4, /^-A (PREROUTING|POSTROUTING|INPUT|FORWARD) -j SANDGATE-/).sort(), [
    '-A FORWARD -j SANDGATE-FWD',
    '-A INPUT -j SANDGATE-IN',
    '-A POSTROUTING -j SANDGATE-POST',
    '-A PREROUTING -j SANDGATE-NAT',
    '-A PREROUTING -j SANDGATE-PRE',
  ]);
  t.true(v4.includes('-A SANDGATE-SBX -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x5347/0xffffffff'));
  t.true(v4.includes('-A SANDGATE-SBX -j NFQUEUE --queue-num 5347'));
  t.true(v4.includes('-A SANDGATE-PRE -i sbx-+ -m comment --comment "sandbox agent" -g SANDGATE-SBX'));
  t.false(v4.includes('--queue-bypass'), 'fail closed: no bypass');
  const v6 = await save(ns, true);
  t.deepEqual(jumps(v6, /^-A (PREROUTING|INPUT|FORWARD) -j SANDGATE-/).sort(), [
    '-A FORWARD -j SANDGATE-FWD',
    '-A INPUT -j SANDGATE-IN',
    '-A PREROUTING -j SANDGATE-PRE',
  ]);
  const rules = await inNs(ns, IP, ['-4', 'rule', 'show']);
  t.is(rules.split('\n').filter((l) => l.includes('fwmark 0x5347 lookup 5347')).length, 1);
  t.false((await inNs(ns, NFT, ['list', 'tables'])).includes('inet sandgate'));
  const shown = await iptablesBackendShow(p, { netns: ns });
  t.regex(shown, /^\[\d+:\d+\] -A SANDGATE-SBX -j NFQUEUE --queue-num 5347$/m);
  t.regex(shown, /from all fwmark 0x5347 lookup 5347/);
});

test('unrelated rules before and after up survive up and down exactly', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  // Someone else's rules, Docker-style: a user chain, built-in rules and a NAT rule.
  await inNs(ns, '/usr/sbin/iptables', ['-N', 'DOCKER-USER']);
  await inNs(ns, '/usr/sbin/iptables', ['-A', 'DOCKER-USER', '-s', '10.99.0.0/16', '-j', 'RETURN']);
  await inNs(ns, '/usr/sbin/iptables', ['-A', 'FORWARD', '-j', 'DOCKER-USER']);
  await inNs(ns, '/usr/sbin/iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
  await inNs(ns, '/usr/sbin/iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-s', '10.99.0.0/16', '-j', 'MASQUERADE']);
  await inNs(ns, '/usr/sbin/iptables', ['-t', 'mangle', '-A', 'PREROUTING', '-p', 'udp', '--dport', '4789', '-j', 'MARK', '--set-mark', '7']);
  await inNs(ns, '/usr/sbin/ip6tables', ['-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
  await inNs(ns, NFT, ['-f', '-'], 'table inet other {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n');
  const before = { v4: await save(ns), v6: await save(ns, true) };

  await iptablesUp(p, { netns: ns });
  // Ours come first in each built-in chain; theirs are all still there, in their order.
  const up = await save(ns);
  t.true(up.indexOf('-A INPUT -j SANDGATE-IN') < up.indexOf('-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT'));
  for (const line of before.v4.split('\n').filter((l) => l.startsWith('-A'))) t.true(up.includes(line), line);
  // Rules added by others while sandgate is up survive down too.
  await inNs(ns, '/usr/sbin/iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', '2222', '-j', 'ACCEPT']);
  await iptablesUp(p, { netns: ns }); // a reload: still one jump, theirs untouched
  t.is(jumps(await save(ns), /^-A INPUT -j SANDGATE-IN$/).length, 1);
  await iptablesDown(p, { netns: ns });
  await inNs(ns, '/usr/sbin/iptables', ['-D', 'INPUT', '-p', 'tcp', '--dport', '2222', '-j', 'ACCEPT']);

  t.is(await save(ns), before.v4);
  t.is(await save(ns, true), before.v6);
  t.true((await inNs(ns, NFT, ['list', 'tables'])).includes('table inet other'));
  t.false((await inNs(ns, IP, ['-4', 'rule', 'show'])).includes('lookup 5347'));
});

test('switching backends leaves one ruleset; down of either removes everything', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  await nftUp(p, { netns: ns });
  t.deepEqual(jumps(await save(ns), /^-A .*SANDGATE/), ['-A PREROUTING -j SANDGATE-Q', '-A SANDGATE-Q -m mark --mark 0x5349 -j NFQUEUE --queue-num 5347']);
  await iptablesUp(p, { netns: ns });
  t.false((await inNs(ns, NFT, ['list', 'tables'])).includes('inet sandgate'), 'the nft table went');
  t.false((await save(ns)).includes('SANDGATE-Q'), "the nft backend's queue chain went");
  await nftUp(p, { netns: ns });
  t.deepEqual(jumps(await save(ns), /SANDGATE-(PRE|SBX|NAT|IN|FWD)/), [], 'the iptables chains went');
  t.true((await inNs(ns, NFT, ['list', 'tables'])).includes('inet sandgate'));
  await iptablesDown(p, { netns: ns });
  t.is((await inNs(ns, NFT, ['list', 'tables'])).trim(), '', 'no table of anyone left');
  await iptablesUp(p, { netns: ns });
  await nftDown(p, { netns: ns });
  t.is((await inNs(ns, NFT, ['list', 'tables'])).trim(), '');
  t.deepEqual(jumps(await save(ns), /SANDGATE/), []);
});

test("registered sandboxes in ipsets: up fills them and the rules name them, a change edits elements, and down, an up without the control API and a switch to nft destroy them (a crashed up's temporaries too)", async (t) => {
  const ns = await namespace(t);
  const o = { netns: ns };
  const IPSET = '/usr/sbin/ipset';
  const sets = async (): Promise<string[]> =>
    (await inNs(ns, IPSET, ['list', '-n']))
      .split('\n')
      .filter((l) => l !== '')
      .sort();
  const members = async (name: string): Promise<string[]> =>
    (await inNs(ns, IPSET, ['save', name]))
      .split('\n')
      .filter((l) => l.startsWith('add '))
      .map((l) => l.slice(`add ${name} `.length))
      .sort();
  const ALL = ['SANDGATE-ADDR4', 'SANDGATE-IF4', 'SANDGATE-IF6', 'SANDGATE-PAIR4', 'SANDGATE-PAIRIF4', 'SANDGATE-PAIRIF6'];
  const d = [
    { name: 'd1', interface: 'sbx-tw*' },
    { name: 'd2', interface: 'tap0', cidr: '10.9.1.0/24' },
    { name: 'd3', cidr: '10.9.9.9/32' },
  ];
  const p = plan({ dynamic: d });
  t.true((await iptablesMissing(p, o)).includes('ipset SANDGATE-IF4 is missing'), 'health names a missing set');
  await iptablesUp(p, o);
  t.deepEqual(await sets(), ALL, 'no temporaries left behind');
  t.deepEqual(await members('SANDGATE-IF4'), ['0.0.0.0/0,sbx-tw wildcard']);
  t.deepEqual(await members('SANDGATE-IF6'), ['::/0,sbx-tw wildcard']);
  t.deepEqual(await members('SANDGATE-PAIR4'), ['10.9.1.0/24,tap0']);
  t.deepEqual(await members('SANDGATE-PAIRIF6'), ['::/0,tap0']);
  t.deepEqual(await members('SANDGATE-ADDR4'), ['10.9.9.9']);
  const v4 = await save(ns);
  t.true(
    v4.includes('-A SANDGATE-PRE -m set --match-set SANDGATE-PAIR4 src,src -m comment --comment "registered sandboxes: interface and cidr" -g SANDGATE-SBX'),
    v4,
  );
  t.true((await save(ns, true)).includes('-A SANDGATE-PRE -m set --match-set SANDGATE-IF6 src,src'));
  t.deepEqual(await iptablesMissing(p, o), []);

  // A change edits elements in place; the rules stay as they were.
  await firewallUpdateDynamic(p, 'iptables', d, [d[2]!, { name: 'd4', interface: 'vm0' }], o);
  t.deepEqual(await members('SANDGATE-IF4'), ['0.0.0.0/0,vm0']);
  t.deepEqual(await members('SANDGATE-PAIR4'), []);
  t.deepEqual(await members('SANDGATE-PAIRIF4'), []);
  t.is(await save(ns), v4);
  // up again (a reload) makes the sets exactly the plan's, while the rules name them.
  await iptablesUp(p, o);
  t.deepEqual(await members('SANDGATE-IF4'), ['0.0.0.0/0,sbx-tw wildcard']);

  // A crashed up's temporary set, then down: rules first, then every set of ours.
  await inNs(ns, IPSET, ['create', 'SANDGATE-IF4-T', 'hash:net,iface']);
  await iptablesDown(p, o);
  t.deepEqual(await sets(), []);
  t.deepEqual(jumps(await save(ns), /SANDGATE/), []);
  // An earlier run's sets go when the control API is off (no dynamic part), and on a switch to nft.
  await iptablesUp(p, o);
  await iptablesUp(plan(), o);
  t.deepEqual(await sets(), []);
  await iptablesUp(p, o);
  await nftUp(p, o);
  t.deepEqual(await sets(), []);
  await nftDown(p, o);
});

test("ipsets: 64 interface-only registered sandboxes at most (hash:net,iface keeps one network's interfaces in one bucket); a failed change is undone", async (t) => {
  const ns = await namespace(t);
  const o = { netns: ns };
  const count = async (name: string): Promise<number> =>
    (await inNs(ns, '/usr/sbin/ipset', ['save', name])).split('\n').filter((l) => l.startsWith('add ')).length;
  const ifs = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => ({ name: `i${from + i}`, interface: `vm${from + i}` }));
  const p = plan({ dynamic: [] });
  await iptablesUp(p, o);
  await firewallUpdateDynamic(p, 'iptables', [], ifs(0, 64), o);
  t.is(await count('SANDGATE-IF4'), 64);
  await t.throwsAsync(firewallUpdateDynamic(p, 'iptables', ifs(0, 64), [...ifs(0, 64), ...ifs(64, 66)], o), {
    message: /^ipset could not update the registered sandboxes in sets SANDGATE-\*: .*Hash is full/,
  });
  t.is(await count('SANDGATE-IF4'), 64, 'the 65th was refused');
  // The same for interface+cidr sandboxes' interfaces: the 65th pair's PAIR4 element goes in
  // (first line), its PAIRIF4 element fails (second line); the first line is undone.
  const pairs = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, i) => ({ name: `p${from + i}`, interface: `tap${from + i}`, cidr: `10.50.${from + i}.0/24` }));
  await firewallUpdateDynamic(p, 'iptables', ifs(0, 64), [...ifs(0, 64), ...pairs(0, 64)], o);
  t.is(await count('SANDGATE-PAIR4'), 64);
  await t.throwsAsync(firewallUpdateDynamic(p, 'iptables', [...ifs(0, 64), ...pairs(0, 64)], [...ifs(0, 64), ...pairs(0, 65)], o), { message: /Hash is full/ });
  t.is(await count('SANDGATE-PAIRIF4'), 64);
  t.is(await count('SANDGATE-PAIR4'), 64, 'what the failed change had added was taken back');
  await iptablesDown(p, o);
});

test('backend.ts: auto picks nft where nft works; show names the backend', async (t) => {
  const ns = await namespace(t);
  t.is(await resolveBackend('auto', { netns: ns }), 'nft');
  t.is(await resolveBackend('iptables', { netns: ns }), 'iptables');
  const p = plan();
  await firewallUp(p, 'iptables', { netns: ns });
  t.regex(await firewallShow(p, 'iptables', { netns: ns }), /^# backend: iptables\n# iptables: the iptables backend/);
  await firewallDown(p, 'iptables', { netns: ns });
  t.deepEqual(jumps(await save(ns), /SANDGATE/), []);
});
