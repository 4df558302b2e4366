import type http from 'node:http';
import test from 'ava';
import type { ConnInfo } from '../../src/net/conn-info.js';
import type { Runtime } from '../../src/runtime.js';
import { checkRequest, compileGlob, compileRequestRules, normalisePath, type RequestRules } from '../../src/http/request-rules.js';
import { admit, plainHttpUpstreamPort } from '../../src/http/admit.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { parseConfig } from '../../src/config/load.js';
import { loadCredentials } from '../../src/creds/secrets.js';

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
  for (const bad of ['/v1/../admin', '/v1/./x', '/v1/%2e%2e/admin', '/v1/.%2E/x', '/v1/a%2fb', '/v1/a%2Fb', '/v1/a%5cb', '/v1\\x', '/v1//x', '/v1/%00', '/v1/%zz', '/v1/%4', 'v1', '/..']) {
    const r = normalisePath(bad);
    t.false(r.ok, bad);
  }
});

const rules = (r: Partial<RequestRules>): RequestRules => ({ methods: undefined, paths: undefined, pathGlobs: undefined, credential: undefined, plainHttp: false, ...r });

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

test('rules are compiled once per load, keyed by rule id, with their credential', (t) => {
  const config = parseConfig(`
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    allow:
      - { host: api.example.test, inject: llm, methods: [get, POST], paths: ["/v1/**"] }
      - { host: pkgs.example.test }
      - { host: plain.example.test, inject: llm, plainHttp: true }
credentials:
  llm: { secret: { env: SG_K } }
`, 'c.yaml');
  const policies = compilePolicies(config);
  const creds = loadCredentials(config, { env: { SG_K: 'sk-real-secret' }, readFile: () => '' });
  const compiled = compileRequestRules(policies, creds);
  t.deepEqual([...compiled.keys()], ['policies.p.allow[0]', 'policies.p.allow[2]'], 'passthrough rules have no request rules');
  const r0 = compiled.get('policies.p.allow[0]')!;
  t.deepEqual([...r0.methods!], ['GET', 'POST']);
  t.is(r0.credential?.id, 'llm');
  t.true(r0.paths![0]!.test('/v1/x'));
  t.true(compiled.get('policies.p.allow[2]')!.plainHttp);
  // plainHttp without explicit ports listens on 443 and 80.
  t.deepEqual(policies.byName.get('p')!.rules[2]!.ports, [443, 80]);
});

test('plain HTTP to a plainHttp rule goes upstream as TLS: port 80 -> 443, any other port unchanged', (t) => {
  t.is(plainHttpUpstreamPort(80), 443);
  t.is(plainHttpUpstreamPort(8080), 8080);
});

/* admit(): the per-request verdict, with a minimal connection and request. */


function world(mode: 'enforce' | 'report'): { info: (sni?: string, port?: number) => ConnInfo } {
  const config = parseConfig(`
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    mode: ${mode}
    allow:
      - { host: api.example.test, inject: llm, methods: [GET], paths: ["/v1/**"] }
      - { host: plain.example.test, inject: llm, plainHttp: true, ports: [80, 8080, 443] }
      - { host: open.example.test, ports: [80] }
credentials:
  llm: { secret: { env: SG_K } }
`, 'c.yaml');
  const policies = compilePolicies(config);
  const credentials = loadCredentials(config, { env: { SG_K: 'sk-real-secret' }, readFile: () => '' });
  const rt = { config, policies, credentials, requestRules: compileRequestRules(policies, credentials) } as unknown as Runtime;
  const sandbox = { name: 's', policy: policies.byName.get('p')!, source: 'config' as const, spec: { name: 's', policy: 'p', cidr: '10.77.1.0/24' } };
  return { info: (sni, port = 443) => ({ rt, sandbox, src: '10.77.1.2:1', dst: `10.77.2.2:${port}`, dstPort: port, ...(sni ? { sni } : {}) }) };
}

const req = (method: string, url: string, host: string | string[]): http.IncomingMessage => {
  const hosts = Array.isArray(host) ? host : [host];
  return { method, url, headers: { host: hosts[0] }, rawHeaders: hosts.flatMap((h) => ['Host', h]) } as unknown as http.IncomingMessage;
};

test('admit: inside intercepted TLS, Host must be the SNI; methods and paths are checked', (t) => {
  const { info } = world('enforce');
  const ok = admit(req('GET', '/v1/models?x=1', 'API.example.test:443'), info('api.example.test'));
  t.like(ok, { ok: true, decision: 'allow', host: 'api.example.test', upstream: { tls: true, host: 'api.example.test', port: 443, hostHeader: 'API.example.test:443' } });
  t.is(ok.ok && ok.credential?.id, 'llm');
  t.like(ok.base, { event: 'http', proto: 'tls', method: 'GET', path: '/v1/models', sandbox: 's' });
  t.like(admit(req('GET', '/v1/x', 'open.example.test'), info('api.example.test')), { ok: false, status: 403, reason: 'Host open.example.test does not match the TLS server name api.example.test (domain fronting)' });
  t.like(admit(req('POST', '/v1/x', 'api.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/admin', 'api.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/v1/../admin', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 });
  t.like(admit(req('GET', '/v1/x', ['api.example.test', 'api.example.test']), info('api.example.test')), { ok: false, status: 400, reason: 'more than one Host header' });
  t.like(admit(req('GET', 'http://api.example.test/v1/x', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 });
});

test('admit: report mode lets method/path denials through as would-deny, but never domain fronting', (t) => {
  const { info } = world('report');
  t.like(admit(req('DELETE', '/admin', 'api.example.test'), info('api.example.test')), { ok: true, decision: 'would-deny', reason: 'method DELETE is not allowed here (allowed: GET)' });
  t.like(admit(req('GET', '/v1/x', 'open.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/v1/../x', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 }, 'ambiguous paths stay refused');
});

test('admit: plain HTTP to an intercepted host only with plainHttp, then TLS upstream (80 -> 443, others unchanged)', (t) => {
  const { info } = world('enforce');
  t.like(admit(req('GET', '/x', 'api.example.test'), info(undefined, 443)), { ok: false, status: 403, reason: 'host api.example.test requires TLS' });
  t.like(admit(req('GET', '/x', 'plain.example.test'), info(undefined, 80)), { ok: true, upstream: { tls: true, port: 443, hostHeader: 'plain.example.test' } });
  t.like(admit(req('GET', '/x', 'plain.example.test:8080'), info(undefined, 8080)), { ok: true, upstream: { tls: true, port: 8080, hostHeader: 'plain.example.test:8080' } });
  const open = admit(req('GET', '/x', 'open.example.test'), info(undefined, 80));
  t.like(open, { ok: true, credential: undefined, upstream: { tls: false, port: 80 } });
  t.like(admit(req('GET', '/x', 'other.example.test'), info(undefined, 80)), { ok: false, status: 403 });
});
