// An HTTP/2 client for integration tests (node:http2), run in a sandbox namespace with plain `node`.
// argv: CA_FILE ORIGIN PLAN_JSON
//   PLAN_JSON: [{ path, method?, headers?, body?, bodyBytes? }, ...], every request a stream of ONE session,
//   all at once (bodyBytes: a body of that many "u" bytes)
//   (a request's headers may set ":authority" to name another host than the origin's).
// Prints one JSON line: { alpn, results: [{ status, headers, body, trailers, error }] } in plan order.
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';

const [caFile, origin, planText] = process.argv.slice(2);
const plan = JSON.parse(planText);
const session = http2.connect(origin, { ca: readFileSync(caFile) });
session.on('error', (e) => {
  process.stdout.write(JSON.stringify({ sessionError: e.code ?? e.message }) + '\n');
  process.exit(0);
});
const one = (p) =>
  new Promise((resolve) => {
    if (p.bodyBytes !== undefined) p.body = 'u'.repeat(p.bodyBytes);
    const out = { status: 0, headers: {}, body: '', trailers: undefined, error: undefined };
    const req = session.request({ ':method': p.method ?? 'GET', ':path': p.path, ...(p.headers ?? {}) }, { endStream: p.body === undefined });
    req.on('response', (h) => {
      out.status = h[':status'];
      out.headers = { ...h };
    });
    req.on('trailers', (t) => {
      out.trailers = { ...t };
    });
    req.setEncoding('utf8');
    req.on('data', (c) => {
      out.body += c;
    });
    req.on('error', (e) => {
      out.error = e.code ?? e.message;
    });
    req.on('close', () => resolve(out));
    if (p.body !== undefined) req.end(p.body);
  });
session.on('connect', async () => {
  const alpn = session.alpnProtocol;
  const results = await Promise.all(plan.map(one));
  process.stdout.write(JSON.stringify({ alpn, results }) + '\n');
  session.close();
});
