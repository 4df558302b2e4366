import test from 'ava';
import { parseIptablesMangle, parseNftTable } from '../../src/firewall/installed.js';
import { notAlone, parseListening } from '../../src/preflight.js';
import { renderRuleset } from '../../src/firewall/render-nft.js';
import { DEFAULT_PACKET_PLAN, type FirewallPlan } from '../../src/firewall/plan.js';
import { validateConfig } from '../../src/config/validate.js';
import type { Config } from '../../src/config/types.js';

const plan: FirewallPlan = {
  table: 'sandgate',
  tproxyPort: 15001,
  dnsPort: 15053,
  mark: 0x5347,
  routeTable: 5347,
  ...DEFAULT_PACKET_PLAN,
  sandboxes: [
    { name: 'agent', interface: 'sbx-*', cidr: '10.77.1.0/24' },
    { name: 'lab', cidr: '10.9.0.0/16' },
  ],
  dynamic: [
    { name: 'two', interface: 'sbx-two' },
    { name: 'three', cidr: '10.8.0.5/32' },
  ],
};

function config(sandboxes: unknown[], extra: Record<string, unknown> = {}): Config {
  const r = validateConfig({ sandboxes, policies: { p: { allow: [{ host: 'a.example' }] } }, ...extra });
  if (!r.config) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

test('parseNftTable reads the port, the interfaces and ranges of a rendered table (set elements too)', (t) => {
  const r = parseNftTable('sandgate', renderRuleset(plan));
  t.truthy(r);
  t.is(r?.tproxyPort, 15001);
  t.deepEqual(r?.interfaces, ['sbx-*', 'sbx-two']);
  t.deepEqual(r?.cidrs, ['10.77.1.0/24', '10.8.0.5/32', '10.9.0.0/16']);
});

test("parseNftTable ignores a table that is not sandgate's", (t) => {
  t.is(parseNftTable('filter', 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0;\n\t}\n}\n'), undefined);
});

test('parseIptablesMangle reads the chain prefix, port and matches', (t) => {
  // As iptables-save prints the chains render-iptables.ts installs.
  const text = [
    '*mangle',
    ':SANDGATE-PRE - [0:0]',
    ':SANDGATE-SBX - [0:0]',
    '-A PREROUTING -j SANDGATE-PRE',
    '-A SANDGATE-PRE -s 10.77.1.0/24 -i sbx-+ -m comment --comment "sandbox agent" -g SANDGATE-SBX',
    '-A SANDGATE-PRE -s 10.8.0.5/32 -m comment --comment "sandbox three" -g SANDGATE-SBX',
    '-A SANDGATE-PRE -i sbx-+ -m comment --comment "sandbox agent: a source outside its cidr" -j DROP',
    '-A SANDGATE-SBX -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x5347/0xffffffff',
    'COMMIT',
  ].join('\n');
  const r = parseIptablesMangle(text);
  t.is(r.length, 1);
  t.like(r[0], { name: 'SANDGATE', backend: 'iptables', tproxyPort: 15001 });
  t.deepEqual(r[0]!.interfaces, ['sbx-*']);
  t.deepEqual(r[0]!.cidrs, ['10.77.1.0/24', '10.8.0.5']);
});

test("parseIptablesMangle adds the registered sandboxes of the prefix's ipsets (globs as wildcard elements)", (t) => {
  const text = [
    '*mangle',
    '-A SANDGATE-PRE -i sbx-sbx -m comment --comment "sandbox agent" -g SANDGATE-SBX',
    '-A SANDGATE-SBX -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x5347/0xffffffff',
    'COMMIT',
  ].join('\n');
  const sets = [
    'create SANDGATE-IF4 hash:net,iface family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1',
    'add SANDGATE-IF4 0.0.0.0/0,sbx-tw wildcard',
    'add SANDGATE-PAIR4 10.9.1.0/24,tap0',
    'add SANDGATE-ADDR4 10.8.0.5',
    'add SANDGATE-IF6 ::/0,sbx-tw wildcard',
    'add OTHER-IF4 0.0.0.0/0,nope',
    'add SANDGATE-IF4-T 0.0.0.0/0,temp',
  ].join('\n');
  const r = parseIptablesMangle(text, sets);
  t.is(r.length, 1, 'a prefix with no TPROXY chain is not a ruleset');
  t.deepEqual(r[0]!.interfaces, ['sbx-sbx', 'sbx-tw*', 'tap0']);
  t.deepEqual(r[0]!.cidrs, ['10.8.0.5', '10.9.1.0/24']);
});

test('parseListening keeps LISTEN sockets only', (t) => {
  const text = '  sl  local_address rem_address   st\n   0: 00000000:3A99 00000000:0000 0A 0\n   1: 0100007F:1F90 0100007F:C000 01 0\n';
  t.deepEqual([...parseListening(text)], [15001]);
});

test('notAlone: a served same-name table, an overlapping other table, a live control socket', (t) => {
  const cfg = config([{ name: 'a', interface: 'sbx-a', policy: 'p' }]);
  const installed = parseNftTable('sandgate', renderRuleset(plan))!;
  t.regex(notAlone(cfg, 'f', { controlAnswers: true, installed: [], listening: new Set() }) ?? '', /answers on the control socket/);
  t.regex(notAlone(cfg, 'f', { controlAnswers: false, installed: [installed], listening: new Set([15001]) }) ?? '', /TPROXY port 15001/);
  // Same name, nobody serving it: what a stopped sandgate leaves (fail closed); replaced.
  t.is(notAlone(cfg, 'f', { controlAnswers: false, installed: [installed], listening: new Set() }), undefined);
  const other = config([{ name: 'a', interface: 'sbx-a', policy: 'p' }], { firewall: { table: 'other' } });
  t.regex(
    notAlone(other, 'f', { controlAnswers: false, installed: [installed], listening: new Set() }) ?? '',
    /table inet sandgate \(left installed by a sandgate that stopped\) overlaps f: it claims interface "sbx-\*"/,
  );
  const disjoint = config([{ name: 'a', interface: 'vm-a', cidr: '192.168.5.0/24', policy: 'p' }], { firewall: { table: 'other' } });
  t.is(notAlone(disjoint, 'f', { controlAnswers: false, installed: [installed], listening: new Set([15001]) }), undefined);
  const byCidr = config([{ name: 'a', cidr: '10.8.0.0/24', policy: 'p' }], { firewall: { table: 'other' } });
  t.regex(
    notAlone(byCidr, 'f', { controlAnswers: false, installed: [installed], listening: new Set([15001]) }) ?? '',
    /served by another sandgate.*source range 10\.8\.0\.5\/32/,
  );
});
