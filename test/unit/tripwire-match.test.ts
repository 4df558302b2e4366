/** The tripwire matcher (src/creds/tripwire.ts), the quarantine record (src/control/quarantine.ts) and their config keys. */
import test from 'ava';
import { Tripwire } from '../../src/creds/tripwire.js';
import { Quarantine, type QuarantineEntry } from '../../src/control/quarantine.js';
import { parseConfig } from '../../src/config/load.js';
import { compilePolicies } from '../../src/policy/policy.js';
import type { CredentialConfig } from '../../src/config/types.js';

const cred = (placeholder?: string): CredentialConfig =>
  ({ secret: { env: 'X' }, header: 'Authorization', format: 'Bearer {secret}', ...(placeholder ? { placeholder } : {}) }) as unknown as CredentialConfig;

const tw = Tripwire.compile({ k: cred('sk-sandgate-k'), o: cred('PH.other+1'), long: cred('sk-sandgate-k-longer'), none: cred() })!;
const head = (url: string, ...rawHeaders: string[]) => ({ method: 'GET', url, rawHeaders });

test('no placeholder in the config: no matcher at all', (t) => {
  t.is(Tripwire.compile({ a: cred(), b: cred() }), undefined);
  t.is(Tripwire.compile({}), undefined);
});

test('a placeholder in a header value, a header name or the target is found, named by credential and place', (t) => {
  t.deepEqual(tw.inRequest(head('/', 'Host', 'h', 'X-Note', 'key sk-sandgate-k here'), undefined), { credential: 'k', where: 'header X-Note' });
  t.deepEqual(tw.inRequest(head('/', 'Host', 'h', 'x-sk-sandgate-k', '1'), undefined), { credential: 'k', where: 'header name' });
  t.deepEqual(tw.inRequest(head('/a?q=PH.other+1'), undefined), { credential: 'o', where: 'request target' });
  t.deepEqual(tw.inRequest({ method: 'sk-sandgate-k', url: '/', rawHeaders: [] }, undefined), { credential: 'k', where: 'method' });
  t.is(tw.inRequest(head('/a?q=1', 'Host', 'h', 'Accept', '*/*'), undefined), undefined);
});

test("any case: a shouted placeholder is still found, and the bound credential's own passes in any case", (t) => {
  t.deepEqual(tw.inRequest(head('/', 'X-Note', 'SK-SANDGATE-K'), undefined), { credential: 'k', where: 'header X-Note' });
  t.is(tw.inRequest(head('/', 'Authorization', 'Bearer SK-Sandgate-K'), 'k'), undefined);
});

test('the target is also searched percent-decoded (even with a malformed escape elsewhere)', (t) => {
  t.like(tw.inRequest(head('/x/sk%2Dsandgate%2dk'), undefined), { credential: 'k' });
  t.like(tw.inRequest(head('/x/%zz/sk%2Dsandgate%2dk'), undefined), { credential: 'k' });
});

test('header values are also searched percent-decoded (a cookie, a form-style value)', (t) => {
  t.deepEqual(tw.inRequest(head('/', 'Host', 'h', 'Cookie', 'session=1; key=sk%2Dsandgate%2dk'), undefined), { credential: 'k', where: 'header Cookie' });
  t.deepEqual(tw.inRequest(head('/', 'X-Note', '%zz PH.other%2B1'), undefined), { credential: 'o', where: 'header X-Note' });
  // The bound credential's own, encoded, still passes.
  t.is(tw.inRequest(head('/', 'Authorization', 'Bearer sk%2Dsandgate%2Dk'), 'k'), undefined);
});

test("the bound credential's own placeholder passes; any other credential's in the same request does not", (t) => {
  t.is(tw.inRequest(head('/', 'Authorization', 'Bearer sk-sandgate-k'), 'k'), undefined);
  t.deepEqual(tw.inRequest(head('/', 'Authorization', 'Bearer sk-sandgate-k', 'X-B', 'sk-sandgate-k PH.other+1'), 'k'), {
    credential: 'o',
    where: 'header X-B',
  });
  // Regular-expression characters in a placeholder are literal: "." does not match "x".
  t.is(tw.inRequest(head('/PHxother+1'), undefined), undefined);
});

test('where one placeholder contains another, the longer one is the match', (t) => {
  t.deepEqual(tw.inRequest(head('/', 'X', 'sk-sandgate-k-longer'), undefined), { credential: 'long', where: 'header X' });
  // Bound to "long": its own placeholder passes, though it contains k's.
  t.is(tw.inRequest(head('/', 'X', 'sk-sandgate-k-longer'), 'long'), undefined);
  t.like(tw.inRequest(head('/', 'X', 'sk-sandgate-k-longer sk-sandgate-k'), 'long'), { credential: 'k' });
});

test('DNS names: a placeholder anywhere, in any case', (t) => {
  t.deepEqual(tw.inName('sk-sandgate-k.evil.test'), { credential: 'k', where: 'name' });
  t.like(tw.inName('xSK-SANDGATE-Ky.evil.test'), { credential: 'k' });
  t.like(tw.inName('a.ph.other+1.evil.test'), { credential: 'o' });
  t.is(tw.inName('api.example.test'), undefined);
});

const entry = (sandbox: string): QuarantineEntry => ({ sandbox, since: '2026-01-01T00:00:00.000Z', credential: 'k', reason: 'r' });

test('a quarantine is recorded once, the listener told once; release and replace', (t) => {
  const q = new Quarantine();
  const told: string[] = [];
  q.listen((e) => told.push(e.sandbox));
  t.false(q.has('a'));
  t.true(q.trip(entry('a')));
  t.false(q.trip(entry('a')), 'a second tripwire while held changes nothing');
  t.deepEqual(told, ['a']);
  t.true(q.has('a'));
  t.deepEqual(q.replace([entry('a'), entry('b')]), ['b'], 'replace says which are new, without telling the listener');
  t.deepEqual(told, ['a']);
  t.like(q.release('a'), { sandbox: 'a' });
  t.is(q.release('a'), undefined);
  t.deepEqual(
    q.list().map((e) => e.sandbox),
    ['b'],
  );
});

test('onTripwire: global default deny, a policy may override; other values are refused', (t) => {
  const yaml = (global: string, policy: string): string => `
${global}
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p: { ${policy} allow: [{ host: a.test }] }
  q: { allow: [{ host: a.test }] }
`;
  const byName = (g: string, p: string) => compilePolicies(parseConfig(yaml(g, p), 'c.yaml')).byName;
  t.is(byName('', '').get('p')?.onTripwire, 'deny');
  t.is(byName('onTripwire: quarantine', '').get('q')?.onTripwire, 'quarantine');
  t.is(byName('onTripwire: quarantine', 'onTripwire: deny,').get('p')?.onTripwire, 'deny');
  t.is(byName('', 'onTripwire: quarantine,').get('p')?.onTripwire, 'quarantine');
  t.throws(() => parseConfig(yaml('onTripwire: lock', ''), 'c.yaml'), { message: /onTripwire/ });
  t.throws(() => parseConfig(yaml('', 'onTripwire: maybe,'), 'c.yaml'), { message: /policies\.p\.onTripwire/ });
});
