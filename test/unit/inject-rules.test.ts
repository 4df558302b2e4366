import type http from 'node:http';
import test from 'ava';
import type { ConnInfo } from '../../src/net/conn-info.js';
import { Quarantine } from '../../src/control/quarantine.js';
import { Tripwire } from '../../src/creds/tripwire.js';
import type { Runtime } from '../../src/runtime.js';
import { admit, plainHttpUpstreamPort } from '../../src/http/admit.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { parseConfig } from '../../src/config/load.js';
import { loadCredentials } from '../../src/creds/secrets.js';

test('plain HTTP to a plainHttp rule goes upstream as TLS: port 80 -> 443, any other port unchanged', (t) => {
  t.is(plainHttpUpstreamPort(80), 443);
  t.is(plainHttpUpstreamPort(8080), 8080);
});

/* admit(): the per-request verdict, with a minimal connection and request. */

function world(mode: 'enforce' | 'report'): { info: (sni?: string, port?: number) => ConnInfo } {
  const config = parseConfig(
    `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    mode: ${mode}
    allow:
      - { host: api.example.test, inject: llm, methods: [GET], paths: ["/v1/**"] }
      - { host: plain.example.test, inject: llm, plainHttp: true, ports: [80, 8080, 443] }
      - { host: open.example.test, ports: [80] }
credentials:
  llm: { secret: { env: SG_K }, placeholder: ph-llm-placeholder }
`,
    'c.yaml',
  );
  const policies = compilePolicies(config);
  const credentials = loadCredentials(config, { env: { SG_K: 'sk-real-secret' }, readFile: () => '' });
  const rt = { config, policies, credentials, quarantine: new Quarantine(), tripwire: Tripwire.compile(config.credentials) } as unknown as Runtime;
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
  t.like(ok, {
    ok: true,
    decision: 'allow',
    host: 'api.example.test',
    upstream: { tls: true, host: 'api.example.test', port: 443, hostHeader: 'API.example.test:443' },
  });
  t.is(ok.ok && ok.credential?.id, 'llm');
  t.like(ok.base, { event: 'http', proto: 'tls', method: 'GET', path: '/v1/models', sandbox: 's' });
  t.like(admit(req('GET', '/v1/x', 'open.example.test'), info('api.example.test')), {
    ok: false,
    status: 403,
    reason: 'Host open.example.test does not match the TLS server name api.example.test (domain fronting)',
  });
  t.like(admit(req('POST', '/v1/x', 'api.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/admin', 'api.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/v1/../admin', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 });
  t.like(admit(req('GET', '/v1/x', ['api.example.test', 'api.example.test']), info('api.example.test')), {
    ok: false,
    status: 400,
    reason: 'more than one Host header',
  });
  t.like(admit(req('GET', 'http://api.example.test/v1/x', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 });
});

test('admit: report mode lets method/path denials through as would-deny, but never domain fronting', (t) => {
  const { info } = world('report');
  t.like(admit(req('DELETE', '/admin', 'api.example.test'), info('api.example.test')), {
    ok: true,
    decision: 'would-deny',
    reason: 'method DELETE is not allowed here (allowed: GET)',
  });
  t.like(admit(req('GET', '/v1/x', 'open.example.test'), info('api.example.test')), { ok: false, status: 403 });
  t.like(admit(req('GET', '/v1/../x', 'api.example.test'), info('api.example.test')), { ok: false, status: 400 }, 'ambiguous paths stay refused');
});

test('admit: plain HTTP to an intercepted host only with plainHttp, then TLS upstream (80 -> 443, others unchanged)', (t) => {
  const { info } = world('enforce');
  t.like(admit(req('GET', '/x', 'api.example.test'), info(undefined, 443)), { ok: false, status: 403, reason: 'host api.example.test requires TLS' });
  t.like(admit(req('GET', '/x', 'plain.example.test'), info(undefined, 80)), {
    ok: true,
    upstream: { tls: true, port: 443, hostHeader: 'plain.example.test' },
  });
  t.like(admit(req('GET', '/x', 'plain.example.test:8080'), info(undefined, 8080)), {
    ok: true,
    upstream: { tls: true, port: 8080, hostHeader: 'plain.example.test:8080' },
  });
  const open = admit(req('GET', '/x', 'open.example.test'), info(undefined, 80));
  t.like(open, { ok: true, credential: undefined, upstream: { tls: false, port: 80 } });
  t.like(admit(req('GET', '/x', 'other.example.test'), info(undefined, 80)), { ok: false, status: 403 });
});

const withField = (r: http.IncomingMessage, name: string, value: string): http.IncomingMessage =>
  ({ ...r, rawHeaders: [...r.rawHeaders, name, value] }) as unknown as http.IncomingMessage;

test("admit: the bound credential's own placeholder on a request its method or path rule refuses is a plain denial, not a tripwire; another host's is still one", (t) => {
  const { info } = world('enforce');
  // api.example.test injects llm for GET /v1/** only: the agent calling /admin with its placeholder gets 403, no tripwire.
  for (const [method, path] of [
    ['GET', '/admin'],
    ['DELETE', '/v1/x'],
  ] as const) {
    const a = admit(withField(req(method, path, 'api.example.test'), 'Authorization', 'Bearer ph-llm-placeholder'), info('api.example.test'));
    t.like(a, { ok: false, status: 403 }, `${method} ${path}`);
    t.is((a as { tripwire?: unknown }).tripwire, undefined, `${method} ${path}`);
  }
  // Domain fronting (Host is not the SNI) and another host stay tripwires.
  t.like(admit(withField(req('GET', '/admin', 'api.example.test'), 'X-Key', 'ph-llm-placeholder'), info('open.example.test')), {
    ok: false,
    tripwire: { credential: 'llm' },
  });
  t.like(admit(withField(req('GET', '/x', 'open.example.test'), 'X-Key', 'ph-llm-placeholder'), info(undefined, 80)), {
    ok: false,
    tripwire: { credential: 'llm' },
  });
});

test('admit: a placeholder where its credential is not bound is a tripwire whatever the verdict: an unlisted host, report mode; never where it is bound', (t) => {
  for (const mode of ['enforce', 'report'] as const) {
    const { info } = world(mode);
    for (const host of ['open.example.test', 'unlisted.example.test']) {
      const a = admit(withField(req('GET', '/x', host), 'X-Key', 'ph-llm-placeholder'), info(undefined, 80));
      t.like(a, { ok: false, status: 403, tripwire: { credential: 'llm', where: 'header X-Key' } }, `${mode} ${host}`);
    }
    // plain.example.test injects llm (plainHttp): its placeholder is replaced there, not a tripwire.
    const own = admit(withField(req('GET', '/x', 'plain.example.test'), 'X-Key', 'ph-llm-placeholder'), info(undefined, 80));
    t.like(own, { ok: true }, mode);
  }
});
