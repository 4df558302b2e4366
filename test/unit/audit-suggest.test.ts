import test from 'ava';
import { parseConfig } from '../../src/config/load.js';
import { configPolicies, draft, gather, generaliseSegment, pathGlob, type Draft, type SandboxFacts } from '../../src/audit/suggest.js';
import { renderDiff, renderYaml } from '../../src/audit/suggest-render.js';
import type { AuditFields } from '../../src/audit/logger.js';
import { hostPatternProblem } from '../../src/policy/host-name.js';

const conn = (host: string | undefined, o: Partial<AuditFields> = {}): AuditFields => ({
  event: 'conn',
  sandbox: 'agent',
  user: 'alice',
  dst: '10.77.2.2:443',
  proto: 'tls',
  decision: 'would-deny',
  ...(host !== undefined ? { host } : {}),
  ...o,
});
const req = (host: string, method: string, path: string, o: Partial<AuditFields> = {}): AuditFields => ({
  event: 'http',
  sandbox: 'agent',
  user: 'alice',
  dst: '10.77.2.2:443',
  proto: 'tls',
  decision: 'allow',
  rule: 'policies.default.allow[0]',
  host,
  method,
  path,
  ...o,
});

function drafts(lines: AuditFields[], opts: Parameters<typeof draft>[1] = {}, gatherOpts: Parameters<typeof gather>[2] = {}): Draft[] {
  const facts = new Map<string, SandboxFacts>();
  for (const l of lines) gather(facts, l, gatherOpts);
  return [...facts.values()].map((s) => draft(s, opts));
}
const hosts = (d: Draft[]): string[] => (d[0]?.rules ?? []).map((r) => r.host);

test('path segments: numbers, UUIDs, hashes and long opaque ids become *, words stay', (t) => {
  for (const id of ['42', '0', '9b2f7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b', 'deadbeef0123', 'a1b2c3d4e5f6a7b8c9d0', 'AbC123xyz_-QwErTy9876'])
    t.is(generaliseSegment(id), '*', id);
  for (const word of ['v1', 'models', 'chat-completions', 'deadbeefcafe', 'README.md', 'abcdefghijklmnopqrstuvwxyz']) t.is(generaliseSegment(word), word, word);
  t.is(pathGlob('/v1/items/12345/parts/9b2f7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b'), '/v1/items/*/parts/*');
  t.is(pathGlob('/'), '/');
  t.is(pathGlob('/v1/models/'), '/v1/models/');
  // As sandgate matches it: unreserved escapes decoded; paths it refuses are not drafted.
  t.is(pathGlob('/%7Euser/x'), '/~user/x');
  for (const bad of ['/a/../b', '/a//b', '/a%2Fb']) t.is(pathGlob(bad), undefined, bad);
});

test('suggest: passthrough hosts with their ports; intercepted hosts with methods, path globs and the credential, each with counts', (t) => {
  const d = drafts([
    conn('pkgs.example.test'),
    conn('pkgs.example.test', { dst: '10.77.2.2:8443' }),
    conn('api.example.test', { decision: 'allow', rule: 'policies.default.allow[0]' }),
    req('api.example.test', 'GET', '/v1/items/1', { credential: 'llm' }),
    req('api.example.test', 'GET', '/v1/items/2', { credential: 'llm' }),
    req('api.example.test', 'post', '/v1/chat', { credential: 'llm', decision: 'would-deny', reason: 'method POST is not allowed' }),
  ]);
  t.is(d.length, 1);
  t.is(d[0]?.policy, 'default');
  t.deepEqual(configPolicies(d), {
    default: {
      mode: 'enforce',
      allow: [
        { host: 'api.example.test', ports: [443], inject: 'llm', methods: ['GET', 'POST'], paths: ['/v1/chat', '/v1/items/*'] },
        { host: 'pkgs.example.test', ports: [443, 8443] },
      ],
    },
  });
  const api = d[0]?.rules[0];
  t.deepEqual(
    [api?.counts.conns, api?.counts.requests, Object.fromEntries(api?.counts.paths ?? []), Object.fromEntries(api?.counts.methods ?? [])],
    [1, 3, { '/v1/items/*': 2, '/v1/chat': 1 }, { GET: 2, POST: 1 }],
  );
});

test('suggest: plain HTTP to an ordinary rule stays a rule for its port (methods and paths only as a note); to a plainHttp rule it keeps plainHttp', (t) => {
  const d = drafts([
    req('plain.example.test', 'GET', '/a', { proto: 'http', dst: '10.77.2.2:80', decision: 'would-deny' }),
    req('up.example.test', 'GET', '/b/7', { proto: 'http', dst: '10.77.2.2:80', upstream: 'https://up.example.test:443', credential: 'llm' }),
  ]);
  t.deepEqual(configPolicies(d).default?.allow, [
    { host: 'plain.example.test', ports: [80] },
    { host: 'up.example.test', ports: [80], inject: 'llm', methods: ['GET'], paths: ['/b/*'], plainHttp: true },
  ]);
  t.true(d[0]?.rules[0]?.notes.some((n) => n.includes('GET 1')));
  // A method that is not an HTTP token never reaches the draft (the config would refuse it).
  const odd = drafts([req('api.example.test', 'GET', '/'), req('api.example.test', 'X]\n#', '/')]);
  t.deepEqual(configPolicies(odd).default?.allow[0]?.methods, ['GET']);
});

test('suggest: raw TCP keeps protocol tcp; destinations without a name are listed, never drafted; denied and failed lines are left out', (t) => {
  const d = drafts([
    conn('db.example.test', { proto: 'tcp', dst: '10.77.2.2:5432', decision: 'allow' }),
    conn(undefined, { proto: 'tcp', dst: '10.77.9.9:6379', reason: 'no host' }),
    conn('evil.example.test', { decision: 'deny' }),
    conn('gone.example.test', { error: 'upstream unresolvable' }),
  ]);
  t.deepEqual(configPolicies(d).agent?.allow, [{ host: 'db.example.test', ports: [5432], protocol: 'tcp' }]);
  t.deepEqual([...(d[0]?.unnamed ?? [])], [['10.77.9.9:6379 (tcp)', 1]]);
  t.deepEqual(hosts(drafts([conn('evil.example.test', { decision: 'deny' })], {}, { includeDenied: true })), ['evil.example.test']);
});

test('suggest: a wildcard only where several names share a registrable domain, at their deepest common parent, never its apex', (t) => {
  const cdn = ['a.cdn.example.test', 'b.cdn.example.test', 'c.cdn.example.test'];
  t.deepEqual(hosts(drafts([...cdn, 'www.example.test', 'cdn.example.test'].map((h) => conn(h)))), [
    'cdn.example.test',
    'www.example.test',
    '*.cdn.example.test',
  ]);
  // Below the threshold: exact names.
  t.deepEqual(hosts(drafts(cdn.slice(0, 2).map((h) => conn(h)))), cdn.slice(0, 2));
  t.deepEqual(
    hosts(
      drafts(
        cdn.slice(0, 2).map((h) => conn(h)),
        { wildcardMin: 2 },
      ),
    ),
    ['*.cdn.example.test'],
  );
  t.deepEqual(
    hosts(
      drafts(
        cdn.map((h) => conn(h)),
        { wildcardMin: 0 },
      ),
    ),
    cdn,
  );
  // Intercepted hosts are never folded into a wildcard (it would drop their methods, paths, credential).
  const mixed = drafts([conn('a.x.example.test'), conn('b.x.example.test'), req('c.x.example.test', 'GET', '/')]);
  t.deepEqual(hosts(mixed), ['a.x.example.test', 'b.x.example.test', 'c.x.example.test']);
});

test('suggest never proposes a wildcard at or above a public suffix (the whole PSL)', (t) => {
  const groups = [
    ['alice.github.io', 'bob.github.io', 'carol.github.io', 'dave.github.io'],
    ['shop.co.uk', 'bank.co.uk', 'news.co.uk'],
    ['a.kawasaki.jp', 'b.kawasaki.jp', 'c.kawasaki.jp'],
    ['one.r2.dev', 'two.r2.dev', 'three.r2.dev'],
    ['x.s3.amazonaws.com', 'y.s3.amazonaws.com', 'z.s3.amazonaws.com'],
    ['ec2.amazonaws.com', 'sqs.amazonaws.com', 'sns.amazonaws.com'],
    ['a.com', 'b.com', 'c.com'],
  ];
  for (const g of groups) {
    const d = drafts(
      g.map((h) => conn(h)),
      { wildcardMin: 2 },
    );
    t.deepEqual(hosts(d), [...g].sort(), g.join(' '));
  }
  // Each drafted pattern passes the config's own check.
  const d = drafts(
    groups.flat().map((h) => conn(h)),
    { wildcardMin: 2 },
  );
  for (const r of d[0]?.rules ?? []) t.is(hostPatternProblem(r.host), undefined, r.host);
  // Under a registrable domain of a multi-label suffix, a wildcard is fine.
  t.deepEqual(
    hosts(
      drafts(
        ['a.shop.co.uk', 'b.shop.co.uk'].map((h) => conn(h)),
        { wildcardMin: 2 },
      ),
    ),
    ['*.shop.co.uk'],
  );
});

test('the YAML draft is a valid config (counts as comments) and loads to the same rules', (t) => {
  const d = drafts([
    conn('pkgs.example.test'),
    conn('a.cdn.example.test'),
    conn('b.cdn.example.test'),
    conn('c.cdn.example.test', { dst: '10.77.2.2:8443' }),
    req('api.example.test', 'GET', '/v1/items/1', { credential: 'llm' }),
    req('api.example.test', 'DELETE', '/v1/items/abcdef0123456789', { credential: 'llm' }),
    conn('db.example.test', { proto: 'tcp', dst: '10.77.2.2:5432' }),
    conn(undefined, { dst: '10.77.9.9:443' }),
  ]);
  const yaml = renderYaml(d);
  t.regex(yaml, /^ {6}- host: api\.example\.test +# 2 requests \(allow 2\)$/m);
  t.regex(yaml, /^ {8}methods: \[DELETE, GET\] +# DELETE: 1, GET: 1$/m);
  t.regex(yaml, /^ {10}- "\/v1\/items\/\*" +# 2$/m);
  t.regex(yaml, /^ {6}- host: "\*\.cdn\.example\.test" +# 3 connections \(would-deny 3\)$/m);
  t.regex(yaml, /^ {8}ports: \[443, 8443\] +# 443: 2, 8443: 1$/m);
  t.regex(yaml, /not drafted \(no name: policy is by name\): 10\.77\.9\.9:443 \(tls\), 1 time/);
  const config = parseConfig(
    `sandboxes:\n  - name: agent\n    interface: "sbx-*"\n    policy: default\n${yaml}credentials:\n  llm:\n    secret: { env: LLM_KEY }\n`,
    'draft.yaml',
  );
  const rules = config.policies.default?.allow.map((r) => ({ ...r }));
  t.deepEqual(rules, [
    { host: 'api.example.test', ports: [443], protocol: 'tls', inject: 'llm', methods: ['DELETE', 'GET'], paths: ['/v1/items/*'] },
    { host: 'db.example.test', ports: [5432], protocol: 'tcp' },
    { host: 'pkgs.example.test', ports: [443], protocol: 'tls' },
    { host: '*.cdn.example.test', ports: [443, 8443], protocol: 'tls' },
  ]);
  t.is(config.policies.default?.mode, 'enforce');
});

test('--diff: added, unused, changed and unchanged rules against the policy the sandbox uses', (t) => {
  const config = parseConfig(
    `sandboxes:
  - name: agent
    interface: "sbx-*"
    policy: main
policies:
  main:
    mode: report
    allow:
      - host: api.example.test
        inject: llm
        methods: [GET]
      - host: pkgs.example.test
      - host: old.example.test
credentials:
  llm:
    secret: { env: LLM_KEY }
`,
    'sg.yaml',
  );
  const d = drafts([conn('pkgs.example.test'), conn('new.example.test'), req('api.example.test', 'POST', '/v1/chat', { credential: 'llm' })], {
    policy: 'main',
  });
  t.is(
    renderDiff(d, config, 'sg.yaml'),
    [
      '--- sg.yaml policies.main (mode report)',
      '+++ suggested for sandbox agent from 3 audit lines (mode enforce)',
      '~ api.example.test: methods [GET] -> [POST]; paths (any) -> [/v1/chat]  # 1 request',
      '+ new.example.test ports [443]  # 1 connection',
      '= pkgs.example.test  # 1 connection',
      '- old.example.test ports [443]  # no line in the log used it',
      '',
    ].join('\n'),
  );
});
