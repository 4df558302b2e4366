// A fake WebSocket upstream for integration tests, run inside an upstream namespace with plain `node`.
// It uses the `ws` package (resolved from the repo's node_modules: this file lives in the repo).
//
// argv: --port N --tls CERT KEY --token REAL
//   The upgrade request (RFC 6455 §4.1) must carry `Authorization: Bearer REAL`, else the handshake
//   is refused with a plain HTTP 401. Once open, the server first sends one text message
//   {"hello":"fake-ws","authorization":<the Authorization header it received>} (an upstream that
//   reflects the credential), then echoes every message back with the same opcode (text/binary).
//   A non-upgrade request gets 426.
// Prints {"listening":PORT} on stdout once ready, then JSON lines:
//   {"upgrade":{"path","auth":"ok"|"missing"|"wrong","authHeaders":N},"status":101|401}
//   {"message":{"bytes":N,"binary":bool}}   {"closed":{"code":N}}
// The token itself is never printed.
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(opt('--port') ?? 0);
const host = opt('--host') ?? '0.0.0.0';
const token = opt('--token');
if (token === undefined || token === '') throw new Error('fake-ws-server: --token REAL is required');
const tlsIdx = args.indexOf('--tls');
if (tlsIdx < 0) throw new Error('fake-ws-server: --tls CERT KEY is required');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const server = https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), noDelay: true }, (req, res) => {
  const body = 'this endpoint speaks WebSocket only\n';
  res.writeHead(426, { upgrade: 'websocket', connection: 'Upgrade', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  say({ request: { method: req.method, path: req.url }, status: 426 });
});

// perMessageDeflate stays off (the server default): frames travel uncompressed.
const wss = new WebSocketServer({ noServer: true });

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const h = req.headers.authorization;
  const auth = h === undefined ? 'missing' : h === `Bearer ${token}` ? 'ok' : 'wrong';
  const authHeaders = req.headersDistinct?.authorization?.length ?? (h === undefined ? 0 : 1);
  const path = req.url ?? '/';
  if (auth !== 'ok') {
    const body = JSON.stringify({ error: 'missing or wrong bearer token' });
    socket.end(
      `HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    say({ upgrade: { path, auth, authHeaders }, status: 401 });
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    say({ upgrade: { path, auth, authHeaders }, status: 101 });
    ws.send(JSON.stringify({ hello: 'fake-ws', authorization: h }));
    ws.on('message', (data, isBinary) => {
      say({ message: { bytes: data.length, binary: isBinary } });
      ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code) => say({ closed: { code } }));
    ws.on('error', () => {});
  });
});

server.listen(port, host, () => say({ listening: server.address().port }));
