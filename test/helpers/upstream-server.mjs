// A fake upstream for integration tests, run inside an upstream namespace with plain `node`.
// Modes (argv): --name NAME --port N [--tls CERT KEY] [--banner TEXT] [--udp]
//   http(s): answers every request with JSON {server, host, method, path, headers}
//   --banner: raw TCP, the server speaks first (like SSH/SMTP), then echoes; a line "reset"
//             makes it reset the connection (RST) instead
//   --udp: records datagrams; prints one JSON line per datagram on stdout
// Credential checks and echoes (for interception tests), http(s) mode:
//   --expect-auth VALUE   requests whose Authorization is not exactly VALUE get 401 JSON
//   --expect-header NAME  check header NAME instead of Authorization (with --expect-auth)
//   --expect-query K=V    requests whose query parameter K is not exactly V get 401 JSON
//   --echo-headers        also echo the request headers (JSON) in the response header x-echo-headers
// Special paths (http(s) mode; everything else is the JSON echo above):
//   /_sg/bytes/N          N bytes (a repeating pattern), Content-Length set, streamed in 64 KiB writes
//   /_sg/upload           consumes the body; answers {bytes, sha256} (no echo)
//   /_sg/sse?n=N&interval=MS   text/event-stream: N events "data: {i, t}" MS apart, then ends
//   /_sg/redirect?to=URL[&status=S]   S (default 302) with Location URL
//   /_sg/gzip             the JSON echo, gzip-encoded (whatever Accept-Encoding says)
//   WebSocket upgrade (any path; same auth checks, else 401): first sends a text message
//     {"hello":NAME,"authorization":<the Authorization received>,"extensions":<Sec-WebSocket-Extensions>},
//     (on a path ending in /fragmented as two frames of one message, RFC 6455 §5.4, split in the
//     middle of the Authorization value, with a ping between them),
//     then echoes every message (permessage-deflate allowed if the client offers it)
//   /_sg/trailers         the JSON echo with a trailer section: x-echo-auth (the Authorization received), x-done: yes
// --h2 (with --tls): HTTP/2 and HTTP/1.1 (ALPN); the request line's `proto` says which one a request came over
// Prints {"listening":PORT} on stdout once ready; one {"request":{method, path, host, auth, authHeaders}}
// line per request (the path without its query; auth is ok|missing|wrong, never the value).
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const name = opt('--name') ?? 'upstream';
const port = Number(opt('--port') ?? 0);
const host = opt('--host') ?? '0.0.0.0';
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

if (args.includes('--udp')) {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => say({ udp: m.toString('utf8'), from: `${r.address}:${r.port}` }));
  s.bind(port, host, () => say({ listening: s.address().port }));
} else if (opt('--banner') !== undefined) {
  const banner = opt('--banner');
  const s = net.createServer((c) => {
    c.write(banner + '\n');
    c.on('error', () => {});
    c.on('data', (d) => {
      if (String(d).trim() === 'reset') c.resetAndDestroy();
      else c.write(d);
    });
  });
  s.listen(port, host, () => say({ listening: s.address().port }));
} else {
  const expectAuth = opt('--expect-auth');
  const expectQuery = opt('--expect-query');
  const echoHeaders = args.includes('--echo-headers');
  const authHeader = (opt('--expect-header') ?? 'authorization').toLowerCase();
  const authOf = (req, url) => {
    if (expectQuery !== undefined) {
      const eq = expectQuery.indexOf('=');
      const got = url.searchParams.getAll(expectQuery.slice(0, eq));
      if (got.length === 0) return 'missing';
      return got.length === 1 && got[0] === expectQuery.slice(eq + 1) ? 'ok' : 'wrong';
    }
    if (expectAuth !== undefined) {
      const h = req.headers[authHeader];
      if (h === undefined) return 'missing';
      return h === expectAuth ? 'ok' : 'wrong';
    }
    return undefined;
  };
  const special = (_req, res, url, body) => {
    const p = url.pathname;
    if (p.startsWith('/_sg/bytes/')) {
      let left = Number(p.slice('/_sg/bytes/'.length));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
      const block = Buffer.alloc(64 * 1024, 'abcdefghijklmnopqrstuvwxyz0123456789');
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, block.length);
          left -= n;
          if (!res.write(n === block.length ? block : block.subarray(0, n))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return true;
    }
    if (p === '/_sg/upload') {
      const out = JSON.stringify({ bytes: body.bytes, sha256: body.hash.digest('hex') });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
      return true;
    }
    if (p === '/_sg/sse') {
      const n = Number(url.searchParams.get('n') ?? 3);
      const interval = Number(url.searchParams.get('interval') ?? 100);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.flushHeaders();
      let i = 0;
      const tick = () => {
        res.write(`data: ${JSON.stringify({ i, t: Date.now() })}\n\n`);
        if (++i < n) setTimeout(tick, interval);
        else res.end();
      };
      setTimeout(tick, interval);
      return true;
    }
    if (p === '/_sg/redirect') {
      res.writeHead(Number(url.searchParams.get('status') ?? 302), { location: url.searchParams.get('to') ?? '/', 'content-length': 0 });
      res.end();
      return true;
    }
    return false;
  };
  const handler = (req, res) => {
    const url = new URL(req.url, 'http://x');
    const auth = authOf(req, url);
    let authHeaders = 0;
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === authHeader) authHeaders++;
    const chunks = [];
    const body = { bytes: 0, hash: createHash('sha256') };
    const keep = url.pathname !== '/_sg/upload';
    req.on('data', (c) => {
      body.bytes += c.length;
      body.hash.update(c);
      if (keep) chunks.push(c);
    });
    req.on('end', () => {
      say({
        request: {
          method: req.method,
          path: url.pathname,
          host: req.headers.host ?? req.headers[':authority'],
          proto: req.httpVersion,
          ...(auth ? { auth } : {}),
          authHeaders,
        },
      });
      if (auth !== undefined && auth !== 'ok') {
        const out = JSON.stringify({ error: 'unauthorized', auth });
        res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
        res.end(out);
        return;
      }
      if (special(req, res, url, body)) return;
      const out = JSON.stringify({
        server: name,
        host: req.headers.host,
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const extra = echoHeaders ? { 'x-echo-headers': JSON.stringify(req.headers) } : {};
      if (url.pathname === '/_sg/trailers') {
        res.writeHead(200, { 'content-type': 'application/json', trailer: 'x-echo-auth, x-done', ...extra });
        res.write(out);
        res.addTrailers({ 'x-echo-auth': String(req.headers.authorization ?? ''), 'x-done': 'yes' });
        res.end();
        return;
      }
      if (url.pathname === '/_sg/gzip') {
        const z = zlib.gzipSync(out);
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': z.length, ...extra });
        res.end(z);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out), ...extra });
      res.end(out);
    });
  };
  const tlsIdx = args.indexOf('--tls');
  const server =
    tlsIdx >= 0 && args.includes('--h2')
      ? http2.createSecureServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), allowHTTP1: true }, handler)
      : tlsIdx >= 0
        ? https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), noDelay: true }, handler)
        : http.createServer({ noDelay: true }, handler);
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: true });
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    const url = new URL(req.url, 'http://x');
    const auth = authOf(req, url);
    say({ upgrade: { path: url.pathname, ...(auth ? { auth } : {}) } });
    if (auth !== undefined && auth !== 'ok') {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const hello = JSON.stringify({
        hello: name,
        authorization: req.headers.authorization ?? null,
        extensions: req.headers['sec-websocket-extensions'] ?? null,
      });
      const auth = req.headers.authorization ?? '';
      if (url.pathname.endsWith('/fragmented') && auth.length > 1) {
        const cut = hello.indexOf(auth) + Math.floor(auth.length / 2);
        ws.send(hello.slice(0, cut), { fin: false });
        ws.ping('between fragments');
        ws.send(hello.slice(cut), { fin: true });
      } else ws.send(hello);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => {});
    });
  });
  server.listen(port, host, () => say({ listening: server.address().port }));
}
