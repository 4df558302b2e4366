import test from 'ava';
import { Parser, type AfterHead, type ParserEvents } from '../../src/http/llhttp.js';
import { available, NodeParser } from '../helpers/node-http-parser.js';

// Parity with Node's own llhttp binding, the parser sandgate used before it pinned its own build:
// the same heads, body bytes, completions, consumed counts, error codes and error positions, for
// every message below whole, cut at every byte, one byte per read, and for mutated messages.
// After a stop (upgrade, CONNECT, 'raw') Node's binding returned meaningless counts for further
// bytes; the new parser takes none (test/unit/llhttp.test.ts), so feeding stops there.

type Ctor = new (kind: 'request' | 'response', max: number, events: ParserEvents) => Pick<Parser, 'execute' | 'finish' | 'free'>;

function run(P: Ctor, kind: 'request' | 'response', pieces: Buffer[], after: (i: number) => AfterHead, max: number): string {
  const log: string[] = [];
  let heads = 0;
  let stopped = false;
  const p = new P(kind, max, {
    onHead: (h) => {
      log.push(`head ${JSON.stringify(h)}`);
      const a = after(heads++);
      if (a === 'raw' || h.upgrade) stopped = true;
      return a;
    },
    onBody: (c) => {
      log.push(`body ${c.toString('latin1')}`);
    },
    onComplete: () => {
      log.push('complete');
    },
  });
  for (const piece of pieces) {
    // Each read lands in one buffer that the next read overwrites.
    const shared = Buffer.alloc(piece.length + 8, 0x5a);
    piece.copy(shared);
    const r = p.execute(shared.subarray(0, piece.length));
    shared.fill(0x41);
    if (typeof r !== 'number') {
      log.push(`error ${r.code ?? ''} at ${r.code === 'HPE_HEADER_OVERFLOW' ? '-' : String(r.bytesParsed)}`);
      break;
    }
    log.push(`parsed ${r}`);
    if (stopped) break;
  }
  if (!stopped) log.push(`finish ${p.finish()?.code ?? 'ok'}`);
  p.free();
  return log.join('\n');
}

const requests = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX:\r\nY: 1  \r\nZ: \t a b \t\r\n\r\n',
  'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello',
  'POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nT: x\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello',
  'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nxyz',
  'GET / HTTP/1.0\r\nHost: a\r\n\r\n',
  'GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'GET / HTTP/1.1\nHost: a\n\n',
  'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: a\r\nX: a\nb: c\r\n\r\n',
  'GET / HTTP/1.1\r\nHost : a\r\n\r\n',
  'GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n',
  'GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n',
  'GET / HTTP/1.1\r\nX: caf\xe9 \xa0\r\n\r\n',
  'GET /\x7f HTTP/1.1\r\n\r\n',
  'GET / HTTP/2.0\r\n\r\n',
  'FOO / HTTP/1.1\r\n\r\n',
  'PROPFIND / HTTP/1.1\r\n\r\n',
  'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
  'POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n',
  'POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx',
  '\r\n\r\nGET / HTTP/1.1\r\n\r\n',
  'GET / HTTP/1.1\r\n' + 'X-A: b\r\n'.repeat(100) + '\r\n',
  'GET / HTTP/1.1\r\nX: ' + 'a'.repeat(3000) + '\r\n\r\n',
  'GET / HTTP/1.1\r\n' + 'X: ' + 'a'.repeat(1000) + '\r\n' + 'Y: ' + 'a'.repeat(1000) + '\r\n\r\n',
  'GET /' + 'u'.repeat(2100) + ' HTTP/1.1\r\n\r\n',
  'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n' + 'T: ' + 'a'.repeat(2100) + '\r\n\r\n',
];
const responses = [
  'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc',
  'HTTP/1.1 201 Created Nicely\r\nX-Long: v\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\n\r\nclose-delimited body',
  'HTTP/1.0 200 OK\r\n\r\nbody',
  'HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx',
  'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw till close',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nraw till close',
  'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
  'HTTP/1.1 200 OK\nContent-Length: 0\n\n',
  'HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 20 OK\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort',
  'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab',
  'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n',
];

const afters: Array<(i: number) => AfterHead> = [() => 'body', () => 'none', () => 'raw'];

test("the pinned llhttp parses exactly as Node's own binding did: every message, every cut, mutated messages", (t) => {
  if (!available) {
    t.pass('Node no longer exposes _http_common: nothing to compare with');
    return;
  }
  let cases = 0;
  const same = (kind: 'request' | 'response', pieces: Buffer[], after: (i: number) => AfterHead, max: number, label: string): void => {
    cases++;
    const expected = run(NodeParser, kind, pieces, after, max);
    const actual = run(Parser, kind, pieces, after, max);
    if (actual !== expected) t.is(actual, expected, label);
  };
  for (const [kind, list] of [
    ['request', requests],
    ['response', responses],
  ] as const) {
    for (const s of list) {
      const msg = Buffer.from(s, 'latin1');
      for (const [ai, after] of afters.entries()) {
        for (const max of [16 * 1024, 1000]) {
          const label = `${kind} ${JSON.stringify(s.slice(0, 80))} after=${ai} max=${max}`;
          same(kind, [msg], after, max, label);
          for (let cut = 1; cut < msg.length; cut++) same(kind, [msg.subarray(0, cut), msg.subarray(cut)], after, max, `${label} cut ${cut}`);
          same(
            kind,
            [...msg].map((b) => Buffer.from([b])),
            after,
            max,
            `${label} byte by byte`,
          );
        }
      }
    }
  }
  // Mutations: bytes inserted, removed or replaced, favouring the ones framing is made of.
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = [0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x00, 0x7f, 0xff, 0x30, 0x61, 0x2c, 0x3b];
  for (let i = 0; i < 20000; i++) {
    const kind = rnd(2) === 0 ? 'request' : 'response';
    const list = kind === 'request' ? requests : responses;
    const b = [...Buffer.from(list[rnd(list.length)] ?? '', 'latin1')];
    for (let m = 1 + rnd(3); m > 0; m--) {
      const pos = rnd(b.length + 1);
      const op = rnd(3);
      const byte = rnd(2) === 1 ? (alphabet[rnd(alphabet.length)] ?? 0) : rnd(256);
      if (op === 0) b.splice(pos, 0, byte);
      else if (op === 1) b.splice(pos, 1);
      else b[pos] = byte;
    }
    const msg = Buffer.from(b);
    const cut = rnd(msg.length + 1);
    const pieces = cut > 0 && cut < msg.length ? [msg.subarray(0, cut), msg.subarray(cut)] : [msg];
    same(kind, pieces, afters[rnd(3)] ?? afters[0]!, rnd(2) === 1 ? 16 * 1024 : 200, `mutation ${i}: ${JSON.stringify(msg.toString('latin1'))}`);
  }
  t.log(`${cases} cases`);
  t.true(cases > 90000);
});
