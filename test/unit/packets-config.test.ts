/**
 * Config for the packet path and the firewall backend (docs/packets.md): `protocol: udp`
 * rules, `packets.*`, `firewall.backend/queue/flowMark/queueMark`, and what the policy does
 * with udp rules (never matched by TLS/HTTP/TCP lookups; their names answerable by DNS).
 */
import test from 'ava';
import { ConfigError, formatLocated, parseConfig, type Located } from '../../src/config/load.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { planFromConfig } from '../../src/firewall/from-config.js';

const BASE = `sandboxes:
  - name: agent
    interface: "sbx-*"
    policy: default
policies:
  default:
    allow:
      - host: api.example.test
`;

function problems(text: string): Located[] {
  try {
    parseConfig(text, 'sg.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected the config to be rejected');
}

test('udp rules: host or cidr with ports; kept apart from allow, with their config position as id', (t) => {
  const c = parseConfig(
    `${BASE}      - protocol: udp
        host: NTP.Example.Test.
        ports: [123]
      - protocol: udp
        cidr: 192.0.2.0/28
        ports: [3478, 3479]
`,
    'sg.yaml',
  );
  const p = c.policies['default']!;
  t.deepEqual(
    p.allow.map((r) => r.host),
    ['api.example.test'],
  );
  t.deepEqual(p.udp, [
    { id: 'policies.default.allow[1]', host: 'ntp.example.test', ports: [123] },
    { id: 'policies.default.allow[2]', cidr: '192.0.2.0/28', ports: [3478, 3479] },
  ]);
  const policy = compilePolicies(c).byName.get('default')!;
  // DNS may answer the udp rule's name; no TLS, HTTP or TCP lookup ever matches it.
  t.true(policy.coversName('ntp.example.test'));
  t.is(policy.find('ntp.example.test', 123, 'tls'), undefined);
  t.is(policy.find('ntp.example.test', 123, 'tcp'), undefined);
  t.is(policy.decide('ntp.example.test', 123, 'http').decision, 'deny');
  t.false(policy.namedPorts.has(123));
});

test('udp rule mistakes are located and explained', (t) => {
  const cases: [string, string, RegExp][] = [
    ['      - protocol: udp\n        ports: [1]\n', 'policies.default.allow[1]', /exactly one of "host" or "cidr"/],
    ['      - protocol: udp\n        host: a.test\n        cidr: 10.0.0.0/8\n        ports: [1]\n', 'policies.default.allow[1]', /exactly one/],
    ['      - protocol: udp\n        host: a.test\n', 'policies.default.allow[1]', /missing required key "ports"/],
    ['      - protocol: udp\n        host: "*.a.test"\n        ports: [1]\n', 'policies.default.allow[1].host', /exact host name/],
    ['      - protocol: udp\n        cidr: fd00::/8\n        ports: [1]\n', 'policies.default.allow[1].cidr', /IPv4/],
    ['      - protocol: udp\n        cidr: 10.0.0.1/8\n        ports: [1]\n', 'policies.default.allow[1].cidr', /host bits/],
    ['      - protocol: udp\n        host: a.test\n        ports: [0]\n', 'policies.default.allow[1].ports[0]', /port number/],
    ['      - protocol: udp\n        host: a.test\n        ports: []\n', 'policies.default.allow[1].ports', /at least one port/],
    ['      - protocol: udp\n        host: a.test\n        ports: [1]\n        inject: x\n', 'policies.default.allow[1].inject', /unknown key/],
  ];
  for (const [rule, path, re] of cases) {
    const list = problems(BASE + rule);
    t.true(
      list.some((p) => p.path === path && re.test(p.message)),
      `${rule}\n${list.map(formatLocated).join('\n')}`,
    );
  }
});

test('firewall backend, queue and marks; packets limits; and the plan they make', (t) => {
  const c = parseConfig(
    `${BASE}firewall:
  backend: iptables
  queue: 7
  flowMark: 0x10
  queueMark: 0x20
packets:
  rateLimit: { pps: 5, burst: 6 }
  auditSampling: { linesPerSecond: 7, burst: 8 }
`,
    'sg.yaml',
  );
  t.like(c.firewall, { backend: 'iptables', queue: 7, flowMark: 0x10, queueMark: 0x20 });
  t.deepEqual(c.packets, { rateLimit: { pps: 5, burst: 6 }, auditSampling: { linesPerSecond: 7, burst: 8 } });
  t.like(planFromConfig(c), { queueNum: 7, flowMark: 0x10, queueMark: 0x20, packetRate: { pps: 5, burst: 6 } });
  const bad = problems(`${BASE}firewall:\n  backend: pf\n  queue: 70000\n  flowMark: 0x5347\n`);
  t.true(bad.some((p) => p.path === 'firewall.backend' && /nft, iptables, auto/.test(p.message)));
  t.true(bad.some((p) => p.path === 'firewall.queue' && /0 to 65535/.test(p.message)));
  t.true(bad.some((p) => p.path === 'firewall' && /three different values/.test(p.message)));
  const long = problems(`${BASE}firewall:\n  table: abcdefghijklmnopqrstuvw\n`);
  t.true(long.some((p) => p.path === 'firewall.table'));
  t.true(problems(`${BASE}packets:\n  rateLimit: { pps: 0 }\n`).some((p) => p.path === 'packets.rateLimit.pps'));
});
