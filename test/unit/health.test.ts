import test from 'ava';
import { checkHealth, type HealthProbes } from '../../src/control/health.js';
import { iptablesSpec, missingFrom, parseIptablesSave } from '../../src/firewall/render-iptables.js';
import { planFromConfig } from '../../src/firewall/from-config.js';
import { parseConfig } from '../../src/config/load.js';

const probes = (over: Partial<HealthProbes> = {}): HealthProbes => ({
  backend: 'nft',
  firewallMissing: async () => [],
  listeners: () => [
    { name: 'tcp', address: '0.0.0.0:15001', up: true },
    { name: 'dns', address: '0.0.0.0:15053', up: true },
  ],
  ...over,
});

test('ok when the firewall is in place and every listener accepts; failing names what is not', async (t) => {
  const ok = await checkHealth(probes());
  t.is(ok.status, 'ok');
  t.deepEqual(
    ok.checks.map((c) => [c.name, c.ok]),
    [
      ['firewall', true],
      ['listener tcp', true],
      ['listener dns', true],
    ],
  );
  const noTable = await checkHealth(probes({ firewallMissing: async () => ['nft table inet sandgate is not installed'] }));
  t.is(noTable.status, 'failing');
  t.like(noTable.checks[0], { name: 'firewall', ok: false, detail: 'nft table inet sandgate is not installed' });
  const unreadable = await checkHealth(
    probes({
      firewallMissing: async () => {
        throw new Error('nft: not found');
      },
    }),
  );
  t.is(unreadable.status, 'failing');
  t.regex(unreadable.checks[0]!.detail, /cannot read the nft ruleset: nft: not found/);
  const dnsDown = await checkHealth(probes({ listeners: () => [{ name: 'dns', address: '0.0.0.0:15053', up: false }] }));
  t.is(dnsDown.status, 'failing');
  t.like(dnsDown.checks[1], { name: 'listener dns', ok: false });
  t.is((await checkHealth(probes({ workers: () => ({ ready: 0, expected: 2 }) }))).status, 'failing');
  t.is((await checkHealth(probes({ workers: () => ({ ready: 1, expected: 2 }) }))).status, 'ok', 'a dead worker is being replaced; the others serve');
});

test('iptables: every chain and every jump of the spec is looked for in iptables-save output', (t) => {
  const config = parseConfig('sandboxes:\n  - name: agent\n    cidr: 10.77.1.0/24\n    policy: p\npolicies:\n  p:\n    allow: []\n', 'sg.yaml');
  const spec = iptablesSpec(planFromConfig(config));
  // What iptables-save prints once the spec is installed: the chains, then the jumps.
  const save = (drop: (line: string) => boolean): string =>
    spec.v4
      .flatMap((tb) => [`*${tb.table}`, ...tb.chains.map((c) => `:${c.name} - [0:0]`), ...tb.jumps.map((j) => `-A ${j.from} -j ${j.to}`), 'COMMIT'])
      .filter((l) => !drop(l))
      .join('\n');
  t.deepEqual(missingFrom(spec.v4, parseIptablesSave(save(() => false)), 'iptables'), []);
  t.deepEqual(missingFrom(spec.v4, parseIptablesSave(save((l) => l === '-A INPUT -j SANDGATE-IN')), 'iptables'), [
    'iptables filter INPUT has no jump to SANDGATE-IN',
  ]);
  const none = missingFrom(spec.v4, parseIptablesSave(''), 'iptables');
  t.true(none.includes('iptables mangle chain SANDGATE-PRE is missing'));
  t.true(none.includes('iptables mangle PREROUTING has no jump to SANDGATE-PRE'));
});
