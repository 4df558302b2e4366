// A fake Google OAuth 2.0 token endpoint and a fake Google API, in one HTTPS server.
// argv: --port N --tls CERT KEY --public-key PEM --email CLIENT_EMAIL --token-uri URL
// POST /token: the JWT bearer grant (RFC 7523 §2.1). The assertion must be an RS256 JWT that
// verifies with --public-key, with iss = --email, aud = --token-uri, a scope, and a current
// iat/exp; then a fresh access token "ya29.real-<hex>" is minted (expires_in 3600). Anything else:
// 400 {"error":"invalid_grant"}.
// Any other request: needs "Authorization: Bearer <a minted token>", else 401; 200 answers echo
// {ok, path, authorization} (the header as received, so a test can check sandgate scrubs it).
// stdin, one JSON command per line: {"revokeAll": true} -> every token minted so far is revoked
// (the API answers 401 to it from then on); answered {"ack": ...}.
// Prints {"listening":PORT}, {"call":{ok, iss, aud, scope, why}} per token request and
// {"request":{method, path, status, why}} per API request: never a token.
import https from 'node:https';
import { createPublicKey, createVerify, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const args = process.argv.slice(2);
const opt = (k, n = 1) => {
  const i = args.indexOf(k);
  return i >= 0 ? args.slice(i + 1, i + 1 + n) : [];
};
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const [port] = opt('--port');
const [cert, key] = opt('--tls', 2);
const pub = createPublicKey(readFileSync(opt('--public-key')[0], 'utf8'));
const [email] = opt('--email');
const [tokenUri] = opt('--token-uri');
const minted = new Set();

createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    return;
  }
  if (cmd.revokeAll === true) minted.clear();
  say({ ack: cmd });
});

function checkAssertion(jwt) {
  const parts = (jwt ?? '').split('.');
  if (parts.length !== 3) return { ok: false, why: 'not a JWT' };
  const [h, c, s] = parts;
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const claims = JSON.parse(Buffer.from(c, 'base64url').toString());
  if (header.alg !== 'RS256') return { ok: false, why: 'alg' };
  if (!createVerify('RSA-SHA256').update(`${h}.${c}`).verify(pub, Buffer.from(s, 'base64url'))) return { ok: false, why: 'signature' };
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== email) return { ok: false, why: 'iss', claims };
  if (claims.aud !== tokenUri) return { ok: false, why: 'aud', claims };
  if (typeof claims.scope !== 'string' || claims.scope === '') return { ok: false, why: 'scope', claims };
  if (!(claims.iat <= now + 60 && claims.exp > now && claims.exp - claims.iat <= 3600)) return { ok: false, why: 'time', claims };
  return { ok: true, claims };
}

https
  .createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const url = new URL(req.url, 'https://x');
      const json = (status, o) => {
        const text = JSON.stringify(o);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
      };
      if (req.method === 'POST' && url.pathname === '/token') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        let v = { ok: false, why: 'grant_type' };
        if (form.get('grant_type') === 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
          try {
            v = checkAssertion(form.get('assertion'));
          } catch {
            v = { ok: false, why: 'malformed' };
          }
        }
        say({ call: { ok: v.ok, why: v.why, iss: v.claims?.iss, aud: v.claims?.aud, scope: v.claims?.scope } });
        if (!v.ok) return json(400, { error: 'invalid_grant' });
        const token = `ya29.real-${randomBytes(16).toString('hex')}`;
        minted.add(token);
        return json(200, { access_token: token, expires_in: 3600, token_type: 'Bearer' });
      }
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      const why = !m ? 'no bearer token' : minted.has(m[1]) ? undefined : 'unknown token';
      const status = why === undefined ? 200 : 401;
      say({ request: { method: req.method, path: url.pathname, status, why } });
      json(status, why === undefined ? { ok: true, path: url.pathname, authorization: req.headers.authorization } : { error: { code: 401, message: why } });
    });
  })
  .listen(Number(port), '0.0.0.0', function () {
    say({ listening: this.address().port });
  });
