import test from 'ava';
import {
  INITIAL,
  MAX_PENDING_LINES,
  MAX_ROWS,
  MAX_SANDBOX_LINES,
  keysOf,
  onApprovalLine,
  onApprovalsAbsent,
  onAuditLine,
  onKey,
  viewModel,
  type Key,
  type TopState,
} from '../../src/top/model.js';

const T0 = Date.parse('2026-12-04T10:00:00.000Z');
const allow = (host: string, sandbox = 'agent', extra: Record<string, unknown> = {}) => ({
  level: 'info',
  time: '2026-12-04T10:00:01.250Z',
  event: 'conn',
  proto: 'tls',
  sandbox,
  host,
  decision: 'allow',
  ...extra,
});
const deny = (host: string, sandbox = 'agent') => ({ ...allow(host, sandbox), decision: 'deny', reason: `${host}:443 is not allowed` });

function keys(s: TopState, ...ks: (Key | string)[]): TopState {
  for (const k of ks) {
    if (typeof k === 'string') for (const ch of k) s = onKey(s, { ch }).state;
    else s = onKey(s, k).state;
  }
  return s;
}

test('a decision line becomes a row: time, sandbox, kind, host, method and path, decision, reason', (t) => {
  let s = onAuditLine(INITIAL, allow('api.example.test'), T0);
  s = onAuditLine(s, { ...allow('plain.example.test'), event: 'http', proto: 'http', method: 'GET', path: '/x?y' }, T0);
  s = onAuditLine(
    s,
    { time: '2026-12-04T10:00:01.9Z', event: 'packet', proto: 'udp', dst: '10.77.2.2:5301', decision: 'deny', sandbox: 'agent', reason: 'no rule' },
    T0,
  );
  s = onAuditLine(s, { event: 'ready', pid: 1 }, T0);
  s = onAuditLine(s, { event: 'close', sandbox: 'agent', host: 'api.example.test' }, T0);
  const vm = viewModel(s, T0, 10);
  t.deepEqual(
    vm.rows.map((r) => [r.time, r.sandbox, r.kind, r.host, r.request, r.decision, r.reason]),
    [
      ['10:00:01', 'agent', 'tls', 'api.example.test', '', 'allow', ''],
      ['10:00:01', 'agent', 'http', 'plain.example.test', 'GET /x?y', 'allow', ''],
      ['10:00:01', 'agent', 'pkt/udp', '10.77.2.2:5301', '', 'deny', 'no rule'],
    ],
  );
});

test('rates are per second over the last 10 s; totals keep counting', (t) => {
  let s = INITIAL;
  for (let i = 0; i < 20; i++) s = onAuditLine(s, allow('api.example.test'), T0 + i * 100);
  for (let i = 0; i < 5; i++) s = onAuditLine(s, deny('evil.example.test'), T0 + 1500);
  s = onAuditLine(s, allow('api.example.test', 'other'), T0 + 1500);
  t.deepEqual(viewModel(s, T0 + 2000, 10).sandboxes, [
    { name: 'agent', requestRate: 2.5, denialRate: 0.5, total: 25, denied: 5 },
    { name: 'other', requestRate: 0.1, denialRate: 0, total: 1, denied: 0 },
  ]);
  // At T0+10.5 s the first second has left the window, the second (denials included) has not.
  t.like(viewModel(s, T0 + 10_500, 10).sandboxes[0], { requestRate: 1.5, denialRate: 0.5, total: 25 });
  t.like(viewModel(s, T0 + 12_000, 10).sandboxes[0], { requestRate: 0, denialRate: 0, total: 25, denied: 5 });
  // A line much later drops the old buckets from the state too.
  s = onAuditLine(s, allow('api.example.test'), T0 + 60_000);
  t.like(viewModel(s, T0 + 60_000, 10).sandboxes[0], { requestRate: 0.1, total: 26 });
});

test('rows are bounded and the view shows the newest that fit', (t) => {
  let s = INITIAL;
  for (let i = 0; i < MAX_ROWS + 50; i++) s = onAuditLine(s, allow(`h${i}.example.test`), T0);
  t.is(s.rows.length, MAX_ROWS);
  const vm = viewModel(s, T0, 3);
  t.deepEqual(
    vm.rows.map((r) => r.host),
    [`h${MAX_ROWS + 47}.example.test`, `h${MAX_ROWS + 48}.example.test`, `h${MAX_ROWS + 49}.example.test`],
  );
});

test('p pauses the list (new lines are held, counted, shown on resume); rates keep moving', (t) => {
  let s = onAuditLine(INITIAL, allow('api.example.test'), T0);
  s = keys(s, 'p');
  s = onAuditLine(s, deny('evil.example.test'), T0);
  let vm = viewModel(s, T0, 10);
  t.true(vm.paused);
  t.is(vm.held, 1);
  t.deepEqual(
    vm.rows.map((r) => r.host),
    ['api.example.test'],
  );
  t.like(vm.sandboxes[0], { total: 2, denied: 1 });
  s = keys(s, 'p');
  vm = viewModel(s, T0, 10);
  t.false(vm.paused);
  t.deepEqual(
    vm.rows.map((r) => r.host),
    ['api.example.test', 'evil.example.test'],
  );
});

test('d shows denials only (would-deny too); / filters by sandbox or host; Esc clears', (t) => {
  let s = INITIAL;
  s = onAuditLine(s, allow('api.example.test'), T0);
  s = onAuditLine(s, deny('evil.example.test'), T0);
  s = onAuditLine(s, { ...allow('report.example.test', 'other'), decision: 'would-deny' }, T0);
  const hosts = (x: TopState): string[] => viewModel(x, T0, 10).rows.map((r) => r.host);
  t.deepEqual(hosts(keys(s, 'd')), ['evil.example.test', 'report.example.test']);
  t.deepEqual(hosts(keys(s, 'd', 'd')), ['api.example.test', 'evil.example.test', 'report.example.test']);
  // Typing: keys are text (no `p`ause, no `q`uit) until Enter.
  let f = keys(s, '/', 'OTHx', { name: 'backspace' });
  t.is(viewModel(f, T0, 10).input, 'OTH');
  t.is(onKey(f, { ch: 'q' }).effect, undefined);
  f = keys(f, { name: 'return' });
  t.deepEqual(hosts(f), ['report.example.test'], 'sandbox "other", case-insensitive');
  t.deepEqual(hosts(keys(s, '/', 'evil', { name: 'return' })), ['evil.example.test'], 'by host');
  t.deepEqual(hosts(keys(f, { name: 'escape' })).length, 3);
  t.deepEqual(hosts(keys(s, '/', 'evil', { name: 'escape' })).length, 3, 'Esc while typing cancels');
  t.deepEqual(onKey(s, { ch: 'q' }).effect, { t: 'quit' });
});

const pending = (id: string, host: string) => ({
  event: 'pending',
  id,
  sandbox: 'agent',
  user: 'alice',
  host,
  port: 443,
  via: 'tls',
  since: '2026-12-04T10:00:00Z',
  expires: '2026-12-04T10:01:00Z',
});

test('approvals: pending lines fill the list, decided ones leave it; keys answer the selected one', (t) => {
  let s = onApprovalLine(INITIAL, pending('p1', 'one.example.test'));
  s = onApprovalLine(s, pending('p2', 'two.example.test'));
  t.true(viewModel(s, T0, 10).showApprovals);
  t.deepEqual(
    s.pending.map((p) => p.id),
    ['p1', 'p2'],
  );
  t.deepEqual(onKey(s, { ch: 'a' }).effect, { t: 'answer', id: 'p1', action: 'once', label: 'one.example.test:443 (agent)' });
  const down = keys(s, { name: 'down' }, { name: 'down' });
  t.is(down.selected, 1, 'selection stays within the list');
  t.like(onKey(down, { ch: 's' }).effect, { id: 'p2', action: 'sandbox' });
  t.like(onKey(down, { ch: 'P' }).effect, { id: 'p2', action: 'policy' });
  t.like(onKey(down, { ch: 'x' }).effect, { id: 'p2', action: 'deny' });
  s = onApprovalLine(down, { event: 'decided', id: 'p2', action: 'deny', approver: 'top' });
  t.deepEqual(
    s.pending.map((p) => p.id),
    ['p1'],
  );
  t.is(s.selected, 0);
  t.is(s.message, 'two.example.test:443 (agent): deny by top');
  s = onApprovalLine(s, { event: 'decided', id: 'p1', action: 'timeout' });
  t.is(onKey(s, { ch: 'a' }).effect, undefined, 'nothing pending, nothing to answer');
});

test('without approvals on the daemon (404) the panel is hidden and the answer keys do nothing', (t) => {
  const s = onApprovalsAbsent(INITIAL);
  t.false(viewModel(s, T0, 10).showApprovals);
  t.is(onKey(s, { ch: 'a' }).effect, undefined);
});

test('a drop marker from the daemon is counted, not shown as a row', (t) => {
  let s = onAuditLine(INITIAL, { event: 'dropped', count: 7 }, T0);
  s = onAuditLine(s, { event: 'dropped', count: 3 }, T0);
  const vm = viewModel(s, T0, 10);
  t.is(vm.dropped, 10);
  t.deepEqual(vm.rows, []);
});

test('a chunk of typed text splits into keys: Enter, Backspace, Escape inside it are keys, other controls dropped', (t) => {
  t.deepEqual(keysOf('ev\x7fil\r'), [{ ch: 'e' }, { ch: 'v' }, { name: 'backspace' }, { ch: 'i' }, { ch: 'l' }, { name: 'return' }]);
  t.deepEqual(keysOf('a\x01\x1b'), [{ ch: 'a' }, { name: 'escape' }]);
  let s = onAuditLine(INITIAL, allow('api.example.test'), T0);
  s = onAuditLine(s, deny('evil.example.test'), T0);
  for (const k of [{ ch: '/' }, ...keysOf('evil\r')] as Key[]) s = onKey(s, k).state;
  t.is(s.filter, 'evil');
  t.is(s.input, undefined);
});

test('panels are bounded: the busiest sandboxes by name, a window of pending requests around the selected one', (t) => {
  let s = INITIAL;
  // sandbox i makes i requests this second; 0..11.
  for (let i = 0; i < 12; i++) for (let n = 0; n < i; n++) s = onAuditLine(s, allow('api.example.test', `s${String(i).padStart(2, '0')}`), T0);
  s = onAuditLine(s, allow('api.example.test', 'zz-old'), T0 - 60_000);
  for (let n = 0; n < 20; n++) s = onAuditLine(s, allow('api.example.test', 'zz-old'), T0 - 60_000);
  let vm = viewModel(s, T0, 10);
  t.is(vm.sandboxes.length, MAX_SANDBOX_LINES);
  t.deepEqual(
    vm.sandboxes.map((x) => x.name),
    ['s04', 's05', 's06', 's07', 's08', 's09', 's10', 's11'],
  );
  t.is(vm.moreSandboxes, 4, 's01..s03 and the quiet zz-old (s00 made no request)');
  for (let i = 0; i < 10; i++) s = onApprovalLine(s, pending(`p${i}`, `h${i}.example.test`));
  vm = viewModel(s, T0, 10);
  t.is(vm.pendingTotal, 10);
  t.deepEqual(
    vm.pending.map((p) => p.id),
    ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'].slice(0, MAX_PENDING_LINES),
  );
  for (let i = 0; i < 9; i++) s = onKey(s, { name: 'down' }).state;
  vm = viewModel(s, T0, 10);
  t.is(vm.selected, 9);
  t.deepEqual(
    vm.pending.map((p) => p.id),
    ['p4', 'p5', 'p6', 'p7', 'p8', 'p9'],
  );
  t.is(vm.pendingFrom, 4);
  t.like(onKey(s, { ch: 'x' }).effect, { id: 'p9' });
});
