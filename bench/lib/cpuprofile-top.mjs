#!/usr/bin/env node
/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): where the samples fell, by function (self time)
 * and by area (sandgate's own modules, node's TLS/HTTP/stream internals, native code, GC, idle).
 * Used by scripts/bench.mjs --profile and by hand: `node bench/lib/cpuprofile-top.mjs FILE [N]`.
 * A flame graph needs no tool here: open the file in Chrome DevTools (Performance) or speedscope.
 */
import { readFileSync } from 'node:fs';

/** Which part of the stack a frame belongs to, from its script URL and name. */
function area(frame) {
  const { url, functionName: fn } = frame;
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(program)') return 'native (program)';
  if (fn === '(root)') return 'root';
  if (url.includes('/node_modules/')) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    return `dep: ${m ? m[1] : 'unknown'}`;
  }
  if (/\/(?:\.?dist|src)\//.test(url)) {
    const m = /\/(?:\.?dist|src)\/(.+?)\.[jt]s$/.exec(url);
    return `sandgate: ${m ? m[1] : url}`;
  }
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?(.+)$/.exec(url);
    const mod = m ? m[1] : url;
    if (/^(_tls|tls|crypto)/.test(mod)) return 'node: tls';
    if (/^(_http|http|https|_http_)/.test(mod)) return 'node: http';
    if (/^(streams?|_stream)/.test(mod)) return 'node: streams';
    if (/^(net|stream_base_commons|dns)/.test(mod)) return 'node: net';
    if (/^(timers|process\/task_queues|async_hooks)/.test(mod)) return 'node: timers/ticks';
    if (/^(events|event_target)/.test(mod)) return 'node: events';
    return `node: ${mod.split('/')[0]}`;
  }
  // Long names (a RegExp's source) are cut: the table must stay readable.
  if (url === '') return fn ? `native: ${fn.slice(0, 60)}` : 'native';
  return url;
}

export function summarise(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const hits = new Map();
  // timeDeltas[i] is the time before samples[i]; weight each sample by it (µs).
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) hits.set(samples[i], (hits.get(samples[i]) ?? 0) + (deltas[i] ?? 0));
  const total = [...hits.values()].reduce((a, b) => a + b, 0) || 1;
  const fns = new Map();
  const areas = new Map();
  let busy = 0;
  for (const [id, us] of hits) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    const a = area(f);
    if (a !== 'idle') busy += us;
    areas.set(a, (areas.get(a) ?? 0) + us);
    const key =
      `${(f.functionName || '(anonymous)').slice(0, 60)} ${f.url ? `${f.url.replace(/^.*\/(\.?dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : ''}`.trim();
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const sort = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    file,
    totalMs: total / 1000,
    busyMs: busy / 1000,
    areas: sort(areas).map(([k, us]) => ({ area: k, ms: us / 1000, pctBusy: k === 'idle' ? null : (100 * us) / (busy || 1) })),
    functions: sort(fns)
      .filter(([k]) => !k.startsWith('(idle)'))
      .slice(0, top)
      .map(([k, us]) => ({ fn: k, ms: us / 1000, pctBusy: (100 * us) / (busy || 1) })),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.on('error', () => process.exit(0)); // `| head` closes the pipe early
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/lib/cpuprofile-top.mjs FILE.cpuprofile [N]\n');
    process.exit(2);
  }
  const s = summarise(file, Number(process.argv[3] ?? 25));
  process.stdout.write(`${s.file}: ${s.totalMs.toFixed(0)} ms sampled, ${s.busyMs.toFixed(0)} ms busy\n\nby area (% of busy time):\n`);
  for (const a of s.areas)
    process.stdout.write(`  ${a.pctBusy == null ? '   idle' : `${a.pctBusy.toFixed(1).padStart(6)}%`}  ${a.ms.toFixed(0).padStart(7)} ms  ${a.area}\n`);
  process.stdout.write('\ntop functions by self time (% of busy time):\n');
  for (const f of s.functions) process.stdout.write(`  ${f.pctBusy.toFixed(1).padStart(6)}%  ${f.ms.toFixed(0).padStart(7)} ms  ${f.fn}\n`);
}
