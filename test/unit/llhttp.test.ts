import test from 'ava';
import { Parser, type AfterHead, type Head } from '../../src/http/llhttp.js';

function collect(after: AfterHead = 'body'): { p: Parser; heads: Head[]; body: Buffer[]; done: number[] } {
  const heads: Head[] = [];
  const body: Buffer[] = [];
  const done: number[] = [];
  const p = new Parser('response', 16 * 1024, {
    onHead: (h) => { heads.push(h); return after; },
    onBody: (c) => { body.push(Buffer.from(c)); },
    onComplete: () => { done.push(heads.length); },
  });
  return { p, heads, body, done };
}

test('a head split anywhere across two reads of one reused buffer parses intact (the relay reads into one shared buffer)', (t) => {
  const msg = Buffer.from('HTTP/1.1 201 Created Nicely\r\nX-Long-Header-Name: value-that-is-split\r\nContent-Length: 3\r\n\r\nabc');
  for (let cut = 1; cut < msg.length; cut++) {
    const shared = Buffer.alloc(4096);
    const c = collect();
    msg.copy(shared, 0, 0, cut);
    t.is(c.p.execute(shared.subarray(0, cut)), cut);
    shared.fill(0x5a); // the next read overwrites the buffer
    msg.copy(shared, 0, cut);
    c.p.execute(shared.subarray(0, msg.length - cut));
    t.is(c.heads[0]?.statusMessage, 'Created Nicely', `cut ${cut}`);
    t.deepEqual(c.heads[0]?.rawHeaders, ['X-Long-Header-Name', 'value-that-is-split', 'Content-Length', '3'], `cut ${cut}`);
    t.is(Buffer.concat(c.body).toString(), 'abc', `cut ${cut}`);
  }
});

test("'raw': execute stops at the end of the head; after reset() the next message parses", (t) => {
  const c = collect('raw');
  const two = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n');
  const n = c.p.execute(two);
  if (typeof n !== 'number') { t.fail(n.message); return; }
  t.is(n, two.indexOf('hello'));
  t.is(c.body.length, 0, 'the body is the caller\'s to read');
  c.p.reset();
  t.is(c.p.execute(two.subarray(n + 5)), two.length - n - 5);
  t.is(c.heads[1]?.statusCode, 204);
});

test('trailer fields are dropped at the end of a message, never carried into the next head', (t) => {
  const c = collect();
  c.p.execute(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
  t.is(c.heads.length, 2);
  t.deepEqual(c.heads[1]?.rawHeaders, ['Content-Length', '0']);
  t.deepEqual(c.done, [1, 2]);
});

test('strict: Content-Length with Transfer-Encoding, bare LF and obs-fold are parse errors', (t) => {
  for (const bad of [
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
    'HTTP/1.1 200 OK\nContent-Length: 0\n\n',
    'HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\nContent-Length: 0\r\n\r\n',
  ]) {
    const r = collect().p.execute(Buffer.from(bad));
    t.true(r instanceof Error, JSON.stringify(bad));
  }
});
