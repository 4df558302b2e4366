import test from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import { promises as dnsPromises } from 'node:dns';
import {
  QTYPE,
  RCODE,
  EXTENDED_RCODE,
  parseQuery,
  buildResponse,
  buildError,
  encodeTcpFrame,
  TcpFrameReader,
  type AnswerRecord,
  type ParseResult,
  type Query,
} from '../../src/dns/wire.js';
import { buildQuery, parseResponse } from '../helpers/dns-client.js';

// ---------------------------------------------------------------------------------------------
// An independent byte-level query builder, so the codec is checked against hand-made wire bytes
// rather than against itself.

function nameBytes(name: string): number[] {
  if (name === '') return [0];
  const out: number[] = [];
  for (const label of name.split('.')) {
    out.push(label.length, ...Buffer.from(label, 'latin1'));
  }
  out.push(0);
  return out;
}

const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];
const u32 = (n: number): number[] => [...u16(Math.floor(n / 0x10000)), ...u16(n)];

interface RawOpts {
  id?: number;
  flags?: number;
  qd?: number;
  an?: number;
  ns?: number;
  ar?: number;
}

function header(o: RawOpts = {}): number[] {
  return [...u16(o.id ?? 0x1234), ...u16(o.flags ?? 0x0100), ...u16(o.qd ?? 1), ...u16(o.an ?? 0), ...u16(o.ns ?? 0), ...u16(o.ar ?? 0)];
}

const question = (name: string, type: number = QTYPE.A, klass = 1): number[] => [...nameBytes(name), ...u16(type), ...u16(klass)];

/** OPT RR (RFC 6891 §6.1.2); `options` are raw {code,len,data} bytes. */
const opt = (udpSize = 1232, version = 0, options: number[] = [], owner: number[] = [0]): number[] => [
  ...owner,
  ...u16(QTYPE.OPT),
  ...u16(udpSize),
  0,
  version,
  ...u16(0),
  ...u16(options.length),
  ...options,
];

const rawQuery = (name: string, type: number = QTYPE.A, o: RawOpts = {}, tail: number[] = []): Buffer =>
  Buffer.from([...header(o), ...question(name, type), ...tail]);

function mustParse(msg: Buffer): Query {
  const r = parseQuery(msg);
  if (!r.ok) throw new Error(`expected a valid query, got ${r.reason}`);
  return r.query;
}

// ---------------------------------------------------------------------------------------------
// Parsing valid queries

test('parses a plain A query: name lowercased, flags, RD, no EDNS', (t) => {
  const q = mustParse(rawQuery('Api.Example.TEST', QTYPE.A, { id: 0xbeef, flags: 0x0100 }));
  t.deepEqual(q, {
    id: 0xbeef,
    flags: 0x0100,
    opcode: 0,
    rd: true,
    question: { name: 'api.example.test', type: QTYPE.A, class: 1, nameAsSent: 'Api.Example.TEST' },
  });
  t.false(mustParse(rawQuery('x.test', QTYPE.A, { flags: 0 })).rd);
});

test('parses EDNS: udp size and version reported, options skipped', (t) => {
  const cookie = [...u16(10), ...u16(8), 1, 2, 3, 4, 5, 6, 7, 8];
  const q = mustParse(rawQuery('a.test', QTYPE.AAAA, { ar: 1 }, opt(4096, 0, cookie)));
  t.deepEqual(q.edns, { udpSize: 4096, version: 0 });
  t.is(q.question.type, QTYPE.AAAA);
  t.deepEqual(mustParse(rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(1232, 1))).edns, { udpSize: 1232, version: 1 });
});

test('accepts the root name, underscores, digits and boundary lengths', (t) => {
  t.is(mustParse(rawQuery('', QTYPE.NS)).question.name, '');
  t.is(mustParse(rawQuery('_443._tcp.x-1.test', QTYPE.SRV)).question.name, '_443._tcp.x-1.test');
  const l63 = 'a'.repeat(63);
  t.is(mustParse(rawQuery(`${l63}.test`)).question.name, `${l63}.test`);
  // 3*(1+63) + (1+61) + 1 = 255 octets: the longest legal name (RFC 1035 §3.1).
  const longest = `${l63}.${l63}.${l63}.${'b'.repeat(61)}`;
  t.is(nameBytes(longest).length, 255);
  t.is(mustParse(rawQuery(longest)).question.name, longest);
});

test('follows a backward pointer: OPT owner pointing at the question name terminator', (t) => {
  const name = 'a.test';
  const zeroAt = 12 + nameBytes(name).length - 1;
  const q = mustParse(rawQuery(name, QTYPE.A, { ar: 1 }, opt(1232, 0, [], [0xc0, zeroAt])));
  t.deepEqual(q.edns, { udpSize: 1232, version: 0 });
  // The same pointer aimed at the start of the question makes the owner 'a.test', not root.
  const r = parseQuery(rawQuery(name, QTYPE.A, { ar: 1 }, opt(1232, 0, [], [0xc0, 12])));
  t.like(r, { ok: false, rcode: RCODE.FORMERR, reason: 'additional record is not OPT' });
});

test('buildQuery encodes the same bytes as the hand-made builder', (t) => {
  t.deepEqual(buildQuery(0x1234, 'a.example.test.', QTYPE.A), rawQuery('a.example.test', QTYPE.A));
  t.deepEqual(
    buildQuery(7, 'x.test', QTYPE.AAAA, { rd: false, edns: { udpSize: 1400 } }),
    rawQuery('x.test', QTYPE.AAAA, { id: 7, flags: 0, ar: 1 }, opt(1400)),
  );
  t.throws(() => buildQuery(1, 'bad name.test', QTYPE.A), { instanceOf: RangeError });
  t.throws(() => buildQuery(1, `${'a'.repeat(64)}.test`, QTYPE.A), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------------------------
// Hostile and malformed queries

const l63 = 'a'.repeat(63);
type Case = [title: string, msg: Buffer, rcode: number, reason: string];

const hostile: Case[] = [
  ['empty', Buffer.alloc(0), RCODE.FORMERR, 'truncated header'],
  ['1 byte', Buffer.from([0x12]), RCODE.FORMERR, 'truncated header'],
  ['truncated header', Buffer.from(header().slice(0, 11)), RCODE.FORMERR, 'truncated header'],
  ['header only', Buffer.from(header()), RCODE.FORMERR, 'truncated name'],
  ['question cut inside a label', rawQuery('abc.test').subarray(0, 14), RCODE.FORMERR, 'truncated name'],
  ['question without type/class', rawQuery('abc.test').subarray(0, 12 + 10 + 2), RCODE.FORMERR, 'truncated question'],
  ['pointer cut in half', Buffer.from([...header(), 0xc0]), RCODE.FORMERR, 'truncated name'],
  ['pointer to itself', Buffer.from([...header(), 0xc0, 12, ...u16(1), ...u16(1)]), RCODE.FORMERR, 'bad pointer'],
  ['forward pointer', Buffer.from([...header(), 0xc0, 18, ...u16(1), ...u16(1), 1, 0x61, 0]), RCODE.FORMERR, 'bad pointer'],
  [
    'two pointers pointing at each other',
    // 12: "a", 14: -> 16, 16: -> 14
    Buffer.from([...header(), 1, 0x61, 0xc0, 16, 0xc0, 14, ...u16(1), ...u16(1)]),
    RCODE.FORMERR,
    'bad pointer',
  ],
  [
    'backward pointer to the start of its own name (a loop)',
    // 12: "a", 14: -> 12. Backward from where the pointer sits, but inside the run being read.
    Buffer.from([...header(), 1, 0x61, 0xc0, 12, ...u16(1), ...u16(1)]),
    RCODE.FORMERR,
    'bad pointer',
  ],
  [
    'OPT owner looping back onto its own label',
    Buffer.from([...header({ ar: 1 }), ...question('a.test'), ...opt(1232, 0, [], [1, 0x62, 0xc0, 24])]),
    RCODE.FORMERR,
    'bad pointer',
  ],
  ['pointer into the header', Buffer.from([...header(), 0xc0, 2, ...u16(1), ...u16(1)]), RCODE.FORMERR, 'bad pointer'],
  [
    'OPT owner loop: backward pointer to a pointer that points forward again',
    // question a.test at 12..19; its qtype bytes at 20 read as a pointer to 24, the OPT owner,
    // which points back to 20: each pointer is backward from where it sits, yet they form a loop.
    Buffer.from([...header({ ar: 1 }), ...nameBytes('a.test'), 0xc0, 24, ...u16(1), ...opt(1232, 0, [], [0xc0, 20])]),
    RCODE.FORMERR,
    'bad pointer',
  ],
  ['label of 64 octets', rawQuery(`${'a'.repeat(64)}.test`), RCODE.FORMERR, 'bad label'],
  ['0x80 label type', Buffer.from([...header(), 0x80, ...u16(1), ...u16(1)]), RCODE.FORMERR, 'bad label'],
  ['name of 257 octets', rawQuery(`${l63}.${l63}.${l63}.${l63}`), RCODE.FORMERR, 'name too long'],
  ['name of 256 octets', rawQuery(`${l63}.${l63}.${l63}.${'b'.repeat(62)}`), RCODE.FORMERR, 'name too long'],
  ['dot inside a label', rawQuery('a.b', QTYPE.A).fill(0x2e, 13, 14), RCODE.FORMERR, 'bad name'],
  ['NUL inside a label', rawQuery('ab.test').fill(0, 13, 14), RCODE.FORMERR, 'bad name'],
  ['space and high octets', rawQuery('a b\u00ff.test'), RCODE.FORMERR, 'bad name'],
  ['QDCOUNT 0', Buffer.from(header({ qd: 0 })), RCODE.FORMERR, 'question count'],
  ['QDCOUNT 2', Buffer.from([...header({ qd: 2 }), ...question('a.test'), ...question('b.test')]), RCODE.FORMERR, 'question count'],
  ['opcode 2 (STATUS)', rawQuery('a.test', QTYPE.A, { flags: (2 << 11) | 0x0100 }), RCODE.NOTIMP, 'opcode not implemented'],
  ['opcode 5 (UPDATE)', rawQuery('a.test', QTYPE.SOA, { flags: 5 << 11 }), RCODE.NOTIMP, 'opcode not implemented'],
  ['QR=1 (a response)', rawQuery('a.test', QTYPE.A, { flags: 0x8180 }), RCODE.FORMERR, 'not a query'],
  [
    'ANCOUNT 1',
    rawQuery('a.test', QTYPE.A, { an: 1 }, [0xc0, 12, ...u16(1), ...u16(1), ...u32(60), ...u16(4), 1, 2, 3, 4]),
    RCODE.FORMERR,
    'answer or authority records',
  ],
  ['OPT in authority', rawQuery('a.test', QTYPE.A, { ns: 1 }, opt()), RCODE.FORMERR, 'answer or authority records'],
  ['OPT with ARCOUNT 0', rawQuery('a.test', QTYPE.A, { ar: 0 }, opt()), RCODE.FORMERR, 'trailing bytes'],
  ['two OPT RRs', rawQuery('a.test', QTYPE.A, { ar: 2 }, [...opt(), ...opt()]), RCODE.FORMERR, 'additional records'],
  [
    'A record in additional',
    rawQuery('a.test', QTYPE.A, { ar: 1 }, [0, ...u16(QTYPE.A), ...u16(1), ...u32(0), ...u16(4), 1, 2, 3, 4]),
    RCODE.FORMERR,
    'additional record is not OPT',
  ],
  ['OPT with a non-root owner', rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(1232, 0, [], nameBytes('x'))), RCODE.FORMERR, 'additional record is not OPT'],
  ['OPT cut short', rawQuery('a.test', QTYPE.A, { ar: 1 }, opt().slice(0, 7)), RCODE.FORMERR, 'truncated additional record'],
  [
    'OPT rdata longer than the message',
    rawQuery('a.test', QTYPE.A, { ar: 1 }, [...opt().slice(0, 9), ...u16(20), 1, 2]),
    RCODE.FORMERR,
    'truncated additional record',
  ],
  ['OPT option overrunning rdata', rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(1232, 0, [...u16(10), ...u16(9), 1, 2, 3, 4])), RCODE.FORMERR, 'bad EDNS option'],
  ['OPT option header cut', rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(1232, 0, [0, 10, 0])), RCODE.FORMERR, 'bad EDNS option'],
  ['trailing garbage', rawQuery('a.test', QTYPE.A, {}, [0]), RCODE.FORMERR, 'trailing bytes'],
  ['trailing garbage after OPT', rawQuery('a.test', QTYPE.A, { ar: 1 }, [...opt(), 0xff]), RCODE.FORMERR, 'trailing bytes'],
  ['OPT as the question type', rawQuery('', QTYPE.OPT), RCODE.FORMERR, 'meta type in question'],
  ['oversize (4097 bytes)', Buffer.concat([rawQuery('a.test'), Buffer.alloc(4097 - rawQuery('a.test').length)]), RCODE.FORMERR, 'oversize'],
  ['class CH (version.bind)', Buffer.from([...header(), ...question('version.bind', QTYPE.TXT, 3)]), RCODE.REFUSED, 'unsupported class'],
  ['AXFR', rawQuery('example.test', 252), RCODE.REFUSED, 'zone transfer'],
  ['IXFR', rawQuery('example.test', 251), RCODE.REFUSED, 'zone transfer'],
];

for (const [title, msg, rcode, reason] of hostile) {
  test(`rejects: ${title}`, (t) => {
    const r = parseQuery(msg);
    const expected: ParseResult = msg.length >= 2 ? { ok: false, id: msg.readUInt16BE(0), rcode, reason } : { ok: false, rcode, reason };
    t.deepEqual(r, expected);
  });
}

test('the 255-octet limit counts octets reached through pointers too', (t) => {
  // Question: 3 x 63-octet labels + "b"*60 (254 octets incl. root). OPT owner: "c" -> pointer to the
  // question start, i.e. c.<question>, which is 2 octets longer: 256.
  const qn = `${l63}.${l63}.${l63}.${'b'.repeat(60)}`;
  const msg = rawQuery(qn, QTYPE.A, { ar: 1 }, opt(1232, 0, [], [1, 0x63, 0xc0, 12]));
  t.like(parseQuery(msg), { ok: false, reason: 'name too long' });
});

test('parseResponse caps pointer chains at 16 jumps', (t) => {
  // Parsing a query can never reach the cap (the only name after the question is the OPT owner),
  // so it is checked on a response: a NULL record whose rdata is a root label followed by a chain
  // of n pointers, each pointing at the one before it, and a second record whose owner points at
  // the last one. Resolving that owner takes n + 1 jumps.
  const withChain = (n: number): Buffer => {
    const base = [...header({ flags: 0x8180, qd: 1, an: 2 }), ...question('a.test')];
    const rdataStart = base.length + 2 + 10;
    const chain = [0];
    for (let i = 0; i < n; i++) chain.push(...u16(0xc000 | (i === 0 ? rdataStart : rdataStart + 1 + (i - 1) * 2)));
    const last = rdataStart + 1 + (n - 1) * 2;
    return Buffer.from([
      ...base,
      ...[0xc0, 12, ...u16(QTYPE.NULL), ...u16(1), ...u32(0), ...u16(chain.length), ...chain],
      ...[0xc0 | (last >> 8), last & 0xff, ...u16(QTYPE.NULL), ...u16(1), ...u32(0), ...u16(0)],
    ]);
  };
  t.is(parseResponse(withChain(15)).answers[1]?.name, '');
  t.throws(() => parseResponse(withChain(16)), { message: /too many pointers/ });
});

// ---------------------------------------------------------------------------------------------
// Building responses

const A = (address: string, ttl = 60): AnswerRecord => ({ type: QTYPE.A, ttl, address });

test('round trip: query -> parse -> response -> decode', (t) => {
  const q = mustParse(rawQuery('API.example.test', QTYPE.A, { id: 0x4242 }));
  const res = buildResponse(q, RCODE.NOERROR, [A('10.77.0.5', 300), A('10.77.0.6', 0)]);
  const d = parseResponse(res);
  t.like(d, { id: 0x4242, qr: true, opcode: 0, aa: true, tc: false, rd: true, ra: true, rcode: RCODE.NOERROR });
  t.is(d.edns, undefined);
  t.deepEqual(d.questions, [{ name: 'api.example.test', type: QTYPE.A, class: 1, nameAsSent: 'API.example.test' }]);
  t.deepEqual(
    d.answers.map((a) => [a.name, a.type, a.class, a.ttl, a.address]),
    [
      ['api.example.test', QTYPE.A, 1, 300, '10.77.0.5'],
      ['api.example.test', QTYPE.A, 1, 0, '10.77.0.6'],
    ],
  );
  t.deepEqual([d.authority, d.additional], [[], []]);
  // Byte layout: the question echoed with the client's case (DNS 0x20), each answer owner = C0 0C.
  const qEnd = 12 + nameBytes('API.example.test').length + 4;
  t.deepEqual(res.subarray(12, qEnd), Buffer.from(question('API.example.test')));
  t.deepEqual([...res.subarray(qEnd, qEnd + 2)], [0xc0, 0x0c]);
  t.deepEqual([...res.subarray(qEnd + 16, qEnd + 18)], [0xc0, 0x0c]);
  t.is(res.length, qEnd + 32);
});

test('response flags: RD copied, AA optional, NXDOMAIN and REFUSED carry no answers', (t) => {
  const q = mustParse(rawQuery('denied.test', QTYPE.A, { flags: 0 }));
  const nx = parseResponse(buildResponse(q, RCODE.NXDOMAIN, []));
  t.like(nx, { rd: false, aa: true, ra: true, rcode: RCODE.NXDOMAIN, answers: [] });
  t.is(parseResponse(buildResponse(q, RCODE.REFUSED, [], { aa: false })).aa, false);
  t.throws(() => buildResponse(q, RCODE.NXDOMAIN, [A('10.0.0.1')]), { instanceOf: RangeError });
});

test('EDNS query gets an OPT RR advertising 1232, version 0', (t) => {
  const q = mustParse(rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(4096)));
  const res = buildResponse(q, RCODE.NOERROR, [A('10.77.0.5')]);
  const d = parseResponse(res);
  t.deepEqual(d.edns, { udpSize: 1232, version: 0, flags: 0 });
  t.is(d.additional.length, 1);
  t.deepEqual([...res.subarray(res.length - 11)], [0, ...u16(41), ...u16(1232), 0, 0, 0, 0, 0, 0]);
});

test('BADVERS goes into the OPT extended rcode; needs EDNS', (t) => {
  const q = mustParse(rawQuery('a.test', QTYPE.A, { ar: 1 }, opt(1232, 1)));
  const d = parseResponse(buildResponse(q, EXTENDED_RCODE.BADVERS, []));
  t.is(d.flags & 0xf, 0);
  t.is(d.rcode, 16);
  const plain = mustParse(rawQuery('a.test'));
  t.throws(() => buildResponse(plain, EXTENDED_RCODE.BADVERS, []), { instanceOf: RangeError });
});

test('truncation: answers dropped and TC set above the size limit', (t) => {
  const many = Array.from({ length: 40 }, (_, i) => A(`10.77.1.${i}`));
  const plain = mustParse(rawQuery('many.test'));
  // 12 + 15 (question) + 40*16 = 667 > 512.
  const tc = parseResponse(buildResponse(plain, RCODE.NOERROR, many));
  t.like(tc, { tc: true, rcode: RCODE.NOERROR, answers: [] });
  t.is(tc.questions[0]?.name, 'many.test');
  // Over TCP the caller passes 65535 and everything fits.
  t.is(parseResponse(buildResponse(plain, RCODE.NOERROR, many, { maxSize: 65535 })).answers.length, 40);
  // EDNS raises the limit to min(udpSize, 1232): 667 + 11 fits.
  const edns = mustParse(rawQuery('many.test', QTYPE.A, { ar: 1 }, opt(4096)));
  const e = parseResponse(buildResponse(edns, RCODE.NOERROR, many));
  t.like(e, { tc: false });
  t.is(e.answers.length, 40);
  // ...but 80 answers (1318 bytes) do not; the OPT RR stays in the truncated reply (RFC 6891 §7).
  const e80 = parseResponse(buildResponse(edns, RCODE.NOERROR, [...many, ...many]));
  t.like(e80, { tc: true, answers: [] });
  t.is(e80.edns?.udpSize, 1232);
  // An advertised size under 512 counts as 512 (RFC 6891 §6.2.5): 12+15+29*16+11 = 502 fits, 518 does not.
  const small = mustParse(rawQuery('many.test', QTYPE.A, { ar: 1 }, opt(100)));
  t.false(parseResponse(buildResponse(small, RCODE.NOERROR, many.slice(0, 29))).tc);
  t.true(parseResponse(buildResponse(small, RCODE.NOERROR, many.slice(0, 30))).tc);
  // Exact boundary via maxSize: 12+15+3*16 = 75 bytes.
  t.is(buildResponse(plain, RCODE.NOERROR, many.slice(0, 3), { maxSize: 12 + 15 + 48 }).length, 75);
  t.true(parseResponse(buildResponse(plain, RCODE.NOERROR, many.slice(0, 3), { maxSize: 12 + 15 + 47 })).tc);
});

test('buildResponse rejects caller mistakes with RangeError', (t) => {
  const q = mustParse(rawQuery('a.test'));
  for (const bad of ['10.0.0', '10.0.0.256', '::1', 'a.b.c.d', '010.0.0.1']) {
    t.throws(() => buildResponse(q, RCODE.NOERROR, [A(bad)]), { instanceOf: RangeError }, bad);
  }
  t.throws(() => buildResponse(q, RCODE.NOERROR, [A('10.0.0.1', -1)]), { instanceOf: RangeError });
  t.throws(() => buildResponse(q, RCODE.NOERROR, [A('10.0.0.1', 2 ** 31)]), { instanceOf: RangeError });
  t.throws(() => buildResponse(q, 4096, []), { instanceOf: RangeError });
  t.throws(() => buildResponse({ ...q, question: { name: 'a..b', type: 1, class: 1 } }, RCODE.NOERROR, []), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------------------------
// buildError

test('buildError echoes id, opcode, RD and a readable question', (t) => {
  const notimp = rawQuery('a.test', QTYPE.A, { id: 0x0102, flags: (2 << 11) | 0x0100 });
  const r = parseQuery(notimp);
  t.false(r.ok);
  const res = buildError(notimp, RCODE.NOTIMP, r.ok ? undefined : r.id);
  t.truthy(res);
  const d = parseResponse(res as Buffer);
  t.like(d, { id: 0x0102, qr: true, opcode: 2, rd: true, rcode: RCODE.NOTIMP, answers: [] });
  t.deepEqual(
    d.questions.map((q) => q.name),
    ['a.test'],
  );
});

test('buildError: question echoed for trailing garbage, header only when unreadable', (t) => {
  const trailing = rawQuery('Mixed.Test', QTYPE.A, { id: 9 }, [1, 2, 3]);
  const d = parseResponse(buildError(trailing, RCODE.FORMERR) as Buffer);
  t.deepEqual(
    d.questions.map((q) => q.nameAsSent),
    ['Mixed.Test'],
  );
  t.is(d.rcode, RCODE.FORMERR);

  const loop = Buffer.from([...header({ id: 7 }), 0xc0, 12, ...u16(1), ...u16(1)]);
  const h = buildError(loop, RCODE.FORMERR) as Buffer;
  t.is(h.length, 12);
  t.like(parseResponse(h), { id: 7, qr: true, rcode: RCODE.FORMERR, questions: [] });

  const two = Buffer.from([0xab, 0xcd]);
  t.like(parseResponse(buildError(two, RCODE.FORMERR) as Buffer), { id: 0xabcd, questions: [] });
});

test('buildError: undefined without an id or for a response; explicit id wins', (t) => {
  t.is(buildError(Buffer.alloc(0), RCODE.FORMERR), undefined);
  t.is(buildError(Buffer.from([1]), RCODE.FORMERR), undefined);
  t.is(buildError(rawQuery('a.test', QTYPE.A, { flags: 0x8000 }), RCODE.FORMERR), undefined);
  t.is(parseResponse(buildError(Buffer.from([1]), RCODE.FORMERR, 0x5555) as Buffer).id, 0x5555);
});

// ---------------------------------------------------------------------------------------------
// TCP framing

test('encodeTcpFrame prefixes the length', (t) => {
  t.deepEqual([...encodeTcpFrame(Buffer.from([9, 8, 7]))], [0, 3, 9, 8, 7]);
  t.throws(() => encodeTcpFrame(Buffer.alloc(65536)), { instanceOf: RangeError });
});

test('TcpFrameReader: frames split byte by byte', (t) => {
  const a = rawQuery('a.test');
  const b = rawQuery('b.test', QTYPE.AAAA);
  const stream = Buffer.concat([encodeTcpFrame(a), encodeTcpFrame(b)]);
  const reader = new TcpFrameReader();
  const got: Buffer[] = [];
  for (let i = 0; i < stream.length; i++) {
    const out = reader.push(stream.subarray(i, i + 1));
    // Each message completes exactly on its last byte.
    if (i === a.length + 1 || i === stream.length - 1) t.is(out.length, 1, `at byte ${i}`);
    else t.is(out.length, 0, `at byte ${i}`);
    got.push(...out);
  }
  t.deepEqual(got, [a, b]);
  t.is(reader.buffered, 0);
});

test('TcpFrameReader: several frames in one chunk, a partial one left buffered', (t) => {
  const msgs = [rawQuery('a.test'), Buffer.alloc(0), rawQuery('c.test')];
  const next = encodeTcpFrame(rawQuery('d.test'));
  const reader = new TcpFrameReader();
  const out = reader.push(Buffer.concat([...msgs.map(encodeTcpFrame), next.subarray(0, 5)]));
  t.deepEqual(out, msgs);
  t.is(reader.buffered, 3); // body bytes of the 4th frame; its 2-byte prefix is consumed
  t.deepEqual(reader.push(next.subarray(5)), [rawQuery('d.test')]);
  t.is(reader.buffered, 0);
  t.deepEqual(reader.push(Buffer.alloc(0)), []);
});

test('TcpFrameReader: a frame over the maximum throws as soon as its length is known', (t) => {
  const reader = new TcpFrameReader(100);
  t.deepEqual(reader.push(Buffer.from([0, 100, ...Array<number>(100).fill(1)])).length, 1);
  t.deepEqual(reader.push(Buffer.from([0])), []);
  t.throws(() => reader.push(Buffer.from([101])), { instanceOf: RangeError });
  // It stays failed: the connection is to be dropped.
  t.throws(() => reader.push(encodeTcpFrame(Buffer.alloc(1))), { instanceOf: RangeError });
  t.throws(() => new TcpFrameReader().push(Buffer.from([0x10, 0x01])), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------------------------
// Fuzzing: never throw, always a well-formed ParseResult

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const NAME_RE = /^(?:[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*)?$/;

function checkResult(t: { fail(m: string): void }, msg: Buffer, r: ParseResult, stats: { ok: number; bad: number }): void {
  if (r.ok) {
    stats.ok++;
    const q = r.query;
    if (!NAME_RE.test(q.question.name) || nameBytes(q.question.name).length > 255 || q.opcode !== 0 || q.id !== msg.readUInt16BE(0)) {
      t.fail(`bad query from ${msg.toString('hex')}: ${JSON.stringify(q)}`);
    }
    // Whatever parses must also build and decode back to the same question.
    const res = parseResponse(buildResponse(q, RCODE.NOERROR, [{ type: 1, ttl: 1, address: '10.0.0.1' }]));
    if (res.questions[0]?.name !== q.question.name || res.id !== q.id) t.fail(`response mismatch for ${msg.toString('hex')}`);
  } else {
    stats.bad++;
    const rcodes: number[] = [RCODE.FORMERR, RCODE.NOTIMP, RCODE.REFUSED];
    const idOk = msg.length >= 2 ? r.id === msg.readUInt16BE(0) : r.id === undefined;
    if (!rcodes.includes(r.rcode) || typeof r.reason !== 'string' || r.reason === '' || !idOk) {
      t.fail(`bad failure from ${msg.toString('hex')}: ${JSON.stringify(r)}`);
    }
  }
  const err = buildError(msg, r.ok ? RCODE.SERVFAIL : r.rcode, r.ok ? undefined : r.id);
  if (err !== undefined) {
    const d = parseResponse(err);
    if (!d.qr || d.id !== msg.readUInt16BE(0) || d.answers.length !== 0) t.fail(`bad error reply for ${msg.toString('hex')}`);
  } else if (msg.length >= 4 && ((msg[2] ?? 0) & 0x80) === 0) {
    t.fail(`no error reply for ${msg.toString('hex')}`);
  }
}

test('fuzz: 5,000 random buffers never throw', (t) => {
  const rnd = mulberry32(0x5a4d);
  const stats = { ok: 0, bad: 0 };
  for (let i = 0; i < 5000; i++) {
    const len = Math.floor(rnd() * (i % 10 === 0 ? 5000 : 80));
    const msg = Buffer.alloc(len);
    for (let j = 0; j < len; j++) msg[j] = Math.floor(rnd() * 256);
    // Give a third of them a plausible header so the parser gets past the counts.
    if (len >= 12 && i % 3 === 0) {
      msg.set([0, 1, 0, 0, 0, 0, 0, 0], 4);
      msg[2] = (msg[2] ?? 0) & 0x07; // QR and opcode clear
    }
    checkResult(t, msg, parseQuery(msg), stats);
  }
  t.is(stats.ok + stats.bad, 5000);
});

test('fuzz: 5,000 mutations of valid queries never throw', (t) => {
  const rnd = mulberry32(0xd15);
  const pick = (n: number): number => Math.floor(rnd() * n);
  const seeds = [
    rawQuery('api.example.test'),
    rawQuery('a.b', QTYPE.AAAA, { ar: 1 }, opt(4096, 0, [...u16(10), ...u16(8), 1, 2, 3, 4, 5, 6, 7, 8])),
    rawQuery('_x._tcp.y', QTYPE.SRV, { ar: 1 }, opt(1232, 0, [], [0xc0, 22])),
    rawQuery('', QTYPE.NS),
  ];
  for (const s of seeds) t.true(parseQuery(s).ok);
  const stats = { ok: 0, bad: 0 };
  for (let i = 0; i < 5000; i++) {
    let m = [...(seeds[i % seeds.length] as Buffer)];
    for (let k = 1 + pick(4); k > 0; k--) {
      const at = pick(m.length + 1);
      switch (pick(7)) {
        case 0:
          m[at] = pick(256);
          break; // overwrite a byte
        case 1:
          m[at] = (m[at] ?? 0) ^ (1 << pick(8));
          break; // flip a bit
        case 2:
          m.splice(at, 0, pick(256));
          break; // insert
        case 3:
          m.splice(at, 1);
          break; // delete
        case 4:
          m = m.slice(0, at);
          break; // truncate
        case 5:
          m.splice(at, 0, 0xc0 | pick(4), pick(64));
          break; // plant a pointer
        default:
          m[at] = m[at] === undefined ? 0 : pick(64);
          break; // plausible label length
      }
    }
    checkResult(t, Buffer.from(m), parseQuery(Buffer.from(m)), stats);
  }
  // The mix must exercise both outcomes, or the generator is broken.
  t.true(stats.ok > 200, `ok=${stats.ok}`);
  t.true(stats.bad > 2000, `bad=${stats.bad}`);
});

// ---------------------------------------------------------------------------------------------
// Interop: Node's resolver (c-ares) against a UDP+TCP server built on this codec, on loopback.

interface FakeDns {
  port: number;
  udpQueries: number;
  tcpQueries: number;
  close(): Promise<void>;
}

async function startFakeDns(table: Record<string, string[]>): Promise<FakeDns> {
  const answer = (msg: Buffer, maxSize?: number): Buffer | undefined => {
    const r = parseQuery(msg);
    if (!r.ok) return r.reason === 'not a query' ? undefined : buildError(msg, r.rcode, r.id);
    const q = r.query;
    const addrs = table[q.question.name];
    if (!addrs) return buildResponse(q, RCODE.NXDOMAIN, []);
    const answers = q.question.type === QTYPE.A ? addrs.map((address) => ({ type: QTYPE.A, ttl: 120, address })) : [];
    return buildResponse(q, RCODE.NOERROR, answers, maxSize === undefined ? {} : { maxSize });
  };
  const udp = dgram.createSocket('udp4');
  const state = { udpQueries: 0, tcpQueries: 0 };
  udp.on('message', (msg, rinfo) => {
    state.udpQueries++;
    const reply = answer(msg);
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const port = udp.address().port;
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    const reader = new TcpFrameReader();
    sock.on('data', (chunk) => {
      try {
        for (const msg of reader.push(chunk)) {
          state.tcpQueries++;
          const reply = answer(msg, 65535);
          if (reply) sock.write(encodeTcpFrame(reply));
        }
      } catch {
        sock.destroy();
      }
    });
    sock.on('error', () => sock.destroy());
  });
  // c-ares retries a truncated answer over TCP on the same port number.
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, '127.0.0.1', resolve);
    });
  } catch (err) {
    udp.close();
    throw err;
  }
  return {
    port,
    get udpQueries() {
      return state.udpQueries;
    },
    get tcpQueries() {
      return state.tcpQueries;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
    },
  };
}

test('interop: node:dns resolves allowed names, NXDOMAIN is ENOTFOUND, TC falls back to TCP', async (t) => {
  const many = Array.from({ length: 100 }, (_, i) => `10.77.2.${i + 1}`);
  let fake: FakeDns | undefined;
  // The TCP port equal to the random UDP one may be taken; retry a few times.
  for (let i = 0; i < 5 && !fake; i++) {
    fake = await startFakeDns({ 'api.example.test': ['10.77.0.5', '10.77.0.6'], 'many.example.test': many }).catch(() => undefined);
  }
  if (!fake) return t.fail('could not bind UDP and TCP on the same loopback port');
  try {
    const resolver = new dnsPromises.Resolver({ timeout: 500, tries: 1 });
    resolver.setServers([`127.0.0.1:${fake.port}`]);
    const got = await resolver.resolve4('API.example.test', { ttl: true });
    t.deepEqual(
      got.sort((a, b) => a.address.localeCompare(b.address)),
      [
        { address: '10.77.0.5', ttl: 120 },
        { address: '10.77.0.6', ttl: 120 },
      ],
    );
    await t.throwsAsync(resolver.resolve4('denied.example.test'), { code: 'ENOTFOUND' });
    // An allowed name without records of the asked type: NOERROR/NODATA.
    await t.throwsAsync(resolver.resolve6('api.example.test'), { code: 'ENODATA' });
    t.is(fake.tcpQueries, 0);
    // 100 A records exceed both 512 and 1232 bytes: TC=1 over UDP, full answer over TCP.
    const all = await resolver.resolve4('many.example.test');
    t.deepEqual(all.sort(), [...many].sort());
    t.true(fake.tcpQueries >= 1);
    t.true(fake.udpQueries >= 4);
  } finally {
    await fake.close();
  }
});
