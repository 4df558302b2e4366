#!/usr/bin/env node
/**
 * The HTTP parser alone (dist/http/llhttp.js), optionally next to another build's
 * (--compare DIR: DIR/http/llhttp.js): CPU time per intercepted keep-alive exchange as the relay
 * parses it, one request head (the bench's wrk request with the injected credential) and one
 * response head (nginx's, body read past the parser: 'raw', then reset()). Builds alternate
 * round by round; the report gives each build's median and minimum over rounds. No network, no
 * root: a quick check that a parser change stays within its share of the relay's CPU, which
 * `node scripts/bench.mjs --compare DIR` then measures end to end.
 *
 * Usage: node scripts/bench-parser.mjs [--compare DIR] [--rounds N] [--exchanges N]
 */
import { cpuUsage } from 'node:process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const rounds = Number(opt('--rounds', 10));
const exchanges = Number(opt('--exchanges', 200000));
const builds = [['this build', join(ROOT, 'dist')]];
if (opt('--compare')) builds.push([`--compare ${opt('--compare')}`, resolve(opt('--compare'))]);

const request = Buffer.from(
  'GET /small.txt HTTP/1.1\r\nHost: bench.example.test\r\nUser-Agent: wrk\r\nAccept: */*\r\n' +
    'Authorization: Bearer sk-bench-0123456789abcdef0123456789abcdef\r\n\r\n',
);
const response = Buffer.from(
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 18:00:00 GMT\r\n' +
    'Content-Type: text/plain\r\nContent-Length: 17\r\nLast-Modified: Fri, 04 Dec 2026 17:00:00 GMT\r\n' +
    'Connection: keep-alive\r\nETag: "6931c3c0-11"\r\nAccept-Ranges: bytes\r\n\r\n',
);

const loaded = [];
for (const [label, dir] of builds) {
  const { Parser } = await import(pathToFileURL(join(dir, 'http/llhttp.js')).href);
  const req = new Parser('request', 16 * 1024, { onHead: () => 'body', onBody: () => {}, onComplete: () => {} });
  const res = new Parser('response', 16 * 1024, { onHead: () => 'raw', onBody: () => {}, onComplete: () => {} });
  const run = (n) => {
    for (let i = 0; i < n; i++) {
      if (req.execute(request) !== request.length) throw new Error(`${label}: the request did not parse`);
      if (res.execute(response) !== response.length) throw new Error(`${label}: the response did not parse`);
      res.reset();
    }
  };
  run(20000); // warm-up: compiled before it is measured
  loaded.push({ label, run, samples: [] });
}

for (let r = 0; r < rounds; r++) {
  for (const b of r % 2 === 0 ? loaded : [...loaded].reverse()) {
    const c0 = cpuUsage();
    b.run(exchanges);
    const c = cpuUsage(c0);
    b.samples.push((c.user + c.system) / exchanges);
  }
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
for (const b of loaded) {
  process.stdout.write(`${b.label}: ${median(b.samples).toFixed(2)} µs CPU per exchange (median of ${rounds}; min ${Math.min(...b.samples).toFixed(2)})\n`);
}
if (loaded.length === 2) {
  const [a, b] = loaded;
  process.stdout.write(`difference: ${(median(a.samples) - median(b.samples)).toFixed(2)} µs per exchange (medians)\n`);
}
