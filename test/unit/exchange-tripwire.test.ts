/**
 * The tripwire and quarantine in the relay's core, played with no socket
 * (test/helpers/exchange-play.ts): credential k's placeholder is bound to api.example.test only.
 */
import test from 'ava';
import { API, OPEN, PLACEHOLDER, SECRET, own, playWorld, req, upHead } from '../helpers/exchange-play.js';

const REASON = `tripwire: the placeholder of credential "k" in the header X-Note toward ${OPEN}, where that credential is not bound`;

test("plain HTTP carrying k's placeholder to another host: 403, nothing dialled, one tripwire line", (t) => {
  const w = playWorld();
  const p = w.play();
  p.send(req('GET', '/x', OPEN, [`X-Note: ${PLACEHOLDER}`]));
  t.is(p.take(), own(403, 'Forbidden', { error: 'denied', reason: REASON }, true));
  t.is(p.dials.length, 0, 'no upstream connection asked for');
  t.true(p.closedGracefully);
  t.deepEqual(w.http(), [], 'no http line: the tripwire line is the request line');
  const line = w.lines.find((l) => l.event === 'tripwire');
  t.like(line, { decision: 'deny', status: 403, credential: 'k', host: OPEN, path: '/x', reason: REASON, onTripwire: 'deny' });
  t.false(JSON.stringify(w.lines).includes(SECRET));
  t.false(w.rt.quarantine.has('s'), 'onTripwire: deny quarantines nothing');
});

test("toward the host k is bound to, k's placeholder is the secret's stand-in: replaced, no tripwire", (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/y', API, [`X-Key: ${PLACEHOLDER}`]));
  t.is(p.ready().sent, upHead('GET', '/y', [`X-Key: ${SECRET}`]));
  t.falsy(w.lines.find((l) => l.event === 'tripwire'));
});

test('onTripwire: quarantine: the tripwire quarantines the sandbox; its next request, even an allowed one, is refused', (t) => {
  const w = playWorld({ onTripwire: 'quarantine' });
  const p = w.play();
  p.send(req('GET', '/x', OPEN, [`X-Note: ${PLACEHOLDER}`]));
  t.true(w.rt.quarantine.has('s'));
  t.like(w.rt.quarantine.list()[0], { sandbox: 's', credential: 'k', reason: REASON });
  const next = w.play({ sni: API });
  next.send(req('GET', '/ok', API));
  t.is(next.take(), own(403, 'Forbidden', { error: 'denied', reason: 'quarantined' }, true));
  t.is(next.dials.length, 0);
  t.like(w.http().at(-1), { path: '/ok', decision: 'deny', reason: 'quarantined' });
  w.rt.quarantine.release('s');
  const after = w.play({ sni: API });
  after.send(req('GET', '/ok', API));
  t.is(after.dials.length, 1, 'released: admitted again');
});

test("k's placeholder toward k's own host on a path its rule refuses: the path refusal, no tripwire", (t) => {
  const w = playWorld({ onTripwire: 'quarantine', extraAllow: "      - { host: paths.example.test, inject: k, ports: [443], paths: ['/ok/*'] }" });
  const p = w.play({ sni: 'paths.example.test' });
  p.send(req('GET', '/no', 'paths.example.test', [`X-Key: ${PLACEHOLDER}`]));
  const line = w.http().at(-1);
  t.like(line, { decision: 'deny', status: 403, path: '/no' });
  t.notRegex(String(line?.reason), /tripwire/);
  t.falsy(
    w.lines.find((l) => l.event === 'tripwire'),
    'no tripwire line',
  );
  t.false(w.rt.quarantine.has('s'), 'not quarantined');
});
