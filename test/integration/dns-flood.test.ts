import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, LineLog, ROOT, WIRE_NODE_ARGS, WIRE_PRELUDE, type World, type Gate } from '../helpers/gate.js';
import { controlRequest } from '../../src/control/client.js';

// One sandbox's DNS flood must not starve another sandbox's queries (docs/dns.md, "Floods").
// Sandbox "sbx" (10.77.1.2, from the config) floods; sandbox "two" (10.77.4.2) asks meanwhile.
// With the nft backend, sandbox "reg" (10.77.5.2), registered through the control API, floods
// too. All run with the default dns limits, so this also shows that the defaults protect.

let w: World;
let g: Gate;
const FLOOD = join(ROOT, 'bench/lib/dns-flood.mjs');

test.before(async () => {
  w = await createWorld(
    {
      sandboxes: [
        { name: 'sbx', subnet: 1 },
        { name: 'two', subnet: 4 },
        { name: 'reg', subnet: 5 },
      ],
    },
    { https: false },
  );
  const base = baseConfig(w);
  g = await startGate(w.topo, w.dir, {
    ...base,
    sandboxes: [
      { name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      { name: 'victim', interface: 'sbx-two', cidr: '10.77.4.0/24', policy: 'default', user: 'bob' },
    ],
  });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/**
 * The victim: `count` queries for api.example.test from sandbox "two", `window` at a time; a query
 * unanswered after 1 s counts as lost (a late answer does not count). Stops early once `maxLost`
 * are lost: the verdict is then already known, and a starved victim would otherwise take minutes.
 */
async function victim(count: number, window: number, maxLost: number): Promise<{ answered: number; lost: number; bad: number; ms: number }> {
  const r = await w.topo.exec(
    w.topo.ns('two'),
    process.execPath,
    [
      ...WIRE_NODE_ARGS,
      `${WIRE_PRELUDE}
    const dgram = await import('node:dgram');
    const s = dgram.createSocket('udp4');
    const pending = new Map();
    let next = 1, answered = 0, lost = 0, bad = 0;
    const t0 = performance.now();
    const done = () => { console.log(JSON.stringify({ answered, lost, bad, ms: Math.round(performance.now() - t0) })); process.exit(0); };
    const settle = (id) => {
      clearTimeout(pending.get(id)); pending.delete(id);
      if (lost >= ${maxLost} || (next > ${count} && pending.size === 0)) done(); else send();
    };
    const send = () => {
      if (next > ${count}) return;
      const id = next++;
      pending.set(id, setTimeout(() => { lost++; settle(id); }, 1000));
      s.send(wire.buildQuery(id, 'api.example.test', 1), 53, '10.77.4.1');
    };
    s.on('message', (m) => {
      const r = wire.parseResponse(m);
      if (!pending.has(r.id)) return;
      if (r.rcode === 0 && r.answers.length === 1) answered++; else bad++;
      settle(r.id);
    });
    s.bind(0, () => { for (let i = 0; i < ${window}; i++) send(); });`,
    ],
    { timeoutMs: 60_000 },
  );
  try {
    return JSON.parse(r.stdout) as { answered: number; lost: number; bad: number; ms: number };
  } catch {
    throw new Error(`victim failed (${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

/** UDP datagrams the host namespace's sockets dropped for a full receive queue (/proc/net/snmp Udp RcvbufErrors). */
async function rcvbufErrors(): Promise<number> {
  const r = await w.topo.exec(w.topo.hostNs, 'cat', ['/proc/net/snmp']);
  const udp = r.stdout.split('\n').filter((l) => l.startsWith('Udp: '));
  const names = (udp[0] ?? '').split(/\s+/);
  return Number((udp[1] ?? '').split(/\s+/)[names.indexOf('RcvbufErrors')] ?? NaN);
}

/** Packets dropped because a CPU's input backlog was full (/proc/net/softnet_stat, column 2, all CPUs; not per namespace). */
async function backlogDrops(): Promise<number> {
  const r = await w.topo.exec(w.topo.hostNs, 'cat', ['/proc/net/softnet_stat']);
  return r.stdout
    .trim()
    .split('\n')
    .reduce((n, l) => n + parseInt(l.trim().split(/\s+/)[1] ?? '0', 16), 0);
}

/** Floods from namespace `node` (to its host-side address) while the victim asks; asserts the victim was answered. */
async function floodWhileAsking(t: ExecutionContext, node: string): Promise<void> {
  const before = await victim(50, 4, 1);
  t.is(before.answered, 50, `without a flood: ${JSON.stringify(before)}`);

  // At most 5 s, as fast as one process sends, to sandbox one's host-side address (redirected).
  const dropsBefore = await rcvbufErrors();
  const backlogBefore = await backlogDrops();
  const flood = w.topo.spawn(w.topo.ns(node), process.execPath, [FLOOD, '--server', w.topo.hostAddr(node), '--suffix', 'flood.evil.test', '--seconds', '5']);
  const log = new LineLog();
  log.attach(flood);
  const exited = new Promise<void>((res) => flood.once('exit', () => res()));
  await log.waitFor((l) => l.flooding === true, 10_000, 'the flood to start');
  await new Promise((res) => setTimeout(res, 300)); // the responder's socket is full by now, if it is going to be

  const during = await victim(200, 4, 3);
  const floodStillRunning = flood.exitCode === null;
  flood.kill('SIGTERM');
  await exited;
  const stats = await log.waitFor((l) => typeof l.sent === 'number', 1000, "the flood's summary");
  const drops = (await rcvbufErrors()) - dropsBefore;
  const backlog = (await backlogDrops()) - backlogBefore;
  t.log(
    `flood: ${stats.sent} queries in ${stats.seconds} s (${stats.pps}/s), ${stats.answers} answers read by the flooder; ` +
      `victim: ${JSON.stringify(during)}; datagrams dropped at full receive queues in sandgate's namespace: ${drops}; at full CPU input backlogs (whole machine): ${backlog}`,
  );

  t.true(floodStillRunning, 'the victim finished while the flood was still going (else this test showed nothing)');
  t.is(during.bad, 0, 'every answer the victim got is a NOERROR with one address');
  t.true(during.answered >= 198, `at least 99% of 200 answered within 1 s each: ${JSON.stringify(during)}`);
  t.is(g.proc.exitCode, null, 'sandgate is still running');
}

test.serial("a flood of random names from one sandbox: another sandbox's queries are still answered within 1 s", async (t) => {
  await floodWhileAsking(t, 'sbx');
});

// Registered sandboxes are set elements under both backends (nft sets, ipsets): the same limit applies.
test.serial('the same flood from a sandbox registered through the control API', async (t) => {
  const r = await controlRequest(join(w.dir, 'control.sock'), 'POST', '/sandboxes', {
    name: 'registered',
    interface: w.topo.hostIface('reg'),
    address: w.topo.addr('reg'),
    policy: 'default',
  });
  t.is(r.status, 201, JSON.stringify(r.body));
  await floodWhileAsking(t, 'reg');
  const line = g.log.lines.find((l) => l.event === 'dns' && l.sandbox === 'registered');
  t.truthy(line, "the flood was answered as the registered sandbox's");
});

test.serial("the responder's UDP socket gets a receive buffer above the kernel default (the ready line says how large)", async (t) => {
  const ready = await g.log.waitFor((l) => l.event === 'ready');
  const dflt = Number((await w.topo.exec(w.topo.hostNs, 'cat', ['/proc/sys/net/core/rmem_default'])).stdout.trim());
  t.log(`dnsRecvBuffer ${String(ready.dnsRecvBuffer)} bytes; net.core.rmem_default ${dflt}`);
  t.is(typeof ready.dnsRecvBuffer, 'number');
  t.true(Number(ready.dnsRecvBuffer) > dflt);
});
