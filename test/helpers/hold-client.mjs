// A sandbox-side client that keeps one TLS connection open, for tests of what happens to open
// connections (control API removal). Plain `node`, run inside a sandbox namespace.
//
// argv: --connect IP --host NAME --ca FILE [--port 443] [--path /] [--requests N] [--stream]
//   Opens one TLS connection to IP:port with SNI NAME, verifying against FILE, and sends N
//   keep-alive GETs one after the other on it (default 1). --stream: reads the response body as
//   it arrives (an SSE stream) and reports every chunk instead of waiting for the end.
// Prints JSON lines: {"event":"response","status":S,"n":I} after each complete response,
//   {"event":"chunk","bytes":B} per body chunk with --stream, and finally
//   {"event":"closed","error":CODE|null,"responses":N,"chunks":C} when the socket closes;
//   then exits. The connection is never closed by this client: only the peer (or sandgate) ends it.
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k, d) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : d;
};
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const host = opt('--host');
const path = opt('--path', '/');
const requests = Number(opt('--requests', '1'));
const stream = args.includes('--stream');
let responses = 0;
let chunks = 0;
let error = null;
let buf = '';

const s = tls.connect({
  host: opt('--connect'),
  port: Number(opt('--port', '443')),
  servername: host,
  ca: readFileSync(opt('--ca')),
  ALPNProtocols: ['http/1.1'],
});
s.setNoDelay(true);
const send = () => s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`);
s.once('secureConnect', send);
s.on('data', (d) => {
  if (stream) {
    chunks++;
    if (chunks === 1) say({ event: 'response', status: Number(/^HTTP\/1\.1 (\d+)/.exec(d.toString('latin1'))?.[1] ?? 0), n: 1 });
    else say({ event: 'chunk', bytes: d.length });
    return;
  }
  buf += d.toString('latin1');
  // A body is framed by Content-Length or, chunked, ends with the last-chunk (RFC 9112 §7.1);
  // the test bodies are JSON, so "\r\n0\r\n\r\n" cannot occur inside a chunk.
  for (;;) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = buf.slice(0, end);
    let total;
    if (/transfer-encoding: *chunked/i.test(head)) {
      const last = buf.indexOf('0\r\n\r\n', end + 4);
      if (last < 0) return;
      total = last + 5;
    } else {
      total = end + 4 + Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < total) return;
    }
    const status = Number(/^HTTP\/1\.1 (\d+)/.exec(buf)?.[1] ?? 0);
    buf = buf.slice(total);
    responses++;
    say({ event: 'response', status, n: responses });
    if (responses < requests) send();
  }
});
s.on('error', (e) => {
  error = e.code ?? e.message;
});
s.on('close', () => {
  say({ event: 'closed', error, responses, chunks });
  process.exit(0);
});
// Bounded: a test that forgets this process does not leave it running.
setTimeout(() => {
  say({ event: 'timeout' });
  process.exit(1);
}, 30_000).unref();
