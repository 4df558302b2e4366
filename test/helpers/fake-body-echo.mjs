// A fake API upstream that echoes what it received, for placeholder tests, run inside an upstream
// namespace with plain `node`: it answers every request with JSON {real, placeholder, body, query}
// where `real` says whether the real key (--key) arrived in the body or the query, `placeholder`
// whether the placeholder (--placeholder) did, and `body`/`query` repeat what came (so a response
// carries the real key back: tests check the sandbox never sees it).
// argv: --port N --tls CERT KEY --key REAL --placeholder PH
// Prints {"listening":PORT}, then one JSON line per request: {"request":{method,path,real,placeholder,length}}.
import https from 'node:https';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const key = opt('--key');
const ph = opt('--placeholder');
const tlsIdx = args.indexOf('--tls');
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const server = https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]) }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'https://fake');
    const query = decodeURIComponent(url.search);
    const seenIn = (s) => body.includes(s) || JSON.stringify(body).includes(JSON.stringify(s).slice(1, -1)) || query.includes(s);
    const real = seenIn(key);
    const placeholder = seenIn(ph);
    const out = JSON.stringify({ real, placeholder, body, query, length: Number(req.headers['content-length'] ?? -1) });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
    res.end(out);
    say({
      request: {
        method: req.method,
        path: url.pathname,
        real,
        placeholder,
        length: body.length,
        contentLength: req.headers['content-length'] ?? null,
        te: req.headers['transfer-encoding'] ?? null,
      },
    });
  });
});
server.listen(Number(opt('--port') ?? 0), '0.0.0.0', () => say({ listening: server.address().port }));
