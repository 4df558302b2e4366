// A sandbox-side WebSocket client for integration tests: the `ws` npm package (resolved from the
// repo's node_modules), run with plain `node` inside a sandbox namespace. It trusts whatever CA
// NODE_EXTRA_CA_CERTS names.
//
// argv: --url wss://HOST/PATH [--token T]
//   Opens the socket (with `Authorization: Bearer T` when --token is given), waits for the server's
//   first message, sends one text and one binary message, waits for both echoes, closes.
// Prints one JSON line: {ok, messages:[{binary,text}], status?, error?, raw}
//   raw: every byte the TLS socket delivered (the 101 response and all frames, as latin1), so a
//        test can check that nothing the sandbox received contains a secret.
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const token = opt('--token');

const raw = [];
const out = { ok: false, messages: [] };
const finish = () => {
  out.raw = Buffer.concat(raw).toString('latin1');
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
};
setTimeout(() => {
  out.error = 'timeout';
  finish();
}, 8000).unref();

const ws = new WebSocket(opt('--url'), {
  headers: token !== undefined ? { authorization: `Bearer ${token}` } : {},
  // Tap the TLS socket itself: the capture includes the handshake response and every frame.
  // Like ws's own tlsConnect, send SNI for a host name (tls.connect alone would not).
  createConnection: (o) => {
    const s = tls.connect({ ...o, servername: o.servername || (net.isIP(o.host) ? '' : o.host) });
    s.on('data', (d) => raw.push(Buffer.from(d)));
    return s;
  },
});
const textOut = `ping-${process.pid}`;
const binOut = Buffer.from([0, 1, 2, 253, 254, 255]);
ws.on('unexpected-response', (_req, res) => {
  out.status = res.statusCode;
  res.on('data', () => {});
  res.on('end', () => {
    out.error = `unexpected response ${res.statusCode}`;
    finish();
  });
});
ws.on('message', (data, isBinary) => {
  out.messages.push({ binary: isBinary, text: isBinary ? Buffer.from(data).toString('hex') : data.toString('utf8') });
  if (out.messages.length === 1) {
    ws.send(textOut);
    ws.send(binOut);
  }
  if (out.messages.length === 3) {
    out.ok = out.messages[1]?.text === textOut && out.messages[2]?.text === binOut.toString('hex') && out.messages[2]?.binary === true;
    ws.close(1000);
  }
});
ws.on('close', (code) => {
  out.closeCode = code;
  finish();
});
ws.on('error', (e) => {
  out.error ??= `${e.code ?? ''} ${e.message}`.trim();
  finish();
});
