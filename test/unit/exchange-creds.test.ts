/**
 * The relay's core with credentials, played with no socket (test/helpers/exchange-play.ts):
 * token sources (ready at once, later, or never), the upstream refusing a token (401), and what
 * the sandbox may see of a response (scrubbing, decoding, refusals).
 */
import test from 'ava';
import { compileCredential, type Credential, type TokenRequest, type TokenSource } from '../../src/creds/credential.js';
import { TokenError } from '../../src/creds/token-error.js';
import { API, SECRET, mask, ok, own, playWorld, req, settle, upHead } from '../helpers/exchange-play.js';

const TOKEN = 'token.example.test';

/** A token source whose tokens are tok-1-…, tok-2-…; `fail` makes it refuse, `later` answer in a promise. */
class Tokens implements TokenSource {
  readonly id = 'k';
  readonly kind = 'authService' as const;
  readonly fingerprint = 'test';
  n = 0;
  readonly asked: TokenRequest[] = [];
  readonly rejected: string[] = [];
  fail: TokenError | undefined;
  later = false;

  token(i: number): string {
    return `tok-${i}-0123456789abcdef`;
  }

  acquire(req: TokenRequest): Credential | Promise<Credential> {
    this.asked.push(req);
    if (this.fail !== undefined)
      return this.later
        ? Promise.reject(this.fail)
        : (() => {
            throw this.fail;
          })();
    const c = compileCredential('k', { secret: { env: 'X' }, header: 'Authorization', format: 'Bearer {secret}' }, this.token(++this.n));
    return this.later ? Promise.resolve(c) : c;
  }

  reject(_req: TokenRequest, used: Credential): void {
    this.rejected.push(used.secret);
  }

  stats(): ReturnType<TokenSource['stats']> {
    return { entries: 0, hits: 0, misses: 0, coalesced: 0, fetches: 0, refreshes: 0, failures: 0, invalidations: 0, evictions: 0 };
  }
}

const tokHead = (method: string, path: string, tok: string, fields: string[] = []): string =>
  `${method} ${path} HTTP/1.1\r\nHost: ${TOKEN}\r\n${fields.map((f) => `${f}\r\n`).join('')}authorization: Bearer ${tok}\r\nAccept-Encoding: identity\r\n\r\n`;

/** A chunked body as sandgate frames it (lower-case hex sizes, no extensions, no trailers), decoded. */
function dechunk(text: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const nl = text.indexOf('\r\n', at);
    const n = parseInt(text.slice(at, nl), 16);
    if (n === 0) return out;
    out += text.slice(nl + 2, nl + 2 + n);
    at = nl + 2 + n + 2;
  }
}

const UNAUTHORIZED = 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\nno way';

test('a token ready at once: injected; the token service is asked about this request (sandbox, host, port, method, path)', (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('GET', '/t?q=1', TOKEN));
  t.is(p.ready().sent, tokHead('GET', '/t?q=1', src.token(1)));
  t.like(src.asked[0], { sandbox: 's', host: TOKEN, port: 443, method: 'GET', path: '/t' });
});

test('401 to a GET: the token is dropped and the request retried once with a fresh one; the sandbox sees only the second answer', async (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('GET', '/r', TOKEN));
  const u = p.ready();
  u.answer(UNAUTHORIZED);
  await settle();
  t.deepEqual(src.rejected, [src.token(1)]);
  t.is(p.take(), '', 'the 401 is not relayed');
  t.is(p.dials.length, 2);
  const v = p.ready(u);
  t.is(v.sent, tokHead('GET', '/r', src.token(1)) + tokHead('GET', '/r', src.token(2)), 'the refused connection was clean: reused for the retry');
  v.answer(ok('welcome'));
  t.is(p.take(), ok('welcome'));
  t.like(w.http()[0], { status: 200, tokenRejected: 'retried', credential: 'k' });
  t.is(w.http().length, 1);
});

test('401 to a small POST: its body, kept while it streamed, is replayed with the fresh token; a second 401 is relayed', async (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('POST', '/p', TOKEN, ['Content-Length: 10'], 'hello'));
  const u = p.ready();
  u.answer(UNAUTHORIZED);
  p.send('world');
  await settle();
  t.is(u.sent, tokHead('POST', '/p', src.token(1), ['Content-Length: 10']) + 'hello', 'the rest of the body never went to the refusing upstream');
  t.true(u.destroyed, 'not sent the whole request: not reused');
  const v = p.ready();
  t.is(v.sent, tokHead('POST', '/p', src.token(2), ['Content-Length: 10']) + 'helloworld');
  v.answer(UNAUTHORIZED);
  t.is(p.take(), UNAUTHORIZED, 'one retry only');
  t.like(w.http()[0], { status: 401, tokenRejected: 'retried', bytesOut: 10 });
});

test('401 to a body too big to keep (> 64 KiB): relayed, and the token dropped for the next request', (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('POST', '/big', TOKEN, [`Content-Length: ${70 * 1024}`]));
  const u = p.ready();
  u.answer(UNAUTHORIZED);
  t.is(p.take(), UNAUTHORIZED);
  t.deepEqual(src.rejected, [src.token(1)]);
  t.like(w.http()[0], { status: 401, tokenRejected: 'relayed' });
});

test('a chunked body is not replayed after a 401 (its length is unknown): the 401 is relayed', (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('POST', '/c', TOKEN, ['Transfer-Encoding: chunked'], '3\r\nabc\r\n0\r\n\r\n'));
  p.ready().answer(UNAUTHORIZED);
  t.is(p.take(), UNAUTHORIZED);
  t.like(w.http()[0], { tokenRejected: 'relayed' });
});

test('no token to be had: 503 with Retry-After, the connection closes, no upstream connection is asked for; the audit names the credential and cause', async (t) => {
  for (const later of [false, true]) {
    const src = new Tokens();
    src.fail = new TokenError('auth service unreachable (ECONNREFUSED)', true, 'the credential service is unavailable');
    src.later = later;
    const w = playWorld({ source: src });
    const p = w.play({ sni: TOKEN });
    p.send(req('GET', '/down', TOKEN));
    await settle();
    t.is(
      p.take(),
      own(503, 'Service Unavailable', { error: 'credential unavailable', reason: 'the credential service is unavailable' }, true, 'Retry-After: 1\r\n'),
    );
    t.true(p.closedGracefully);
    t.is(p.dials.length, 0);
    t.like(w.http()[0], { status: 503, credential: 'k', bytesOut: 0, reason: 'credential k unavailable: auth service unreachable (ECONNREFUSED)' });
  }
});

test('the refreshed token cannot be had after a 401: 503, never the refused request again', async (t) => {
  const src = new Tokens();
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('GET', '/r', TOKEN));
  const u = p.ready();
  src.fail = new TokenError('down', true, 'the credential service is unavailable');
  u.answer(UNAUTHORIZED);
  await settle();
  t.is(p.dials.length, 1);
  t.true(p.take().startsWith('HTTP/1.1 503 Service Unavailable\r\n'));
  t.like(w.http()[0], { status: 503, tokenRejected: 'retried' });
});

test('the sandbox gone while its token was fetched: 499, nothing sent upstream', async (t) => {
  const src = new Tokens();
  src.later = true;
  const w = playWorld({ source: src });
  const p = w.play({ sni: TOKEN });
  p.send(req('GET', '/gone', TOKEN));
  p.destroyed = true;
  p.conn.closed();
  await settle();
  t.is(p.dials.length, 0);
  t.like(w.http()[0], { status: 499, error: 'sandbox closed the connection' });
});

test('an echoed secret is masked in the reason phrase, a header value, and a chunked body where it straddles chunks', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/echo', API));
  const u = p.ready();
  const half = Math.floor(SECRET.length / 2);
  u.answer(`HTTP/1.1 200 ${SECRET}\r\nX-Echo: Bearer ${SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n`);
  u.answer(`${(4 + half).toString(16)}\r\nkey=${SECRET.slice(0, half)}\r\n`);
  u.answer(`${(SECRET.length - half + 4).toString(16)}\r\n${SECRET.slice(half)} end\r\n0\r\n\r\n`);
  const got = p.take();
  t.false(got.includes(SECRET));
  t.true(got.startsWith(`HTTP/1.1 200 ${mask(SECRET)}\r\nX-Echo: ${mask(`Bearer ${SECRET}`)}\r\nTransfer-Encoding: chunked\r\n\r\n`));
  t.is(dechunk(got.slice(got.indexOf('\r\n\r\n') + 4)), `key=${mask(SECRET)} end`);
});

test('the tail case: a body ending in the first bytes of the secret arrives whole (Content-Length and chunked)', (t) => {
  const tail = `body ends with ${SECRET.slice(0, 6)}`;
  for (const framed of [ok(tail), `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${tail.length.toString(16)}\r\n${tail}\r\n0\r\n\r\n`]) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/tail', API));
    p.ready().answer(framed);
    const got = p.take();
    const body = got.slice(got.indexOf('\r\n\r\n') + 4);
    t.is(framed.endsWith('0\r\n\r\n') ? dechunk(body) : body, tail);
  }
});

test('a gzip (or br, deflate) response is decoded before scrubbing: sent chunked, without its Content-Encoding and Content-Length', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/gz', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\nX-A: 1\r\n\r\nGZGZ');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n');
  const d = p.decoders[0];
  t.is(d?.coding, 'gzip');
  t.is(Buffer.concat(d?.written ?? []).toString(), 'GZGZ', 'the encoded bytes go to the decoder');
  t.true(d?.ended);
  d?.sink.decoded(Buffer.from(`plain ${SECRET} text`));
  d?.sink.decodedEnd();
  const plain = `plain ${mask(SECRET)} text`;
  t.is(p.take(), `${plain.length.toString(16)}\r\n${plain}\r\n0\r\n\r\n`);
  await settle();
  t.true(u.released);
});

test('a content coding sandgate cannot decode (zstd, stacked, compress) gets 502 when a credential was injected; relayed as is without one', (t) => {
  for (const enc of ['zstd', 'gzip, br', 'compress']) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/z', API));
    const u = p.ready();
    u.answer(`HTTP/1.1 200 OK\r\nContent-Encoding: ${enc}\r\nContent-Length: 3\r\n\r\nabc`);
    t.is(p.take(), own(502, 'Bad Gateway', { error: 'bad gateway', reason: 'the upstream response is encoded in a way sandgate cannot inspect' }, false), enc);
    t.like(w.http()[0], { status: 502, reason: `upstream sent Content-Encoding ${enc}, which sandgate cannot scrub` });
  }
  const w = playWorld();
  const p = w.play();
  p.send(req('GET', '/z', 'open.example.test'));
  p.ready().answer('HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 3\r\n\r\nabc');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 3\r\n\r\nabc');
});

test('a decoder failing mid-body cuts the response short (the connection is dropped) and says why', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/bad-gz', API));
  p.ready().answer('HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx');
  p.decoders[0]?.sink.decodeFailed(Object.assign(new Error('incorrect header check'), { code: 'Z_DATA_ERROR' }));
  t.true(p.destroyed);
  t.like(w.http()[0], { status: 200, error: 'response stream: Z_DATA_ERROR' });
});

test('a secret in a reason or error quoted into the audit line is scrubbed there too', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/e', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n');
  u.reader.error(Object.assign(new Error(`boom ${SECRET}`), { code: undefined }));
  u.reader.closed();
  const line = JSON.stringify(w.lines);
  t.false(line.includes(SECRET));
  t.true(line.includes(mask(SECRET)));
});

test('the static credential is what the upstream gets even when the sandbox sends its own', (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/s', API, ['Authorization: Bearer sandbox-own']));
  t.is(p.ready().sent, upHead('GET', '/s'));
});

// The decoder ends asynchronously, so the attempt still holds the connection's reader: a second
// answer then was taken as this request's, its head written into the middle of the first one's body.
test('an upstream answering again while a decoded body is still being decoded: the second answer never reaches the sandbox', async (t) => {
  const w = playWorld();
  const p = w.play({ sni: API });
  p.send(req('GET', '/gz2', API));
  const u = p.ready();
  u.answer('HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nGZGZ');
  t.is(p.take(), 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  u.answer('HTTP/1.1 200 OK\r\nX-Second: unasked\r\nContent-Length: 7\r\n\r\nunasked');
  t.false(p.take().includes('unasked'), 'the unasked answer reached the sandbox');
  t.true(u.destroyed, 'the connection that answered twice is closed');
  t.is(p.decoders.length, 1);
  const d = p.decoders[0];
  d?.sink.decoded(Buffer.from('plain'));
  d?.sink.decodedEnd();
  t.is(p.take(), '5\r\nplain\r\n0\r\n\r\n', 'the first answer still ends whole');
  t.like(w.http()[0], { path: '/gz2', status: 200 });
});

/** Tokens with upper-case letters, as most API keys have. */
class MixedCaseTokens extends Tokens {
  override token(i: number): string {
    return `Tok-${i}-AbCdEf0123456789XyZ`;
  }
}

// The refusal reasons quote the upstream's codings lower-cased (addCodings,
// unrelayableTransferCoding): a case-sensitive scrub of the audit line missed an echoed token there.
test('a token echoed into Content-Encoding or Transfer-Encoding never reaches the audit line, not even lower-cased', (t) => {
  for (const field of ['Content-Encoding', 'Transfer-Encoding']) {
    const src = new MixedCaseTokens();
    const w = playWorld({ source: src });
    const p = w.play({ sni: TOKEN });
    p.send(req('GET', '/echo-coding', TOKEN));
    const tok = src.token(1);
    p.ready().answer(`HTTP/1.1 200 OK\r\n${field}: x-${tok}\r\nContent-Length: 3\r\n\r\nabc`);
    const line = JSON.stringify(w.lines).toLowerCase();
    t.like(w.http()[0], { status: 502 }, field);
    t.false(line.includes(tok.toLowerCase()), `${field}: ${line}`);
  }
});

// The decoder ends asynchronously: an upstream closing right after a complete encoded response
// (Connection: close, an HTTP/1.0 server) was taken for one that closed mid-body, and the
// response cut short.
test('an upstream closing right after a complete encoded response, before its decoding ends: the sandbox still gets it whole', async (t) => {
  for (const framing of ['Content-Length: 4\r\n\r\nGZGZ', 'Transfer-Encoding: chunked\r\n\r\n4\r\nGZGZ\r\n0\r\n\r\n']) {
    const w = playWorld();
    const p = w.play({ sni: API });
    p.send(req('GET', '/gz-close', API));
    const u = p.ready();
    u.answer(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n${framing}`);
    u.reader.end();
    u.reader.closed();
    const d = p.decoders[0];
    d?.sink.decoded(Buffer.from('plain'));
    d?.sink.decodedEnd();
    await settle();
    t.is(p.take(), 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nplain\r\n0\r\n\r\n', framing);
    t.false(p.destroyed, "the sandbox's connection is not dropped");
    t.is(w.http()[0]?.error, undefined);
    t.false(u.released);
  }
});
