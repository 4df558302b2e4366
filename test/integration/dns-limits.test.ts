import test from 'ava';
import { createWorld, startGate, startUpstream, baseConfig, CLI, WIRE_NODE_ARGS, WIRE_PRELUDE, type World, type Gate } from '../helpers/gate.js';

// Rate limiting, audit sampling, raw TCP rules honouring the responder's answers, and the
// responder's throughput. Serial: each test reconfigures the one sandgate (SIGHUP).

let w: World;
let g: Gate;
/** The responder's limit under test; the firewall's per-source limit well above it (its own test below). */
const LIMIT_50 = { rateLimit: { qps: 50, burst: 50 }, sourceRateLimit: { pps: 1000, burst: 1000 } };

function cfg(dbAt: string, dns: Record<string, unknown>): Record<string, unknown> {
  return {
    ...baseConfig(w, {
      allow: [{ host: 'api.example.test' }, { host: 'db.example.test', ports: [5432], protocol: 'tcp' }],
      upstream: { hosts: { 'api.example.test': w.a, 'db.example.test': dbAt } },
    }),
    dns,
  };
}

test.before(async () => {
  w = await createWorld(undefined, { https: false });
  await startUpstream(w.topo, 'a', ['--name', 'a-db', '--port', '5432', '--banner', 'db-on-a']);
  g = await startGate(w.topo, w.dir, cfg(w.b, LIMIT_50));
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

async function inSandbox(code: string, timeoutMs = 20000): Promise<any> {
  const r = await w.topo.exec(w.sandbox, process.execPath, [...WIRE_NODE_ARGS, WIRE_PRELUDE + code], { timeoutMs });
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`sandbox script failed (${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

/**
 * Sends `n` UDP queries from the sandbox, `window` in flight, names from `nameExpr` (JS, `i` in
 * scope); returns the count per rcode and the elapsed time. A lost datagram ends the run by timeout.
 */
function blast(n: number, window: number, nameExpr: string, type = 1): Promise<{ rcodes: Record<string, number>; ms: number; done: number }> {
  return inSandbox(`
    const dgram = await import('node:dgram');
    const s = dgram.createSocket('udp4');
    const N = ${n}; let sent = 0, done = 0; const rcodes = {};
    const t0 = performance.now();
    const finish = () => { console.log(JSON.stringify({ rcodes, ms: performance.now() - t0, done })); process.exit(0); };
    const send = () => { const i = sent++; s.send(wire.buildQuery(i & 0xffff, ${nameExpr}, ${type}), 53, '10.77.1.1'); };
    s.on('message', (m) => {
      const r = wire.parseResponse(m); rcodes[r.rcode] = (rcodes[r.rcode] ?? 0) + 1;
      if (++done === N) finish(); else if (sent < N) send();
    });
    s.bind(0, () => { for (let i = 0; i < ${window}; i++) send(); });
    setTimeout(finish, 15000).unref();`);
}

const connectDb = (addr: string): Promise<any> =>
  inSandbox(`
  const net = await import('node:net');
  const s = net.connect(5432, ${JSON.stringify(addr)});
  let data = '';
  s.on('data', (d) => { data += d; s.end(); });
  s.on('error', (e) => { data = data || e.code; });
  s.on('close', () => console.log(JSON.stringify(data.trim())));
  setTimeout(() => s.destroy(), 3000).unref();`);

test.serial('raw TCP rules accept the addresses the responder handed this sandbox, even after the name moved', async (t) => {
  // db.example.test is at b: a connection to a:5432 matches no rule.
  t.is(await connectDb(w.a), 'ECONNRESET');
  // The name moves to a; the sandbox looks it up and is told a.
  await g.reload(cfg(w.a, LIMIT_50));
  const r = await inSandbox(`
    const dns = await import('node:dns');
    console.log(JSON.stringify(await dns.promises.lookup('db.example.test', { all: true })));`);
  t.deepEqual(r, [{ address: w.a, family: 4 }]);
  // The name moves back to b (sandgate itself now resolves it to b), but the sandbox still holds
  // the answer it was given, within its TTL: that address stays reachable on the rule's port.
  await g.reload(cfg(w.b, LIMIT_50));
  t.is(await connectDb(w.a), 'db-on-a');
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.a}:5432` && l.decision === 'allow');
  t.like(line, { proto: 'tcp', host: 'db.example.test', rule: 'policies.default.allow[1]' });
});

test.serial('rate limit: a burst over the limit is REFUSED, and the audit has one line for the whole burst', async (t) => {
  await new Promise((r) => setTimeout(r, 1100)); // let the bucket refill after the previous test
  const r = await blast(400, 20, '"api.example.test"');
  t.is(r.done, 400, JSON.stringify(r));
  const refused = r.rcodes['5'] ?? 0;
  t.true((r.rcodes['0'] ?? 0) >= 50, JSON.stringify(r.rcodes));
  t.true(refused >= 250, JSON.stringify(r.rcodes));
  const line = await g.log.waitFor((l) => l.event === 'dns' && typeof l.refused === 'number', 5000, 'the burst line');
  t.like(line, { decision: 'deny', proto: 'dns', sandbox: 'agent', user: 'alice', host: 'api.example.test', qtype: 'A', rcode: 'REFUSED', refused });
  t.regex(String(line.reason), /rate limit/);
  await new Promise((res) => setTimeout(res, 1500));
  t.is(g.log.lines.filter((l) => l.event === 'dns' && typeof l.refused === 'number').length, 1, 'one line per burst');
});

/** Packets the firewall's per-source DNS limit has dropped so far (nft or iptables counters, via `sandgate firewall show`). */
async function kernelDnsDrops(): Promise<number> {
  const r = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'firewall', 'show', '-c', g.configPath], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`firewall show failed (${r.code}): ${r.stderr}`);
  let n = 0;
  for (const line of r.stdout.split('\n')) {
    const nft = /update @dns_rate4 .* counter packets (\d+) /.exec(line);
    const ipt = /^\[(\d+):\d+\] .*--dport 53 -m hashlimit .* -j DROP$/.exec(line.trim());
    n += Number(nft?.[1] ?? ipt?.[1] ?? 0);
  }
  return n;
}

test.serial("the firewall's per-source limit: a burst within dns.sourceRateLimit.burst is all answered, past it the kernel drops", async (t) => {
  await g.reload(cfg(w.b, { rateLimit: { qps: 1_000_000, burst: 1_000_000 }, sourceRateLimit: { pps: 100, burst: 500 } }));
  // A new rate makes a new set (nft: the table is replaced) or hashlimit table (iptables: a new
  // name), whose buckets start full.
  const before = await kernelDnsDrops();
  // 400 queries, 50 in flight (the responder keeps up; its socket never fills): within the burst.
  const within = await blast(400, 50, '"api.example.test"');
  t.deepEqual(within.rcodes, { 0: 400 }, JSON.stringify(within));
  t.is(await kernelDnsDrops(), before, 'nothing dropped within the burst allowance');
  // Right after, 1,000 more sent at once: past what is left of the burst, so the kernel drops some.
  const past = await inSandbox(`
    const dgram = await import('node:dgram');
    const s = dgram.createSocket('udp4'); let replies = 0;
    s.on('message', () => { replies++; });
    s.bind(0, () => { for (let i = 0; i < 1000; i++) s.send(wire.buildQuery(i, 'api.example.test', 1), 53, '10.77.1.1'); setTimeout(() => { console.log(JSON.stringify({ replies })); process.exit(0); }, 1000); });`);
  const dropped = (await kernelDnsDrops()) - before;
  t.log(`past the burst: 1000 sent at once, ${past.replies} answered, ${dropped} dropped by the firewall`);
  t.true(dropped > 0, `dropped: ${dropped}`);
  t.true(past.replies + dropped <= 1000);
});

test.serial('audit sampling: a flood of denied names writes bounded lines and summaries that account for every query', async (t) => {
  await g.reload(cfg(w.b, { rateLimit: { qps: 1_000_000, burst: 1_000_000 }, auditSampling: { linesPerSecond: 50, burst: 100 } }));
  const N = 3000;
  const r = await blast(N, 100, '`q${i}.${Math.random().toString(36).slice(2)}.flood.evil.test`', 16);
  t.is(r.rcodes['3'], N);
  await new Promise((res) => setTimeout(res, 600)); // summaries are written every 250 ms
  const mine = g.log.lines.filter(
    (l) =>
      l.event === 'dns' &&
      (String(l.host ?? '').endsWith('.flood.evil.test') || (l.domains as Record<string, number> | undefined)?.['evil.test'] !== undefined),
  );
  const single = mine.filter((l) => l.suppressed === undefined);
  const summaries = mine.filter((l) => l.suppressed !== undefined);
  const suppressed = summaries.reduce((n, l) => n + Number(l.suppressed), 0);
  t.log(`${N} denied queries in ${Math.round(r.ms)} ms -> ${single.length} individual lines + ${summaries.length} summaries`);
  t.is(single.length + suppressed, N);
  t.true(single.length <= 100 + 50 * Math.ceil(r.ms / 1000 + 1), `${single.length} individual lines`);
  t.like(summaries[0], { decision: 'deny', sandbox: 'agent', proto: 'dns' });
});

test.serial('throughput from the sandbox: cached allowed names and denied names (measured, not asserted)', async (t) => {
  await g.reload(cfg(w.b, { rateLimit: { qps: 1_000_000, burst: 1_000_000 } }));
  await blast(2000, 64, '"api.example.test"'); // warm-up
  const N = 30_000;
  const allowed = await blast(N, 64, '"api.example.test"');
  const denied = await blast(N, 64, '`d${i}.evil.test`');
  t.is(allowed.rcodes['0'], N);
  t.is(denied.rcodes['3'], N);
  const qps = (x: { ms: number }): number => Math.round(N / (x.ms / 1000));
  t.log(
    `cached allowed A (api.example.test): ${qps(allowed)} queries/s; denied (NXDOMAIN): ${qps(denied)} queries/s (UDP, 64 in flight, one client, default audit sampling)`,
  );
});
