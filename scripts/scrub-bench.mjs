#!/usr/bin/env node
/**
 * CPU cost of response scrubbing per MiB, for one credential's needles as sandgate compiles them
 * (src/creds/credential.ts) against the same needles without the secret's three aligned base64
 * runs (the forms an upstream's base64 echo of a longer text carries). No network, no root: the
 * Scrubber of dist/http/scrub.js fed 16 KiB chunks of text that holds no needle (the common case:
 * every byte is scanned, nothing is masked), the two needle sets alternated, CPU time of this
 * process per MiB, median of 7 rounds.
 *
 * Usage: npm run build && node scripts/scrub-bench.mjs [MIB_PER_ROUND=256]
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(fileURLToPath(new URL('..', import.meta.url)), 'dist');
const { Scrubber } = await import(join(dist, 'http/scrub.js'));
const { compileCredential } = await import(join(dist, 'creds/credential.js'));

const mib = Number(process.argv[2] ?? 256);
const secret = 'sk-real-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6';
const cred = compileCredential('k', { secret: { env: 'X' }, header: 'Authorization', format: 'Bearer {secret}' }, secret);
const b64 = Buffer.from(secret).toString('base64');
// The forms before the base64 runs: the secret, URL-encoded, base64 whole, JSON-escaped, the header value.
const without = [...new Set([secret, encodeURIComponent(secret), b64, JSON.stringify(secret).slice(1, -1), `Bearer ${secret}`])];
const chunk = Buffer.alloc(16384);
for (let i = 0; i < chunk.length; i++) chunk[i] = 32 + ((i * 7919) % 90);

function usPerMiB(needles, n) {
  const s = new Scrubber(needles);
  const t0 = process.cpuUsage();
  for (let i = 0; i < (n * 1024 * 1024) / chunk.length; i++) s.push(chunk);
  s.end();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / n;
}
for (let r = 0; r < 2; r++) usPerMiB(without, 64) + usPerMiB(cred.needles, 64);
const a = [];
const b = [];
for (let r = 0; r < 7; r++) {
  a.push(usPerMiB(without, mib));
  b.push(usPerMiB(cred.needles, mib));
}
const med = (x) => [...x].sort((p, q) => p - q)[3];
console.log(
  JSON.stringify({
    needles: { without: without.length, with: cred.needles.length },
    cpuUsPerMiB: { withoutRuns: Math.round(med(a)), withRuns: Math.round(med(b)) },
    ratio: Number((med(b) / med(a)).toFixed(2)),
  }),
);
