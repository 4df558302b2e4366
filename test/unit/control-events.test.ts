import test from 'ava';
import { EventHub, MAX_SUBSCRIBERS, Outbox, droppedMarker, globMatch, matchesFilter, parseEventFilter, type EventFilter } from '../../src/control/events.js';

const filter = (q: string): EventFilter => {
  const o = parseEventFilter(new URLSearchParams(q));
  if (!o.ok) throw new Error(o.error);
  return o.filter;
};

test('filters: sandbox exact, host glob case-insensitive, decision', (t) => {
  const line = { event: 'conn', sandbox: 'agent', host: 'API.Example.test', decision: 'deny' };
  t.true(matchesFilter(filter(''), line));
  t.true(matchesFilter(filter('sandbox=agent'), line));
  t.false(matchesFilter(filter('sandbox=agen'), line));
  t.true(matchesFilter(filter('host=*.example.test'), line));
  t.true(matchesFilter(filter('host=api.*'), line));
  t.false(matchesFilter(filter('host=*.example.org'), line));
  t.true(matchesFilter(filter('decision=deny'), line));
  t.false(matchesFilter(filter('decision=allow'), line));
  t.true(matchesFilter(filter('sandbox=agent&host=api.example.test&decision=deny'), line));
  // A filter on a field the line lacks excludes it (a `ready` line has no sandbox).
  t.false(matchesFilter(filter('sandbox=agent'), { event: 'ready' }));
  t.false(matchesFilter(filter('host=*'), { event: 'ready' }));
});

test('filter parameters are checked', (t) => {
  t.like(parseEventFilter(new URLSearchParams('decision=maybe')), { ok: false });
  t.like(parseEventFilter(new URLSearchParams('color=red')), { ok: false });
  t.like(parseEventFilter(new URLSearchParams('sandbox=a&sandbox=b')), { ok: false });
  t.like(parseEventFilter(new URLSearchParams('host=')), { ok: false });
  t.like(parseEventFilter(new URLSearchParams('decision=would-deny')), { ok: true, filter: { decision: 'would-deny' } });
});

test('globMatch', (t) => {
  t.true(globMatch('*', ''));
  t.true(globMatch('a*b*c', 'aXbYc'));
  t.true(globMatch('a*b*c', 'abc'));
  t.false(globMatch('a*b*c', 'acb'));
  t.false(globMatch('ab*ba', 'aba'), 'prefix and suffix may not overlap');
  t.true(globMatch('x.example.test', 'x.example.test'));
  t.false(globMatch('x.example.test', 'xy.example.test'));
});

test('outbox: passes lines through until blocked, queues up to its bound, then drops and marks the gap', (t) => {
  const box = new Outbox(10);
  t.is(box.offer('aaa\n'), 'aaa\n');
  box.block();
  t.is(box.offer('bbb\n'), undefined);
  t.is(box.offer('ccc\n'), undefined);
  t.is(box.offer('ddd\n'), undefined, 'over 10 bytes: dropped');
  t.is(box.offer('e\n'), undefined, 'still dropping: the marker stays where the gap is');
  t.is(box.drain(), `bbb\nccc\n${droppedMarker(2)}`);
  t.false(box.blocked);
  t.is(box.offer('fff\n'), 'fff\n');
  box.block();
  t.is(box.drain(), '', 'nothing waited, nothing dropped');
});

test('hub: taps only while someone subscribes; each subscriber gets the lines its filter passes', (t) => {
  const active: boolean[] = [];
  const hub = new EventHub((a) => active.push(a));
  const all: string[] = [];
  const denies: string[] = [];
  const leaveAll = hub.subscribe({ filter: {}, push: (l) => all.push(l) })!;
  const leaveDeny = hub.subscribe({ filter: filter('decision=deny'), push: (l) => denies.push(l) })!;
  t.deepEqual(active, [true]);
  const a = '{"event":"conn","decision":"allow"}\n';
  const d = '{"event":"conn","decision":"deny","worker":1}\n';
  hub.publish(a + d);
  hub.publish('not json\n');
  t.deepEqual(all, [a, d, 'not json\n']);
  t.deepEqual(denies, [d]);
  leaveAll();
  t.deepEqual(active, [true]);
  leaveDeny();
  leaveDeny();
  t.deepEqual(active, [true, false]);
  t.is(hub.size, 0);
});

test('hub: at most MAX_SUBSCRIBERS; a subscriber that throws is dropped, the others and the writer go on', (t) => {
  const active: boolean[] = [];
  const hub = new EventHub((a) => active.push(a));
  const got: string[] = [];
  hub.subscribe({
    filter: {},
    push: () => {
      throw new Error('broken');
    },
  });
  hub.subscribe({ filter: {}, push: (l) => got.push(l) });
  t.notThrows(() => hub.publish('{"event":"conn"}\n{"event":"close"}\n'));
  t.is(got.length, 2);
  t.is(hub.size, 1);
  const leaves = [];
  for (let i = 1; i < MAX_SUBSCRIBERS; i++) leaves.push(hub.subscribe({ filter: {}, push: () => undefined }));
  t.is(hub.size, MAX_SUBSCRIBERS);
  t.is(hub.subscribe({ filter: {}, push: () => undefined }), undefined);
  t.deepEqual(active, [true]);
});
