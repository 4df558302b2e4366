/**
 * The upstream room (src/upstream/): built once per config load as fields of the Runtime. What a
 * reload keeps and what it rebuilds, and that every user reads the same pieces.
 */
import test from 'ava';
import { parseConfig } from '../../src/config/load.js';
import { buildRuntime, withDynamicSandboxes } from '../../src/runtime.js';
import type { Audit } from '../../src/audit/logger.js';

const audit = { write: () => undefined, flush: () => undefined } as unknown as Audit;
const yaml = (upstream: string): string => `sandboxes:
  - name: agent
    cidr: 10.77.1.0/24
    policy: default
policies:
  default:
    allow:
      - host: api.example.test
upstream:
${upstream}
`;
const A = parseConfig(yaml('  hosts: { api.example.test: [10.77.2.2] }\n  allowPrivate: [10.77.2.0/24]'), 'a.yaml');
const B = parseConfig(yaml('  hosts: { api.example.test: [10.77.2.3] }\n  allowPrivate: [10.77.2.0/24]'), 'b.yaml');

test('a reload with the same upstream section keeps the resolver (and its cache); trust and pool are rebuilt', (t) => {
  const prev = buildRuntime(A, audit);
  const next = buildRuntime(A, audit, prev);
  t.is(next.upstream.resolver, prev.upstream.resolver);
  // upstream.caFile is read again on every load, so connections made under the old trust are
  // never taken from the new pool.
  t.not(next.upstream.tls, prev.upstream.tls);
  t.not(next.upstream.pool, prev.upstream.pool);
});

test('a reload that changes the upstream section gets a new resolver', (t) => {
  const prev = buildRuntime(A, audit);
  const next = buildRuntime(B, audit, prev);
  t.not(next.upstream.resolver, prev.upstream.resolver);
  t.deepEqual(next.upstream.resolver.peek('api.example.test'), ['10.77.2.3']);
});

test('registering sandboxes (withDynamicSandboxes) shares the whole room: pooled connections stay pooled', (t) => {
  const rt = buildRuntime(A, audit);
  const next = withDynamicSandboxes(rt, [{ name: 'extra', cidr: '10.77.3.0/24', policy: 'default' }]);
  t.is(next.upstream, rt.upstream);
  t.is(next.upstream.pool, rt.upstream.pool);
  t.is(next.tokenNet, rt.tokenNet);
});

test("token services use the room's lookup, SSRF guard and upstream TLS agent", (t) => {
  const rt = buildRuntime(A, audit);
  t.is(rt.tokenNet.lookup, rt.upstream.lookup);
  t.is(rt.tokenNet.guard, rt.upstream.guard);
  t.is(rt.tokenNet.httpsAgent, rt.upstream.tls.agent);
});

test("the guarded lookup answers from the room's resolver and refuses what its guard refuses", async (t) => {
  const ok = buildRuntime(A, audit);
  const addr = await new Promise<string>((resolve, reject) => {
    ok.upstream.lookup('api.example.test', {}, (err, a) => {
      if (err) reject(err);
      else resolve(a as string);
    });
  });
  t.is(addr, '10.77.2.2');
  const guarded = buildRuntime(parseConfig(yaml('  hosts: { api.example.test: [10.77.2.2] }'), 'c.yaml'), audit);
  const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    guarded.upstream.lookup('api.example.test', {}, (e) => {
      resolve(e);
    });
  });
  t.is(err?.code, 'UPSTREAM_FORBIDDEN');
});
