import test from 'ava';
import { ConfigError, formatLocated, parseConfig, type Located } from '../../src/config/load.js';
import { planFromConfig } from '../../src/firewall/from-config.js';

/** The full example of docs/policy.md's first published form, verbatim apart from this comment. */
const FIRST_EXAMPLE = `listen:
  port: 15001              # transparent TCP listener (TPROXY target) on the host
  dnsPort: 15053           # DNS responder; sandbox DNS (UDP and TCP 53, any address) lands here
log:
  file: /var/log/sandgate/audit.log   # default: stdout
tls:
  caDir: /var/lib/sandgate            # ca.pem + ca.key, created on first run if absent (key mode 0600)
upstream:
  resolver: 10.78.0.2:53              # where sandgate itself resolves names; default: host's resolv.conf
  hosts:                              # static answers (split horizon, tests); win over the resolver
    api.example.test: 10.78.0.2
  caFile: /etc/sandgate/extra-ca.pem  # extra roots for verifying upstream TLS, added to the system roots
  allowPrivate: [10.78.0.0/24]        # loopback/private/link-local upstream addresses are refused unless listed
sandboxes:                            # whose traffic is intercepted, and which policy applies
  - name: agent
    interface: "sbx-*"                # host-side interface name (glob), and/or
    cidr: 10.77.0.0/24                # source CIDR
    policy: default
    user: alice                       # optional identity, handed to the auth service
policies:
  default:
    mode: enforce                     # enforce | report (allow, but log decision "would-deny")
    allow:
      - host: api.example.test        # exact name, or "*.example.test" (any subdomain, not the apex)
        ports: [443]                  # default [443]
        inject: llm                   # credential id: TLS is intercepted for this host
        methods: [GET, POST]          # optional: implies interception
        paths: ["/v1/**"]             # optional globs: implies interception
      - host: pkgs.example.test       # no inject/methods/paths: SNI-checked passthrough, not decrypted
      - host: db.example.test
        ports: [5432]
        protocol: tcp                 # raw TCP to this name:port (name known from sandgate's own DNS answers)
credentials:
  llm:
    secret: { env: LLM_API_KEY }      # or { file: /etc/sandgate/llm.key }
    header: Authorization             # default Authorization; replaces whatever the sandbox sent
    format: "Bearer {secret}"         # default "Bearer {secret}"
    placeholder: sk-sandgate-llm      # optional: this string, wherever the sandbox puts it in a header, becomes the secret
`;

/** A small valid config; tests splice one mistake into it and know the line it lands on. */
const MINIMAL = `sandboxes:
  - name: agent
    cidr: 10.77.1.0/24
    policy: default
policies:
  default:
    allow:
      - host: api.example.test
`;

function problems(text: string, file = 'sg.yaml'): Located[] {
  try {
    parseConfig(text, file);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected the config to be rejected');
}

/** The single problem a text produces (fails the test if there are several). */
function only(text: string): Located {
  const list = problems(text);
  if (list.length !== 1) throw new Error(`expected one problem, got:\n${list.map(formatLocated).join('\n')}`);
  return list[0]!;
}

test('the first published full example parses, without reading the secret (resolved only at run time)', (t) => {
  const saved = process.env.LLM_API_KEY;
  delete process.env.LLM_API_KEY;
  try {
    const c = parseConfig(FIRST_EXAMPLE, 'first-example.yaml');
    t.deepEqual(c.listen, { port: 15001, dnsPort: 15053, address: '0.0.0.0', control: '/run/sandgate/control.sock' });
    t.is(c.log.file, '/var/log/sandgate/audit.log');
    t.is(c.tls.caDir, '/var/lib/sandgate');
    t.is(c.upstream.resolver, '10.78.0.2:53');
    t.deepEqual(c.upstream.hosts, { 'api.example.test': ['10.78.0.2'] }); // a single address becomes a list
    t.is(c.upstream.caFile, '/etc/sandgate/extra-ca.pem');
    t.deepEqual(c.upstream.allowPrivate, ['10.78.0.0/24']);
    t.deepEqual(c.sandboxes, [{ name: 'agent', interface: 'sbx-*', cidr: '10.77.0.0/24', policy: 'default', user: 'alice' }]);
    const p = c.policies.default!;
    t.is(p.mode, 'enforce');
    t.deepEqual(p.allow[0], { host: 'api.example.test', ports: [443], protocol: 'tls', inject: 'llm', methods: ['GET', 'POST'], paths: ['/v1/**'] });
    t.deepEqual(p.allow[1], { host: 'pkgs.example.test', ports: [443], protocol: 'tls' });
    t.deepEqual(p.allow[2], { host: 'db.example.test', ports: [5432], protocol: 'tcp' });
    t.deepEqual(c.credentials.llm, { secret: { env: 'LLM_API_KEY' }, header: 'Authorization', format: 'Bearer {secret}', placeholder: 'sk-sandgate-llm' });
  } finally {
    if (saved !== undefined) process.env.LLM_API_KEY = saved;
  }
});

test('the same config written as JSON parses to the same result', (t) => {
  const yaml = parseConfig(MINIMAL, 'a.yaml');
  const json = parseConfig(
    JSON.stringify({
      sandboxes: [{ name: 'agent', cidr: '10.77.1.0/24', policy: 'default' }],
      policies: { default: { allow: [{ host: 'api.example.test' }] } },
    }),
    'a.json',
  );
  t.deepEqual(json, yaml);
});

test('defaults are filled in, and the result is deeply frozen', (t) => {
  const c = parseConfig(MINIMAL, 'sg.yaml');
  t.deepEqual(c.listen, { port: 15001, dnsPort: 15053, address: '0.0.0.0', control: '/run/sandgate/control.sock' });
  t.deepEqual(c.log, { level: 'info' });
  t.is(c.log.file, undefined, 'audit goes to stdout by default');
  t.deepEqual(c.tls, { caDir: '/var/lib/sandgate', ech: 'allow', ticketKeyRotationMs: 3_600_000 });
  t.deepEqual(c.upstream, { hosts: {}, allowPrivate: [], connectTimeoutMs: 5000 });
  t.deepEqual(c.firewall, { table: 'sandgate', mark: 0x5347, routeTable: 5347, backend: 'auto', queue: 5347, flowMark: 0x5348, queueMark: 0x5349 });
  t.deepEqual(c.packets, { rateLimit: { pps: 100, burst: 200 }, auditSampling: { linesPerSecond: 20, burst: 50 } });
  t.deepEqual(c.policies.default, {
    mode: 'enforce',
    allow: [{ host: 'api.example.test', ports: [443], protocol: 'tls' }],
    unlisted: 'deny',
    askTimeoutMs: 30_000,
  });
  t.deepEqual(c.approvals, { webhookTimeoutMs: 5000, maxPendingPerSandbox: 16 });
  t.deepEqual(c.credentials, {});
  t.true(Object.isFrozen(c));
  t.true(Object.isFrozen(c.policies.default!.allow[0]!.ports));
  t.throws(() => {
    (c.listen as { port: number }).port = 1;
  });
});

test('credential defaults: header Authorization, format "Bearer {secret}"', (t) => {
  const c = parseConfig(MINIMAL + 'credentials:\n  k:\n    secret: { file: /etc/k }\n', 'sg.yaml');
  t.deepEqual(c.credentials.k, { secret: { file: '/etc/k' }, header: 'Authorization', format: 'Bearer {secret}' });
});

test('rule hosts are normalised: lowercase, one trailing dot dropped', (t) => {
  const c = parseConfig(MINIMAL.replace('api.example.test', 'API.Example.TEST.'), 'sg.yaml');
  t.is(c.policies.default!.allow[0]!.host, 'api.example.test');
});

test("bad YAML: the parser's position, no key path", (t) => {
  const p = problems('sandboxes: [\n  - name: a\npolicies: {}\n')[0]!;
  t.is(p.file, 'sg.yaml');
  t.is(p.line, 2);
  t.is(p.col, 3);
  t.is(p.path, '');
  t.regex(formatLocated(p), /^sg\.yaml:2:3: \(root\): /);
});

test('tabs as indentation are a YAML error at their line', (t) => {
  const p = problems('sandboxes:\n\t- name: a\n')[0]!;
  t.is(p.line, 2);
  t.regex(p.message, /tab/i);
});

test('a key given twice is an error at the second one (not last-one-wins)', (t) => {
  const p = only(MINIMAL + 'policies:\n  other: {}\n');
  t.is(p.line, 9);
  t.is(p.col, 1);
  t.regex(p.message, /unique/i);
});

test('an unknown key is reported at the key itself', (t) => {
  const p = only(MINIMAL.replace('    policy: default\n', '    policy: default\n    polcy: x\n'));
  t.is(p.path, 'sandboxes[0].polcy');
  t.is(p.line, 5);
  t.is(p.col, 5);
  t.regex(p.message, /unknown key "polcy"/);
  t.is(formatLocated(p), `sg.yaml:5:5: sandboxes[0].polcy: ${p.message}`);
});

test('an unknown top-level key and an unknown nested key', (t) => {
  const top = only('lisen:\n  port: 1\n' + MINIMAL);
  t.deepEqual([top.path, top.line, top.col], ['lisen', 1, 1]);
  const nested = only('listen:\n  port: 15001\n  prot: 2\n' + MINIMAL);
  t.deepEqual([nested.path, nested.line, nested.col], ['listen.prot', 3, 3]);
});

test('an unknown key whose name repeats an earlier path segment is still located at the key', (t) => {
  // Policy "x" with an unknown key "x": the walk must not stop at the policy name.
  const text = MINIMAL + '  x:\n    allow: []\n    x: 1\n';
  const p = only(text);
  t.is(p.path, 'policies.x.x');
  t.deepEqual([p.line, p.col], [11, 5]);
});

test('JSON input: errors carry line and column too', (t) => {
  const text =
    '{\n  "sandboxes": [{"name": "a", "cidr": "10.77.1.0/24", "policy": "p"}],\n  "policies": {"p": {"allow": [{"host": "x.test", "bogus": 1}]}}\n}\n';
  const p = only(text);
  t.is(p.path, 'policies.p.allow[0].bogus');
  t.is(p.line, 3);
  t.is(p.col, text.split('\n')[2]!.indexOf('"bogus"') + 1);
});

test('a bad CIDR points at the value', (t) => {
  for (const [cidr, re] of [
    ['10.77.1.0/33', /invalid prefix length/],
    ['10.77.1.300/24', /not an IP address or CIDR/],
    ['banana', /not an IP address/],
  ] as const) {
    const p = only(MINIMAL.replace('10.77.1.0/24', cidr));
    t.is(p.path, 'sandboxes[0].cidr');
    t.deepEqual([p.line, p.col], [3, 11]);
    t.regex(p.message, re);
  }
});

test('a CIDR with host bits set is refused (it would silently widen to the network)', (t) => {
  const p = only(MINIMAL.replace('10.77.1.0/24', '10.77.1.5/24'));
  t.is(p.path, 'sandboxes[0].cidr');
  t.regex(p.message, /host bits set/);
  const ap = only(MINIMAL + 'upstream:\n  allowPrivate: [10.0.0.1/8]\n');
  t.is(ap.path, 'upstream.allowPrivate[0]');
  t.is(ap.line, 10);
});

test('an IPv6 sandbox CIDR is refused (sandbox IPv6 is dropped, not routed)', (t) => {
  const p = only(MINIMAL.replace('10.77.1.0/24', 'fd00::/64'));
  t.is(p.path, 'sandboxes[0].cidr');
  t.regex(p.message, /IPv4/);
});

test("an unknown policy is reported at the sandbox's policy value", (t) => {
  const p = only(MINIMAL.replace('policy: default', 'policy: defualt'));
  t.is(p.path, 'sandboxes[0].policy');
  t.deepEqual([p.line, p.col], [4, 13]);
  t.regex(p.message, /unknown policy "defualt"/);
});

test('an unknown credential id in inject is reported at the inject value', (t) => {
  const text = MINIMAL + '        inject: nope\ncredentials:\n  llm:\n    secret: { env: K }\n';
  const p = only(text);
  t.is(p.path, 'policies.default.allow[0].inject');
  t.deepEqual([p.line, p.col], [9, 17]);
  t.regex(p.message, /unknown credential "nope"/);
});

test('a wildcard directly under a public suffix is refused', (t) => {
  for (const host of ['"*.com"', '"*.co.uk"', '"*.test"', '"*.github.io"']) {
    const p = only(MINIMAL.replace('api.example.test', host));
    t.is(p.path, 'policies.default.allow[0].host', host);
    t.deepEqual([p.line, p.col], [8, 15]);
    t.regex(p.message, /public suffix/);
  }
  // One label further down is a registrable domain: fine.
  for (const host of ['"*.example.com"', '"*.example.co.uk"']) t.notThrows(() => parseConfig(MINIMAL.replace('api.example.test', host), 'sg.yaml'));
});

test('other malformed host patterns', (t) => {
  for (const host of ['"a.*.example.test"', '"*example.test"', 'exa_mple..test', '"-bad.example.test"']) {
    const p = only(MINIMAL.replace('api.example.test', host));
    t.is(p.path, 'policies.default.allow[0].host', host);
  }
});

test('an IP literal as a rule host is refused: policy is by name', (t) => {
  for (const host of ['10.0.0.1', '"::1"', '"[::1]"', '"192.168.1.1."']) {
    const p = only(MINIMAL.replace('api.example.test', host));
    t.is(p.path, 'policies.default.allow[0].host', host);
    t.regex(p.message, /IP literals are not allowed/);
  }
});

test('two sandboxes with the same name', (t) => {
  const text = MINIMAL.replace('policies:', '  - name: agent\n    interface: "sbx-*"\n    policy: default\npolicies:');
  const p = only(text);
  t.is(p.path, 'sandboxes[1].name');
  t.deepEqual([p.line, p.col], [5, 11]);
  t.regex(p.message, /duplicate sandbox name "agent"/);
});

test('interface globs: what nft accepts, no more (check must refuse what run cannot install)', (t) => {
  for (const iface of ['sbx-*', 'veth0', 'abcdefghijklmno', 'abcdefghijklmn*']) {
    t.notThrows(() => parseConfig(MINIMAL.replace('cidr: 10.77.1.0/24', `interface: "${iface}"`), 'sg.yaml'), iface);
  }
  // A lone "*" (would cover loopback), 16 characters with the "*", a "*" inside, a character nft refuses.
  for (const iface of ['*', 'abcdefghijklmno*', 'sbx*x', 'a@b', 'a b']) {
    const p = only(MINIMAL.replace('cidr: 10.77.1.0/24', `interface: "${iface}"`));
    t.is(p.path, 'sandboxes[0].interface', iface);
    t.deepEqual([p.line, p.col], [3, 16]);
  }
});

test('a CIDR prefix with a leading zero is refused (nft would refuse it at run time)', (t) => {
  const p = only(MINIMAL.replace('10.77.1.0/24', '10.77.1.0/024'));
  t.is(p.path, 'sandboxes[0].cidr');
  t.regex(p.message, /invalid prefix length/);
});

test('a sandbox with neither interface nor cidr', (t) => {
  const p = only(MINIMAL.replace('    cidr: 10.77.1.0/24\n', ''));
  t.is(p.path, 'sandboxes[0]');
  t.regex(p.message, /needs "interface" or "cidr"/);
});

test('ports out of range', (t) => {
  for (const port of ['0', '65536', '-1', '4.5', '"443"']) {
    const p = only(MINIMAL + `        ports: [443, ${port}]\n`);
    t.is(p.path, 'policies.default.allow[0].ports[1]', port);
    t.is(p.line, 9);
    t.regex(p.message, /port number from 1 to 65535/);
  }
  const l = only('listen:\n  port: 70000\n' + MINIMAL);
  t.deepEqual([l.path, l.line, l.col], ['listen.port', 2, 9]);
  const empty = only(MINIMAL + '        ports: []\n');
  t.is(empty.path, 'policies.default.allow[0].ports');
});

test('dns.sourceRateLimit: five times dns.rateLimit unless set (at most 1,000,000), and the firewall plan carries it', (t) => {
  const dflt = parseConfig(MINIMAL, 'sg.yaml');
  t.deepEqual(dflt.dns.rateLimit, { qps: 200, burst: 400 });
  t.deepEqual(dflt.dns.sourceRateLimit, { pps: 1000, burst: 2000 });
  t.deepEqual(planFromConfig(dflt).dnsRate, { pps: 1000, burst: 2000 });
  const followed = parseConfig(`${MINIMAL}dns:\n  rateLimit: { qps: 300000, burst: 7 }\n`, 'sg.yaml');
  t.deepEqual(followed.dns.sourceRateLimit, { pps: 1_000_000, burst: 35 });
  const set = parseConfig(`${MINIMAL}dns:\n  rateLimit: { qps: 10, burst: 10 }\n  sourceRateLimit: { pps: 5000, burst: 6000 }\n`, 'sg.yaml');
  t.deepEqual(set.dns.sourceRateLimit, { pps: 5000, burst: 6000 });
  t.deepEqual(planFromConfig(set).dnsRate, { pps: 5000, burst: 6000 });
  t.is(only(`${MINIMAL}dns:\n  sourceRateLimit: { pps: 1000001 }\n`).path, 'dns.sourceRateLimit.pps');
  t.is(only(`${MINIMAL}dns:\n  sourceRateLimit: { qps: 5 }\n`).path, 'dns.sourceRateLimit.qps');
});

test('listen.port and listen.dnsPort must differ', (t) => {
  const p = only('listen:\n  port: 15001\n  dnsPort: 15001\n' + MINIMAL);
  t.is(p.path, 'listen.dnsPort');
});

test('a raw TCP rule cannot be a wildcard or inject', (t) => {
  const wild = only(MINIMAL.replace('api.example.test', '"*.db.example.test"') + '        protocol: tcp\n        ports: [5432]\n');
  t.is(wild.path, 'policies.default.allow[0].host');
  t.regex(wild.message, /raw TCP rule needs an exact host name/);
  const inject = only(MINIMAL + '        protocol: tcp\n        inject: k\ncredentials:\n  k:\n    secret: { env: K }\n');
  t.is(inject.path, 'policies.default.allow[0].protocol');
  t.is(inject.line, 9);
  t.regex(inject.message, /cannot inject/);
  const methods = only(MINIMAL + '        protocol: tcp\n        methods: [GET]\n');
  t.is(methods.path, 'policies.default.allow[0].protocol');
});

test("tls.ech and a rule's ech: allow or refuse, at FILE:LINE:COL otherwise; not on raw TCP rules", (t) => {
  const ok = parseConfig('tls:\n  ech: refuse\n' + MINIMAL + '        ech: allow\n', 'sg.yaml');
  t.is(ok.tls.ech, 'refuse');
  t.is(ok.policies.default!.allow[0]!.ech, 'allow');
  t.is(parseConfig(MINIMAL, 'sg.yaml').policies.default!.allow[0]!.ech, undefined, 'absent: the global default applies');
  const global = only('tls:\n  ech: deny\n' + MINIMAL);
  t.is(formatLocated(global), 'sg.yaml:2:8: tls.ech: must be one of: allow, refuse');
  const rule = only(MINIMAL + '        ech: false\n');
  t.is(formatLocated(rule), 'sg.yaml:9:14: policies.default.allow[0].ech: must be one of: allow, refuse');
  const tcp = only(MINIMAL + '        protocol: tcp\n        ports: [5432]\n        ech: refuse\n');
  t.is(tcp.path, 'policies.default.allow[0].ech');
  t.regex(tcp.message, /only applies to TLS rules/);
});

test('a protocol other than tls, tcp or udp', (t) => {
  const p = only(MINIMAL + '        protocol: sctp\n');
  t.is(p.path, 'policies.default.allow[0].protocol');
  t.regex(p.message, /one of: tls, tcp, udp/);
});

test('an unknown policy mode', (t) => {
  const p = only(MINIMAL.replace('    allow:', '    mode: audit\n    allow:'));
  t.deepEqual([p.path, p.line], ['policies.default.mode', 7]);
});

test('a secret must come from exactly one of env or file, never inline', (t) => {
  const inline = only(MINIMAL + 'credentials:\n  k:\n    secret: sk-live-123\n');
  t.is(inline.path, 'credentials.k.secret');
  t.notRegex(formatLocated(inline), /sk-live-123/, 'the error does not echo a would-be secret');
  const both = only(MINIMAL + 'credentials:\n  k:\n    secret: { env: K, file: /k }\n');
  t.is(both.path, 'credentials.k.secret');
  t.regex(both.message, /exactly one of "env" or "file"/);
});

test('a credential format without {secret} is refused', (t) => {
  const p = only(MINIMAL + 'credentials:\n  k:\n    secret: { env: K }\n    format: "Bearer"\n');
  t.deepEqual([p.path, p.line], ['credentials.k.format', 12]);
});

test('every problem is reported, not just the first', (t) => {
  const text = MINIMAL.replace('10.77.1.0/24', '10.77.1.0/99').replace('policy: default', 'policy: nope') + 'bogus: 1\n';
  const paths = problems(text)
    .map((p) => p.path)
    .sort();
  t.deepEqual(paths, ['bogus', 'sandboxes[0].cidr', 'sandboxes[0].policy']);
});

test('missing sandboxes and policies', (t) => {
  const list = problems('listen:\n  port: 15001\n');
  t.true(list.some((p) => p.path === '' && /missing required key "sandboxes"/.test(p.message)));
  t.true(list.some((p) => p.path === '' && /missing required key "policies"/.test(p.message)));
  t.is(list.length, 2, 'one line per missing key, no follow-on noise');
});

test('a document that is not a mapping', (t) => {
  const p = problems('- just\n- a list\n')[0]!;
  t.is(p.path, '');
  t.regex(p.message, /must be a mapping/);
});

test('an unknown key under upstream.hosts is a host name check, at the key', (t) => {
  const p = only(MINIMAL + 'upstream:\n  hosts:\n    "bad name": 10.0.0.1\n');
  t.deepEqual([p.path, p.line, p.col], ['upstream.hosts.bad name', 11, 5]);
  const ip = only(MINIMAL + 'upstream:\n  hosts:\n    a.example.test: not-an-ip\n');
  t.deepEqual([ip.path, ip.line], ['upstream.hosts.a.example.test', 11]);
});

test('an alias bomb is refused instead of expanded', (t) => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 8; i++)
    lines.push(
      `${'abcdefgh'[i]}: &${'abcdefgh'[i]} [${Array(10)
        .fill(`*${'abcdefgh'[i - 1]}`)
        .join(', ')}]`,
    );
  const p = only(lines.join('\n') + '\n');
  t.regex(p.message, /alias/i);
});

test('listen.control: an absolute socket path, false to turn the control API off; anything else is refused', (t) => {
  t.is(parseConfig('listen:\n  control: /tmp/sg/control.sock\n' + MINIMAL, 'sg.yaml').listen.control, '/tmp/sg/control.sock');
  t.is(parseConfig('listen:\n  control: false\n' + MINIMAL, 'sg.yaml').listen.control, false);
  t.regex(only('listen:\n  control: run/control.sock\n' + MINIMAL).message, /absolute path for the control socket, or false/);
  t.regex(only('listen:\n  control: true\n' + MINIMAL).message, /absolute path/);
  t.regex(only('listen:\n  control: /run/sandgate/\n' + MINIMAL).message, /not a directory/);
  t.regex(only(`listen:\n  control: /${'x'.repeat(120)}\n` + MINIMAL).message, /too long for a unix socket path/);
  t.is(only('listen:\n  control: 5\n' + MINIMAL).path, 'listen.control');
});

test('workers: default 1, a whole number 1..64, or "auto" (the cores this process may use)', async (t) => {
  const { availableParallelism } = await import('node:os');
  t.is(parseConfig(MINIMAL, 'x.yaml').workers, 1);
  t.is(parseConfig(`workers: 4\n${MINIMAL}`, 'x.yaml').workers, 4);
  t.is(parseConfig(`workers: auto\n${MINIMAL}`, 'x.yaml').workers, Math.min(64, availableParallelism()));
  for (const bad of ['0', '65', '1.5', 'two', '"3"']) {
    const p = only(`workers: ${bad}\n${MINIMAL}`);
    t.is(p.path, 'workers', bad);
    t.regex(p.message, /whole number from 1 to 64, or "auto"/);
  }
});

test('metrics: off by default; listen "IP:PORT" (port required); errors located at the key', (t) => {
  t.is(parseConfig(MINIMAL, 'sg.yaml').metrics, undefined);
  t.deepEqual(parseConfig(`metrics:\n  listen: 127.0.0.1:9464\n${MINIMAL}`, 'sg.yaml').metrics, { address: '127.0.0.1', port: 9464 });
  t.deepEqual(parseConfig(`metrics:\n  listen: "[::1]:9464"\n${MINIMAL}`, 'sg.yaml').metrics, { address: '::1', port: 9464 });
  for (const bad of ['127.0.0.1', 'localhost:9464', '127.0.0.1:0', '127.0.0.1:70000', '9464']) {
    const p = only(`metrics:\n  listen: "${bad}"\n${MINIMAL}`);
    t.deepEqual([p.path, p.line, p.col], ['metrics.listen', 2, 11], bad);
    t.regex(p.message, /IP:PORT/);
  }
  const clash = only(`metrics:\n  listen: 0.0.0.0:15053\n${MINIMAL}`);
  t.deepEqual([clash.path, clash.line], ['metrics.listen', 2]);
  t.regex(clash.message, /listen\.dnsPort/);
  t.true(problems(`metrics:\n  listn: 127.0.0.1:9464\n${MINIMAL}`).some((p) => p.path === 'metrics.listn' && p.line === 2));
  t.is(formatLocated(only(`metrics: {}\n${MINIMAL}`)), 'sg.yaml:1:10: metrics: missing required key "listen"');
});
