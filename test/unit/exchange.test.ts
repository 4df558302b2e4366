/**
 * The relay's core played with no socket (test/helpers/exchange-play.ts): requests from the
 * sandbox, upstream connections and their bytes are events; what reaches each side, and the
 * audit lines, are asserted byte for byte. The wiring over real sockets is
 * test/integration/relay.test.ts.
 */
import test from 'ava';
import { API, AUTH, OPEN, SECRET, UpRecorder, ok, own, playWorld, req, settle, upHead } from '../helpers/exchange-play.js';

const MALFORMED = own(400, 'Bad Request', { error: 'malformed request' }, true);

test('pipelining: three requests in one read go upstream one at a time, in order, each with the credential, over the released connection', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/a', API, ['X-Seq: 1']) + req('GET', '/b?q=1', API, ['X-Seq: 2']) + req('GET', '/c', API));
  t.is(p.dials.length, 1, 'one request at a time');
  t.false(p.isReading, 'pipelined requests waiting: the sandbox is not read');
  const u = p.ready();
  t.is(u.sent, upHead('GET', '/a', ['X-Seq: 1']));
  u.answer(ok('one'));
  t.is(p.take(), ok('one'));
  await settle();
  t.true(u.released, 'back to the pool once complete');
  t.is(p.dials.length, 2, 'the next request starts once the first is answered');
  u.sent = '';
  u.released = false;
  p.ready(u);
  t.is(u.sent, upHead('GET', '/b?q=1', ['X-Seq: 2']));
  u.answer(ok('two'));
  await settle();
  u.sent = '';
  p.ready(u);
  t.is(u.sent, upHead('GET', '/c'));
  u.answer(ok('three'));
  t.is(p.take(), ok('two') + ok('three'));
  await settle();
  t.true(p.isReading, 'all answered: reading again');
  t.deepEqual(
    w.http().map((l) => [l.path, l.status, l.credential, l.decision]),
    [
      ['/a', 200, 'k', 'allow'],
      ['/b', 200, 'k', 'allow'],
      ['/c', 200, 'k', 'allow'],
    ],
  );
});

test('a chunked request body is re-framed by sandgate: extensions, leading zeros and upper-case sizes gone, trailers dropped, nothing leaks into the next request', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  const body = '5;ext=1\r\nhello\r\n000000000A;foo="bar"\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n';
  p.send(req('POST', '/up', API, ['Content-Type: text/plain', 'Transfer-Encoding: chunked'], body) + req('GET', '/next', API));
  const u = p.ready();
  t.is(u.sent, upHead('POST', '/up', ['Content-Type: text/plain'], 'chunked') + '5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n');
  u.answer(ok('done'));
  await settle();
  u.sent = '';
  p.ready(u);
  t.is(u.sent, upHead('GET', '/next'), 'no trailer field became a field of the next request');
  t.like(w.http()[0], { path: '/up', status: 200, bytesOut: 15 });
});

test('smuggling: CL+TE, two Content-Lengths, "chunked, identity", bare LF, obs-fold and "xchunked" get 400 and no connection is asked for', (t) => {
  const bad = [
    ['HPE_INVALID_TRANSFER_ENCODING', `POST /a HTTP/1.1\r\nHost: ${API}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['HPE_UNEXPECTED_CONTENT_LENGTH', `POST /b HTTP/1.1\r\nHost: ${API}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`],
    ['HPE_INVALID_TRANSFER_ENCODING', `POST /c HTTP/1.1\r\nHost: ${API}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
    ['HPE_INVALID_VERSION', `GET /d HTTP/1.1\nHost: ${API}\n\n`],
    ['HPE_INVALID_HEADER_TOKEN', `GET /e HTTP/1.1\r\nHost: ${API}\r\nX-Fold: a\r\n b\r\n\r\n`],
    ['HPE_INVALID_TRANSFER_ENCODING', `POST /f HTTP/1.1\r\nHost: ${API}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
  ] as const;
  for (const [code, bytes] of bad) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(bytes);
    t.is(p.take(), MALFORMED, code);
    t.true(p.closedGracefully);
    t.is(p.dials.length, 0, `${code}: nothing went upstream`);
    t.like(w.http()[0], { decision: 'deny', status: 400, host: API, reason: `malformed request (${code})` });
  }
});

test('domain fronting on a kept-alive connection: a pipelined request naming another host gets 403 and the connection closes', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/one', API) + req('GET', '/two', 'other.example.test') + req('GET', '/three', API));
  const u = p.ready();
  u.answer(ok('1'));
  await settle();
  const reason = `Host other.example.test does not match the TLS server name ${API} (domain fronting)`;
  t.is(p.take(), ok('1') + own(403, 'Forbidden', { error: 'denied', reason }, true));
  t.true(p.closedGracefully);
  t.is(p.dials.length, 1, 'the third request never starts');
  t.like(w.http()[1], { path: '/two', decision: 'deny', status: 403, host: 'other.example.test', reason });
});

test('HTTP/1.0 without keep-alive: Connection: close, the connection closes; with keep-alive, an unknown length is close-delimited', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/old', API, [], '', '1.0'));
  const u = p.ready();
  t.is(u.sent, upHead('GET', '/old'), 'upstream, the request is HTTP/1.1');
  u.answer(ok('x'));
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx');
  t.true(p.closedGracefully);

  const q = w.play({ sni: API });
  q.send(req('GET', '/k', API, ['Connection: keep-alive'], '', '1.0'));
  const v = q.ready();
  t.is(v.sent, upHead('GET', '/k'), 'Connection is hop-by-hop');
  v.answer(ok('y'));
  t.is(q.take(), 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\ny');
  t.false(q.closedGracefully);
  await settle();
  q.send(req('GET', '/cd', API, ['Connection: keep-alive'], '', '1.0'));
  const v2 = q.ready(v);
  v2.answer('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the close\n');
  v2.reader.end();
  t.is(q.take(), 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the close\n', 'never chunked to an HTTP/1.0 client');
  t.true(q.closedGracefully, 'the close delimits the body');
});

test('Expect: 100-continue is answered by sandgate once admitted; the upstream never sees Expect; a denied request gets no 100', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('POST', '/e', API, ['Expect: 100-continue', 'Content-Length: 5']));
  t.is(p.take(), 'HTTP/1.1 100 Continue\r\n\r\n');
  const u = p.ready();
  p.send('hello');
  t.is(u.sent, upHead('POST', '/e', ['Content-Length: 5']) + 'hello');
  u.answer(ok('fine'));
  t.is(p.take(), ok('fine'));

  const q = w.play({ sni: API });
  q.send(req('POST', '/e', 'other.example.test', ['Expect: 100-continue', 'Content-Length: 5']));
  t.false(q.take().includes('100 Continue'));
});

test('a close-delimited response reaches an HTTP/1.1 client chunked and complete; the connection stays usable', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/cd', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until ');
  u.answer('the close\n');
  u.reader.end();
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nbody until \r\na\r\nthe close\n\r\n0\r\n\r\n');
  t.false(p.closedGracefully || p.destroyed);
  t.true(u.destroyed, 'that upstream connection is not reused');
  await settle();
  p.send(req('GET', '/next', API));
  t.is(p.dials.length, 2);
});

test('1xx: a 103 is not relayed; the final response is, and the connection is reused', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/i', API));
  const u = p.ready();
  u.answer('HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n' + ok('final'));
  t.is(p.take(), ok('final'));
  await settle();
  t.true(u.released);
});

test('HEAD with Content-Length, 204 and 304 with Content-Length: no body bytes relayed; the connection stays in sync', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('HEAD', '/h', API) + req('GET', '/nc', API) + req('GET', '/nm', API) + req('GET', '/last', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n');
  await settle();
  p.ready(u);
  u.answer('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n');
  await settle();
  p.ready(u);
  u.answer('HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n');
  await settle();
  p.ready(u);
  u.answer(ok('last'));
  t.is(
    p.take(),
    'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n' +
      ok('last'),
  );
  t.false(u.destroyed);
});

test('an HTTP/1.0 response without keep-alive goes to the sandbox as HTTP/1.1; its upstream connection is closed, not pooled', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/o', API));
  const u = p.ready();
  u.answer('HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi');
  await settle();
  t.true(u.destroyed);
  t.false(u.released);
});

test('an upstream that closes mid-body: the sandbox gets the truncated bytes and a dropped connection; the audit line has the error', async (t) => {
  for (const framing of ['length', 'chunked'] as const) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/t', API));
    const u = p.ready();
    u.answer(
      framing === 'length' ? 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart' : 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n',
    );
    u.reader.end();
    await settle();
    t.true(p.destroyed, `${framing}: dropped, never ended cleanly`);
    t.true(p.take().endsWith('part' + (framing === 'chunked' ? '\r\n' : '')));
    t.like(w.http()[0], {
      status: 200,
      error: framing === 'length' ? 'upstream closed before the response was complete' : 'response stream: HPE_INVALID_EOF_STATE',
    });
  }
});

test('malformed upstream responses (garbage status line, CL+TE, two Content-Lengths, unasked 101) get 502; the connection stays usable', async (t) => {
  const cases = [
    ['HTTP/1.1 2OO OK\r\n\r\n', 'HPE_INVALID_STATUS'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'HPE_INVALID_TRANSFER_ENCODING'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', 'HPE_UNEXPECTED_101'],
  ] as const;
  for (const [answer, code] of cases) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/m', API));
    const u = p.ready();
    u.answer(answer);
    t.is(p.take(), own(502, 'Bad Gateway', { error: 'bad gateway', reason: 'upstream unreachable' }, false), code);
    t.true(u.destroyed);
    t.false(p.closedGracefully || p.destroyed, 'kept alive');
    t.like(w.http()[0], { status: 502, reason: `upstream sent a malformed response (${code})` });
  }
});

test("an upstream that answers twice: the unasked answer closes that connection and is never relayed as the next request's", async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/d1', API) + req('GET', '/d2', API));
  const u = p.ready();
  u.answer(ok('first') + ok('unasked'));
  await settle();
  t.true(u.destroyed, 'the connection that answered twice is closed');
  t.false(u.released);
  t.is(p.dials.length, 2);
  const v = p.ready();
  v.answer(ok('second'));
  t.is(p.take(), ok('first') + ok('second'));
});

test('an idle pooled connection that sends bytes is closed (UpstreamReader with no owner)', (t) => {
  const u = new UpRecorder(1);
  u.answer(ok('nobody asked'));
  t.true(u.destroyed);
});

test('an upstream answering before the request body is complete (413): relayed; the rest of the body goes nowhere; that connection is not reused', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('POST', '/big', API, ['Content-Length: 10'], 'abc'));
  const u = p.ready();
  const early = 'HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig!';
  u.answer(early);
  t.is(p.take(), early);
  t.true(u.destroyed, 'the upstream was not sent the whole request: not pooled');
  p.send('defghij' + req('GET', '/after', API));
  await settle();
  t.is(u.sent, upHead('POST', '/big', ['Content-Length: 10']) + 'abc', 'the rest never went upstream');
  t.is(p.dials.length, 2, 'the next request is read and started');
  const v = p.ready();
  t.is(v.sent, upHead('GET', '/after'));
});

test('stale pooled connection: reset (RST) or closed (FIN) on reuse before any answer, a GET without a body is retried once on a fresh connection', async (t) => {
  for (const how of ['rst', 'fin'] as const) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/s', API));
    const stale = new UpRecorder(99);
    p.ready(stale);
    if (how === 'rst') {
      stale.reader.error(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
      stale.reader.closed();
    } else stale.reader.end();
    await settle();
    t.is(p.dials.length, 2, `${how}: retried`);
    const fresh = p.ready();
    t.is(fresh.sent, upHead('GET', '/s'));
    fresh.answer(ok('ok'));
    t.is(p.take(), ok('ok'));
    // The retry is not retried again.
    const q = w.play({ sni: API });
    q.send(req('GET', '/s2', API));
    p.dials.length = 0;
    const s2 = new UpRecorder(98);
    q.ready(s2);
    s2.reader.end();
    await settle();
    q.ready().reader.error(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    t.is(q.dials.length, 2, 'one retry only');
  }
});

test('stale pooled connection: a POST (even without a body), a request with a body, or a fresh connection is never replayed: 502', async (t) => {
  const cases: [string, boolean][] = [
    [req('POST', '/p', API), true],
    [req('PUT', '/b', API, ['Content-Length: 2'], 'hi'), true],
    [req('GET', '/g', API), false],
  ];
  for (const [bytes, pooled] of cases) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(bytes);
    const u = pooled ? p.ready(new UpRecorder(7)) : p.ready();
    u.reader.error(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    u.reader.closed();
    t.is(p.dials.length, 1, bytes.split('\r\n')[0]);
    t.true(p.take().startsWith('HTTP/1.1 502 Bad Gateway\r\n'));
    t.like(w.http()[0], { status: 502, reason: 'upstream unreachable (ECONNRESET)' });
  }
});

test('response trailers are dropped and never become fields of the next response on the pooled connection', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/t1', API) + req('GET', '/t2', API));
  const u = p.ready();
  // "..." can begin none of the secret's forms (base64 runs included): the scrubber holds none of it back.
  u.answer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n...\r\n0\r\nX-Trailer: leak\r\n\r\n');
  await settle();
  p.ready(u);
  u.answer(ok('two'));
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n...\r\n0\r\n\r\n' + ok('two'));
});

test('plain HTTP without interception: relayed as sent (no credential); the upstream is the name the sandbox asked for, not TLS', (t) => {
  const w = playWorld();
  const p = w.play();
  p.send(req('GET', '/x', OPEN, ['Authorization: mine']));
  t.deepEqual(p.dials[0]?.target, { tls: false, host: OPEN, port: 80, hostHeader: OPEN });
  const u = p.ready();
  t.is(u.sent, `GET /x HTTP/1.1\r\nHost: ${OPEN}\r\nAuthorization: mine\r\n\r\n`);
  u.answer(ok('plain'));
  t.is(p.take(), ok('plain'));
  t.like(w.http()[0], { proto: 'http', decision: 'allow', status: 200, credential: undefined });
});

test('a response under a transfer coding other than chunked gets 502 and nothing of its body, with or without a credential', (t) => {
  for (const te of ['gzip', 'gzip, chunked', 'chunked, gzip', 'x-custom', 'CHUNKED, br']) {
    for (const sni of [API, undefined]) {
      const w = playWorld();
      const p = sni !== undefined ? w.play({ sni }) : w.play();
      p.send(req('GET', '/te', sni ?? OPEN));
      const u = p.ready();
      u.answer(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\nsecret-ish body`);
      t.is(p.take(), own(502, 'Bad Gateway', { error: 'bad gateway', reason: 'the upstream response cannot be relayed safely' }, false), te);
      t.true(u.destroyed);
      t.regex(String(w.http()[0]?.reason), /^upstream sent Transfer-Encoding .*, which sandgate does not relay$/);
    }
  }
});

test('a response field whose name carries the secret (any case) gets 502; the name never reaches the sandbox', (t) => {
  for (const name of [SECRET, SECRET.toUpperCase()]) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/n', API));
    p.ready().answer(`HTTP/1.1 200 OK\r\nX-${name}: 1\r\nContent-Length: 0\r\n\r\n`);
    const got = p.take();
    t.false(got.toLowerCase().includes(SECRET.toLowerCase()));
    t.true(got.startsWith('HTTP/1.1 502 Bad Gateway\r\n'));
    t.like(w.http()[0], { status: 502, reason: 'upstream sent a header field whose name carries the credential' });
  }
});

test('a request head slower than 30 s from its first byte gets 408 and the connection closes', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(`GET /slow HTTP/1.1\r\nHost: ${API}\r\n`);
  p.clock += 30_001;
  p.send('X-More: 1\r\n');
  t.is(p.take(), own(408, 'Request Timeout', { error: 'request timeout' }, true));
  t.true(p.closedGracefully);
  t.like(w.http()[0], { status: 408, reason: 'request head not complete in time' });
});

test('oversized request head: 431', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(`GET / HTTP/1.1\r\nHost: ${API}\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
  t.is(p.take(), own(431, 'Request Header Fields Too Large', { error: 'request header fields too large' }, true));
});

test("backpressure: an upstream that stops accepting holds the sandbox's reads until it drains", (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('POST', '/bp', API, ['Content-Length: 6'], 'ab'));
  const u = p.ready();
  u.accepts = false;
  p.send('cd');
  t.false(p.isReading);
  u.reader.drain();
  t.true(p.isReading);
  t.is(u.sent, upHead('POST', '/bp', ['Content-Length: 6']) + 'abcd');
});

test('the sandbox closing mid-exchange destroys the upstream attempt and logs 499; a pending connect is aborted', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/gone', API));
  p.conn.closed();
  t.true(p.dials[0]?.aborted);
  t.like(w.http()[0], { status: 499, error: 'sandbox closed the connection' });

  const q = w.play({ sni: API });
  q.send(req('GET', '/gone2', API));
  const u = q.ready();
  q.conn.closed();
  t.true(u.destroyed);
});

test('a WebSocket upgrade is handed over with the bytes after its head; other upgrades get 400', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/ws', API, ['Connection: Upgrade', 'Upgrade: websocket']) + 'FRAME');
  t.true(p.stopped);
  t.is(p.upgrades.length, 1);
  t.is(p.upgrades[0]?.rest.toString('latin1'), 'FRAME');
  t.is(p.upgrades[0]?.adm.host, API);

  const q = w.play({ sni: API });
  q.send(req('GET', '/h2c', API, ['Connection: Upgrade', 'Upgrade: h2c']));
  t.is(q.take(), own(400, 'Bad Request', { error: 'bad request', reason: 'upgrade to "h2c" is not supported (only websocket)' }, true));
  t.is(q.upgrades.length, 0);
});

test('the credential replaces what the sandbox sent under its name, never duplicates it', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/c', API, ['authorization: Bearer mine', 'Accept-Encoding: gzip', 'X-Keep: 1']));
  t.is(p.ready().sent, `GET /c HTTP/1.1\r\nHost: ${API}\r\nX-Keep: 1\r\nauthorization: ${AUTH}\r\nAccept-Encoding: identity\r\n\r\n`);
});

test('the sandbox finishing sending (half-close) with a request in flight: it is answered, then the connection closes', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/fin', API));
  p.conn.ended();
  t.false(p.closedGracefully, 'not while the request is in flight');
  p.ready().answer(ok('last words'));
  await settle();
  t.is(p.take(), ok('last words'));
  t.true(p.closedGracefully);
});

test('the keep-alive timer drops an idle connection, never one with a request in flight', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/slow-upstream', API));
  p.conn.idle();
  t.false(p.destroyed);
  const q = w.play({ sni: API });
  q.conn.idle();
  t.true(q.destroyed);
});

// Dropped (as fields Connection names are), the Content-Length would leave the body to be read
// upstream as a request sandgate never parsed, admitted or checked (request smuggling), and an
// unfinished smuggled head would swallow the next request on the pooled connection, credential included.
test('a request whose Connection field names Content-Length keeps its Content-Length upstream: its body is never read as a request', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  const inner = `DELETE /admin HTTP/1.1\r\nHost: ${API}\r\n\r\n`;
  p.send(req('POST', '/carrier', API, ['Connection: content-length', `Content-Length: ${inner.length}`], inner));
  const u = p.ready();
  t.is(u.sent, upHead('POST', '/carrier', [`Content-Length: ${inner.length}`]) + inner);
});

// Dropped, the sandbox would get a body with no length on a kept-alive connection and read the
// next response as part of it.
test('a response whose Connection field names Content-Length reaches the sandbox with its Content-Length', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/r', API));
  p.ready().answer('HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc');
});

// The parser fails after the attempt has finished: the connection went back to the pool with its
// parser in error, and the next request on it (another sandbox's, maybe) got a 502.
test('garbage after a complete response in the same read closes that connection; it never goes back to the pool', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/g', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nnot a response\r\n\r\n');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n');
  await settle();
  t.true(u.destroyed, 'the connection is closed');
  t.false(u.released, 'not back in the pool');
  t.like(w.http()[0], { path: '/g', status: 200 });
});
