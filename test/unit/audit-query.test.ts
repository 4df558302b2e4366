import test from 'ava';
import {
  hostGlob,
  matches,
  parseLine,
  parseTimeArg,
  printable,
  renderSummary,
  renderTable,
  rowOf,
  summarise,
  summaryJson,
  type ParsedLine,
  type SandboxSummary,
} from '../../src/audit/query.js';
import { LineSplitter, followStep } from '../../src/audit/follow.js';

const NOW = Date.parse('2026-11-28T23:20:00Z');

const L = (o: Record<string, unknown>): string => JSON.stringify({ level: 'info', ...o });
const LOG = [
  L({ time: '2026-11-28T23:00:00.000Z', event: 'ready', backend: 'nft' }),
  L({
    time: '2026-11-28T23:12:01.114Z',
    event: 'conn',
    dst: '10.77.3.2:443',
    sandbox: 'agent',
    user: 'alice',
    decision: 'deny',
    proto: 'tls',
    host: 'evil.example.test',
    reason: 'evil.example.test:443 is not allowed',
  }),
  L({
    time: '2026-11-28T23:12:01.301Z',
    event: 'conn',
    dst: '10.77.2.2:443',
    sandbox: 'agent',
    user: 'alice',
    decision: 'allow',
    rule: 'policies.default.allow[0]',
    proto: 'tls',
    host: 'api.example.test',
  }),
  L({
    time: '2026-11-28T23:12:02.000Z',
    event: 'http',
    dst: '10.77.2.2:443',
    sandbox: 'agent',
    user: 'alice',
    decision: 'allow',
    proto: 'tls',
    host: 'api.example.test',
    method: 'GET',
    path: '/v1/x',
    status: 200,
    credential: 'llm',
    bytesIn: 100,
    bytesOut: 20,
  }),
  L({
    time: '2026-11-28T23:15:00.000Z',
    event: 'close',
    dst: '10.77.2.2:443',
    sandbox: 'bot',
    user: 'bob',
    proto: 'tls',
    host: 'pkgs.example.test',
    bytesIn: 5000,
    bytesOut: 300,
  }),
  L({
    time: '2026-11-28T23:15:00.000Z',
    event: 'conn',
    dst: '10.77.2.2:443',
    sandbox: 'bot',
    user: 'bob',
    decision: 'would-deny',
    proto: 'tls',
    host: 'pkgs.example.test',
    reason: 'pkgs.example.test:443 is not allowed',
  }),
  L({ time: '2026-11-28T23:16:00.000Z', event: 'dns', sandbox: 'bot', decision: 'deny', host: 'x.example.test', reason: 'rate limit', refused: 40 }),
];

function parsed(text: string): ParsedLine {
  const p = parseLine(text);
  if (!p.ok) throw new Error(`not a line: ${text}`);
  return p.line;
}
const lines = LOG.map(parsed);
const pick = (f: Parameters<typeof matches>[0]): string[] => lines.filter((l) => matches(f, l)).map((l) => `${l.fields.event}:${l.fields.host ?? ''}`);

test('parseLine: JSON objects with a string event; anything else is malformed, blank lines are not counted', (t) => {
  t.true(parseLine(LOG[0] as string).ok);
  for (const bad of ['not json', '[1,2]', '"x"', '{"event":3}', '{"time":"x"}', '{"event":"conn"'])
    t.deepEqual(parseLine(bad), { ok: false, empty: false }, bad);
  t.deepEqual(parseLine('   '), { ok: false, empty: true });
  const p = parsed(LOG[1] as string);
  t.is(p.at, Date.parse('2026-11-28T23:12:01.114Z'));
  t.is(p.text, LOG[1] as string);
});

test('filters: each criterion narrows, lists are any-of', (t) => {
  t.deepEqual(pick({ sandboxes: ['agent'] }), ['conn:evil.example.test', 'conn:api.example.test', 'http:api.example.test']);
  t.deepEqual(pick({ users: ['bob'] }), ['close:pkgs.example.test', 'conn:pkgs.example.test']);
  t.deepEqual(pick({ decisions: ['deny'] }), ['conn:evil.example.test', 'dns:x.example.test']);
  t.deepEqual(pick({ decisions: ['would-deny', 'allow'] }), ['conn:api.example.test', 'http:api.example.test', 'conn:pkgs.example.test']);
  t.deepEqual(pick({ events: ['http', 'close'] }), ['http:api.example.test', 'close:pkgs.example.test']);
  t.deepEqual(pick({ hosts: [hostGlob('API.*')] }), ['conn:api.example.test', 'http:api.example.test']);
  t.deepEqual(pick({ hosts: [hostGlob('*.example.test')], sandboxes: ['bot'], events: ['conn'] }), ['conn:pkgs.example.test']);
  // A glob's dots are literal: "api?example" needs one character there, "apixexample" is not "api.example".
  t.true(hostGlob('api?example.test').test('api.example.test'));
  t.false(hostGlob('api.example.test').test('apixexample.test'));
  // A host filter never matches a line without a host.
  t.deepEqual(pick({ hosts: [hostGlob('*')] }).includes('ready:'), false);
});

test('time: durations before now, ISO 8601 absolute, inclusive bounds; lines without a time never match a bound', (t) => {
  t.is(parseTimeArg('10m', NOW), NOW - 600_000);
  t.is(parseTimeArg('90s', NOW), NOW - 90_000);
  t.is(parseTimeArg('2h', NOW), NOW - 7_200_000);
  t.is(parseTimeArg('1d', NOW), NOW - 86_400_000);
  t.is(parseTimeArg('2026-11-28T23:12:01Z', NOW), Date.parse('2026-11-28T23:12:01Z'));
  t.is(parseTimeArg('2026-11-28', NOW), Date.parse('2026-11-28T00:00:00Z'));
  for (const bad of ['10', '10x', 'yesterday', 'March 7', '']) t.is(parseTimeArg(bad, NOW), undefined, bad);
  t.deepEqual(pick({ since: parseTimeArg('5m', NOW) as number }), ['close:pkgs.example.test', 'conn:pkgs.example.test', 'dns:x.example.test']);
  t.deepEqual(pick({ since: Date.parse('2026-11-28T23:12:01.301Z'), until: Date.parse('2026-11-28T23:12:02Z'), sandboxes: ['agent'] }), [
    'conn:api.example.test',
    'http:api.example.test',
  ]);
  const untimed = parsed('{"event":"conn","host":"a.test"}');
  t.false(matches({ since: 0 }, untimed));
  t.true(matches({}, untimed));
});

test('table: aligned columns, port from dst, request, detail; control characters never reach the terminal', (t) => {
  const text = renderTable(lines.map((l) => l.fields));
  const rows = text.trimEnd().split('\n');
  t.is(rows.length, LOG.length + 1);
  t.regex(rows[0] as string, /^TIME\s+EVENT\s+SANDBOX\s+USER\s+DECISION\s+HOST\s+PORT\s+REQUEST\s+STATUS\s+DETAIL$/);
  // Every row's HOST column starts where the header's does.
  const at = (rows[0] as string).indexOf('HOST');
  t.is((rows[2] as string).slice(at, at + 'evil.example.test'.length), 'evil.example.test');
  t.is((rows[4] as string).slice(at).split(/\s+/).slice(0, 4).join(' '), 'api.example.test 443 GET /v1/x');
  t.regex(rows[4] as string, /credential llm; in 100 B, out 20 B/);
  t.deepEqual(rowOf({ event: 'http', host: 'a.test', method: 'GET', path: '/\u001b[2J\u009b', reason: 'x\ny' }).slice(7), ['GET /?[2J?', '', 'x?y']);
  t.is(printable('ok é'), 'ok é');
});

test('summary: per sandbox hosts by decision, denials by reason with counts (sampled lines count what they stand for), bytes, credentials', (t) => {
  const sums = new Map<string, SandboxSummary>();
  for (const l of lines) summarise(sums, l.fields);
  t.deepEqual(summaryJson(sums), [
    {
      sandbox: 'agent',
      lines: 3,
      bytesIn: 100,
      bytesOut: 20,
      hosts: {
        'evil.example.test [conn]': { allow: 0, deny: 1, wouldDeny: 0 },
        'api.example.test [conn]': { allow: 1, deny: 0, wouldDeny: 0 },
        'api.example.test [http]': { allow: 1, deny: 0, wouldDeny: 0 },
      },
      denials: { 'deny: evil.example.test:443 is not allowed': 1 },
      credentials: { llm: 1 },
    },
    {
      sandbox: 'bot',
      lines: 3,
      bytesIn: 5000,
      bytesOut: 300,
      hosts: { 'pkgs.example.test [conn]': { allow: 0, deny: 0, wouldDeny: 1 }, 'x.example.test [dns]': { allow: 0, deny: 40, wouldDeny: 0 } },
      denials: { 'would-deny: pkgs.example.test:443 is not allowed': 1, 'deny: rate limit': 40 },
      credentials: {},
    },
  ]);
  const text = renderSummary(sums);
  t.regex(text, /^sandbox agent: 3 lines, bytes in 100, out 20$/m);
  t.regex(text, /^ {4}x\.example\.test \[dns\] {6}0 \/ 40 \/ 0$/m);
  t.regex(text, /^ {8}40 {2}deny: rate limit$/m);
  t.is(renderSummary(new Map()), 'no sandbox lines matched\n');
});

test('LineSplitter: partial lines wait for their newline, UTF-8 split across chunks stays whole', (t) => {
  const s = new LineSplitter();
  const bytes = Buffer.from('{"a":"é"}\n{"b"', 'utf8');
  const cut = bytes.indexOf(0xa9); // inside "é"
  t.deepEqual(s.push(bytes.subarray(0, cut)), []);
  t.deepEqual(s.push(bytes.subarray(cut)), ['{"a":"é"}']);
  t.deepEqual(s.push(Buffer.from(':1}\n')), ['{"b":1}']);
  t.deepEqual(s.push(Buffer.from('tail')), []);
  t.deepEqual(s.end(), ['tail']);
  s.push(Buffer.from('half'));
  s.reset();
  t.deepEqual(s.push(Buffer.from('new\n')), ['new']);
});

test('followStep: grown, truncated, rotated (only once the old file is read to its end), nothing', (t) => {
  const f = { dev: 1, ino: 10 };
  t.is(followStep({ ...f, size: 100 }, 50, f), 'read');
  t.is(followStep({ ...f, size: 10 }, 50, f), 'truncated');
  t.is(followStep({ ...f, size: 50 }, 50, f), 'wait');
  t.is(followStep({ ...f, size: 50 }, 50, undefined), 'wait'); // renamed, not yet recreated
  t.is(followStep({ ...f, size: 50 }, 50, { dev: 1, ino: 11 }), 'rotated');
  t.is(followStep({ ...f, size: 60 }, 50, { dev: 1, ino: 11 }), 'read'); // the old file's last lines first
  t.is(followStep({ ...f, size: 50 }, 50, { dev: 2, ino: 10 }), 'rotated');
});
