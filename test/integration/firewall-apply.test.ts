/**
 * firewallUp / firewallDown / firewallShow against the real kernel, each test inside its
 * own throwaway network namespace (sg-<pid>-fw-<n>); the root namespace is never touched.
 */
import test from 'ava';
import { FirewallError, firewallDown, firewallShow, firewallUp } from '../../src/firewall/apply-nft.js';
import type { FirewallPlan } from '../../src/firewall/plan.js';
import { sweepStale } from '../../src/demo/topology.js';
import { IP, NFT, inNs, testPlan, throwawayNamespaces } from '../helpers/firewall.js';
import { renderApplyScript } from '../../src/firewall/render-nft.js';

const { prefix: PREFIX, namespace } = throwawayNamespaces('fw');

// Namespaces a crashed run of this file left behind (sg-<dead pid>-*).
test.before(() => sweepStale());

const plan = testPlan;

async function tables(ns: string): Promise<string[]> {
  return (await inNs(ns, NFT, ['list', 'tables'])).split('\n').filter((line) => line.trim() !== '');
}

/** The nft backend's tables: ours, plus iptables-nft's mangle tables holding the NFQUEUE rule. */
const NFT_BACKEND_TABLES = ['table inet sandgate', 'table ip mangle', 'table ip6 mangle'];

async function ourRules(ns: string, p: FirewallPlan): Promise<unknown[]> {
  const rules = JSON.parse(await inNs(ns, IP, ['-4', '-j', '-N', 'rule', 'show'])) as Record<string, unknown>[];
  return rules.filter((r) => r['table'] === String(p.routeTable) && Number(r['fwmark']) === p.mark && r['fwmask'] === undefined);
}

async function routesIn(ns: string, table: number): Promise<unknown[]> {
  const routes = JSON.parse(await inNs(ns, IP, ['-4', '-j', '-N', 'route', 'show', 'table', 'all'])) as Record<string, unknown>[];
  return routes.filter((r) => r['table'] === String(table));
}

test('nft -c accepts the rendered apply script for several plans', async (t) => {
  const ns = await namespace(t);
  const plans: FirewallPlan[] = [
    plan(),
    plan({ sandboxes: [] }),
    plan({ sandboxes: [{ name: 'one', interface: 'eth9' }] }),
    plan({ sandboxes: [{ name: 'cidr-only', cidr: '10.77.0.0/16' }] }),
    plan({ sandboxes: [{ name: 'host', cidr: '10.77.0.9' }], table: 'sg_alt-1', tproxyPort: 1, dnsPort: 65535, mark: 0xffffffff, routeTable: 100 }),
  ];
  for (const p of plans) {
    await t.notThrowsAsync(inNs(ns, NFT, ['-c', '-f', '-'], renderApplyScript(p)), `plan ${JSON.stringify(p)}`);
  }
  // -c is a dry run: nothing was installed.
  t.deepEqual(await tables(ns), []);
});

test('the check is real: nft -c rejects a broken script', async (t) => {
  const ns = await namespace(t);
  const broken = renderApplyScript(plan()).replace('tproxy ip to', 'tproxy ipx to');
  await t.throwsAsync(inNs(ns, NFT, ['-c', '-f', '-'], broken), { message: /syntax error/ });
});

test('up twice: one table, one ip rule, one local route; show reports all three', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  await firewallUp(p, { netns: ns });
  await firewallUp(p, { netns: ns });

  t.deepEqual((await tables(ns)).sort(), [...NFT_BACKEND_TABLES].sort());
  t.is((await ourRules(ns, p)).length, 1);
  const routes = await routesIn(ns, p.routeTable);
  t.is(routes.length, 1);
  t.like(routes[0], { dst: 'default', dev: 'lo' });

  const listed = await inNs(ns, NFT, ['list', 'table', 'inet', 'sandgate']);
  t.true(listed.includes('comment "sandbox agent"'));
  t.true(listed.includes('tproxy ip to :15001 meta mark set 0x00005347 accept'));

  const shown = await firewallShow(p, { netns: ns });
  t.true(shown.startsWith('table inet sandgate {'));
  t.true(shown.includes('iifname "sbx-*" goto sandbox_pre comment "sandbox agent"'));
  t.regex(shown, /^\d+:\tfrom all fwmark 0x5347 lookup 5347$/m);
  t.regex(shown, /^local default dev lo .*scope host/m);
});

test('up replaces the ruleset: a sandbox removed from the plan is gone', async (t) => {
  const ns = await namespace(t);
  await firewallUp(plan(), { netns: ns });
  await firewallUp(plan({ sandboxes: [{ name: 'only', interface: 'sbx9' }] }), { netns: ns });
  const listed = await inNs(ns, NFT, ['list', 'table', 'inet', 'sandgate']);
  t.true(listed.includes('comment "sandbox only"'));
  t.false(listed.includes('sandbox agent'));
  t.deepEqual((await tables(ns)).sort(), [...NFT_BACKEND_TABLES].sort());
});

test('down leaves no table, no rule, no route; down twice and down when never up are fine', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  await firewallDown(p, { netns: ns }); // nothing installed yet
  await firewallUp(p, { netns: ns });
  await firewallDown(p, { netns: ns });
  t.deepEqual(await tables(ns), []);
  t.deepEqual(await ourRules(ns, p), []);
  t.deepEqual(await routesIn(ns, p.routeTable), []);
  await t.notThrowsAsync(firewallDown(p, { netns: ns }));

  const shown = await firewallShow(p, { netns: ns });
  t.true(shown.includes('# nftables: table inet sandgate is not installed'));
  t.notRegex(shown, /^\d+:/m);
  t.notRegex(shown, /^local default/m);
});

test('duplicate ip rules: up keeps exactly one, down removes them all', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  for (let i = 0; i < 3; i++) await inNs(ns, IP, ['-4', 'rule', 'add', 'fwmark', '0x5347', 'lookup', '5347']);
  await firewallUp(p, { netns: ns });
  t.is((await ourRules(ns, p)).length, 1);
  await inNs(ns, IP, ['-4', 'rule', 'add', 'fwmark', '0x5347', 'lookup', '5347']);
  await firewallDown(p, { netns: ns });
  t.deepEqual(await ourRules(ns, p), []);
});

test('unrelated table, ip rules and routes survive up and down untouched', async (t) => {
  const ns = await namespace(t);
  const p = plan();
  await inNs(ns, NFT, ['-f', '-'], 'table inet other {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n');
  // Same mark with a mask, same mark to another table, and another route in our table:
  // none of them is sandgate's.
  await inNs(ns, IP, ['-4', 'rule', 'add', 'fwmark', '0x5347/0xffff', 'lookup', '5347']);
  await inNs(ns, IP, ['-4', 'rule', 'add', 'fwmark', '0x5347', 'lookup', '100']);
  await inNs(ns, IP, ['-4', 'route', 'add', 'blackhole', '10.77.9.0/24', 'table', '5347']);
  const before = {
    other: await inNs(ns, NFT, ['list', 'table', 'inet', 'other']),
    rules: await inNs(ns, IP, ['-4', 'rule', 'show']),
  };

  await firewallUp(p, { netns: ns });
  t.is(await inNs(ns, NFT, ['list', 'table', 'inet', 'other']), before.other);
  await firewallDown(p, { netns: ns });

  t.deepEqual(await tables(ns), ['table inet other']);
  t.is(await inNs(ns, NFT, ['list', 'table', 'inet', 'other']), before.other);
  t.is(await inNs(ns, IP, ['-4', 'rule', 'show']), before.rules);
  t.like(await routesIn(ns, p.routeTable), [{ type: '6', dst: '10.77.9.0/24' }]); // -N: RTN_BLACKHOLE = 6
});

test("failures are FirewallErrors carrying the tool's own message", async (t) => {
  const error = await t.throwsAsync(firewallUp(plan(), { netns: `${PREFIX}missing` }), {
    instanceOf: FirewallError,
    message: /^nft could not install table inet sandgate: Cannot open network namespace/,
  });
  t.is(error?.code, 'FIREWALL');
  t.false(error?.message.includes('\n'));
  // A table name that passes validation but is an nft keyword: nft's own first line shows.
  const ns = await namespace(t);
  await t.throwsAsync(firewallUp(plan({ table: 'meta' }), { netns: ns }), {
    instanceOf: FirewallError,
    message: /^nft could not install table inet meta: \/dev\/stdin:1:\d+-\d+: Error: syntax error, unexpected meta/,
  });
  t.deepEqual(await tables(ns), []);
  t.deepEqual(await routesIn(ns, 5347), []); // nothing after the failed nft step ran
  // An invalid plan is refused before any command runs (the namespace does not exist).
  await t.throwsAsync(firewallUp(plan({ sandboxes: [{ name: 'x"y', interface: 'sbx0' }] }), { netns: `${PREFIX}missing` }), {
    instanceOf: FirewallError,
    message: /invalid firewall plan/,
  });
});
