/**
 * The relay's core with requests whose head needs the body (src/http/rewrite.ts), played with no
 * socket: AWS re-signing (buffered signed payloads, 413 past the limit, a foreign key id refused,
 * aws-chunked bodies re-signed as they stream) and a placeholder replaced in query and body.
 */
import test from 'ava';
import { compileCredential, type TokenRequest, type TokenSource } from '../../src/creds/credential.js';
import { compileAwsCredential } from '../../src/creds/aws.js';
import { AWS_PLACEHOLDER_KEY_ID } from '../../src/creds/aws-placeholder.js';
import { own, playWorld, req, settle, type Line } from '../helpers/exchange-play.js';
import { verifySigV4 } from '../helpers/sigv4-verify.mjs';
import { BodyBuffer, BufferBudget, heldBodies } from '../../src/http/body-buffer.js';

const HOST = 'token.example.test';
const REAL = { accessKeyId: 'AKIAREALKEY000000001', secretAccessKey: 'realSecret/0123456789abcdefghijklmnopqrstu' };

const aws = (maxBodyBytes = 64) =>
  compileAwsCredential(
    't',
    {
      accessKeyId: { env: 'A' },
      secretAccessKey: { env: 'B' },
      region: 'us-east-1',
      service: 'bedrock',
      placeholderKeyId: AWS_PLACEHOLDER_KEY_ID,
      maxBodyBytes,
    },
    { ...REAL, sessionToken: undefined },
  );

const sandboxAuth = (keyId = AWS_PLACEHOLDER_KEY_ID) =>
  `Authorization: AWS4-HMAC-SHA256 Credential=${keyId}/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`;

/** The head and body an upstream received, parsed. */
function parseSent(sent: string): { method: string; path: string; query: string; headers: Record<string, string>; body: string } {
  const end = sent.indexOf('\r\n\r\n');
  const lines = sent.slice(0, end).split('\r\n');
  const [method, target] = (lines[0] as string).split(' ') as [string, string];
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  const qi = target.indexOf('?');
  return { method, path: qi < 0 ? target : target.slice(0, qi), query: qi < 0 ? '' : target.slice(qi + 1), headers, body: sent.slice(end + 4) };
}

test('AWS signed payload: a chunked body is held until complete, then sent with its length and signed with the real key', async (t) => {
  const w = playWorld({ source: aws() });
  const p = w.play({ sni: HOST });
  p.send(
    req(
      'POST',
      '/model/m%3A0/invoke',
      HOST,
      [sandboxAuth(), 'X-Amz-Date: 20261204T200000Z', 'Content-Type: application/json', 'Transfer-Encoding: chunked'],
      '5\r\n{"a":\r\n',
    ),
  );
  t.is(p.dials.length, 0, 'nothing goes upstream before the body is hashed');
  p.send('3\r\n"b"\r\n1\r\n}\r\n0\r\n\r\n');
  const u = p.ready();
  const s = parseSent(u.sent);
  t.is(s.body, '{"a":"b"}');
  t.is(s.headers['content-length'], '9');
  t.is(s.headers['transfer-encoding'], undefined);
  t.false(u.sent.includes(AWS_PLACEHOLDER_KEY_ID));
  t.like(await verifySigV4({ ...s, body: Buffer.from(s.body) }, REAL), { ok: true, service: 'bedrock', region: 'us-east-1' });
  t.like(await verifySigV4({ ...s, body: Buffer.from('{"a":"c"}') }, REAL), { ok: false, why: 'x-amz-content-sha256 does not match the body' });
  // An upstream echoing the Authorization it got: neither the real key id nor sandgate's signature reaches the sandbox.
  const echo = s.headers.authorization ?? '';
  u.answer(`HTTP/1.1 200 OK\r\nContent-Length: ${echo.length}\r\n\r\n${echo}`);
  const back = p.take();
  t.true(back.includes('AWS4-HMAC-SHA256 Credential=[redacted]'));
  t.false(back.includes(REAL.accessKeyId));
  t.false(back.includes(/Signature=([0-9a-f]{64})/.exec(echo)?.[1] ?? 'none'));
});

test('AWS: a request with no signature is signed; a WebSocket upgrade toward the host is refused (400)', async (t) => {
  const w = playWorld({ source: aws() });
  const p = w.play({ sni: HOST });
  p.send(req('GET', '/x?list-type=2', HOST));
  const s = parseSent(p.ready().sent);
  t.like(await verifySigV4({ ...s, body: Buffer.alloc(0) }, REAL), { ok: true });
  const q = w.play({ sni: HOST });
  q.send(req('GET', '/ws', HOST, ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']));
  t.regex(q.take(), /^HTTP\/1\.1 400 /);
  t.is(q.dials.length, 0);
  t.is(q.upgrades.length, 0);
});

test('AWS signed payload past maxBodyBytes: 413 (declared length at once; chunked when it gets there), never sent upstream', async (t) => {
  const w = playWorld({ source: aws(16) });
  const p = w.play({ sni: HOST });
  p.send(req('POST', '/x', HOST, [sandboxAuth(), 'Content-Length: 17'], '01234567890123456'));
  t.is(p.dials.length, 0);
  t.regex(p.take(), /^HTTP\/1\.1 413 /);
  const q = w.play({ sni: HOST });
  q.send(req('POST', '/x', HOST, [sandboxAuth(), 'Transfer-Encoding: chunked'], 'a\r\n0123456789\r\n'));
  t.is(q.take(), '');
  q.send('a\r\n0123456789\r\n');
  await settle();
  const r = q.take();
  t.regex(r, /^HTTP\/1\.1 413 /);
  t.regex(r, /Connection: close/);
  t.is(q.dials.length, 0);
  t.like(w.http().at(-1), { status: 413, credential: 't' });
});

test('AWS: a request signed with another access key id is refused (403, audited as deny); the placeholder one is not', (t) => {
  const w = playWorld({ source: aws() });
  const p = w.play({ sni: HOST });
  p.send(req('GET', '/x', HOST, [sandboxAuth('AKIAREALKEYSTOLEN001')]));
  t.is(p.dials.length, 0);
  const got = p.take();
  t.regex(got, /^HTTP\/1\.1 403 /);
  t.false(got.includes('AKIAREALKEYSTOLEN001'));
  t.like(w.http()[0] as Line, { status: 403, decision: 'deny', reason: 'the request is signed with an access key id other than the placeholder' });
  p.send(req('GET', '/x', HOST, [sandboxAuth()]));
  t.is(p.dials.length, 1);
});

test('AWS aws-chunked upload: streamed with every chunk signature replaced; malformed framing stops the request (400)', async (t) => {
  const w = playWorld({ source: aws() });
  const p = w.play({ sni: HOST });
  const sig = '0'.repeat(64);
  const body = `3;chunk-signature=${sig}\r\nabc\r\n0;chunk-signature=${sig}\r\n\r\n`;
  p.send(req('PUT', '/b/k', HOST, [sandboxAuth(), 'x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD', `Content-Length: ${body.length}`], ''));
  const u = p.ready();
  t.regex(u.sent, /x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD/i);
  p.send(body.slice(0, 30));
  p.send(body.slice(30));
  const s = parseSent(u.sent);
  t.is(s.body.length, body.length);
  t.false(s.body.includes(sig));
  t.regex(s.body, /^3;chunk-signature=[0-9a-f]{64}\r\nabc\r\n0;chunk-signature=[0-9a-f]{64}\r\n\r\n$/);

  const q = w.play({ sni: HOST });
  q.send(req('PUT', '/b/k', HOST, [sandboxAuth(), 'x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'Content-Length: 20'], ''));
  const v = q.ready();
  q.send('3;nonsense\r\nabc\r\n0\r\n');
  await settle();
  t.true(v.destroyed);
  t.regex(q.take(), /^HTTP\/1\.1 400 /);
  t.like(w.http().at(-1), { status: 400 });
});

const PH = 'sk-placeholder-0123';
const SECRET = 'real"secret&=/0123456789';
const phCred = (placeholderIn?: ('header' | 'query' | 'body')[]) =>
  compileCredential(
    't',
    { secret: { env: 'X' }, header: 'X-Unused', format: '{secret}', placeholder: PH, ...(placeholderIn ? { placeholderIn } : {}), maxBodyBytes: 1024 },
    SECRET,
  );

test('placeholderIn body: JSON escaped, form encoded, text as is; Content-Length recomputed; a chunked body re-framed with its length', (t) => {
  const w = playWorld({ source: phCred(['header', 'body']) });
  const p = w.play({ sni: HOST });
  const json = `{"key":"${PH}"}`;
  p.send(req('POST', '/j', HOST, ['Content-Type: application/json', `Content-Length: ${json.length}`], json));
  let s = parseSent(p.ready().sent);
  t.is(s.body, `{"key":${JSON.stringify(SECRET)}}`);
  t.is(s.headers['content-length'], String(Buffer.byteLength(s.body)));
  t.deepEqual(JSON.parse(s.body), { key: SECRET });

  const q = w.play({ sni: HOST });
  q.send(req('POST', '/f', HOST, ['Content-Type: application/x-www-form-urlencoded', 'Transfer-Encoding: chunked'], `6\r\nk=${PH.slice(0, 4)}\r\n`));
  q.send(`${(PH.length - 4 + 4).toString(16)}\r\n${PH.slice(4)}&z=1\r\n0\r\n\r\n`);
  s = parseSent(q.ready().sent);
  t.is(new URLSearchParams(s.body).get('k'), SECRET);
  t.is(s.headers['transfer-encoding'], undefined);
  t.is(s.headers['content-length'], String(s.body.length));

  const r = w.play({ sni: HOST });
  r.send(req('PUT', '/t', HOST, ['Content-Type: text/plain; charset=utf-8', `Content-Length: ${PH.length + 2}`], `[${PH}]`));
  t.is(parseSent(r.ready().sent).body, `[${SECRET}]`);
});

test('placeholderIn body: other content types stream untouched; without body in placeholderIn nothing in the body changes (the default)', (t) => {
  const w = playWorld({ source: phCred(['body']) });
  const p = w.play({ sni: HOST });
  p.send(req('POST', '/o', HOST, ['Content-Type: application/octet-stream', `Content-Length: ${PH.length}`], PH));
  t.true(p.ready().sent.endsWith(PH));
  const d = playWorld({ source: phCred() });
  const q = d.play({ sni: HOST });
  q.send(req('POST', '/j', HOST, ['Content-Type: application/json', `Content-Length: ${PH.length}`, `X-Key: ${PH}`], PH));
  const sent = q.ready().sent;
  t.true(sent.endsWith(PH), 'body unchanged by default');
  t.true(sent.includes(`X-Key: ${SECRET}`), 'header replaced by default');
});

test('placeholderIn query: replaced URL-encoded in the query only; over maxBodyBytes a searched body gets 413', (t) => {
  const w = playWorld({ source: phCred(['query', 'body']) });
  const p = w.play({ sni: HOST });
  p.send(req('GET', `/${PH}/x?key=${PH}&k2=${encodeURIComponent(PH)}`, HOST, [`X-Key: ${PH}`]));
  const s = parseSent(p.ready().sent);
  t.is(s.path, `/${PH}/x`, 'the path is not the query');
  t.deepEqual(new URLSearchParams(s.query).getAll('key'), [SECRET]);
  t.deepEqual(new URLSearchParams(s.query).getAll('k2'), [SECRET]);
  t.is(s.headers['x-key'], PH, 'header not in placeholderIn: left alone');
  const q = w.play({ sni: HOST });
  q.send(req('POST', '/j', HOST, ['Content-Type: application/json', 'Content-Length: 2000'], ''));
  t.is(
    q.take(),
    own(
      413,
      'Payload Too Large',
      { error: 'content too large', reason: 'a body searched for the placeholder is held whole; this one is larger than 1024 bytes' },
      true,
    ),
  );
});

test('AWS with temporary keys from a token source (awsSigV4.authService): fetched per request, signed with them and their session token', async (t) => {
  const temp = { accessKeyId: 'ASIATEMPORARYKEY0001', secretAccessKey: 'temporary/secret/0123456789abcdef', sessionToken: 'session-token-0123456789abcdef' };
  const asked: TokenRequest[] = [];
  const src: TokenSource = {
    id: 't',
    kind: 'authService',
    fingerprint: 'test',
    acquire(r) {
      asked.push(r);
      return Promise.resolve(
        compileAwsCredential(
          't',
          {
            authService: { url: 'https://auth.example/x', timeoutMs: 1000, secret: { env: 'S' } },
            region: 'us-east-1',
            service: 's3',
            placeholderKeyId: AWS_PLACEHOLDER_KEY_ID,
            maxBodyBytes: 1024,
          },
          temp,
        ),
      );
    },
    reject() {},
    stats: () => ({ entries: 0, hits: 0, misses: 0, coalesced: 0, fetches: 0, refreshes: 0, failures: 0, invalidations: 0, evictions: 0 }),
  };
  const w = playWorld({ source: src });
  const p = w.play({ sni: HOST });
  p.send(req('PUT', '/b/k', HOST, [sandboxAuth(), 'x-amz-content-sha256: UNSIGNED-PAYLOAD', 'Content-Length: 3'], 'abc'));
  await settle();
  const u = p.ready();
  const s = parseSent(u.sent);
  t.is(s.headers['x-amz-security-token'], temp.sessionToken);
  t.is(s.body, 'abc');
  t.like(await verifySigV4({ ...s, body: Buffer.from(s.body) }, temp), { ok: true, service: 's3' });
  t.like(asked[0], { sandbox: 's', host: HOST, method: 'PUT' });
  u.answer(`HTTP/1.1 403 Forbidden\r\nContent-Length: ${temp.sessionToken.length}\r\n\r\n${temp.sessionToken}`);
  t.false(p.take().includes(temp.sessionToken), 'an echoed session token is scrubbed');
});

test('held bodies share one budget per process: past it 503 with Retry-After; a body held by a sandbox that hangs up is let go', async (t) => {
  const budget = new BufferBudget(10);
  const events: string[] = [];
  const waiter = {
    bodyBuffered: (b: Buffer) => events.push(`done ${b.length}`),
    bodyTooLarge: () => events.push('large'),
    bodyBusy: () => events.push('busy'),
  };
  const a = new BodyBuffer(100, waiter, budget);
  a.bodyChunk(Buffer.alloc(6));
  const b = new BodyBuffer(100, waiter, budget);
  b.bodyChunk(Buffer.alloc(6));
  t.deepEqual(events, ['busy']);
  t.is(budget.used, 6);
  a.bodyDone();
  t.is(budget.used, 0, 'handed on: no longer held');
  t.deepEqual(events, ['busy', 'done 6']);

  const w = playWorld({ source: aws(1024) });
  const before = heldBodies.used;
  t.true(heldBodies.take(heldBodies.limit - before - 4), 'the test holds nearly all of the budget, as other uploads would');
  try {
    const p = w.play({ sni: HOST });
    p.send(req('POST', '/x', HOST, [sandboxAuth(), 'Content-Length: 8'], '01234567'));
    const got = p.take();
    t.regex(got, /^HTTP\/1\.1 503 /);
    t.regex(got, /Retry-After: 1/);
    t.is(p.dials.length, 0);
  } finally {
    heldBodies.give(heldBodies.limit - before - 4);
  }
  const q = w.play({ sni: HOST });
  q.send(req('POST', '/x', HOST, [sandboxAuth(), 'Content-Length: 8'], '0123'));
  t.is(heldBodies.used, before + 4);
  q.destroyed = true;
  q.conn.closed();
  t.is(heldBodies.used, before, 'let go when the sandbox went away');
});
