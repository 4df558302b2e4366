// A fake upstream for integration tests, run inside an upstream namespace with plain `node`.
// Modes (argv): --name NAME --port N [--tls CERT KEY] [--banner TEXT] [--udp]
//   http(s): answers every request with JSON {server, host, method, path, headers}
//   --banner: raw TCP, the server speaks first (like SSH/SMTP), then echoes
//   --udp: records datagrams; prints one JSON line per datagram on stdout
// Prints {"listening":PORT} on stdout once ready.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : undefined; };
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
  const s = net.createServer((c) => { c.write(banner + '\n'); c.pipe(c); c.on('error', () => {}); });
  s.listen(port, host, () => say({ listening: s.address().port }));
} else {
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ server: name, host: req.headers.host, method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      say({ request: { method: req.method, path: req.url, host: req.headers.host } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  };
  const tlsIdx = args.indexOf('--tls');
  const server = tlsIdx >= 0
    ? https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]) }, handler)
    : http.createServer(handler);
  server.listen(port, host, () => say({ listening: server.address().port }));
}
