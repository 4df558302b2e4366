/**
 * The demo's fake upstream server: a program, not a module. `sandgate demo` spawns it with
 * `process.execPath dist/demo/fake-upstream.js ...` inside an upstream namespace, so the demo
 * needs nothing beyond dist/ on the machine.
 *
 *   --name NAME            what the server calls itself in its answers ("api", "evil")
 *   --cert FILE --key FILE certificate chain and key for HTTPS
 *   --https PORT           HTTPS listener (needs --cert/--key)
 *   --http PORT            plain HTTP listener
 *   --udp PORT             UDP listener that records every datagram
 *
 * Every HTTP(S) request is answered 200 with a small JSON body naming this server, so a client can
 * tell which server it really reached (kept short: the demo prints it). Reports go to stdout, one
 * JSON line each (read by the demo, which plays "the server's side of the story"):
 *   {"listening":{"https":443,"http":80,"udp":9999}}       once every socket is bound
 *   {"request":{"proto","method","path","host","headers"}} per request, before answering
 *   {"udp":{"from","bytes","text"}}                         per datagram
 * The request line carries all headers (an Authorization header included): it is the upstream's
 * own view, which the demo compares against what the sandbox saw; the response never echoes them.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    name: { type: 'string', default: 'upstream' },
    cert: { type: 'string' },
    key: { type: 'string' },
    https: { type: 'string' },
    http: { type: 'string' },
    udp: { type: 'string' },
  },
  strict: true,
});
const name = opt.name ?? 'upstream';

function say(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function port(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`fake-upstream: bad port ${text}`);
  return n;
}

function handler(proto: 'http' | 'https'): http.RequestListener {
  return (req, res) => {
    say({ request: { proto, method: req.method, path: req.url, host: req.headers.host, headers: req.headers } });
    // Drain the body (uploads) before answering, so the client is never cut off mid-send.
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ server: name, method: req.method, path: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  };
}

function listen(server: http.Server | https.Server, p: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, '0.0.0.0', () => resolve((server.address() as AddressInfo).port));
  });
}

async function main(): Promise<void> {
  const bound: Record<string, number> = {};
  if (opt.https !== undefined) {
    if (opt.cert === undefined || opt.key === undefined) throw new Error('fake-upstream: --https needs --cert and --key');
    const server = https.createServer({ cert: readFileSync(opt.cert), key: readFileSync(opt.key) }, handler('https'));
    bound.https = await listen(server, port(opt.https));
  }
  if (opt.http !== undefined) bound.http = await listen(http.createServer(handler('http')), port(opt.http));
  if (opt.udp !== undefined) {
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg, from) => {
      say({ udp: { from: `${from.address}:${from.port}`, bytes: msg.length, text: msg.subarray(0, 80).toString('utf8') } });
    });
    bound.udp = await new Promise<number>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port(opt.udp ?? '0'), '0.0.0.0', () => resolve(sock.address().port));
    });
  }
  say({ listening: bound });
}

main().catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
