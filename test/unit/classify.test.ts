/** classify() (src/net/classify.ts): a peeked connection's route, decided with no socket. */
import test from 'ava';
import { classify } from '../../src/net/classify.js';
import type { ConnInfo } from '../../src/net/conn-info.js';
import type { Peeked } from '../../src/net/peek.js';
import type { Runtime } from '../../src/runtime.js';
import { parseConfig } from '../../src/config/load.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { Tripwire } from '../../src/creds/tripwire.js';

function info(mode: 'enforce' | 'report', port = 443): ConnInfo {
  const config = parseConfig(
    `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    mode: ${mode}
    allow:
      - { host: pass.example.test }
      - { host: api.example.test, inject: k }
credentials:
  k: { secret: { env: SG_K } }
`,
    'c.yaml',
  );
  const policies = compilePolicies(config);
  const sandbox = { name: 's', policy: policies.byName.get('p')!, source: 'config' as const, spec: { name: 's', policy: 'p', cidr: '10.77.1.0/24' } };
  return { rt: {} as Runtime, sandbox, src: '10.77.1.2:1', dst: `10.77.2.2:${port}`, dstPort: port };
}

const head = Buffer.from('x');
const tls = (sni: string | undefined, ech = false, esni = false): Peeked => ({
  kind: 'tls',
  head,
  hello: { kind: 'hello', sni, alpn: [], ech, esni, legacyVersion: 0x0303, supportedVersions: [0x0304], length: 1 },
});

test("neither TLS nor HTTP: denied with the peek's reason", (t) => {
  t.deepEqual(classify(info('enforce'), { kind: 'reject', reason: 'neither TLS nor HTTP', head }, true), {
    kind: 'deny',
    proto: undefined,
    host: undefined,
    rule: undefined,
    reason: 'neither TLS nor HTTP',
    alert: undefined,
  });
});

test('plain HTTP goes to the relay whatever its Host (decided per request)', (t) => {
  t.deepEqual(classify(info('enforce', 80), { kind: 'http', head }, false), { kind: 'http' });
});

test('TLS: an allowed name passes through; an intercepted one is intercepted, or denied if interception is off', (t) => {
  t.deepEqual(classify(info('enforce'), tls('pass.example.test'), true), {
    kind: 'passthrough',
    host: 'pass.example.test',
    decision: 'allow',
    rule: 'policies.p.allow[0]',
  });
  const i = classify(info('enforce'), tls('api.example.test'), true);
  t.is(i.kind, 'intercept');
  t.like(i, { sni: 'api.example.test', rule: { id: 'policies.p.allow[1]' } });
  t.deepEqual(classify(info('enforce'), tls('api.example.test'), false), {
    kind: 'deny',
    proto: 'tls',
    host: 'api.example.test',
    rule: 'policies.p.allow[1]',
    reason: 'interception is not enabled',
    alert: 'access_denied',
  });
});

test('TLS: an unlisted name, no SNI, or ESNI is denied; ECH is decided on the outer SNI; in report mode a name passes through as would-deny, no name goes to the original destination', (t) => {
  t.like(classify(info('enforce'), tls('evil.example.test'), true), { kind: 'deny', proto: 'tls', host: 'evil.example.test', alert: 'access_denied' });
  t.like(classify(info('enforce'), tls(undefined), true), { kind: 'deny', proto: 'tls', host: undefined, alert: 'unrecognized_name' });
  t.deepEqual(classify(info('enforce'), tls('pass.example.test', false, true), true), {
    kind: 'deny',
    proto: 'tls',
    host: 'pass.example.test',
    rule: undefined,
    reason: 'encrypted SNI (ESNI) is not allowed',
    alert: 'access_denied',
  });
  t.deepEqual(classify(info('report'), tls('pass.example.test', false, true), true).kind, 'deny', 'ESNI is refused even in report mode');
  t.like(
    classify(info('enforce'), tls('pass.example.test', true), true),
    { kind: 'passthrough', host: 'pass.example.test', decision: 'allow' },
    'ECH (GREASE or real) on an allowed outer name',
  );
  t.like(
    classify(info('enforce'), tls('evil.example.test', true), true),
    { kind: 'deny', host: 'evil.example.test', alert: 'access_denied' },
    'ECH on an unlisted outer name',
  );
  t.like(classify(info('report'), tls('evil.example.test'), true), { kind: 'passthrough', host: 'evil.example.test', decision: 'would-deny' });
  t.like(classify(info('report'), tls(undefined), true), { kind: 'raw' });
  t.like(classify(info('enforce', 8443), tls('pass.example.test'), true), { kind: 'deny', reason: 'pass.example.test:8443 is not allowed' });
});

test('a TLS record that is no valid ClientHello is answered with decode_error; a silent or closed socket with a reset', (t) => {
  t.like(classify(info('enforce'), { kind: 'reject', reason: 'bad ClientHello: x', head, alert: 'decode_error' }, true), {
    kind: 'deny',
    alert: 'decode_error',
  });
  t.like(classify(info('enforce'), { kind: 'reject', reason: 'no ClientHello or request within 10 ms', head }, true), { kind: 'deny', alert: undefined });
});

test('TLS: a placeholder in the SNI is a tripwire (access_denied), even where a wildcard rule, report mode or an approver would let the name through', (t) => {
  const ph = 'SK-SANDGATE-K-0123456789';
  for (const [mode, unlisted] of [
    ['enforce', 'deny'],
    ['report', 'deny'],
    ['enforce', 'ask'],
  ] as const) {
    const config = parseConfig(
      `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    mode: ${mode}
    unlisted: ${unlisted}
    allow:
      - { host: "*.wild.example.test" }
credentials:
  k: { secret: { env: SG_K }, placeholder: ${ph} }
`,
      'c.yaml',
    );
    const policies = compilePolicies(config);
    const sandbox = { name: 's', policy: policies.byName.get('p')!, source: 'config' as const, spec: { name: 's', policy: 'p', cidr: '10.77.1.0/24' } };
    const rt = { tripwire: Tripwire.compile(config.credentials) } as Runtime;
    const i: ConnInfo = { rt, sandbox, src: '10.77.1.2:1', dst: '10.77.2.2:443', dstPort: 443 };
    for (const sni of [`${ph.toLowerCase()}.wild.example.test`, `x${ph.toLowerCase()}y.elsewhere.test`]) {
      const r = classify(i, tls(sni), true);
      t.like(
        r,
        { kind: 'deny', proto: 'tls', host: sni, alert: 'access_denied', tripwire: { credential: 'k', where: 'TLS server name' } },
        `${mode} ${unlisted} ${sni}`,
      );
      t.false(JSON.stringify(r.kind === 'deny' ? r.reason : '').includes(ph.toLowerCase()));
    }
    // A name without it is decided as before.
    t.is(classify(i, tls('a.wild.example.test'), true).kind, 'passthrough');
  }
});
