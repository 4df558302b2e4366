/**
 * sandgate's SigV4 signer (src/creds/sigv4.ts) and the AWS re-signing of a request
 * (src/http/aws-resign.ts, src/http/aws-chunked.ts), checked against @smithy/signature-v4, the AWS
 * SDK's own signer: requests an SDK signed with the placeholder key id are re-signed by sandgate,
 * and the result must verify with the real keys (test/helpers/sigv4-verify.mjs).
 */
import test from 'ava';
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { amzDate, chunkSignature, credentialScope, sign, signingKey, EMPTY_SHA256 } from '../../src/creds/sigv4.js';
import { compileAwsCredential, scopeFromHost } from '../../src/creds/aws.js';
import { AWS_PLACEHOLDER_KEY_ID, AWS_PLACEHOLDER_SECRET_KEY } from '../../src/creds/aws-placeholder.js';
import { planRewrite } from '../../src/http/rewrite.js';
import { AwsChunkedResigner } from '../../src/http/aws-chunked.js';
import { BufferBudget } from '../../src/http/body-buffer.js';
import { verifySigV4 } from '../helpers/sigv4-verify.mjs';

const REAL = { accessKeyId: 'AKIAREALKEY000000001', secretAccessKey: 'realSecret/0123456789abcdefghijklmnopqrstu', sessionToken: undefined };
const SANDBOX = { accessKeyId: AWS_PLACEHOLDER_KEY_ID, secretAccessKey: AWS_PLACEHOLDER_SECRET_KEY };
const NOW = Date.UTC(2026, 11, 4, 21, 0, 0);

function cred(over: { region?: string; service?: string; sessionToken?: string; maxBodyBytes?: number } = {}) {
  return compileAwsCredential(
    'aws',
    {
      accessKeyId: { env: 'X' },
      secretAccessKey: { env: 'Y' },
      placeholderKeyId: AWS_PLACEHOLDER_KEY_ID,
      maxBodyBytes: over.maxBodyBytes ?? 1024 * 1024,
      ...(over.region !== undefined ? { region: over.region } : {}),
      ...(over.service !== undefined ? { service: over.service } : {}),
    },
    { ...REAL, sessionToken: over.sessionToken },
  );
}

interface SdkRequest {
  method: string;
  host: string;
  path: string;
  query?: Record<string, string>;
  headers: Record<string, string>;
  body?: string;
}

/** What an SDK in the sandbox sends: signed by smithy with the placeholder keys. */
async function sandboxSigned(r: SdkRequest, service: string, region: string, presign = false): Promise<{ url: string; rawHeaders: string[] }> {
  const signer = new SignatureV4({ credentials: SANDBOX, region, service, sha256: Sha256, uriEscapePath: service !== 's3' });
  const req = {
    method: r.method,
    protocol: 'https:',
    hostname: r.host,
    path: r.path,
    query: r.query ?? {},
    headers: { host: r.host, ...r.headers },
    body: r.body,
  };
  const out = presign ? await signer.presign(req, { signingDate: new Date(NOW - 60_000) }) : await signer.sign(req, { signingDate: new Date(NOW - 60_000) });
  const q = Object.entries(out.query ?? {})
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const rawHeaders: string[] = [];
  for (const [k, v] of Object.entries(out.headers)) rawHeaders.push(k, String(v));
  return { url: q === '' ? r.path : `${r.path}?${q}`, rawHeaders };
}

/** The head sandgate builds, parsed back. */
function parseHead(head: string): { method: string; path: string; query: string; headers: Record<string, string> } {
  const lines = head.split('\r\n');
  const [method, target] = (lines[0] as string).split(' ') as [string, string];
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    if (l === '') continue;
    const c = l.indexOf(':');
    headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  const qi = target.indexOf('?');
  return { method, path: qi < 0 ? target : target.slice(0, qi), query: qi < 0 ? '' : target.slice(qi + 1), headers };
}

function resign(sent: { url: string; rawHeaders: string[] }, method: string, host: string, body: Buffer | undefined, c = cred()) {
  const hasBody = body !== undefined && body.length > 0;
  const p = planRewrite(
    { method, url: sent.url, rawHeaders: sent.rawHeaders, connectionNamed: undefined, chunked: false, hasBody, length: body?.length ?? -1 },
    host,
    host,
    c,
  );
  if (!p.ok) return p;
  if (p.rewrite === undefined) throw new Error('no rewrite');
  const built = p.rewrite.build(p.rewrite.bufferLimit !== undefined ? (body ?? Buffer.alloc(0)) : undefined, NOW);
  return { ok: true as const, built, head: parseHead(built.head) };
}

test('the signer matches @smithy/signature-v4 for a non-S3 path (double-encoded, normalized) and a query', async (t) => {
  const signer = new SignatureV4({ credentials: REAL, region: 'us-east-1', service: 'bedrock', sha256: Sha256, applyChecksum: false });
  const body = '{"prompt":"hi"}';
  const headers = {
    host: 'bedrock-runtime.us-east-1.amazonaws.com',
    'content-type': 'application/json',
    'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'),
  };
  const path = '/model/anthropic.claude-3%3A0/./x/../invoke';
  const out = await signer.sign(
    { method: 'POST', protocol: 'https:', hostname: headers.host, path, query: { b: 'two words', a: 'x*y' }, headers, body },
    { signingDate: new Date(NOW) },
  );
  const { long, short } = amzDate(NOW);
  const fields: [string, string][] = [...Object.entries(headers), ['x-amz-date', long]];
  const mine = sign(
    {
      method: 'POST',
      path,
      query: [
        ['b', 'two words'],
        ['a', 'x*y'],
      ],
      fields,
      signedNames: new Set(fields.map(([k]) => k)),
      payloadHash: headers['x-amz-content-sha256'],
    },
    signingKey(REAL.secretAccessKey, short, 'us-east-1', 'bedrock'),
    long,
    credentialScope(short, 'us-east-1', 'bedrock'),
    false,
  );
  t.is(mine.signature, /Signature=([0-9a-f]{64})/.exec(String(out.headers.authorization))?.[1] ?? 'none');
});

test('aws-chunked re-signing reproduces the S3 documentation example (seed and chunk signatures)', (t) => {
  // "Example Calculations" of S3's "Signature Calculations for the Authorization Header:
  // Transferring Payload in Multiple Chunks": 66560 bytes of "a" in chunks of 65536 and 1024.
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  const { long, short } = amzDate(Date.UTC(2013, 4, 24));
  const scope = credentialScope(short, 'us-east-1', 's3');
  const key = signingKey(secret, short, 'us-east-1', 's3');
  const fields: [string, string][] = [
    ['Host', 's3.amazonaws.com'],
    ['x-amz-date', long],
    ['x-amz-storage-class', 'REDUCED_REDUNDANCY'],
    ['x-amz-content-sha256', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'],
    ['Content-Encoding', 'aws-chunked'],
    ['x-amz-decoded-content-length', '66560'],
    ['Content-Length', '66824'],
  ];
  const seed = sign(
    {
      method: 'PUT',
      path: '/examplebucket/chunkObject.txt',
      query: [],
      fields,
      signedNames: new Set(fields.map(([k]) => k.toLowerCase())),
      payloadHash: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    },
    key,
    long,
    scope,
    true,
  ).signature;
  t.is(seed, '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9');
  const a1 = Buffer.alloc(65536, 'a');
  const a2 = Buffer.alloc(1024, 'a');
  const s1 = chunkSignature(key, long, scope, seed, createHash('sha256').update(a1).digest('hex'));
  t.is(s1, 'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648');
  const s2 = chunkSignature(key, long, scope, s1, createHash('sha256').update(a2).digest('hex'));
  t.is(s2, '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497');
  t.is(chunkSignature(key, long, scope, s2, EMPTY_SHA256), 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9');

  // The streaming re-signer turns a body signed with another key into exactly that one, fed in odd pieces.
  const wrong = '0'.repeat(64);
  const body = Buffer.concat([
    Buffer.from(`10000;chunk-signature=${wrong}\r\n`),
    a1,
    Buffer.from(`\r\n400;chunk-signature=${wrong}\r\n`),
    a2,
    Buffer.from(`\r\n0;chunk-signature=${wrong}\r\n\r\n`),
  ]);
  t.is(body.length, 66824);
  const r = new AwsChunkedResigner({ key, long, scope, seed, trailer: false, maxChunk: 1 << 20 });
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += 7001) out.push(r.push(body.subarray(i, i + 7001)));
  r.end();
  const text = Buffer.concat(out);
  t.is(text.length, body.length);
  t.true(text.includes(`10000;chunk-signature=${s1}\r\n`));
  t.true(text.includes(`400;chunk-signature=${s2}\r\n`));
  t.true(text.toString('latin1').endsWith('0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n'));
  const bad = new AwsChunkedResigner({ key, long, scope, seed, trailer: false, maxChunk: 1 << 20 });
  t.throws(() => bad.push(Buffer.from('zz;chunk-signature=x\r\n')), { message: /aws-chunked body/ });
  const short2 = new AwsChunkedResigner({ key, long, scope, seed, trailer: false, maxChunk: 1 << 20 });
  short2.push(Buffer.from(`4;chunk-signature=${wrong}\r\nab`));
  t.throws(() => short2.end(), { message: /ended before its final chunk/ });
});

test('region and service from AWS host names', (t) => {
  t.deepEqual(scopeFromHost('bedrock-runtime.us-east-1.amazonaws.com'), { region: 'us-east-1', service: 'bedrock' });
  t.deepEqual(scopeFromHost('s3.eu-west-3.amazonaws.com'), { region: 'eu-west-3', service: 's3' });
  t.deepEqual(scopeFromHost('my-bucket.s3.us-west-2.amazonaws.com'), { region: 'us-west-2', service: 's3' });
  t.deepEqual(scopeFromHost('my.dotted.bucket.s3.dualstack.ap-southeast-2.amazonaws.com'), { region: 'ap-southeast-2', service: 's3' });
  t.deepEqual(scopeFromHost('bucket.s3-us-west-1.amazonaws.com'), { region: 'us-west-1', service: 's3' });
  t.deepEqual(scopeFromHost('bucket.s3.amazonaws.com'), { region: 'us-east-1', service: 's3' });
  t.deepEqual(scopeFromHost('sts.us-gov-west-1.amazonaws.com'), { region: 'us-gov-west-1', service: 'sts' });
  t.is(scopeFromHost('api.example.test'), undefined);
  t.is(scopeFromHost('sts.amazonaws.com'), undefined);
});

test('a Bedrock request signed with the placeholder is re-signed; the result verifies with the real key and not the placeholder', async (t) => {
  const host = 'bedrock-runtime.us-east-1.amazonaws.com';
  const body = '{"messages":[{"role":"user","content":[{"text":"hi"}]}]}';
  const sent = await sandboxSigned(
    { method: 'POST', host, path: '/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse', headers: { 'content-type': 'application/json' }, body },
    'bedrock',
    'us-east-1',
  );
  const r = resign(sent, 'POST', host, Buffer.from(body));
  if (!r.ok) return t.fail(r.reason);
  const h = r.head;
  t.regex(h.headers.authorization ?? '', /^AWS4-HMAC-SHA256 Credential=AKIAREALKEY000000001\/20261204\/us-east-1\/bedrock\/aws4_request, /);
  t.is(h.headers['x-amz-content-sha256'], createHash('sha256').update(body).digest('hex'));
  t.is(h.headers['content-length'], String(body.length));
  t.deepEqual(await verifySigV4({ ...h, body: Buffer.from(body) }, REAL), {
    ok: true,
    mode: h.headers['x-amz-content-sha256'] as string,
    service: 'bedrock',
    region: 'us-east-1',
  });
  // The sandbox's own signature does not verify with the real key (the control).
  const raw: Record<string, string> = {};
  for (let i = 0; i < sent.rawHeaders.length; i += 2) raw[(sent.rawHeaders[i] as string).toLowerCase()] = sent.rawHeaders[i + 1] as string;
  t.false((await verifySigV4({ method: 'POST', path: sent.url, headers: raw, body: Buffer.from(body) }, REAL)).ok);
  t.true(r.built.needles?.every((n) => (h.headers.authorization ?? '').includes(n)));
});

test('S3: UNSIGNED-PAYLOAD streams (no buffering), a query and a session token are signed; config region/service win over the host', async (t) => {
  const host = 'files.example.test';
  const sent = await sandboxSigned(
    {
      method: 'PUT',
      host,
      path: '/bucket/a%20key.txt',
      query: { partNumber: '2', uploadId: 'abc/def' },
      headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': '5' },
    },
    's3',
    'eu-west-1',
  );
  const c = cred({ region: 'eu-west-1', service: 's3', sessionToken: 'session-token-0123456789' });
  const p = planRewrite(
    { method: 'PUT', url: sent.url, rawHeaders: sent.rawHeaders, connectionNamed: undefined, chunked: false, hasBody: true, length: 5 },
    host,
    host,
    c,
  );
  if (!p.ok || p.rewrite === undefined) return t.fail('not planned');
  t.is(p.rewrite.bufferLimit, undefined);
  const h = parseHead(p.rewrite.build(undefined, NOW).head);
  t.is(h.headers['x-amz-security-token'], 'session-token-0123456789');
  t.is(h.headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
  t.like(await verifySigV4(h, { ...REAL, sessionToken: 'session-token-0123456789' }), { ok: true, service: 's3', region: 'eu-west-1' });
  t.like(await verifySigV4(h, { ...REAL, sessionToken: 'another-token-0123456789' }), { ok: false });
});

test('a presigned S3 URL made with the placeholder is re-signed in its query', async (t) => {
  const host = 'bucket.s3.us-west-2.amazonaws.com';
  const sent = await sandboxSigned(
    { method: 'GET', host, path: '/photos/cat.jpg', query: { 'response-content-type': 'image/jpeg' }, headers: {} },
    's3',
    'us-west-2',
    true,
  );
  t.true(sent.url.includes(AWS_PLACEHOLDER_KEY_ID));
  const r = resign(sent, 'GET', host, undefined);
  if (!r.ok) return t.fail(r.reason);
  t.false(r.head.query.includes(AWS_PLACEHOLDER_KEY_ID));
  t.true(r.head.query.includes('X-Amz-Expires=900') || r.head.query.includes('X-Amz-Expires=3600'));
  t.is(r.head.headers.authorization, undefined);
  t.like(await verifySigV4(r.head, REAL), { ok: true, mode: 'presigned', service: 's3', region: 'us-west-2' });
});

test('refused: another access key id (header or query), SigV4a, an unknown payload mode, a host with no region, a body over the limit', async (t) => {
  const host = 'bedrock-runtime.us-east-1.amazonaws.com';
  const req = (rawHeaders: string[], url = '/model/x/invoke', length = -1) =>
    planRewrite({ method: 'POST', url, rawHeaders, connectionNamed: undefined, chunked: false, hasBody: length > 0, length }, host, host, cred());
  const other = `AWS4-HMAC-SHA256 Credential=AKIAOTHERKEY00000000/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=${'a'.repeat(64)}`;
  t.like(req(['Host', host, 'Authorization', other]), { ok: false, status: 403 });
  t.like(
    req(
      ['Host', host],
      `/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAOTHERKEY00000000%2F20261204%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=${'b'.repeat(64)}`,
    ),
    {
      ok: false,
      status: 403,
    },
  );
  t.like(
    req([
      'Host',
      host,
      'Authorization',
      `AWS4-ECDSA-P256-SHA256 Credential=${AWS_PLACEHOLDER_KEY_ID}/20261204/bedrock/aws4_request, SignedHeaders=host, Signature=00`,
    ]),
    { ok: false, status: 403 },
  );
  const mine = `AWS4-HMAC-SHA256 Credential=${AWS_PLACEHOLDER_KEY_ID}/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=${'a'.repeat(64)}`;
  t.like(req(['Host', host, 'Authorization', mine]), { ok: true });
  t.like(req(['Host', host, 'Authorization', `AWS ${AWS_PLACEHOLDER_KEY_ID}:c2lnbmF0dXJl`]), { ok: false, status: 403 });
  const q = `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${AWS_PLACEHOLDER_KEY_ID}%2F20261204%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Signature=${'b'.repeat(64)}`;
  t.like(req(['Host', host, 'Authorization', mine], `/x?${q}`), { ok: false, status: 400 });
  t.like(req(['Host', host], `/x?${q}`, 10), { ok: false, status: 400, reason: 'a presigned request with a body is re-signed only toward S3' });
  t.like(req(['Host', host], `/x?${q}`), { ok: true });
  t.like(req(['Host', host, 'Authorization', mine, 'x-amz-content-sha256', 'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD']), { ok: false, status: 400 });
  t.like(req(['Host', host, 'Authorization', mine], '/model/x/invoke', 2 * 1024 * 1024), { ok: false, status: 413 });
  t.like(
    planRewrite(
      { method: 'GET', url: '/', rawHeaders: ['Host', 'api.example.test'], connectionNamed: undefined, chunked: false, hasBody: false, length: -1 },
      'api.example.test',
      'api.example.test',
      cred(),
    ),
    {
      ok: false,
      status: 502,
    },
  );
});

test('aws-chunked with a signed trailer: the trailer signature is re-signed over the trailing fields, chained from the final chunk', async (t) => {
  const { long, short } = amzDate(NOW);
  const scope = credentialScope(short, 'us-east-1', 's3');
  const key = signingKey(REAL.secretAccessKey, short, 'us-east-1', 's3');
  const seed = 'a'.repeat(64);
  const wrong = '0'.repeat(64);
  const body = `5;chunk-signature=${wrong}\r\nhello\r\n0;chunk-signature=${wrong}\r\nx-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:${wrong}\r\n\r\n`;
  const r = new AwsChunkedResigner({ key, long, scope, seed, trailer: true, maxChunk: 1024 });
  const out = Buffer.concat([...body].map((c) => r.push(Buffer.from(c, 'latin1')))).toString('latin1');
  r.end();
  t.is(out.length, body.length);
  const s1 = chunkSignature(key, long, scope, seed, createHash('sha256').update('hello').digest('hex'));
  const s0 = chunkSignature(key, long, scope, s1, EMPTY_SHA256);
  // The trailer's string to sign (S3 "Signature calculation: trailing headers"), signed by smithy's own signString.
  const smithy = new SignatureV4({ credentials: REAL, region: 'us-east-1', service: 's3', sha256: Sha256 });
  const expected = await smithy.sign(
    `AWS4-HMAC-SHA256-TRAILER\n${long}\n${scope}\n${s0}\n${createHash('sha256').update('x-amz-checksum-crc32:NhCmhg==\n').digest('hex')}`,
    {
      signingDate: new Date(NOW),
    },
  );
  t.is(out, `5;chunk-signature=${s1}\r\nhello\r\n0;chunk-signature=${s0}\r\nx-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:${expected}\r\n\r\n`);
  const noSig = new AwsChunkedResigner({ key, long, scope, seed, trailer: true, maxChunk: 1024 });
  t.throws(() => noSig.push(Buffer.from(`0;chunk-signature=${wrong}\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n`)), { message: /no x-amz-trailer-signature/ });
});

test('a header value of raw UTF-8 bytes is signed over the bytes sent (as a server hashing the wire would)', (t) => {
  const { long, short } = amzDate(NOW);
  const key = signingKey(REAL.secretAccessKey, short, 'us-east-1', 's3');
  const scope = credentialScope(short, 'us-east-1', 's3');
  // "café" as UTF-8 bytes, held as a latin1 string (as llhttp parses it and the relay writes it).
  const wire = Buffer.from('café', 'utf8').toString('latin1');
  const fields: [string, string][] = [
    ['host', 'b.s3.us-east-1.amazonaws.com'],
    ['x-amz-meta-name', wire],
  ];
  const s = sign(
    { method: 'PUT', path: '/k', query: [], fields, signedNames: new Set(['host', 'x-amz-meta-name']), payloadHash: 'UNSIGNED-PAYLOAD' },
    key,
    long,
    scope,
    true,
  );
  const bytes = Buffer.concat([
    Buffer.from('PUT\n/k\n\nhost:b.s3.us-east-1.amazonaws.com\nx-amz-meta-name:'),
    Buffer.from('café', 'utf8'),
    Buffer.from('\n\nhost;x-amz-meta-name\nUNSIGNED-PAYLOAD'),
  ]);
  const toSign = `AWS4-HMAC-SHA256\n${long}\n${scope}\n${createHash('sha256').update(bytes).digest('hex')}`;
  t.is(s.signature, createHmac('sha256', key).update(toSign).digest('hex'));
});

test('aws-chunked: trailing fields are bounded; an endless trailer is refused, not held', (t) => {
  const key = signingKey('secret', '20240101', 'us-east-1', 's3');
  const r = new AwsChunkedResigner({
    key,
    long: '20240101T000000Z',
    scope: '20240101/us-east-1/s3/aws4_request',
    seed: '0'.repeat(64),
    trailer: true,
    maxChunk: 1 << 20,
  });
  r.push(Buffer.from(`0;chunk-signature=${'0'.repeat(64)}\r\n`));
  const line = Buffer.from(`x-amz-meta-pad:${'a'.repeat(4000)}\r\n`);
  // Before the bound, each 4 KB line went on and its canonical text was kept: 1000 lines were 4 MB held.
  t.throws(
    () => {
      for (let i = 0; i < 1000; i++) r.push(line);
    },
    { message: /trailer is larger than 16384 bytes/ },
  );
});

test('aws-chunked: a held chunk counts against the process budget of held bodies, and is given back', (t) => {
  const key = signingKey('secret', '20240101', 'us-east-1', 's3');
  const budget = new BufferBudget(1000);
  const opts = { key, long: '20240101T000000Z', scope: '20240101/us-east-1/s3/aws4_request', seed: '0'.repeat(64), trailer: false, maxChunk: 1 << 20, budget };
  const sig = '0'.repeat(64);
  // Two uploads, each holding most of a chunk: the second is refused once the budget is spent.
  const a = new AwsChunkedResigner(opts);
  a.push(Buffer.from(`258;chunk-signature=${sig}\r\n`)); // 600 bytes declared
  a.push(Buffer.alloc(300, 'a'));
  t.is(budget.used, 602);
  const b = new AwsChunkedResigner(opts);
  t.throws(() => b.push(Buffer.from(`258;chunk-signature=${sig}\r\n`)), { message: /too many request bodies/ });
  // The chunk completes: given back.
  a.push(Buffer.concat([Buffer.alloc(300, 'a'), Buffer.from('\r\n')]));
  t.is(budget.used, 0);
  // An exchange that ends mid-chunk gives it back too, and takes nothing afterwards.
  const c = new AwsChunkedResigner(opts);
  c.push(Buffer.from(`258;chunk-signature=${sig}\r\nabc`));
  t.is(budget.used, 602);
  c.release();
  c.release();
  t.is(budget.used, 0);
  t.throws(() => c.push(Buffer.from('x')), { message: /aws-chunked body/ });
  t.is(budget.used, 0);
});
