// A fake API upstream that only accepts tokens from the fake auth service (fake-token-scheme.mjs).
// argv: --port N --tls CERT KEY --mint-key M [--header NAME]
// Every request needs "Authorization: Bearer <token>" (or NAME: Bearer <token>): a malformed,
// forged or expired token gets 401. The path says whose token it must be: /u/<user>/... must
// carry a token of <user>, /c/<client>/... one of "client:<client>"; another subject gets 403
// (that would be one sandbox receiving another's token). 200 answers echo what was received,
// including the Authorization header itself, so a test can check sandgate scrubs the token:
//   {ok, subject, serial, method, path, bodyBytes, sha256, authorization, tenant}
// WebSocket upgrades (any path) get the same checks (a refusal is a plain 401/403 response); once
// open, the server sends {hello, subject, serial, authorization} and echoes every message.
// stdin, one JSON command per line: {"rejectNext": N} -> the next N requests with a valid token get
// 401 and their tokens are revoked (as an upstream that revoked them would); answered {"ack": ...}.
// Prints {"listening":PORT}, then one {"request":{...}} line per request (upgrades: "upgrade": true):
// method, path, status, subject, serial, why (never the token).
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { WebSocketServer } from 'ws';
import { verify } from './fake-token-scheme.mjs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const mintKey = opt('--mint-key');
const header = (opt('--header') ?? 'authorization').toLowerCase();
const revoked = new Set();
let rejectNext = 0;

createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    return;
  }
  if (typeof cmd.rejectNext === 'number') rejectNext = cmd.rejectNext;
  say({ ack: cmd });
});

/** The token checks: {status: 200|401|403, who?, why?}. */
function check(req, url) {
  const m = /^Bearer (.+)$/.exec(req.headers[header] ?? '');
  const v = m ? verify(mintKey, m[1]) : { ok: false, why: 'missing' };
  if (!v.ok) return { status: 401, why: v.why };
  const who = { subject: v.subject, serial: v.serial };
  if (v.expired) return { status: 401, who, why: 'expired' };
  if (revoked.has(m[1])) return { status: 401, who, why: 'revoked' };
  if (rejectNext > 0) {
    rejectNext--;
    revoked.add(m[1]);
    return { status: 401, who, why: 'revoked' };
  }
  const seg = url.pathname.split('/');
  const want = seg[1] === 'u' ? seg[2] : seg[1] === 'c' ? `client:${seg[2]}` : undefined;
  if (want !== undefined && want !== v.subject) return { status: 403, who, why: `wanted ${want}` };
  return { status: 200, who };
}

const tlsIdx = args.indexOf('--tls');
const server = https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), noDelay: true }, (req, res) => {
  const url = new URL(req.url, 'http://x');
  const hash = createHash('sha256');
  let bytes = 0;
  req.on('data', (c) => {
    bytes += c.length;
    hash.update(c);
  });
  req.on('end', () => {
    const send = (status, body, extra = {}) => {
      say({ request: { method: req.method, path: url.pathname, status, ...extra } });
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const c = check(req, url);
    if (c.status !== 200)
      return send(c.status, { error: c.status === 401 ? 'unauthorized' : 'token of another subject', why: c.why }, { ...c.who, why: c.why });
    const who = c.who;
    send(
      200,
      {
        ok: true,
        ...who,
        method: req.method,
        path: url.pathname,
        bodyBytes: bytes,
        sha256: hash.digest('hex'),
        authorization: req.headers[header],
        tenant: req.headers['x-tenant'] ?? null,
      },
      who,
    );
  });
});
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const url = new URL(req.url, 'http://x');
  const c = check(req, url);
  say({
    request: { upgrade: true, method: req.method, path: url.pathname, status: c.status === 200 ? 101 : c.status, ...c.who, ...(c.why ? { why: c.why } : {}) },
  });
  if (c.status !== 200) {
    socket.end(`HTTP/1.1 ${c.status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.send(JSON.stringify({ hello: 'token-api', ...c.who, authorization: req.headers[header] }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
});
server.listen(Number(opt('--port') ?? 0), '0.0.0.0', () => say({ listening: server.address().port }));
