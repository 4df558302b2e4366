// A load client for the token tests, run in a sandbox namespace: N requests to one URL, at most C at
// once on keep-alive connections, spread evenly over D ms (or as fast as possible without D).
// argv: --url URL --ca FILE [--n N] [--concurrency C] [--duration-ms D] [--method M] [--body-bytes B]
// Prints one JSON line: {n, ms, statuses: {code: count}, errors: {message: count}, leaked, redacted,
//   subjects: {subject: count}} where `leaked` counts responses whose bytes contain "tk_" (a token
//   reached the sandbox) and `redacted` those in which sandgate masked the echoed token.
import https from 'node:https';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const url = new URL(opt('--url'));
const n = Number(opt('--n') ?? 1);
const conc = Number(opt('--concurrency') ?? 1);
const duration = Number(opt('--duration-ms') ?? 0);
const method = opt('--method') ?? 'GET';
const body = opt('--body-bytes') !== undefined ? Buffer.alloc(Number(opt('--body-bytes')), 'x') : undefined;
const agent = new https.Agent({ keepAlive: true, maxSockets: conc, ca: readFileSync(opt('--ca')) });

const out = { n, ms: 0, statuses: {}, errors: {}, leaked: 0, redacted: 0, subjects: {} };
const bump = (o, k) => {
  o[k] = (o[k] ?? 0) + 1;
};

function one() {
  return new Promise((resolve) => {
    const req = https.request(
      url,
      { method, agent, headers: body ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('latin1') + JSON.stringify(res.headers);
          bump(out.statuses, res.statusCode);
          if (text.includes('tk_')) out.leaked++;
          if (text.includes('[redacted]')) out.redacted++;
          try {
            const j = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            if (j.subject) bump(out.subjects, j.subject);
          } catch {
            /* not JSON */
          }
          resolve();
        });
        res.on('error', (e) => {
          bump(out.errors, e.code ?? e.message);
          resolve();
        });
      },
    );
    req.on('error', (e) => {
      bump(out.errors, e.code ?? e.message);
      resolve();
    });
    req.end(body);
  });
}

const start = Date.now();
let next = 0;
async function worker() {
  for (;;) {
    const i = next++;
    if (i >= n) return;
    if (duration > 0) {
      const at = start + (i * duration) / n;
      const wait = at - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    await one();
  }
}
await Promise.all(Array.from({ length: Math.min(conc, n) }, worker));
out.ms = Date.now() - start;
agent.destroy();
process.stdout.write(JSON.stringify(out) + '\n');
