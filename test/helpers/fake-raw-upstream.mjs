// A raw HTTP/1.1 upstream for test/integration/relay.test.ts, run inside an upstream namespace
// with plain `node`. It records the exact bytes every connection received, and answers from a
// script chosen by the first segment of the request path, so a test can pin what sandgate sent
// upstream byte for byte and feed sandgate responses a well-behaved server never sends.
//
// argv: --port N [--tls CERT KEY]
// stdout, one JSON line each (raw fields are base64 of exact bytes):
//   {"listening":PORT}
//   {"open":ID,"sni":NAME}           a connection was accepted (IDs count from 1; sni: TLS only)
//   {"request":{conn,n,method,path,raw}}   request n (from 1) on connection conn, once its head
//                                    and body are complete; raw: its bytes (head and body) as received
//   {"dropped":{conn,n,path,how}}    the connection was closed on this request's head (fin-next/rst-next)
//   {"closed":ID,"raw":B64}          the connection closed; raw: every byte it ever received
// Scripts (anything unlisted is echo):
//   /echo/...            200, Content-Length, body "conn=ID n=N METHOD PATH\n" (no body for HEAD)
//   /tail/TEXT           200, Content-Length, body "tail:TEXT" (nothing after TEXT)
//   /tail-chunked/TEXT   the same body, chunked
//   /close-delimited/... 200 with neither Content-Length nor Transfer-Encoding; the connection is closed
//   /echo-secret/...     echoes the Authorization value in a header and in a chunked body written
//                        4 bytes a chunk (so the value straddles chunk boundaries), with its base64
//                        form and the bare token too
//   /early/...           413 as soon as the head is in, while the body is still coming; keeps reading
//   /info/...            103 Early Hints, then 200
//   /head/...            200 with Content-Length: 1234 and no body (an answer to HEAD)
//   /no-content/...      204 carrying Content-Length: 5 (RFC 9110 §8.6 forbids it) and no body
//   /http10/...          an HTTP/1.0 200 with Content-Length and no keep-alive; the connection stays open
//   /truncated/...       Content-Length: 100, 10 bytes of body, then the connection is closed
//   /garbage/...         a status line that is not HTTP ("HTTP/1.1 OK 200"); the connection stays open
//   /cl-te/...           Content-Length with Transfer-Encoding: chunked
//   /two-cl/...          two different Content-Lengths
//   /switch/...          101 Switching Protocols to a request that asked for no upgrade
//   /trailers/...        chunked body "abc\n" with a trailer field "X-Trailer: from-trailers-N"
//   /double/...          two answers in one write to one request ("asked\n", then "never asked\n")
//   /close-after/...     echo, then the connection is closed (no Connection: close said)
//   /fin-next/...        echo; the next request on this connection gets a FIN and no answer
//   /rst-next/...        echo; the next request on this connection gets a TCP RST and no answer
//   /te/CODINGS/...      200 with "Transfer-Encoding: CODINGS" (URL-decoded) and the body
//                        gzip("auth=" + the Authorization value), chunked when the last coding is
//                        chunked, else close-delimited; just "chunked" (any case): the body "plain"
//   /ce/...              200, Content-Encoding: gzip, Content-Length: the body gzip("auth=" + the
//                        Authorization value)
//   /secret-name/...     200 with a header field named "X-" + the bearer token (as sent, and
//                        upper-cased with /secret-name/upper)
//   /ce-as/FIELDS/...    200 with one Content-Encoding field per "|"-separated entry of FIELDS
//                        (URL-decoded), Content-Length, and the body "auth=" + the Authorization
//                        value encoded by every coding listed, in order (RFC 9110 §8.4); codings
//                        zlib has no encoder for (compress, zstd...) leave the bytes as they are
//   /secret-status/...   200 whose reason phrase carries the Authorization value
//   /ws-deflate/...      101 to a WebSocket upgrade, negotiating permessage-deflate (RFC 7692) whether or
//                        not it was offered, then one compressed text frame: "auth=" + the Authorization value
//   /secret-bytes/...    200, Content-Length, body "<" + the Authorization value + ">", written one
//                        byte per write (each a TLS record of its own)
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { gzipSync, deflateSync, deflateRawSync, brotliCompressSync } from 'node:zlib';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const b64 = (b) => b.toString('base64');
const tlsIdx = args.indexOf('--tls');
const context = tlsIdx >= 0 ? tls.createSecureContext({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]) }) : undefined;

const echoBody = (c, r) => `conn=${c.id} n=${r.n} ${r.method} ${r.path}\n`;
const ok = (body, extra = '') => `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n${extra}Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`;
const echo = (c, r) => {
  const body = echoBody(c, r);
  c.send(r.method === 'HEAD' ? `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n` : ok(body));
};

/** Answers once a request is complete (head and body). */
const scripts = {
  echo,
  tail: (c, r) => {
    c.send(ok(`tail:${r.path.split('/').pop()}`));
  },
  'tail-chunked': (c, r) => {
    const body = `tail:${r.path.split('/').pop()}`;
    c.send(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
  },
  'close-delimited': (c) => {
    c.send('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthis body ends when the connection does\n');
    c.sock.end();
  },
  'echo-secret': (c, r) => {
    const auth = r.headers.authorization ?? '';
    const token = auth.replace(/^Bearer /, '');
    const body = `before ${auth} after; b64=${Buffer.from(token).toString('base64')}; bare=${token}.`;
    c.send(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: ${auth}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    for (let i = 0; i < body.length; i += 4) {
      const part = body.slice(i, i + 4);
      c.send(`${part.length.toString(16)}\r\n${part}\r\n`);
    }
    c.send('0\r\n\r\n');
  },
  early: () => {
    /* answered at the head */
  },
  info: (c) => {
    c.send('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n');
    c.send(ok('final'));
  },
  head: (c) => {
    c.send('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n');
  },
  'no-content': (c) => {
    c.send('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n');
  },
  http10: (c) => {
    c.send('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nold\n');
  },
  truncated: (c) => {
    c.send(`HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n${'x'.repeat(10)}`);
    c.sock.end();
  },
  garbage: (c) => {
    c.send('HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n');
  },
  'cl-te': (c) => {
    c.send('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
  },
  'two-cl': (c) => {
    c.send('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc');
  },
  switch: (c) => {
    c.send('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n');
  },
  trailers: (c, r) => {
    c.send(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabc\n\r\n0\r\nX-Trailer: from-trailers-${r.n}\r\n\r\n`);
  },
  double: (c) => {
    c.send(ok('asked\n') + ok('never asked\n'));
  },
  'close-after': (c, r) => {
    echo(c, r);
    c.sock.end();
  },
  'fin-next': (c, r) => {
    echo(c, r);
    c.next = 'fin';
  },
  'rst-next': (c, r) => {
    echo(c, r);
    c.next = 'rst';
  },
  te: (c, r) => {
    const codings = decodeURIComponent(r.path.split('/')[2] ?? '');
    const list = codings.split(',').map((x) => x.trim().toLowerCase());
    const onlyChunked = list.length === 1 && list[0] === 'chunked';
    const body = onlyChunked ? Buffer.from('plain') : gzipSync(`auth=${r.headers.authorization ?? ''}`);
    c.send(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: ${codings}\r\n\r\n`);
    if (list.at(-1) === 'chunked') {
      c.sendBytes(Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]));
    } else {
      c.sendBytes(body);
      c.sock.end();
    }
  },
  ce: (c, r) => {
    const body = gzipSync(`auth=${r.headers.authorization ?? ''}`);
    c.send(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`);
    c.sendBytes(body);
  },
  'secret-name': (c, r) => {
    const token = (r.headers.authorization ?? '').replace(/^Bearer /, '');
    const name = r.path.split('/')[2] === 'upper' ? `X-${token}`.toUpperCase() : `X-${token}`;
    c.send(`HTTP/1.1 200 OK\r\n${name}: 1\r\nContent-Length: 2\r\n\r\nok`);
  },
  'ce-as': (c, r) => {
    const fields = decodeURIComponent(r.path.split('/')[2] ?? '').split('|');
    const encoders = { gzip: gzipSync, 'x-gzip': gzipSync, deflate: deflateSync, br: brotliCompressSync };
    let body = Buffer.from(`auth=${r.headers.authorization ?? ''}`);
    for (const coding of fields
      .join(',')
      .split(',')
      .map((x) => x.trim().toLowerCase()))
      body = encoders[coding]?.(body) ?? body;
    c.send(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n${fields.map((f) => `Content-Encoding: ${f}\r\n`).join('')}Content-Length: ${body.length}\r\n\r\n`);
    c.sendBytes(body);
  },
  'secret-status': (c, r) => {
    c.send(`HTTP/1.1 200 OK ${r.headers.authorization ?? ''}\r\nContent-Length: 2\r\n\r\nok`);
  },
  'ws-deflate': (c, r) => {
    c.send(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n',
    );
    const z = deflateRawSync(`auth=${r.headers.authorization ?? ''}`);
    const payload =
      z.subarray(0, z.length - 4).length > 0 && z.subarray(z.length - 4).equals(Buffer.from([0, 0, 0xff, 0xff])) ? z.subarray(0, z.length - 4) : z;
    c.sendBytes(Buffer.concat([Buffer.from([0xc1, payload.length]), payload]));
  },
  'secret-bytes': (c, r) => {
    const body = `<${r.headers.authorization ?? ''}>`;
    c.send(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
    for (const ch of body) c.send(ch);
  },
};

/** Runs on a request's head, before its body: returns true if the request was dealt with. */
function onHead(c, r) {
  if (c.next !== undefined) {
    say({ dropped: { conn: c.id, n: r.n, path: r.path, how: c.next } });
    if (c.next === 'rst') c.raw.resetAndDestroy();
    else c.sock.end();
    return true;
  }
  if (r.script === 'early') c.send('HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ntoo large');
  return false;
}

/** A minimal request framer: heads up to CRLFCRLF, bodies by Content-Length or chunked. */
function pump(c) {
  for (;;) {
    if (c.dead) return;
    if (c.req === undefined) {
      const end = c.pending.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = c.pending.subarray(0, end + 4);
      c.pending = c.pending.subarray(end + 4);
      const lines = head.toString('latin1').split('\r\n');
      const [method = '', path = ''] = (lines[0] ?? '').split(' ');
      const headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const script = path.split('/')[1] ?? '';
      c.req = {
        n: ++c.count,
        method,
        path,
        headers,
        script,
        parts: [head],
        chunked: /chunked/i.test(headers['transfer-encoding'] ?? ''),
        left: Number(headers['content-length'] ?? 0),
      };
      if (onHead(c, c.req)) {
        c.dead = true;
        return;
      }
    }
    const r = c.req;
    if (r.chunked) {
      const nl = c.pending.indexOf('\r\n');
      if (nl < 0) return;
      const size = parseInt(c.pending.subarray(0, nl).toString('latin1'), 16);
      let take;
      if (size === 0) {
        const e = c.pending.indexOf('\r\n\r\n', nl);
        if (e < 0) return;
        take = e + 4;
      } else {
        take = nl + 2 + size + 2;
        if (c.pending.length < take) return;
      }
      r.parts.push(c.pending.subarray(0, take));
      c.pending = c.pending.subarray(take);
      if (size !== 0) continue;
    } else if (r.left > 0) {
      const n = Math.min(r.left, c.pending.length);
      if (n === 0) return;
      r.parts.push(c.pending.subarray(0, n));
      c.pending = c.pending.subarray(n);
      r.left -= n;
      if (r.left > 0) return;
    }
    c.req = undefined;
    say({ request: { conn: c.id, n: r.n, method: r.method, path: r.path, raw: b64(Buffer.concat(r.parts)) } });
    (scripts[r.script] ?? echo)(c, r);
  }
}

let ids = 0;
const server = net.createServer({ noDelay: true }, (raw) => {
  const sock = context ? new tls.TLSSocket(raw, { isServer: true, secureContext: context }) : raw;
  const c = { id: ++ids, raw, sock, count: 0, pending: Buffer.alloc(0), all: [], req: undefined, next: undefined, dead: false };
  c.send = (s) => {
    if (!sock.destroyed && sock.writable) sock.write(s, 'latin1');
  };
  c.sendBytes = (b) => {
    if (!sock.destroyed && sock.writable) sock.write(b);
  };
  const opened = () => say({ open: c.id, ...(context ? { sni: sock.servername || null } : {}) });
  if (context) sock.once('secure', opened);
  else opened();
  sock.on('data', (d) => {
    c.all.push(d);
    c.pending = Buffer.concat([c.pending, d]);
    pump(c);
  });
  sock.on('error', () => {
    /* 'close' follows */
  });
  raw.on('error', () => {
    /* 'close' follows */
  });
  sock.once('close', () => say({ closed: c.id, raw: b64(Buffer.concat(c.all)) }));
});
server.listen(Number(opt('--port') ?? 0), '0.0.0.0', () => say({ listening: server.address().port }));
