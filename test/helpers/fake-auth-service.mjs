// A fake token service for integration tests, run in its own upstream namespace with plain `node`.
// argv: --port N [--tls CERT KEY] --service-key K --mint-key M [--ttl SECONDS]
//       [--client-id ID --client-secret S] [--refresh-token R] [--scope "a b"]
//
// POST /token: the auth-service protocol (docs/auth-service.md). Requires
//   "Authorization: Bearer <service key>" (else 401) and a JSON body {sandbox, user, credential,
//   host, port, method, path}; answers {token, expiresIn} with a token for `user` (or, if null,
//   "sandbox:<sandbox>"). Behaviour per URL query, so each credential of a test can point at its
//   own misbehaviour: ?ttl=S  ?delayMs=N (answer late)  ?status=N (answer N with a JSON error)
//   ?badJson=1 (200 with a body that is not JSON)  ?mode=headers ({headers: {authorization,
//   x-tenant}, expiresIn} instead of a token).
// POST /oauth/token: an OAuth 2.0 token endpoint (RFC 6749). grant_type=client_credentials needs
//   the client's credentials (HTTP Basic, §2.3.1, or client_id/client_secret in the body);
//   grant_type=refresh_token needs the CURRENT refresh token, and rotates it on every use (an old
//   one gets 400 invalid_grant). Answers {access_token, token_type: "Bearer", expires_in,
//   refresh_token?}; the access token's subject is "client:<client id>".
// Prints {"listening":PORT} once ready, and one {"call":{...}} line per call: n, kind (auth|oauth2),
// the request's fields (never the service key or a token), keyOk, and for OAuth2 grant, clientOk,
// staleRefresh.
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mint } from './fake-token-scheme.mjs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const port = Number(opt('--port') ?? 0);
const serviceKey = opt('--service-key');
const mintKey = opt('--mint-key');
const defaultTtl = Number(opt('--ttl') ?? 1.5);
const clientId = opt('--client-id');
const clientSecret = opt('--client-secret');
let refreshToken = opt('--refresh-token');
const scope = opt('--scope');
let calls = 0;
let serial = 0;

const json = (res, status, body) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

function authService(req, res, url, raw) {
  const n = ++calls;
  const keyOk = req.headers.authorization === `Bearer ${serviceKey}`;
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    body = undefined;
  }
  const q = (k) => url.searchParams.get(k);
  say({ call: { n, kind: 'auth', keyOk, ...(body && typeof body === 'object' ? body : { body: 'not json' }), query: url.search } });
  const answer = () => {
    if (!keyOk) return json(res, 401, { error: 'bad service key' });
    if (!body || typeof body !== 'object') return json(res, 400, { error: 'bad request' });
    if (q('status')) return json(res, Number(q('status')), { error: 'forced' });
    if (q('badJson')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"token": "tk_half');
      return;
    }
    const ttl = Number(q('ttl') ?? defaultTtl);
    const subject = body.user ?? `sandbox:${body.sandbox}`;
    const token = mint(mintKey, subject, ++serial, ttl * 1000);
    if (q('mode') === 'headers') return json(res, 200, { headers: { Authorization: `Bearer ${token}`, 'X-Tenant': String(subject) }, expiresIn: ttl });
    json(res, 200, { token, expiresIn: ttl });
  };
  const delay = Number(q('delayMs') ?? 0);
  if (delay > 0) setTimeout(answer, delay);
  else answer();
}

function oauth2(req, res, url, raw) {
  const n = ++calls;
  const form = new URLSearchParams(raw);
  let id = form.get('client_id');
  let secret = form.get('client_secret');
  const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
  if (basic) {
    const [u, p] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    id = decodeURIComponent(u.replace(/\+/g, ' '));
    secret = decodeURIComponent((p ?? '').replace(/\+/g, ' '));
  }
  const grant = form.get('grant_type');
  const clientOk = id === clientId && (grant === 'refresh_token' && clientSecret === undefined ? true : secret === clientSecret);
  const staleRefresh = grant === 'refresh_token' && form.get('refresh_token') !== refreshToken;
  say({ call: { n, kind: 'oauth2', grant, clientOk, basic: Boolean(basic), scope: form.get('scope'), staleRefresh } });
  if (!clientOk) return json(res, 401, { error: 'invalid_client' });
  if (grant !== 'client_credentials' && grant !== 'refresh_token') return json(res, 400, { error: 'unsupported_grant_type' });
  if (scope !== undefined && form.get('scope') !== scope) return json(res, 400, { error: 'invalid_scope' });
  if (staleRefresh) return json(res, 400, { error: 'invalid_grant' });
  const ttl = Number(url.searchParams.get('ttl') ?? defaultTtl);
  const out = { access_token: mint(mintKey, `client:${id}`, ++serial, ttl * 1000), token_type: 'Bearer', expires_in: ttl };
  if (grant === 'refresh_token') {
    refreshToken = `rtok_${randomBytes(12).toString('hex')}`;
    out.refresh_token = refreshToken;
  }
  json(res, 200, out);
}

const handler = (req, res) => {
  const url = new URL(req.url, 'http://x');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    if (req.method === 'POST' && url.pathname === '/token') return authService(req, res, url, raw);
    if (req.method === 'POST' && url.pathname === '/oauth/token') return oauth2(req, res, url, raw);
    json(res, 404, { error: 'not found' });
  });
};

const tlsIdx = args.indexOf('--tls');
const servers = [];
servers.push(
  tlsIdx >= 0 ? https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]) }, handler) : http.createServer(handler),
);
// --plain-port N: the same service over plain HTTP as well (sandgate allows http:// only to
// loopback or allowPrivate IP literals).
const plainPort = opt('--plain-port');
if (plainPort !== undefined) servers.push(http.createServer(handler));
let ready = 0;
servers[0].listen(port, '0.0.0.0', () => {
  if (++ready === servers.length) say({ listening: servers[0].address().port });
});
if (servers[1])
  servers[1].listen(Number(plainPort), '0.0.0.0', () => {
    if (++ready === servers.length) say({ listening: servers[0].address().port });
  });
