/**
 * The per-request half of the compiled Policy: path globs, path normalisation, method/path checks
 * (src/policy/request-rules.ts), and Policy.requestVerdict on one RequestFacts value.
 */
import test from 'ava';
import { checkRequest, compileGlob, normalisePath, type RequestChecks } from '../../src/policy/request-rules.js';
import { compilePolicies, type RequestFacts } from '../../src/policy/policy.js';
import { parseConfig } from '../../src/config/load.js';

test('globs: * is one segment (or part of one), ** any number of segments', (t) => {
  const cases: [string, string[], string[]][] = [
    ['/v1/**', ['/v1', '/v1/', '/v1/chat/completions', '/v1/a/b/c'], ['/v2', '/v10/x', '/', '/xv1/a']],
    ['/v1/*', ['/v1/models', '/v1/'], ['/v1/a/b', '/v1']],
    ['/files/*.json', ['/files/a.json', '/files/.json'], ['/files/a/b.json', '/files/a.jsonx', '/files/a.txt']],
    ['/**/raw', ['/raw', '/a/raw', '/a/b/raw'], ['/a/raw/x', '/rawx']],
    ['/repos/*/*/issues', ['/repos/o/r/issues'], ['/repos/o/issues', '/repos/o/r/x/issues']],
    ['/exact', ['/exact'], ['/exact/', '/exactly', '/Exact']],
    ['/a.b+(c)', ['/a.b+(c)'], ['/aXb+(c)', '/a.bb(c)']],
  ];
  for (const [glob, yes, no] of cases) {
    const re = compileGlob(glob);
    for (const p of yes) t.true(re.test(p), `${glob} should match ${p}`);
    for (const p of no) t.false(re.test(p), `${glob} should not match ${p}`);
  }
});

test('path normalisation decodes unreserved escapes only and refuses what an upstream might read differently', (t) => {
  t.deepEqual(normalisePath('/v1/%63hat/a%20b/%7e'), { ok: true, path: '/v1/chat/a%20b/~' });
  t.deepEqual(normalisePath('/v1/a%2a'), { ok: true, path: '/v1/a%2A' });
  t.deepEqual(normalisePath('/v1/models/'), { ok: true, path: '/v1/models/' });
  for (const bad of [
    '/v1/../admin',
    '/v1/./x',
    '/v1/%2e%2e/admin',
    '/v1/.%2E/x',
    '/v1/a%2fb',
    '/v1/a%2Fb',
    '/v1/a%5cb',
    '/v1\\x',
    '/v1//x',
    '/v1/%00',
    '/v1/%zz',
    '/v1/%4',
    'v1',
    '/..',
  ]) {
    const r = normalisePath(bad);
    t.false(r.ok, bad);
  }
});

test('path normalisation: a dot segment with path parameters ("..;", ".;x", encoded too) is a dot segment to servlet containers and is refused', (t) => {
  // Tomcat and Jetty strip ";params" from a segment before resolving dot segments: "/v1/..;/admin" is "/admin" there.
  for (const bad of ['/v1/..;/admin', '/v1/..;x=1/admin', '/v1/%2e%2e;/admin', '/v1/.;/x', '/v1/..;']) t.false(normalisePath(bad).ok, bad);
  t.deepEqual(normalisePath('/v1/a;b/c'), { ok: true, path: '/v1/a;b/c' });
  t.deepEqual(normalisePath('/v1/...;/c'), { ok: true, path: '/v1/...;/c' });
});

const rules = (r: Partial<RequestChecks>): RequestChecks => ({ methods: undefined, paths: undefined, pathGlobs: undefined, ...r });

test('checkRequest: methods, then paths (400 for ambiguous paths, 403 for unlisted ones)', (t) => {
  const r = rules({ methods: new Set(['GET', 'POST']), paths: ['/v1/**'].map(compileGlob), pathGlobs: ['/v1/**'] });
  t.is(checkRequest(r, 'GET', '/v1/models'), undefined);
  t.is(checkRequest(r, 'GET', '/v1/%6dodels'), undefined);
  t.like(checkRequest(r, 'DELETE', '/v1/models'), { status: 403 });
  t.like(checkRequest(r, 'HEAD', '/v1/models'), { status: 403 }, 'GET does not imply HEAD');
  t.like(checkRequest(r, 'get', '/v1/models'), { status: 403 }, 'methods are exact, upper-case');
  t.regex(checkRequest(r, 'DELETE', '/v1/models')?.reason ?? '', /method DELETE is not allowed here \(allowed: GET, POST\)/);
  t.like(checkRequest(r, 'GET', '/admin'), { status: 403, reason: 'path /admin is not allowed here (allowed: /v1/**)' });
  t.like(checkRequest(r, 'GET', '/v1/../admin'), { status: 400 });
  t.is(checkRequest(rules({}), 'PATCH', '/v1/../anything'), undefined, 'no paths: nothing to normalise or refuse');
});

const CONFIG = (mode: 'enforce' | 'report') =>
  parseConfig(
    `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    mode: ${mode}
    allow:
      - { host: api.example.test, inject: llm, methods: [get, POST], paths: ["/v1/**"] }
      - { host: pkgs.example.test }
      - { host: plain.example.test, inject: llm, plainHttp: true }
      - { host: "*.wild.example.test", methods: [GET] }
credentials:
  llm: { secret: { env: SG_K } }
`,
    'c.yaml',
  );

test('request checks are compiled once per load, on the intercepted rules only', (t) => {
  const p = compilePolicies(CONFIG('enforce')).byName.get('p')!;
  t.deepEqual(
    p.rules.map((r) => r.checks !== undefined),
    [true, false, true, true],
    'passthrough rules have no request checks',
  );
  const r0 = p.rules[0]!.checks!;
  t.deepEqual([...r0.methods!], ['GET', 'POST']);
  t.true(r0.paths![0]!.test('/v1/x'));
  t.is(p.rules[2]!.checks!.methods, undefined, 'inject without methods: any method');
  t.true(p.rules[2]!.plainHttp);
  // plainHttp without explicit ports listens on 443 and 80.
  t.deepEqual(p.rules[2]!.ports, [443, 80]);
});

const facts = (f: Partial<RequestFacts>): RequestFacts => ({ host: 'api.example.test', port: 443, method: 'GET', path: '/v1/models', intercepted: true, ...f });

test('requestVerdict: host and port, then methods and paths, on one RequestFacts value', (t) => {
  const p = compilePolicies(CONFIG('enforce')).byName.get('p')!;
  t.like(p.requestVerdict(facts({})), { decision: 'allow', rule: { id: 'policies.p.allow[0]' } });
  t.is(p.requestVerdict(facts({})), p.requestVerdict(facts({ path: '/v1/other' })), 'the allow verdict is built once per rule, not per request');
  t.deepEqual(p.requestVerdict(facts({ host: 'evil.example.test' })), {
    decision: 'deny',
    status: 403,
    reason: 'host evil.example.test on port 443 is not allowed by policy',
  });
  t.deepEqual(p.requestVerdict(facts({ method: 'DELETE' })), {
    decision: 'deny',
    status: 403,
    reason: 'method DELETE is not allowed here (allowed: GET, POST)',
  });
  t.deepEqual(p.requestVerdict(facts({ path: '/admin' })), { decision: 'deny', status: 403, reason: 'path /admin is not allowed here (allowed: /v1/**)' });
  t.like(p.requestVerdict(facts({ path: '/v1/../admin' })), { decision: 'deny', status: 400 });
  t.like(p.requestVerdict(facts({ host: 'a.wild.example.test', method: 'POST' })), {
    decision: 'deny',
    status: 403,
    reason: 'method POST is not allowed here (allowed: GET)',
  });
});

test('requestVerdict: plain HTTP to an intercepted rule only where it opts in (plainHttp)', (t) => {
  const p = compilePolicies(CONFIG('enforce')).byName.get('p')!;
  t.deepEqual(p.requestVerdict(facts({ intercepted: false })), { decision: 'deny', status: 403, reason: 'host api.example.test requires TLS' });
  t.like(p.requestVerdict(facts({ host: 'plain.example.test', port: 80, intercepted: false })), { decision: 'allow', rule: { id: 'policies.p.allow[2]' } });
  t.like(
    p.requestVerdict(facts({ host: 'pkgs.example.test', intercepted: false, method: 'DELETE', path: '/../x' })),
    { decision: 'allow', rule: { id: 'policies.p.allow[1]' } },
    'a passthrough rule checks no method or path',
  );
});

test('requestVerdict in report mode: host, method and path denials become would-deny; plainHttp and ambiguous paths do not', (t) => {
  const p = compilePolicies(CONFIG('report')).byName.get('p')!;
  t.deepEqual(p.requestVerdict(facts({ host: 'evil.example.test' })), {
    decision: 'would-deny',
    rule: undefined,
    reason: 'evil.example.test:443 is not allowed',
  });
  t.like(p.requestVerdict(facts({ method: 'DELETE' })), {
    decision: 'would-deny',
    rule: { id: 'policies.p.allow[0]' },
    reason: 'method DELETE is not allowed here (allowed: GET, POST)',
  });
  t.like(p.requestVerdict(facts({ path: '/v1/../x' })), { decision: 'deny', status: 400 });
  t.like(p.requestVerdict(facts({ intercepted: false })), { decision: 'deny', status: 403, reason: 'host api.example.test requires TLS' });
});
