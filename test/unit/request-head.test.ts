/**
 * The one request-head builder (src/http/request-head.ts), used by the relay and the WebSocket
 * path alike: what the upstream is sent of a request's fields, and how the credential goes in.
 */
import test from 'ava';
import { compileCredential, compileHeaderCredential, type Credential } from '../../src/creds/credential.js';
import { requestHead, requestHeaders, requestTarget, upgradeFields } from '../../src/http/request-head.js';
import { addConnectionTokens } from '../../src/http/headers.js';
import { SandgateError } from '../../src/errors.js';
import type { CredentialConfig } from '../../src/config/types.js';

const SECRET = 'sk-real-0123456789';
const cfg = (c: Partial<CredentialConfig>): CredentialConfig => ({ secret: { env: 'X' }, header: 'Authorization', format: 'Bearer {secret}', ...c });
const fields = (raw: string[], url = '/p'): { method: string; url: string; rawHeaders: string[]; connectionNamed: Set<string> | undefined } => {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === 'connection') named = addConnectionTokens(named, raw[i + 1] as string);
  return { method: 'POST', url, rawHeaders: raw, connectionNamed: named };
};

test("no credential: Host first (the upstream's), the sandbox's fields in order and case, hop-by-hop, Connection-named and Expect dropped", (t) => {
  const raw = [
    'User-Agent',
    'x',
    'Host',
    'sandbox-said',
    'Connection',
    'keep-alive, X-Hop',
    'X-Hop',
    'gone',
    'Keep-Alive',
    '5',
    'TE',
    'trailers',
    'Proxy-Authorization',
    'Basic x',
    'Upgrade',
    'h2c',
    'Expect',
    '100-continue',
    'Trailer',
    'X-T',
    'X-Keep',
    'a',
    'x-keep',
    'b',
  ];
  t.is(
    requestHead(fields(raw), 'up.example.test:8443', undefined),
    'POST /p HTTP/1.1\r\nHost: up.example.test:8443\r\nUser-Agent: x\r\nX-Keep: a\r\nx-keep: b\r\n\r\n',
  );
});

test('a chunked body keeps its Transfer-Encoding (after the other fields): its bytes are framed by sandgate', (t) => {
  t.is(
    requestHead(fields(['Transfer-Encoding', 'chunked', 'A', '1']), 'h', undefined),
    'POST /p HTTP/1.1\r\nHost: h\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
  );
});

test("the credential's field replaces every copy the sandbox sent under its name (any case); Accept-Encoding becomes identity", (t) => {
  const cred = compileCredential('k', cfg({}), SECRET);
  const head = requestHead(fields(['authorization', 'Bearer mine', 'AUTHORIZATION', 'Bearer again', 'Accept-Encoding', 'gzip, br', 'A', '1']), 'h', cred);
  t.is(head, `POST /p HTTP/1.1\r\nHost: h\r\nA: 1\r\nauthorization: Bearer ${SECRET}\r\nAccept-Encoding: identity\r\n\r\n`);
});

test('a field name that reads as one sandgate owns once `_` is `-` (CGI-style servers do) is dropped; other underscores pass', (t) => {
  const cred = compileCredential('k', cfg({ header: 'X-Api-Key', format: '{secret}' }), SECRET);
  const raw = [
    'Transfer_Encoding',
    'chunked',
    'content_length',
    '5',
    'X_API_KEY',
    'mine',
    'Connection_',
    'x',
    'Host_',
    'evil',
    'Proxy_Authorization',
    'p',
    'My_Field',
    'kept',
  ];
  t.is(
    requestHead(fields(raw), 'h', cred),
    `POST /p HTTP/1.1\r\nHost: h\r\nConnection_: x\r\nHost_: evil\r\nMy_Field: kept\r\nx-api-key: ${SECRET}\r\nAccept-Encoding: identity\r\n\r\n`,
  );
  t.is(
    requestHead(fields(['X_Api_Key', 'mine']), 'h', undefined),
    'POST /p HTTP/1.1\r\nHost: h\r\nX_Api_Key: mine\r\n\r\n',
    'no credential: not a field sandgate owns',
  );
});

test("a {headers} credential sets each of its fields, replacing the sandbox's", (t) => {
  const cred = compileHeaderCredential('svc', 'Authorization', [
    ['authorization', 'Bearer tok-0123456789'],
    ['x-tenant', 'acme'],
  ]);
  t.is(
    requestHead(fields(['X-Tenant', 'spoofed', 'B', '2']), 'h', cred),
    'POST /p HTTP/1.1\r\nHost: h\r\nB: 2\r\nauthorization: Bearer tok-0123456789\r\nx-tenant: acme\r\nAccept-Encoding: identity\r\n\r\n',
  );
});

test('placeholder: replaced in every value, every occurrence; the credential field is still set', (t) => {
  const cred = compileCredential('k', cfg({ placeholder: 'PH-123' }), SECRET);
  const head = requestHead(fields(['Authorization', 'Bearer PH-123', 'X-Other', 'a=PH-123;b=PH-123', 'Cookie', 'c=PH-123']), 'h', cred);
  t.is(
    head,
    `POST /p HTTP/1.1\r\nHost: h\r\nX-Other: a=${SECRET};b=${SECRET}\r\nCookie: c=${SECRET}\r\nauthorization: Bearer ${SECRET}\r\nAccept-Encoding: identity\r\n\r\n`,
  );
});

test('query mode: the parameter is set in the target, every copy the sandbox sent dropped; no field is added but Accept-Encoding', (t) => {
  const cred = compileCredential('q', cfg({ query: 'key' }), SECRET);
  t.is(
    requestHead(fields(['Authorization', 'Bearer mine'], '/v1?a=1&key=junk'), 'h', cred),
    `POST /v1?a=1&key=${SECRET} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer mine\r\nAccept-Encoding: identity\r\n\r\n`,
  );
  t.is(requestTarget('/v1?key=x', cred), `/v1?key=${SECRET}`);
  t.is(requestTarget('/v1?key=x', undefined), '/v1?key=x');
});

test('CR, LF or NUL in an injected value (secret, token, placeholder replacement) is refused: UPSTREAM_REQUEST, nothing built', (t) => {
  for (const bad of ['a\r\nX-Evil: 1', 'a\nb', 'a\0b']) {
    const cred = compileCredential('k', cfg({ placeholder: 'PH-123' }), bad);
    const e = t.throws(() => requestHead(fields([]), 'h', cred), { instanceOf: SandgateError });
    t.is((e as SandgateError).code, 'UPSTREAM_REQUEST');
    t.throws(() => requestHead(fields(['X', 'PH-123']), 'h', { ...cred, value: 'ok' } as Credential), { instanceOf: SandgateError }, 'via the placeholder');
    const hc = compileHeaderCredential('svc', 'Authorization', [['x-token', bad]]);
    t.throws(() => upgradeFields(fields([]), 'h', hc), { instanceOf: SandgateError }, 'the WebSocket path too');
  }
});

test('the builder leaves no state behind: a refused build does not leak into the next head', (t) => {
  const bad = compileCredential('k', cfg({}), 'x\r\ny');
  t.throws(() => requestHead(fields(['A', '1']), 'h', bad));
  t.is(requestHead(fields(['B', '2']), 'h', undefined), 'POST /p HTTP/1.1\r\nHost: h\r\nB: 2\r\n\r\n');
});

test("upgrade fields: the same rules, Connection: Upgrade and Upgrade: websocket sandgate's own; with a credential, Sec-WebSocket-Extensions dropped", (t) => {
  const raw = [
    'Host',
    'x',
    'Connection',
    'Upgrade, X-Hop',
    'Upgrade',
    'websocket',
    'X-Hop',
    '1',
    'Sec-WebSocket-Key',
    'k==',
    'Sec-WebSocket-Extensions',
    'permessage-deflate',
    'Authorization',
    'mine',
  ];
  t.deepEqual(upgradeFields(fields(raw), 'up', undefined), [
    'Host',
    'up',
    'Sec-WebSocket-Key',
    'k==',
    'Sec-WebSocket-Extensions',
    'permessage-deflate',
    'Authorization',
    'mine',
    'Connection',
    'Upgrade',
    'Upgrade',
    'websocket',
  ]);
  const cred = compileCredential('k', cfg({}), SECRET);
  t.deepEqual(upgradeFields(fields(raw), 'up', cred), [
    'Host',
    'up',
    'Sec-WebSocket-Key',
    'k==',
    'Connection',
    'Upgrade',
    'Upgrade',
    'websocket',
    'authorization',
    `Bearer ${SECRET}`,
    'Accept-Encoding',
    'identity',
  ]);
});

test('HTTP/2 upstream fields: the same fields as a header list, names lower-cased, Host as :authority, TE only as trailers, no HTTP2-Settings, the credential and its query', (t) => {
  const cred = compileCredential('c', cfg({ placeholder: 'PH' }), SECRET);
  const raw = [
    'Host',
    'sandbox-said',
    'HTTP2-Settings',
    'AAMAAABk',
    'X-Key',
    'a PH b',
    'Cookie',
    'a=1',
    'cookie',
    'b=2',
    'Transfer-Encoding',
    'chunked',
    'TE',
    'trailers',
    'Connection',
    'x-hop',
    'X-Hop',
    'gone',
    'Authorization',
    'Bearer PH',
  ];
  const h = requestHeaders(fields(raw, '/v1/x?q=1'), 'api.example.test', cred);
  t.deepEqual(h, {
    ':method': 'POST',
    ':scheme': 'https',
    ':path': '/v1/x?q=1',
    ':authority': 'api.example.test',
    'x-key': `a ${SECRET} b`,
    cookie: ['a=1', 'b=2'],
    te: 'trailers',
    authorization: `Bearer ${SECRET}`,
    'accept-encoding': 'identity',
  });
  // No TE: trailers from the sandbox, none upstream; a query credential goes into :path.
  const q = requestHeaders(fields(['TE', 'gzip'], '/p?a=1'), 'h', compileCredential('q', cfg({ query: 'key' }), SECRET));
  t.is(q.te, undefined);
  t.is(q[':path'], `/p?a=1&key=${SECRET}`);
  t.throws(() => requestHeaders(fields([]), 'h', compileCredential('bad', cfg({}), 'a\r\nb')), { instanceOf: SandgateError });
});
