/**
 * Token sources: the auth-service and OAuth2 answer checks (pure), the token request bodies, the
 * headers-form credential, and AuthServiceSource / OAuth2Source against a real HTTP server on
 * loopback (port 0): the request sandgate sends, retries, failures, single-flight and isolation.
 */
import test from 'ava';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { compileHeaderCredential, isTokenSource, type Credential, type TokenNet, type TokenRequest } from '../../src/creds/credential.js';
import { AuthServiceSource, cacheKey, parseAuthAnswer } from '../../src/creds/auth-service.js';
import { basicClientAuth, OAuth2Source, parseOAuth2Answer, tokenRequestBody } from '../../src/creds/oauth2.js';
import { loadCredentialSources, loadCredentials } from '../../src/creds/secrets.js';
import { TokenError } from '../../src/creds/token-error.js';
import { scrubString } from '../../src/http/scrub.js';
import { requestHead } from '../../src/http/request-head.js';
import { parseConfig } from '../../src/config/load.js';
import type { CredentialConfig, OAuth2Config } from '../../src/config/types.js';

const reason = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    if (err instanceof TokenError) return err.message;
    throw err;
  }
  return 'no error';
};

test('auth service answers: {token, expiresIn} and {headers, expiresIn}', (t) => {
  t.deepEqual(parseAuthAnswer({ token: 'tok-0123456789', expiresIn: 1.5 }), { kind: 'token', token: 'tok-0123456789', lifetimeMs: 1500 });
  t.deepEqual(parseAuthAnswer({ headers: { 'X-Api-Key': 'key-0123456789', 'X-Tenant': 'acme' }, expiresIn: 60 }), {
    kind: 'headers',
    headers: [
      ['x-api-key', 'key-0123456789'],
      ['x-tenant', 'acme'],
    ],
    lifetimeMs: 60_000,
  });
});

test('auth service answers that are refused, each with a reason that never quotes a value', (t) => {
  const secret = 'tok-SECRET-0123456789';
  const cases: [unknown, RegExp][] = [
    [[], /not a JSON object/],
    [{ token: secret }, /"expiresIn" must be a positive number/],
    [{ token: secret, expiresIn: 0 }, /"expiresIn"/],
    [{ token: secret, expiresIn: '60' }, /"expiresIn"/],
    [{ token: secret, headers: { a: 'b' }, expiresIn: 60 }, /exactly one of "token" or "headers"/],
    [{ expiresIn: 60 }, /exactly one of/],
    [{ token: 'short', expiresIn: 60 }, /8 to 8192 characters/],
    [{ token: `${secret}\r\nX-Evil: 1`, expiresIn: 60 }, /one line of visible ASCII/],
    [{ token: ` ${secret}`, expiresIn: 60 }, /one line/],
    [{ token: 42, expiresIn: 60 }, /must be a string/],
    [{ headers: {}, expiresIn: 60 }, /1 to 32 headers/],
    [{ headers: { 'Bad Name': secret }, expiresIn: 60 }, /not a valid field name/],
    [{ headers: { Host: 'evil.example' }, expiresIn: 60 }, /header "host" may not be set/],
    [{ headers: { 'Transfer-Encoding': 'chunked' }, expiresIn: 60 }, /"transfer-encoding" may not be set/],
    [{ headers: { Connection: 'close' }, expiresIn: 60 }, /"connection"/],
    [{ headers: { 'Proxy-Anything': 'x' }, expiresIn: 60 }, /"proxy-anything"/],
    [{ headers: { 'Content-Length': '5' }, expiresIn: 60 }, /"content-length"/],
    [{ headers: { 'X-A': `${secret}\nx` }, expiresIn: 60 }, /header "x-a" must be one line/],
    [{ headers: { 'X-A': `a\u0000b` }, expiresIn: 60 }, /header "x-a"/],
    [{ headers: { 'X-A': 5 }, expiresIn: 60 }, /header "x-a"/],
    [{ headers: { 'X-A': 'abcdefgh', 'x-a': 'abcdefgh' }, expiresIn: 60 }, /appears twice/],
  ];
  for (const [body, re] of cases) {
    const msg = reason(() => parseAuthAnswer(body));
    t.regex(msg, re, JSON.stringify(body));
    t.false(msg.includes('SECRET'), 'the value is never quoted');
  }
});

test('OAuth2 answers (RFC 6749 §5.1): bearer only, expires_in optional (default 300 s), refresh_token rotation', (t) => {
  t.deepEqual(parseOAuth2Answer({ access_token: 'at-0123456789', token_type: 'bearer', expires_in: 3600 }), {
    accessToken: 'at-0123456789',
    lifetimeMs: 3600_000,
    refreshToken: undefined,
  });
  t.deepEqual(parseOAuth2Answer({ access_token: 'at-0123456789', token_type: 'Bearer', expires_in: '60', refresh_token: 'rt-0123456789' }), {
    accessToken: 'at-0123456789',
    lifetimeMs: 60_000,
    refreshToken: 'rt-0123456789',
  });
  t.is(parseOAuth2Answer({ access_token: 'at-0123456789', token_type: 'Bearer' }).lifetimeMs, 300_000);
  t.regex(
    reason(() => parseOAuth2Answer({ access_token: 'at-0123456789', token_type: 'DPoP' })),
    /"token_type" must be "Bearer"/,
  );
  t.regex(
    reason(() => parseOAuth2Answer({ access_token: 'at-0123456789' })),
    /"token_type"/,
  );
  t.regex(
    reason(() => parseOAuth2Answer({ token_type: 'Bearer' })),
    /"access_token" must be a string/,
  );
  t.regex(
    reason(() => parseOAuth2Answer({ access_token: 'at-0123456789', token_type: 'Bearer', expires_in: -1 })),
    /"expires_in"/,
  );
});

const o2 = (c: Partial<OAuth2Config>): OAuth2Config => ({
  tokenUrl: 'https://idp.test/token',
  grant: 'client_credentials',
  clientId: 'my client',
  clientAuth: 'basic',
  timeoutMs: 2000,
  ...c,
});

test('OAuth2 token requests: form body, Basic client auth with form-encoded id and secret (RFC 6749 §2.3.1), body auth, public client', (t) => {
  const cc = tokenRequestBody(o2({ scope: 'a b' }), 's3cr:t+/', undefined);
  t.is(cc.body, 'grant_type=client_credentials&scope=a+b');
  t.is(cc.headers['content-type'], 'application/x-www-form-urlencoded');
  t.is(cc.headers.authorization, `Basic ${Buffer.from('my+client:s3cr%3At%2B%2F').toString('base64')}`);
  t.is(basicClientAuth('id', 'secret'), `Basic ${Buffer.from('id:secret').toString('base64')}`);
  const body = tokenRequestBody(o2({ clientAuth: 'body' }), 'sec', undefined);
  t.is(body.body, 'grant_type=client_credentials&client_id=my+client&client_secret=sec');
  t.is(body.headers.authorization, undefined);
  const pub = tokenRequestBody(o2({ grant: 'refresh_token' }), undefined, 'rt-1');
  t.is(pub.body, 'grant_type=refresh_token&refresh_token=rt-1&client_id=my+client');
  t.is(pub.headers.authorization, undefined);
});

test("a {headers} credential sets each header (replacing the sandbox's) and scrubs the long values and the token after a scheme", (t) => {
  const tok = 'tok-0123456789abcdef';
  const cred = compileHeaderCredential('svc', 'Authorization', [
    ['authorization', `Bearer ${tok}`],
    ['x-tenant', 'acme'],
  ]);
  const head = requestHead(
    { method: 'GET', url: '/', rawHeaders: ['Authorization', 'Bearer sandbox-own', 'X-Tenant', 'spoofed', 'Accept', '*/*'], connectionNamed: undefined },
    'api',
    cred,
  );
  t.is(head, `GET / HTTP/1.1\r\nHost: api\r\nAccept: */*\r\nauthorization: Bearer ${tok}\r\nx-tenant: acme\r\nAccept-Encoding: identity\r\n\r\n`);
  t.true(cred.needles.includes(tok) && cred.needles.includes(`Bearer ${tok}`));
  t.true(cred.needles.includes(Buffer.from(tok).toString('base64')));
  t.false(cred.needles.includes('acme'), 'a short value is not treated as a secret');
  t.false(scrubString(`echo ${tok} acme`, cred.needles).includes(tok));
});

test('the cache key is the user when there is one, else the sandbox; always with the host', (t) => {
  const r: TokenRequest = { sandbox: 's1', user: 'alice', host: 'api.example.test', port: 443, method: 'GET', path: '/' };
  t.is(cacheKey(r), 'u:alice\napi.example.test');
  t.is(cacheKey({ ...r, sandbox: 's2' }), cacheKey(r), "two sandboxes of one user share the user's token");
  t.not(cacheKey({ ...r, user: 'bob' }), cacheKey(r));
  t.not(cacheKey({ ...r, host: 'other.example.test' }), cacheKey(r));
  t.is(cacheKey({ ...r, user: undefined }), 's:s1\napi.example.test');
  t.not(cacheKey({ ...r, user: undefined }), cacheKey({ ...r, user: undefined, sandbox: 's2' }), 'no user: never shared across sandboxes');
  t.not(cacheKey({ ...r, user: 's:s1' }), cacheKey({ ...r, user: undefined }), 'a user named like a sandbox key cannot collide');
});

/* Against a loopback server ------------------------------------------------------------------ */

interface Seen {
  headers: http.IncomingHttpHeaders;
  body: string;
  url: string;
}
type Handler = (seen: Seen, res: http.ServerResponse) => void;

async function server(handler: Handler): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const s = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const x = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), url: req.url ?? '' };
      seen.push(x);
      handler(x, res);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  };
}

const json = (res: http.ServerResponse, status: number, body: unknown): void => {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

const NET: TokenNet = {
  lookup: (_h, _o, cb) => {
    (cb as (e: Error) => void)(new Error('no lookups in this test'));
  },
  guard: { check: (a) => (a.startsWith('10.') ? `upstream address ${a} is in 10.0.0.0/8, a range not allowed (upstream.allowPrivate)` : undefined) },
  httpsAgent: new https.Agent(),
};

const req = (user: string | undefined, sandbox = 'agent', host = 'api.example.test'): TokenRequest => ({
  sandbox,
  user,
  host,
  port: 443,
  method: 'POST',
  path: '/v1/x',
});
const KEY = 'service-key-0123456789';

function authSource(url: string, timeoutMs = 2000, extra: Partial<CredentialConfig> = {}): AuthServiceSource {
  const cfg = { header: 'Authorization', format: 'Bearer {secret}', ...extra, authService: { url, timeoutMs, secret: { env: 'K' } } };
  return new AuthServiceSource('svc', cfg, KEY, 'fp');
}

test('auth service: POST JSON {sandbox, user, credential, host, port, method, path} with the service key; the token goes through `format`', async (t) => {
  let n = 0;
  const srv = await server((seen, res) => json(res, 200, { token: `tok-${JSON.parse(seen.body).user}-${++n}-0123456789`, expiresIn: 60 }));
  try {
    const src = authSource(`${srv.url}/mint?v=1`, 2000, { format: 'Token {secret}' });
    const c = (await src.acquire(req('alice'), NET)) as Credential;
    t.is(c.value, 'Token tok-alice-1-0123456789');
    t.true(c.needles.includes('tok-alice-1-0123456789'));
    const s = srv.seen[0]!;
    t.is(s.url, '/mint?v=1');
    t.is(s.headers.authorization, `Bearer ${KEY}`);
    t.is(s.headers['content-type'], 'application/json');
    t.deepEqual(JSON.parse(s.body), { sandbox: 'agent', user: 'alice', credential: 'svc', host: 'api.example.test', port: 443, method: 'POST', path: '/v1/x' });
    // Cached now: synchronous, and no second call.
    t.is(src.acquire(req('alice'), NET), c);
    t.is(srv.seen.length, 1);
    // A sandbox without a user: user null, keyed by sandbox.
    await src.acquire(req(undefined, 'lonely'), NET);
    t.like(JSON.parse(srv.seen[1]!.body), { user: null, sandbox: 'lonely' });
  } finally {
    await srv.close();
  }
});

test('auth service: concurrent requests of two users get one call each, and each their own token', async (t) => {
  const srv = await server((seen, res) => {
    setTimeout(() => json(res, 200, { token: `tok-${JSON.parse(seen.body).user}-0123456789`, expiresIn: 60 }), 30);
  });
  try {
    const src = authSource(srv.url);
    const all = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        Promise.resolve(src.acquire(req(i % 2 === 0 ? 'alice' : 'bob'), NET)).then((c) => [i % 2 === 0 ? 'alice' : 'bob', c.value] as const),
      ),
    );
    for (const [user, value] of all) t.is(value, `Bearer tok-${user}-0123456789`);
    t.is(srv.seen.length, 2);
    t.like(src.stats(), { fetches: 2, misses: 40, coalesced: 38 });
  } finally {
    await srv.close();
  }
});

test('auth service failures are TokenErrors: 500 retried 3 times, 401 once, bad JSON, a huge body, a timeout', async (t) => {
  let mode = '500';
  const srv = await server((_s, res) => {
    if (mode === '500') json(res, 500, { error: 'x' });
    else if (mode === '401') json(res, 401, { error: 'x' });
    else if (mode === 'bad') json(res, 200, '{"token": ');
    else if (mode === 'huge') json(res, 200, { token: 'x'.repeat(100_000), expiresIn: 60 });
    // 'slow': never answers
  });
  try {
    const src = authSource(srv.url, 1000);
    await t.throwsAsync(Promise.resolve(src.acquire(req('a'), NET)), { instanceOf: TokenError, message: /answered 500 \(after 3 tries\)$/ });
    t.is(srv.seen.length, 3);
    mode = '401';
    await t.throwsAsync(Promise.resolve(src.acquire(req('b'), NET)), { message: /answered 401$/ });
    t.is(srv.seen.length, 4);
    mode = 'bad';
    await t.throwsAsync(Promise.resolve(src.acquire(req('c'), NET)), { message: /answered 200 with a body that is not JSON/ });
    mode = 'huge';
    await t.throwsAsync(Promise.resolve(src.acquire(req('d'), NET)), { message: /larger than 65536 bytes/ });
    mode = 'slow';
    const started = Date.now();
    await t.throwsAsync(Promise.resolve(src.acquire(req('e'), NET)), { message: /did not answer within 1000 ms/ });
    t.true(Date.now() - started < 5000, 'gave up at its deadline instead of waiting for the slow answer');
    t.is(src.stats().failures, 5);
  } finally {
    await srv.close();
  }
});

test('auth service unreachable (nothing listens): retried, then a TokenError naming the cause', async (t) => {
  const srv = await server(() => undefined);
  const url = srv.url;
  await srv.close();
  const err = await t.throwsAsync(Promise.resolve(authSource(url).acquire(req('a'), NET)), { instanceOf: TokenError });
  t.regex(err?.message ?? '', /unreachable \(ECONNREFUSED\) \(after 3 tries\)/);
});

test('the SSRF guard applies to an IP-literal service URL (it is never looked up); loopback literals are the exception', async (t) => {
  const err = await t.throwsAsync(Promise.resolve(authSource('http://10.1.2.3:9/token').acquire(req('a'), NET)), { instanceOf: TokenError });
  t.regex(err?.message ?? '', /10\.0\.0\.0\/8, a range not allowed/);
  t.false(err?.retryable);
});

test('OAuth2 refresh_token grant: the rotated refresh token is sent next time; one token for all users', async (t) => {
  let current = 'rt-initial-0123';
  let n = 0;
  const srv = await server((seen, res) => {
    const form = new URLSearchParams(seen.body);
    if (form.get('refresh_token') !== current) {
      json(res, 400, { error: 'invalid_grant', error_description: 'stale rt-secret' });
      return;
    }
    current = `rt-rotated-${++n}-0123`;
    json(res, 200, { access_token: `at-${n}-0123456789`, token_type: 'Bearer', expires_in: 1, refresh_token: current });
  });
  try {
    const cfg = { header: 'Authorization', format: 'Bearer {secret}', oauth2: o2({ tokenUrl: `${srv.url}/token`, grant: 'refresh_token' }) };
    const src = new OAuth2Source('o', cfg, 'client-secret', 'rt-initial-0123', 'fp');
    const a = (await src.acquire(req('alice'), NET)) as Credential;
    t.is(a.value, 'Bearer at-1-0123456789');
    t.is(src.acquire(req('bob'), NET), a, 'client credentials are not per user');
    src.reject(req('alice'), a);
    const b = (await src.acquire(req('alice'), NET)) as Credential;
    t.is(b.value, 'Bearer at-2-0123456789');
    t.is(new URLSearchParams(srv.seen[1]!.body).get('refresh_token'), 'rt-rotated-1-0123');
    t.is(srv.seen[1]!.headers.authorization, basicClientAuth('my client', 'client-secret'));
    // An error response: its RFC 6749 §5.2 code is named, its description (free text) is not.
    current = 'something-else';
    src.reject(req('alice'), b);
    const err = await t.throwsAsync(Promise.resolve(src.acquire(req('alice'), NET)), { instanceOf: TokenError });
    t.regex(err?.message ?? '', /answered 400 \(invalid_grant\)$/);
  } finally {
    await srv.close();
  }
});

test('loadCredentialSources: static secrets compiled, token sources built with their secrets; a reload keeps an unchanged source', (t) => {
  const yaml = (extra = ''): string => `sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies: { p: { allow: [{ host: api.example.test, inject: svc }] } }
upstream: { allowPrivate: [10.77.0.0/16] }
credentials:
  static: { secret: { env: SG_S } }
  svc: { authService: { url: "https://auth.example.test/token", secret: { env: SG_K } }${extra} }
  o: { oauth2: { tokenUrl: "http://10.77.4.2:8080/token", grant: client_credentials, clientId: c, clientSecret: { file: /cs } } }
`;
  const env = { SG_S: 'static-secret-1', SG_K: 'service-key-1' };
  const readers = { env, readFile: (f: string): string => (f === '/cs' ? 'client-secret-1\n' : '') };
  const first = loadCredentialSources(parseConfig(yaml(), 'c.yaml'), readers);
  t.false(isTokenSource(first.get('static')!));
  t.true(isTokenSource(first.get('svc')!));
  t.true(isTokenSource(first.get('o')!));
  t.deepEqual([...loadCredentials(parseConfig(yaml(), 'c.yaml'), readers).keys()], ['static'], 'loadCredentials: the static ones');
  const same = loadCredentialSources(parseConfig(yaml(), 'c.yaml'), readers, first);
  t.is(same.get('svc'), first.get('svc'), 'unchanged: the same source, its cache kept');
  t.is(same.get('o'), first.get('o'));
  const rotatedKey = loadCredentialSources(parseConfig(yaml(), 'c.yaml'), { ...readers, env: { ...env, SG_K: 'service-key-2' } }, first);
  t.not(rotatedKey.get('svc'), first.get('svc'), 'a new service key: a new source');
  const changed = loadCredentialSources(parseConfig(yaml(', format: "Token {secret}"'), 'c.yaml'), readers, first);
  t.not(changed.get('svc'), first.get('svc'));
  t.is(changed.get('o'), first.get('o'));
  // Missing secrets are config errors naming the exact key.
  const err = t.throws(() => loadCredentialSources(parseConfig(yaml(), 'c.yaml'), { ...readers, env: { SG_S: 'static-secret-1' } }));
  t.regex(err?.message ?? '', /^credentials\.svc\.authService\.secret: environment variable SG_K is not set$/);
  const err2 = t.throws(() =>
    loadCredentialSources(parseConfig(yaml(), 'c.yaml'), {
      env,
      readFile: () => {
        throw Object.assign(new Error('x'), { code: 'ENOENT' });
      },
    }),
  );
  t.regex(err2?.message ?? '', /^credentials\.o\.oauth2\.clientSecret: cannot read \/cs \(ENOENT\)$/);
});

test('auth service for an awsSigV4 credential: {aws: {accessKeyId, secretAccessKey, sessionToken}, expiresIn} becomes temporary keys; other answers are refused', async (t) => {
  const keys = { accessKeyId: 'ASIATEMPORARYKEY0001', secretAccessKey: 'temporary/secret/0123456789abcdef', sessionToken: 'session-token-0123456789abcdef' };
  t.deepEqual(parseAuthAnswer({ aws: keys, expiresIn: 900 }, true), { kind: 'aws', keys, lifetimeMs: 900_000 });
  t.regex(
    reason(() => parseAuthAnswer({ token: 'tok-0123456789', expiresIn: 60 }, true)),
    /an awsSigV4 credential needs "aws"/,
  );
  t.regex(
    reason(() => parseAuthAnswer({ aws: { ...keys, accessKeyId: 'lower-case-0000000' }, expiresIn: 60 }, true)),
    /"aws.accessKeyId" must be/,
  );
  t.regex(
    reason(() => parseAuthAnswer({ aws: { ...keys, secretAccessKey: 'short' }, expiresIn: 60 }, true)),
    /"aws.secretAccessKey" must be 8 to/,
  );
  t.regex(
    reason(() => parseAuthAnswer({ aws: keys, expiresIn: 60 })),
    /"aws" keys are only for an awsSigV4 credential/,
  );
  for (const m of [
    reason(() => parseAuthAnswer({ aws: { ...keys, accessKeyId: 'bad' }, expiresIn: 60 }, true)),
    reason(() => parseAuthAnswer({ aws: { ...keys, secretAccessKey: 'x' }, expiresIn: 60 }, true)),
  ])
    t.false(m.includes('temporary/secret') || m.includes('bad'), 'messages never carry a value');

  const srv = await server((_seen, res) => json(res, 200, { aws: keys, expiresIn: 900 }));
  try {
    const config = parseConfig(
      `sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies: { p: { allow: [{ host: s3.us-east-1.amazonaws.com, inject: aws }] } }
credentials:
  aws:
    awsSigV4: { authService: { url: "${srv.url}/aws", secret: { env: SVC } }, region: us-east-1 }
`,
      'sg.yaml',
    );
    const src = loadCredentialSources(config, { env: { SVC: KEY }, readFile: () => '' }).get('aws');
    if (src === undefined || !isTokenSource(src)) return t.fail('not a token source');
    const c = (await src.acquire(req('alice', 'agent', 's3.us-east-1.amazonaws.com'), NET)) as Credential;
    t.like(c.aws, { ...keys, region: 'us-east-1', placeholderKeyId: 'AKIASANDGATEPLACEHOLDER' });
    for (const s of [keys.accessKeyId, keys.secretAccessKey, keys.sessionToken]) t.true(c.needles.includes(s));
    t.like(JSON.parse(srv.seen[0]?.body ?? '{}'), { user: 'alice', credential: 'aws', host: 's3.us-east-1.amazonaws.com' });
    t.is(srv.seen[0]?.headers.authorization, `Bearer ${KEY}`);
  } finally {
    await srv.close();
  }
});
