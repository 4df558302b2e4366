import test from 'ava';
import type { AllowRule, SandboxConfig } from '../../src/config/types.js';
import { parseConfig } from '../../src/config/load.js';
import { hostMatches, hostPatternProblem, isHostName, normaliseHost } from '../../src/policy/host-name.js';
import { Policy, compilePolicies } from '../../src/policy/policy.js';
import { SandboxTable, globPredicate } from '../../src/policy/sandboxes.js';

function rule(host: string, extra: Partial<AllowRule> = {}): AllowRule {
  return { host, ports: [443], protocol: 'tls', ...extra };
}

const P = new Policy('default', 'enforce', [
  rule('api.example.test'), // [0]
  rule('plain.example.test', { ports: [80, 8080] }), // [1]
  rule('*.wild.example.test'), // [2]
  rule('*.x.wild.example.test', { ports: [443, 8443] }), // [3] more specific wildcard
  rule('db.example.test', { ports: [5432], protocol: 'tcp' }), // [4]
  rule('llm.example.test', { inject: 'llm' }), // [5]
  rule('paths.example.test', { paths: ['/v1/**'] }), // [6]
]);

/** What callers do with SNI / Host before asking (client-hello.ts, headers.ts). */
const ask = (host: string, port: number, kind: 'tls' | 'http' | 'tcp' = 'tls') => P.decide(normaliseHost(host), port, kind);

test('exact name on a listed port is allowed, with the rule id', (t) => {
  const v = P.decide('api.example.test', 443, 'tls');
  t.is(v.decision, 'allow');
  t.is(v.rule?.id, 'policies.default.allow[0]');
  t.false(v.rule?.intercept);
});

test('exact name on an unlisted port is denied with a reason naming host:port', (t) => {
  const v = P.decide('api.example.test', 8443, 'tls');
  t.deepEqual(v, { decision: 'deny', reason: 'api.example.test:8443 is not allowed' });
});

test('an unlisted name is denied; a name that merely contains a listed one is too', (t) => {
  for (const h of ['evil.example.test', 'api.example.test.evil.test', 'xapi.example.test', 'example.test', 'sub.api.example.test']) {
    t.is(P.decide(h, 443, 'tls').decision, 'deny', h);
  }
});

test('no SNI / no Host is denied with its own reason', (t) => {
  t.deepEqual(P.decide(undefined, 443, 'tls'), { decision: 'deny', reason: 'no SNI' });
  t.deepEqual(P.decide(undefined, 80, 'http'), { decision: 'deny', reason: 'no host' });
});

test('wildcards cover subdomains at any depth, never the apex', (t) => {
  t.is(P.decide('a.wild.example.test', 443, 'tls').rule?.id, 'policies.default.allow[2]');
  t.is(P.decide('a.b.c.wild.example.test', 443, 'tls').rule?.id, 'policies.default.allow[2]');
  t.is(P.decide('wild.example.test', 443, 'tls').decision, 'deny');
  t.is(P.decide('notwild.example.test', 443, 'tls').decision, 'deny', 'suffix match is on a label boundary');
  t.is(P.decide('.wild.example.test', 443, 'tls').decision, 'deny');
});

test('the most specific wildcard wins, whatever the config order', (t) => {
  t.is(P.decide('y.x.wild.example.test', 443, 'tls').rule?.id, 'policies.default.allow[3]');
  t.is(P.decide('y.x.wild.example.test', 8443, 'tls').rule?.id, 'policies.default.allow[3]');
  // x.wild.example.test itself is the apex of [3] but a subdomain of [2].
  t.is(P.decide('x.wild.example.test', 443, 'tls').rule?.id, 'policies.default.allow[2]');
  t.is(P.decide('x.wild.example.test', 8443, 'tls').decision, 'deny');
  const reversed = new Policy('r', 'enforce', [rule('*.x.wild.example.test'), rule('*.wild.example.test')]);
  t.is(reversed.decide('y.x.wild.example.test', 443, 'tls').rule?.host, '*.x.wild.example.test');
});

test('an exact rule wins over a wildcard covering the same name', (t) => {
  const p = new Policy('p', 'enforce', [rule('*.example.test'), rule('api.example.test', { inject: 'k' })]);
  const v = p.decide('api.example.test', 443, 'tls');
  t.is(v.rule?.id, 'policies.p.allow[1]');
  t.true(v.rule?.intercept);
});

test('case and one trailing dot: normalised by callers, and an unnormalised name never matches more', (t) => {
  t.is(ask('API.Example.TEST', 443).decision, 'allow');
  t.is(ask('api.example.test.', 443).decision, 'allow');
  t.is(ask('A.WILD.example.test.', 443).decision, 'allow');
  t.is(ask('api.example.test..', 443).decision, 'deny', 'only one trailing dot is dropped');
  // decide() itself is exact: a raw name fails closed rather than matching loosely.
  t.is(P.decide('API.example.test', 443, 'tls').decision, 'deny');
  t.is(P.decide('api.example.test.', 443, 'tls').decision, 'deny');
});

test('ports: each rule has its own list; default is 443 only', (t) => {
  t.is(ask('plain.example.test', 80, 'http').decision, 'allow');
  t.is(ask('plain.example.test', 8080, 'http').decision, 'allow');
  t.is(ask('plain.example.test', 443, 'tls').decision, 'deny');
  t.deepEqual(
    [...P.namedPorts].sort((a, b) => a - b),
    [80, 443, 8080, 8443],
  );
  t.deepEqual([...P.tcpPorts], [5432]);
});

test('kinds: raw TCP rules answer only tcp, TLS/HTTP rules never answer tcp', (t) => {
  t.is(P.decide('db.example.test', 5432, 'tcp').rule?.id, 'policies.default.allow[4]');
  t.is(P.decide('db.example.test', 5432, 'tls').decision, 'deny', 'a raw TCP rule does not allow TLS by SNI');
  t.is(P.decide('db.example.test', 5432, 'http').decision, 'deny');
  t.is(P.decide('api.example.test', 443, 'tcp').decision, 'deny', 'a TLS rule does not allow raw TCP');
  t.deepEqual(
    P.tcpRules.map((r) => r.host),
    ['db.example.test'],
  );
});

test('TLS and HTTP share rules: the port decides which one the sandbox speaks', (t) => {
  t.is(P.decide('api.example.test', 443, 'http').decision, 'allow');
  t.is(P.decide('plain.example.test', 80, 'tls').decision, 'allow');
});

test('inject, methods or paths mark a rule as intercepted', (t) => {
  t.true(P.decide('llm.example.test', 443, 'tls').rule?.intercept);
  t.true(P.decide('paths.example.test', 443, 'tls').rule?.intercept);
  t.false(P.decide('plain.example.test', 80, 'http').rule?.intercept);
  t.true(
    compilePolicies(
      parseConfig(
        `sandboxes: [{name: a, cidr: 10.0.0.0/8, policy: p}]
policies:
  p:
    allow: [{host: m.example.test, methods: [get]}]
`,
        'c.yaml',
      ),
    ).anyIntercept,
  );
});

test('report mode: a denial becomes would-deny with the same reason; allows are unchanged', (t) => {
  const r = new Policy('r', 'report', [rule('api.example.test')]);
  t.deepEqual(r.decide('evil.example.test', 443, 'tls'), { decision: 'would-deny', reason: 'evil.example.test:443 is not allowed' });
  t.deepEqual(r.decide(undefined, 443, 'tls'), { decision: 'would-deny', reason: 'no SNI' });
  t.deepEqual(r.denied('port 22 is not allowed'), { decision: 'would-deny', reason: 'port 22 is not allowed' });
  t.is(r.decide('api.example.test', 443, 'tls').decision, 'allow');
  t.deepEqual(P.denied('x'), { decision: 'deny', reason: 'x' });
});

test('ECH: the outer SNI decides; a rule refusing ECH denies it, naming the rule; report mode makes it would-deny', (t) => {
  t.is(P.decide('api.example.test', 443, 'tls', true).decision, 'allow', 'ech defaults to allow');
  t.false(P.decide('api.example.test', 443, 'tls').rule?.refuseEch);
  t.deepEqual(P.decide('evil.example.test', 443, 'tls', true), { decision: 'deny', reason: 'evil.example.test:443 is not allowed' });
  const strict = new Policy('s', 'enforce', [rule('api.example.test', { ech: 'refuse' }), rule('open.example.test')]);
  t.deepEqual(strict.decide('api.example.test', 443, 'tls', true), {
    decision: 'deny',
    reason: 'encrypted ClientHello (ECH) is refused for api.example.test (policies.s.allow[0], ech: refuse)',
  });
  t.is(strict.decide('api.example.test', 443, 'tls', false).decision, 'allow', 'without ECH the rule allows');
  t.is(strict.decide('open.example.test', 443, 'tls', true).decision, 'allow');
  // The global default (tls.ech) applies to rules without their own; a rule's own `ech: allow` wins.
  const global = new Policy('g', 'enforce', [rule('api.example.test'), rule('open.example.test', { ech: 'allow' })], [], 'refuse');
  t.is(global.decide('api.example.test', 443, 'tls', true).decision, 'deny');
  t.is(global.decide('open.example.test', 443, 'tls', true).decision, 'allow');
  const report = new Policy('r', 'report', [rule('api.example.test', { ech: 'refuse' })]);
  t.is(report.decide('api.example.test', 443, 'tls', true).decision, 'would-deny');
});

test("tls.ech and a rule's ech compile into the Policy", (t) => {
  const compiled = compilePolicies(
    parseConfig(
      `tls: { ech: refuse }
sandboxes: [{name: a, cidr: 10.0.0.0/8, policy: p}]
policies:
  p:
    allow: [{host: a.example.test}, {host: b.example.test, ech: allow}]
`,
      'c.yaml',
    ),
  ).byName.get('p')!;
  t.true(compiled.decide('a.example.test', 443, 'tls').rule?.refuseEch);
  t.false(compiled.decide('b.example.test', 443, 'tls').rule?.refuseEch);
});

test('coversName: any rule naming the host, any port or kind (what DNS may answer)', (t) => {
  t.true(P.coversName('db.example.test'));
  t.true(P.coversName('plain.example.test'));
  t.true(P.coversName('deep.a.wild.example.test'));
  t.false(P.coversName('wild.example.test'));
  t.false(P.coversName('evil.example.test'));
});

test('an empty policy denies everything', (t) => {
  const p = new Policy('none', 'enforce', []);
  t.is(p.decide('api.example.test', 443, 'tls').decision, 'deny');
  t.false(p.coversName('api.example.test'));
});

test('host-name helpers', (t) => {
  t.is(normaliseHost('A.B.'), 'a.b');
  t.is(normaliseHost('a.b'), 'a.b');
  t.true(isHostName('api.example.test'));
  t.true(isHostName('_svc.example.test'));
  t.true(isHostName('localhost'));
  t.false(isHostName('10.0.0.1'));
  t.false(isHostName('a..b'));
  t.false(isHostName('-a.b'));
  t.false(isHostName('a'.repeat(64) + '.test'));
  t.false(isHostName(''));
  t.true(hostMatches('*.a.test', 'b.a.test'));
  t.false(hostMatches('*.a.test', 'a.test'));
  t.false(hostMatches('*.a.test', 'ba.test'));
  t.true(hostMatches('a.test', 'a.test'));
  t.false(hostMatches('a.test', 'b.a.test'));
  t.regex(hostPatternProblem('*.com') ?? '', /public suffix/);
  t.regex(hostPatternProblem('*.co.uk') ?? '', /public suffix/);
  t.is(hostPatternProblem('*.example.co.uk'), undefined);
  t.regex(hostPatternProblem('a.*.test') ?? '', /leading/);
});

/** The short built-in list the PSL replaced: every one of its suffixes is still refused. */
const FORMER_BUILT_IN = [
  'co.uk',
  'org.uk',
  'me.uk',
  'ltd.uk',
  'plc.uk',
  'net.uk',
  'ac.uk',
  'gov.uk',
  'nhs.uk',
  'sch.uk',
  'com.au',
  'net.au',
  'org.au',
  'edu.au',
  'gov.au',
  'id.au',
  'co.nz',
  'org.nz',
  'net.nz',
  'govt.nz',
  'co.jp',
  'ne.jp',
  'or.jp',
  'ac.jp',
  'go.jp',
  'com.br',
  'net.br',
  'org.br',
  'gov.br',
  'com.cn',
  'net.cn',
  'org.cn',
  'gov.cn',
  'edu.cn',
  'com.hk',
  'com.tw',
  'com.sg',
  'com.my',
  'co.in',
  'net.in',
  'org.in',
  'gov.in',
  'co.za',
  'org.za',
  'gov.za',
  'com.mx',
  'com.ar',
  'com.tr',
  'com.ua',
  'co.kr',
  'or.kr',
  'co.il',
  'org.il',
  'com.pl',
  'co.id',
  'or.id',
  'com.ph',
  'com.vn',
  'com.eg',
  'com.sa',
  'com.ng',
  'github.io',
  'githubusercontent.com',
  'herokuapp.com',
  'appspot.com',
  'azurewebsites.net',
  'cloudfront.net',
  'amazonaws.com',
  's3.amazonaws.com',
  'blogspot.com',
  'netlify.app',
  'vercel.app',
  'pages.dev',
  'workers.dev',
  'web.app',
  'firebaseapp.com',
  'fly.dev',
  'onrender.com',
];

test('wildcards: every suffix of the former built-in list is still refused', (t) => {
  for (const name of FORMER_BUILT_IN) t.regex(hostPatternProblem(`*.${name}`) ?? '', /public suffix/, name);
});

test('wildcards: the whole Public Suffix List, not a short built-in list', (t) => {
  // Suffixes the earlier built-in list of common registries did not have: a Japanese city
  // registry, a Brazilian personal-name one, private-section platforms.
  for (const name of ['kawasaki.jp', 'nom.br', 'ondigitalocean.app', 'r2.dev', 'blob.core.windows.net', 'sch.uk', 'pvt.k12.ma.us'])
    t.regex(hostPatternProblem(`*.${name}`) ?? '', /public suffix/, name);
  // The apex of a platform whose customers' suffixes sit below it.
  for (const name of ['amazonaws.com', 's3.amazonaws.com', 'core.windows.net']) t.regex(hostPatternProblem(`*.${name}`) ?? '', /public suffix/, name);
  // Registrable domains below those suffixes are fine (including the PSL's exception rule "!city.kawasaki.jp").
  for (const name of ['mybucket.r2.dev', 'city.kawasaki.jp', 'example.test', 'example.com']) t.is(hostPatternProblem(`*.${name}`), undefined, name);
});

/* ---------------------------------- SandboxTable ---------------------------------- */

const policies = new Map([
  ['p1', new Policy('p1', 'enforce', [rule('one.example.test')])],
  ['p2', new Policy('p2', 'enforce', [rule('two.example.test')])],
  ['p3', new Policy('p3', 'report', [])],
]);

function table(configs: SandboxConfig[]): SandboxTable {
  return new SandboxTable(configs, policies);
}

test('identify by CIDR', (t) => {
  const s = table([{ name: 'a', cidr: '10.77.1.0/24', policy: 'p1', user: 'alice' }]);
  const hit = s.identify('10.77.1.2', undefined);
  t.is(hit?.name, 'a');
  t.is(hit?.user, 'alice');
  t.is(hit?.policy.name, 'p1');
  t.is(s.identify('10.77.2.2', undefined), undefined);
  t.is(s.identify('::ffff:10.77.1.2', undefined)?.name, 'a', 'an IPv4-mapped source is the IPv4 address it carries');
  t.is(s.identify('fd77:1::2', undefined), undefined);
  t.is(s.identify('not-an-ip', undefined), undefined);
  t.false(s.needsIface);
});

test('identify by interface glob', (t) => {
  const s = table([{ name: 'a', interface: 'sbx-*', policy: 'p1' }]);
  t.true(s.needsIface);
  t.is(s.identify('10.77.1.2', 'sbx-a')?.name, 'a');
  t.is(s.identify('192.0.2.1', 'sbx-')?.name, 'a', 'the glob is a prefix; any source on that interface');
  t.is(s.identify('10.77.1.2', 'up-a'), undefined);
  t.is(s.identify('10.77.1.2', undefined), undefined, 'no known interface: an interface sandbox does not match');
  const exact = table([{ name: 'e', interface: 'veth0', policy: 'p1' }]);
  t.is(exact.identify('10.0.0.1', 'veth0')?.name, 'e');
  t.is(exact.identify('10.0.0.1', 'veth01'), undefined);
});

test('identify with both: interface AND cidr must match', (t) => {
  const s = table([{ name: 'a', interface: 'sbx-*', cidr: '10.77.1.0/24', policy: 'p1' }]);
  t.is(s.identify('10.77.1.2', 'sbx-a')?.name, 'a');
  t.is(s.identify('10.77.2.2', 'sbx-a'), undefined);
  t.is(s.identify('10.77.1.2', 'up-a'), undefined);
});

test('identify: first sandbox in config order wins', (t) => {
  const s = table([
    { name: 'narrow', cidr: '10.77.1.0/28', policy: 'p1' },
    { name: 'wide', cidr: '10.77.0.0/16', policy: 'p2' },
    { name: 'iface', interface: 'sbx-*', policy: 'p3' },
  ]);
  t.is(s.identify('10.77.1.2', 'sbx-a')?.name, 'narrow');
  t.is(s.identify('10.77.1.20', 'sbx-a')?.name, 'wide');
  t.is(s.identify('10.78.0.1', 'sbx-a')?.name, 'iface');
  t.is(s.identify('10.78.0.1', 'eth0'), undefined);
  const swapped = table([
    { name: 'wide', cidr: '10.77.0.0/16', policy: 'p2' },
    { name: 'narrow', cidr: '10.77.1.0/28', policy: 'p1' },
  ]);
  t.is(swapped.identify('10.77.1.2', undefined)?.name, 'wide');
  t.is(swapped.byName('narrow')?.policy.name, 'p1');
});

test('globPredicate', (t) => {
  t.true(globPredicate('*')('anything'));
  t.true(globPredicate('sbx-*')('sbx-1'));
  t.false(globPredicate('sbx-*')('sbx'));
  t.true(globPredicate('eth0')('eth0'));
  t.false(globPredicate('eth0')('eth00'));
});

test('the DNS covering rule (nameRule) and find() agree: exact before wildcard, longest wildcard first, config order among equals', (t) => {
  const p = new Policy('o', 'enforce', [
    rule('*.example.test'), // [0]
    rule('*.api.example.test', { ports: [8443] }), // [1] longer, another port
    rule('deep.api.example.test', { ports: [5432], protocol: 'tcp' }), // [2] exact, raw TCP
    rule('*.api.example.test', { ports: [443, 8443] }), // [3] same wildcard, later
    rule('deep.api.example.test', { ports: [8443] }), // [4] exact, later
  ]);
  // Names where the rule find() picks is the same at every port it covers: nameRule must name it.
  const agree: [string, number, string][] = [
    ['x.example.test', 443, 'policies.o.allow[0]'], // only the short wildcard
    ['x.api.example.test', 8443, 'policies.o.allow[1]'], // longest wildcard, first in config order
    ['deep.api.example.test', 5432, 'policies.o.allow[2]'], // exact beats every wildcard
  ];
  for (const [host, port, id] of agree) {
    const kind = port === 5432 ? 'tcp' : 'tls';
    t.is(p.find(host, port, kind)?.id, id, `find ${host}:${port}`);
    t.is(p.nameRule(host)?.id, id, `nameRule ${host}`);
  }
  // Any port, any kind: the exact name wins even over a longer-listed wildcard on the asked port.
  t.is(p.find('deep.api.example.test', 8443, 'tls')?.id, 'policies.o.allow[4]');
  t.is(p.nameRule('api.example.test')?.id, 'policies.o.allow[0]', 'the apex of *.api.example.test falls under *.example.test');
  t.is(p.nameRule('example.test'), undefined);
  t.false(p.coversName('example.test'));
  t.true(p.coversName('x.api.example.test'));
});

test("nameRule keeps find()'s order whatever the config order of the wildcards", (t) => {
  for (const allow of [
    [rule('*.wild.example.test'), rule('*.x.wild.example.test')],
    [rule('*.x.wild.example.test'), rule('*.wild.example.test')],
  ]) {
    const p = new Policy('w', 'enforce', allow);
    t.is(p.nameRule('y.x.wild.example.test')?.host, '*.x.wild.example.test');
    t.is(p.nameRule('y.x.wild.example.test'), p.find('y.x.wild.example.test', 443, 'tls'));
  }
});

test('tcpRulesFor: the raw TCP rules listing a port, in config order (the addresses are checked by the caller)', (t) => {
  const p = new Policy('t', 'enforce', [
    rule('a.example.test', { ports: [22, 5432], protocol: 'tcp' }),
    rule('b.example.test', { ports: [5432], protocol: 'tcp' }),
    rule('c.example.test', { ports: [5432] }), // TLS on that port: not a raw TCP rule
  ]);
  t.deepEqual(
    p.tcpRulesFor(5432).map((r) => r.host),
    ['a.example.test', 'b.example.test'],
  );
  t.deepEqual(
    p.tcpRulesFor(22).map((r) => r.host),
    ['a.example.test'],
  );
  t.deepEqual(p.tcpRulesFor(443), []);
});

test('udp rules are compiled with the policy: cidr parsed, ports as a set, names answerable by DNS', (t) => {
  const p = new Policy(
    'u',
    'enforce',
    [],
    [
      { id: 'policies.u.udp[0]', host: 'ntp.example.test', ports: [123] },
      { id: 'policies.u.udp[1]', cidr: '10.9.0.0/16', ports: [53, 5353] },
    ],
  );
  t.is(p.udpRules.length, 2);
  t.like(p.udpRules[0], { id: 'policies.u.udp[0]', host: 'ntp.example.test' });
  t.true(p.udpRules[0]!.ports.has(123));
  t.is(p.udpRules[0]!.cidr, undefined);
  t.like(p.udpRules[1]!.cidr, { text: '10.9.0.0/16' });
  t.deepEqual([...p.udpRules[1]!.ports], [53, 5353]);
  t.true(p.coversName('ntp.example.test'));
  t.is(p.nameRule('ntp.example.test'), undefined, 'a udp rule is not an allow rule: DNS names none on its line');
  t.is(p.find('ntp.example.test', 123, 'tls'), undefined);
});
