/**
 * The Prometheus endpoint and the health command, against a real sandgate: a sandbox cannot
 * reach the metrics port (the firewall's doing: with the firewall down it can); after allowed
 * and denied traffic the counters match the audit lines; `sandgate health` exits 0, and 1 once
 * the firewall is gone; with `workers: 2` the workers' lines are counted too.
 * Serial: one gate at a time owns the metrics port.
 */
import test from 'ava';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, CLI, type World, type Gate, type Line } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

let w: World;
let g: Gate | undefined;
const PORT = 9464;

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...baseConfig(w),
    // All addresses of the host namespace, the sandbox's veth peer included: only the firewall
    // stands between a sandbox and this port.
    metrics: { listen: `0.0.0.0:${PORT}` },
    ...extra,
  };
}

const inHost = (cmd: string, args: string[]): Promise<ExecResult> => w.topo.exec(w.topo.hostNs, cmd, args, { timeoutMs: 10000 });
const health = (gate: Gate, more: string[] = []): Promise<ExecResult> => inHost(process.execPath, [CLI, 'health', '-c', gate.configPath, ...more]);

/** name -> sorted "k=v" label list -> value. */
type Scrape = Map<string, Map<string, number>>;

async function scrape(): Promise<Scrape> {
  const r = await inHost('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${PORT}/metrics`]);
  if (r.code !== 0) throw new Error(`scrape failed: ${r.stderr}`);
  const out: Scrape = new Map();
  for (const line of r.stdout.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = (m[2] ?? '')
      .split(/,(?=[a-z_]+=")/)
      .filter(Boolean)
      .sort()
      .join(',');
    if (!out.has(m[1]!)) out.set(m[1]!, new Map());
    out.get(m[1]!)!.set(labels, Number(m[3]));
  }
  return out;
}

/** A scrape taken when the audit log has caught up with it: two scrapes apart agree. */
async function settledScrape(gate: Gate): Promise<{ s: Scrape; lines: Line[] }> {
  let last = '';
  for (let i = 0; i < 40; i++) {
    const s = await scrape();
    await new Promise((r) => setTimeout(r, 200));
    const total = JSON.stringify([...(s.get('sandgate_audit_lines_total') ?? new Map())].sort());
    if (total === last) return { s, lines: [...gate.log.lines] };
    last = total;
  }
  throw new Error('the audit stream did not settle');
}

/** Decisions the audit lines record, keyed as the metric's labels, counted independently here. */
function decisionsOf(lines: Line[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of lines) {
    if (typeof l.decision !== 'string' || !['conn', 'http', 'dns', 'packet'].includes(String(l.event))) continue;
    const kind = l.event === 'http' ? 'http' : l.event === 'dns' ? 'dns' : String(l.proto ?? (l.event === 'conn' ? 'tcp' : 'ip'));
    const n = typeof l.suppressed === 'number' ? l.suppressed : typeof l.refused === 'number' ? l.refused : l.summary === true ? Number(l.count) : 1;
    const key = [`decision="${l.decision}"`, `kind="${kind}"`, `rule="${String(l.rule ?? '')}"`, `sandbox="${String(l.sandbox ?? '')}"`].join(',');
    out.set(key, (out.get(key) ?? 0) + n);
  }
  return out;
}

/** Allowed and denied traffic of every kind the world offers: TLS, plain HTTP, DNS, ICMP. */
async function traffic(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const ok = await w.curl(['https://api.example.test/ok']);
    if (ok.code !== 0) throw new Error(`allowed request failed: ${ok.stderr}`);
  }
  await w.curl(['--resolve', `evil.example.test:443:${w.b}`, 'https://evil.example.test/denied']);
  await w.curl(['--resolve', `evil.example.test:80:${w.b}`, 'http://evil.example.test/denied']);
  const plain = await w.curl(['http://plain.example.test/ok']);
  if (plain.code !== 0) throw new Error(`allowed plain request failed: ${plain.stderr}`);
  await w.topo.exec(w.sandbox, 'dig', ['+tries=1', '+time=2', 'evil.example.test'], { timeoutMs: 5000 });
  await w.topo.exec(w.sandbox, 'ping', ['-c', '1', '-W', '1', w.b], { timeoutMs: 5000 });
}

/** Whether a sandbox gets an HTTP answer from the metrics port on the host's address. */
async function sandboxReachesMetrics(): Promise<string> {
  const r = await w.topo.exec(w.sandbox, 'curl', ['-sS', '--max-time', '3', `http://${w.topo.hostAddr('sbx')}:${PORT}/metrics`], { timeoutMs: 6000 });
  return r.stdout;
}

test.before(async () => {
  w = await createWorld();
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test.serial('a sandbox cannot reach the metrics port on any host address; the host can scrape it', async (t) => {
  g = await startGate(w.topo, w.dir, config());
  const ready = await g.log.waitFor((l) => l.event === 'ready');
  t.is(ready.metrics, `0.0.0.0:${PORT}`);
  t.is((await scrape()).get('sandgate_audit_lines_total')?.get('event="ready"'), 1);
  t.notRegex(await sandboxReachesMetrics(), /sandgate_/);
  for (const addr of [w.topo.hostAddr('sbx'), w.topo.hostAddr('a')]) {
    const r = await w.topo.exec(
      w.sandbox,
      process.execPath,
      [
        '-e',
        `
      const s = require('net').connect(${PORT}, '${addr}');
      s.setTimeout(1500, () => { console.log('timeout'); s.destroy(); });
      s.on('connect', () => s.write('GET /metrics HTTP/1.0\\r\\n\\r\\n'));
      s.on('data', d => { console.log('DATA', String(d).slice(0, 40)); s.destroy(); });
      s.on('error', e => console.log('error', e.code));`,
      ],
      { timeoutMs: 5000 },
    );
    t.notRegex(r.stdout, /DATA/, `${addr}:${PORT}: ${r.stdout}`);
  }
  // What the sandbox met was sandgate's own listener, which denied the port.
  await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.topo.hostAddr('sbx')}:${PORT}` && l.decision === 'deny');
});

test.serial('after allowed and denied traffic, the counters match the audit lines', async (t) => {
  await traffic();
  // Every allowed connection has closed (its close line carries the bytes).
  await g!.log.waitFor(() => g!.log.lines.filter((l) => l.event === 'close').length >= 3, 5000, 'close lines');
  const { s, lines } = await settledScrape(g!);
  const want = decisionsOf(lines);
  t.true(
    [...want.keys()].some((k) => k.includes('decision="allow"') && k.includes('kind="tls"')),
    JSON.stringify([...want]),
  );
  t.true([...want.keys()].some((k) => k.includes('decision="deny"') && k.includes('kind="tls"')));
  t.true([...want.keys()].some((k) => k.includes('kind="dns"')));
  t.deepEqual(new Map([...(s.get('sandgate_decisions_total') ?? new Map())].filter(([, v]) => v > 0)), want);
  const byEvent = new Map<string, number>();
  for (const l of lines) byEvent.set(`event="${String(l.event)}"`, (byEvent.get(`event="${String(l.event)}"`) ?? 0) + 1);
  t.deepEqual(s.get('sandgate_audit_lines_total'), byEvent);
  const bytes = (dir: 'In' | 'Out'): number =>
    lines.filter((l) => l.event === 'close' || l.event === 'http').reduce((n, l) => n + Number(l[`bytes${dir}`] ?? 0), 0);
  t.is(s.get('sandgate_bytes_total')?.get('direction="in",sandbox="agent"'), bytes('In'));
  t.is(s.get('sandgate_bytes_total')?.get('direction="out",sandbox="agent"'), bytes('Out'));
  t.true(bytes('In') > 0);
  const rcodes = lines.filter((l) => l.event === 'dns' && typeof l.rcode === 'string');
  t.is(
    [...(s.get('sandgate_dns_answers_total') ?? new Map()).values()].reduce((a, b) => a + b, 0),
    rcodes.length,
  );
  t.is(s.get('sandgate_open_connections')?.get('sandbox="agent"'), 0);
});

test.serial('metrics cannot change on reload: the reload is rejected (and counted), the endpoint stays', async (t) => {
  const r = await g!.reload(config({ metrics: { listen: `0.0.0.0:${PORT + 1}` } }));
  t.is(r.action, 'rejected', JSON.stringify(r));
  t.regex(String(r.reason), /metrics cannot change on reload/);
  t.is(r.level, 'warn');
  const back = await g!.reload(config());
  t.is(back.action, 'reloaded', JSON.stringify(back));
  const s = await scrape();
  t.is(s.get('sandgate_config_reloads_total')?.get('result="rejected"'), 1);
  t.is(s.get('sandgate_config_reloads_total')?.get('result="reloaded"'), 1);
});

test.serial(
  'sandgate health: exit 0 while the firewall is in place; 1 naming the firewall once it is gone (and then a sandbox reaches the port)',
  async (t) => {
    const ok = await health(g!);
    t.is(ok.code, 0, ok.stdout + ok.stderr);
    t.regex(ok.stdout, /^ok\n/);
    t.regex(ok.stdout, /listener tcp: 0\.0\.0\.0:15001 accepting/);
    t.regex(ok.stdout, /listener metrics: 0\.0\.0\.0:9464 accepting/);
    const json = JSON.parse((await health(g!, ['--json'])).stdout) as { status: string; checks: { name: string; ok: boolean }[] };
    t.is(json.status, 'ok');
    t.true(json.checks.some((c) => c.name === 'firewall' && c.ok));

    // --force: the daemon still answers on its control socket (firewall down refuses otherwise).
    const down = await inHost(process.execPath, [CLI, 'firewall', 'down', '--force', '-c', g!.configPath]);
    t.is(down.code, 0, down.stderr);
    const failing = await health(g!);
    t.is(failing.code, 1, failing.stdout + failing.stderr);
    t.regex(failing.stdout, /^failing\n/);
    t.regex(failing.stdout, /FAILING {2}firewall: /);
    // The control that the earlier unreachability test can fail: without the firewall, it is reachable.
    t.regex(await sandboxReachesMetrics(), /sandgate_decisions_total/);
    g!.proc.kill('SIGKILL');
    g = undefined;
    const gone = await inHost(process.execPath, [CLI, 'health', '--socket', join(w.dir, 'control.sock')]);
    t.is(gone.code, 1, 'no daemon: not healthy');
    t.regex(gone.stderr, /cannot reach sandgate's control socket/);
  },
);

test.serial("workers: 2: the workers' audit lines are counted too; health checks the workers", async (t) => {
  g = await startGate(w.topo, w.dir, config({ workers: 2 }), 'workers.json');
  await traffic();
  await g.log.waitFor(() => g!.log.lines.filter((l) => l.event === 'close').length >= 3, 5000, 'close lines');
  const { s, lines } = await settledScrape(g);
  t.true(
    lines.some((l) => l.event === 'conn' && typeof l.worker === 'number'),
    'lines came from the workers',
  );
  t.deepEqual(new Map([...(s.get('sandgate_decisions_total') ?? new Map())].filter(([, v]) => v > 0)), decisionsOf(lines));
  t.is(s.get('sandgate_workers_ready')?.get(''), 2);
  const ok = await health(g);
  t.is(ok.code, 0, ok.stdout);
  t.regex(ok.stdout, /workers: 2 of 2 ready/);
});
