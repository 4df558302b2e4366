/**
 * The core's HTTP/2 seam, played with no socket: a stream's pseudo-header fields as the request the
 * core reads (src/http/h2-stream.ts, streamRequest), and an exchange on a connection that frames
 * bodies itself (ExchangeConn.framesBodies): its head goes to sendHead, its body bare (never
 * chunked), its trailers scrubbed to sendTrailers. The wiring over node:http2 is
 * test/integration/h2.test.ts.
 */
import test from 'ava';
import { Exchange, type ExchangeConn } from '../../src/http/exchange.js';
import { streamRequest } from '../../src/http/h2-stream.js';
import { Incoming } from '../../src/http/incoming.js';
import type { Framing } from '../../src/http/response-head.js';
import { API, SECRET, mask, playWorld, settle, type Play } from '../helpers/exchange-play.js';

const END_STREAM = 1;

test('a stream as a request: :authority is Host, a different host field a second Host, cookies joined, a body without length chunked, CONNECT targets its authority', (t) => {
  const h = streamRequest({ ':method': 'GET', ':path': '/p?q=1', ':authority': API }, END_STREAM, [
    ':method',
    'GET',
    ':path',
    '/p?q=1',
    ':authority',
    API,
    'cookie',
    'a=1',
    'x-k',
    'v',
    'cookie',
    'b=2',
  ]);
  t.like(h, { method: 'GET', url: '/p?q=1', upgrade: false });
  t.deepEqual(h.rawHeaders, ['host', API, 'x-k', 'v', 'cookie', 'a=1; b=2']);
  const same = streamRequest({ ':authority': API }, END_STREAM, [':authority', API, 'host', API.toUpperCase()]);
  t.deepEqual(same.rawHeaders, ['host', API], 'a host field equal to :authority is the same Host');
  const other = streamRequest({ ':authority': API }, END_STREAM, [':authority', API, 'host', 'evil.example.test']);
  t.deepEqual(other.rawHeaders, ['host', API, 'host', 'evil.example.test'], 'admission refuses two Hosts');
  const body = streamRequest({ ':method': 'POST', ':path': '/u', ':authority': API }, 0, [':authority', API]);
  t.deepEqual(body.rawHeaders, ['host', API, 'transfer-encoding', 'chunked']);
  const sized = streamRequest({ ':method': 'POST', ':path': '/u', ':authority': API }, 0, [':authority', API, 'content-length', '3']);
  t.deepEqual(sized.rawHeaders, ['host', API, 'content-length', '3']);
  const connect = streamRequest({ ':method': 'CONNECT', ':authority': 'evil.example.test:443' }, 0, [
    ':method',
    'CONNECT',
    ':authority',
    'evil.example.test:443',
  ]);
  t.is(connect.url, 'evil.example.test:443', 'no origin-form target: admission answers 400');
});

/** An exchange's connection as an HTTP/2 stream is one: records heads, trailers, answers and the end. */
class StreamRecorder implements ExchangeConn {
  readonly framesBodies = true;
  whenAnswered(fn: () => void): void {
    fn();
  }
  readonly heads: { status: number; raw: readonly string[]; framing: Framing; decoded: boolean }[] = [];
  readonly trailers: (readonly string[])[] = [];
  readonly answers: { status: number; body: Record<string, unknown> }[] = [];
  done = 0;
  cut = false;
  constructor(readonly p: Play) {}
  get info() {
    return this.p.conn.info;
  }
  get io() {
    return this.p;
  }
  respond(status: number, body: Record<string, unknown>): void {
    this.answers.push({ status, body });
  }
  exchangeDone(): void {
    this.done++;
  }
  blockReading(): void {}
  checkBuffered(): void {}
  upgrade(): void {
    throw new Error('no upgrade on a stream');
  }
  cutShort(): void {
    this.cut = true;
  }
  sendContinue(): void {}
  sendHead(status: number, _m: string, raw: readonly string[], _f: unknown, _n: unknown, decoded: boolean, framing: Framing): void {
    this.heads.push({ status, raw, framing, decoded });
  }
  sendTrailers(raw: readonly string[]): void {
    this.trailers.push(raw);
  }
}

function streamExchange(path: string): { p: Play; c: StreamRecorder; ex: Exchange } {
  const w = playWorld();
  const p = w.play({ sni: API });
  const c = new StreamRecorder(p);
  const inc = new Incoming(streamRequest({ ':method': 'GET', ':path': path, ':authority': API }, END_STREAM, [':authority', API]));
  inc.end();
  const ex = new Exchange(c, inc);
  ex.run();
  return { p, c, ex };
}

test('on a stream, a chunked upstream body reaches the connection bare (framing raw), the echoed secret masked; one end', async (t) => {
  const { p, c } = streamExchange('/chunked');
  const u = p.ready();
  u.answer(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo: ${SECRET}\r\n\r\n5\r\nhello\r\n${SECRET.length.toString(16)}\r\n${SECRET}\r\n0\r\n\r\n`);
  await settle();
  t.is(c.heads.length, 1);
  t.is(c.heads[0]?.framing, 'raw', 'no chunk framing: the stream frames the body');
  t.deepEqual(c.heads[0]?.raw, ['Transfer-Encoding', 'chunked', 'X-Echo', SECRET], 'the connection drops hop-by-hop fields and scrubs values itself');
  t.is(p.take(), `hello${mask(SECRET)}`);
  t.is(c.done, 1);
});

test("on a stream, the upstream's trailers are scrubbed; a trailer named with the secret cuts the response short", async (t) => {
  const a = streamExchange('/trailers');
  const u = a.p.ready();
  u.answer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n');
  a.ex.onResponseTrailers(['x-echo', `Bearer ${SECRET}`, 'x-done', 'yes']);
  t.deepEqual(a.c.trailers, [['x-echo', mask(`Bearer ${SECRET}`), 'x-done', 'yes']]);
  const b = streamExchange('/trailer-name');
  b.p.ready().answer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n');
  b.ex.onResponseTrailers([`x-${SECRET}`, 'v']);
  t.deepEqual(b.c.trailers, []);
  t.true(b.c.cut, 'the response is cut short, never relayed with the name');
});
