import test from 'ava';
import { randomBytes } from 'node:crypto';
import { validateConfig } from '../../src/config/validate.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import type { Audit, AuditFields } from '../../src/audit/logger.js';
import type { UpstreamResolver } from '../../src/upstream/resolver.js';
import { SandgateError } from '../../src/errors.js';
import { hostMatches } from '../../src/policy/host-name.js';
import { DnsResponder, qtypeName, MIN_ANSWER_TTL_S, MAX_ANSWER_TTL_S } from '../../src/dns/responder.js';
import { QTYPE, RCODE, EXTENDED_RCODE } from '../../src/dns/wire.js';
import { buildQuery, parseResponse } from '../helpers/dns-client.js';

const SBX = '10.77.1.2';

interface Harness {
  responder: DnsResponder;
  rt: Runtime;
  lines: AuditFields[];
  /** Every name the (fake) upstream resolver was asked for. */
  asked: string[];
  clock: { t: number };
  ask(name: string, type?: number, opts?: { src?: string; tcp?: boolean; edns?: boolean }): Promise<ReturnType<typeof parseResponse>>;
}

type Upstream = Record<string, { addrs: string[]; ttl: number } | { code: string }>;

function harness(overrides: Record<string, unknown> = {}, upstream: Upstream = {}): Harness {
  const raw = {
    sandboxes: [
      { name: 'agent', cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      { name: 'other', cidr: '10.77.9.0/24', policy: 'narrow' },
    ],
    policies: {
      default: {
        allow: [{ host: 'api.example.test' }, { host: '*.wild.example.test' }, { host: 'db.example.test', ports: [5432], protocol: 'tcp' }],
      },
      narrow: { allow: [{ host: 'only.example.test' }] },
    },
    upstream: { allowPrivate: ['10.77.0.0/16'] },
    ...overrides,
  };
  const { config, problems } = validateConfig(raw);
  if (!config) throw new Error(JSON.stringify(problems));
  const lines: AuditFields[] = [];
  const audit = { write: (f: AuditFields) => lines.push(f), flush: () => undefined, logger: undefined } as unknown as Audit;
  const asked: string[] = [];
  const resolver = {
    async resolveWithTtl(host: string) {
      asked.push(host);
      const u = upstream[host] ?? { addrs: ['10.77.2.2'], ttl: 60 };
      if ('code' in u)
        throw new SandgateError(`cannot resolve ${host} (${u.code})`, 'UPSTREAM_RESOLVE', { cause: Object.assign(new Error(u.code), { code: u.code }) });
      return u;
    },
  } as unknown as UpstreamResolver;
  const base = buildRuntime(config, audit);
  const rt: Runtime = { ...base, upstream: { ...base.upstream, resolver } };
  const clock = { t: 1000 };
  const responder = new DnsResponder({
    runtime: () => rt,
    ifaces: { peek: () => null, lookup: async () => undefined },
    now: () => clock.t,
  });
  let id = 1;
  return {
    responder,
    rt,
    lines,
    asked,
    clock,
    async ask(name, type = QTYPE.A, o = {}) {
      const msg = buildQuery(id++, name, type, o.edns ? { edns: { udpSize: 1232 } } : {});
      const reply = await responder.handle(msg, o.src ?? SBX, 40000, o.tcp ? 'tcp' : 'udp');
      if (!reply) throw new Error('no reply');
      return parseResponse(reply);
    },
  };
}

test("an allowed name gets sandgate's A answer with a clamped TTL, and the answer is recorded for that sandbox", async (t) => {
  const h = harness({}, { 'api.example.test': { addrs: ['10.77.2.2', '10.77.2.3'], ttl: 86400 } });
  const r = await h.ask('api.example.test');
  t.is(r.rcode, RCODE.NOERROR);
  t.deepEqual(
    r.answers.map((a) => a.address),
    ['10.77.2.2', '10.77.2.3'],
  );
  t.true(r.answers.every((a) => a.ttl === MAX_ANSWER_TTL_S));
  t.true(h.rt.dnsAnswers.has('agent', 'api.example.test', '10.77.2.3'));
  t.false(h.rt.dnsAnswers.has('other', 'api.example.test', '10.77.2.3'), 'answers are per sandbox');
  const line = h.lines.find((l) => l.event === 'dns');
  t.like(line, {
    event: 'dns',
    proto: 'dns',
    decision: 'allow',
    sandbox: 'agent',
    user: 'alice',
    src: `${SBX}:40000`,
    host: 'api.example.test',
    qtype: 'A',
    rcode: 'NOERROR',
    rule: 'policies.default.allow[0]',
  });
  t.deepEqual(line?.answers, ['10.77.2.2', '10.77.2.3']);
  t.is(line?.ttl, MAX_ANSWER_TTL_S);
});

test('a short upstream TTL is raised to the minimum', async (t) => {
  const h = harness({}, { 'api.example.test': { addrs: ['10.77.2.2'], ttl: 1 } });
  const r = await h.ask('api.example.test');
  t.is(r.answers[0]?.ttl, MIN_ANSWER_TTL_S);
});

test('unlisted names are NXDOMAIN for every type, and the resolver is never asked', async (t) => {
  const h = harness();
  for (const type of [QTYPE.A, QTYPE.AAAA, QTYPE.TXT, QTYPE.MX, QTYPE.ANY, QTYPE.NULL, QTYPE.HTTPS, QTYPE.SVCB, QTYPE.CNAME, QTYPE.PTR, 999]) {
    const r = await h.ask('secret-data.evil.test', type);
    t.is(r.rcode, RCODE.NXDOMAIN, qtypeName(type));
    t.is(r.answers.length, 0);
  }
  t.is((await h.ask('wild.example.test')).rcode, RCODE.NXDOMAIN, 'the wildcard does not cover its apex');
  t.is((await h.ask('example.test')).rcode, RCODE.NXDOMAIN);
  t.is((await h.ask('api.example.test.evil.test')).rcode, RCODE.NXDOMAIN);
  t.deepEqual(h.asked, []);
  const line = h.lines.find((l) => l.qtype === 'TXT');
  t.like(line, { decision: 'deny', host: 'secret-data.evil.test', rcode: 'NXDOMAIN', reason: 'secret-data.evil.test is not allowed' });
});

test('AAAA, HTTPS, SVCB, TXT, MX, ANY, CNAME, PTR... for an allowed name: empty NOERROR, nothing forwarded', async (t) => {
  const h = harness();
  for (const type of [QTYPE.AAAA, QTYPE.HTTPS, QTYPE.SVCB, QTYPE.TXT, QTYPE.MX, QTYPE.ANY, QTYPE.NULL, QTYPE.SRV, QTYPE.CNAME, QTYPE.PTR]) {
    const r = await h.ask('api.example.test', type);
    t.is(r.rcode, RCODE.NOERROR, qtypeName(type));
    t.is(r.answers.length, 0, qtypeName(type));
  }
  t.deepEqual(h.asked, []);
});

test("wildcard semantics are the TLS matcher's: any depth below, never the apex, case-insensitive", async (t) => {
  const h = harness();
  const names = [
    'x.wild.example.test',
    'deep.x.wild.example.test',
    'wild.example.test',
    'xwild.example.test',
    'X.Wild.Example.TEST',
    'api.example.test',
    'API.EXAMPLE.TEST',
    'a.api.example.test',
    'db.example.test',
  ];
  const rules = h.rt.sandboxes.byName('agent')!.policy.rules;
  for (const n of names) {
    const r = await h.ask(n);
    const tlsCovers = rules.some((rule) => hostMatches(rule.host, n.toLowerCase()));
    t.is(r.rcode === RCODE.NOERROR, tlsCovers, n);
  }
});

test('each sandbox is answered from its own policy; an unknown source is REFUSED', async (t) => {
  const h = harness();
  t.is((await h.ask('only.example.test', QTYPE.A, { src: '10.77.9.2' })).rcode, RCODE.NOERROR);
  t.is((await h.ask('api.example.test', QTYPE.A, { src: '10.77.9.2' })).rcode, RCODE.NXDOMAIN);
  t.is((await h.ask('only.example.test')).rcode, RCODE.NXDOMAIN);
  t.is((await h.ask('api.example.test', QTYPE.A, { src: '192.0.2.1' })).rcode, RCODE.REFUSED);
  t.like(h.lines.at(-1), { decision: 'deny', reason: 'source is not a configured sandbox', src: '192.0.2.1:40000' });
});

test('upstream NXDOMAIN / NODATA / timeout map to NXDOMAIN / empty NOERROR / SERVFAIL', async (t) => {
  const h = harness(
    {},
    {
      'a.wild.example.test': { code: 'ENOTFOUND' },
      'b.wild.example.test': { code: 'ENODATA' },
      'c.wild.example.test': { code: 'ETIMEOUT' },
    },
  );
  t.is((await h.ask('a.wild.example.test')).rcode, RCODE.NXDOMAIN);
  const b = await h.ask('b.wild.example.test');
  t.is(b.rcode, RCODE.NOERROR);
  t.is(b.answers.length, 0);
  t.is((await h.ask('c.wild.example.test')).rcode, RCODE.SERVFAIL);
  t.like(h.lines.at(-1), { decision: 'allow', rcode: 'SERVFAIL', error: 'cannot resolve c.wild.example.test (ETIMEOUT)' });
});

test('IPv6 and guarded upstream addresses are not handed out', async (t) => {
  const h = harness({}, { 'api.example.test': { addrs: ['fd00::1', '169.254.169.254', '10.77.2.2'], ttl: 60 } });
  const r = await h.ask('api.example.test');
  t.deepEqual(
    r.answers.map((a) => a.address),
    ['10.77.2.2'],
  );
  const h2 = harness({}, { 'api.example.test': { addrs: ['127.0.0.1'], ttl: 60 } });
  const r2 = await h2.ask('api.example.test');
  t.is(r2.rcode, RCODE.NOERROR);
  t.is(r2.answers.length, 0);
  t.regex(String(h2.lines.at(-1)?.error), /not allowed/);
});

test('report mode answers unlisted names and logs would-deny', async (t) => {
  const h = harness({ policies: { default: { mode: 'report', allow: [] }, narrow: { allow: [] } } });
  const r = await h.ask('unlisted.example.test');
  t.is(r.rcode, RCODE.NOERROR);
  t.is(r.answers.length, 1);
  t.like(h.lines.at(-1), { decision: 'would-deny', host: 'unlisted.example.test' });
});

test('EDNS version 1 gets BADVERS; a TC-sized answer set is truncated on UDP but whole on TCP', async (t) => {
  const h = harness({}, { 'api.example.test': { addrs: Array.from({ length: 40 }, (_, i) => `10.77.2.${i + 2}`), ttl: 60 } });
  const msg = buildQuery(7, 'api.example.test', QTYPE.A, { edns: { udpSize: 1232 } });
  msg[msg.length - 5] = 1; // OPT TTL's version octet: ext-rcode, version, flags(2), then rdlen(2) (RFC 6891 §6.1.3)
  const bad = parseResponse((await h.responder.handle(msg, SBX, 1, 'udp'))!);
  t.is(bad.rcode, EXTENDED_RCODE.BADVERS);
  const udp = await h.ask('api.example.test');
  t.true(udp.tc);
  t.is(udp.answers.length, 0);
  const tcp = await h.ask('api.example.test', QTYPE.A, { tcp: true });
  t.false(tcp.tc);
  t.is(tcp.answers.length, 40);
});

test('rate limit: over the bucket -> REFUSED; one audit line per burst with the refused count', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 10, burst: 5 } } });
  const rcodes: number[] = [];
  for (let i = 0; i < 30; i++) rcodes.push((await h.ask(`n${i}.evil.test`)).rcode);
  t.is(rcodes.filter((c) => c === RCODE.NXDOMAIN).length, 5);
  t.is(rcodes.filter((c) => c === RCODE.REFUSED).length, 25);
  h.responder.tick();
  t.falsy(
    h.lines.find((l) => l.refused !== undefined),
    'the burst is still open',
  );
  h.clock.t += 1500; // quiet for longer than 1 s: the burst closes
  h.responder.tick();
  const bursts = h.lines.filter((l) => l.refused !== undefined);
  t.is(bursts.length, 1);
  t.like(bursts[0], { event: 'dns', decision: 'deny', sandbox: 'agent', user: 'alice', refused: 25, host: 'n5.evil.test', qtype: 'A', rcode: 'REFUSED' });
  // Tokens came back with the clock: queries are answered again.
  t.is((await h.ask('api.example.test')).rcode, RCODE.NOERROR);
  // A second burst is a second line.
  for (let i = 0; i < 30; i++) await h.ask('x.evil.test');
  h.clock.t += 1500;
  h.responder.tick();
  t.is(h.lines.filter((l) => l.refused !== undefined).length, 2);
});

test('a message with QR=1 (a response) gets no reply at all', async (t) => {
  const h = harness();
  const msg = buildQuery(9, 'api.example.test', QTYPE.A);
  msg[2] = (msg[2] as number) | 0x80;
  t.is(await h.responder.handle(msg, SBX, 40000, 'udp'), undefined);
  t.deepEqual(h.asked, []);
});

test('rate limit: a malformed datagram costs a token like a query (it is taken before parsing), and report mode is limited too', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 1, burst: 5 } } });
  for (let i = 0; i < 5; i++) {
    const reply = await h.responder.handle(Buffer.from([0x12, i, 0x01, 0x00]), SBX, 40000, 'udp');
    t.is(reply === undefined ? undefined : parseResponse(reply).rcode, RCODE.FORMERR);
  }
  t.is((await h.ask('api.example.test')).rcode, RCODE.REFUSED, 'the bucket is empty');
  const report = harness({ dns: { rateLimit: { qps: 1, burst: 3 } }, policies: { default: { mode: 'report', allow: [] }, narrow: { allow: [] } } });
  const rcodes: number[] = [];
  for (let i = 0; i < 6; i++) rcodes.push((await report.ask(`n${i}.unlisted.test`)).rcode);
  t.deepEqual(rcodes, [RCODE.NOERROR, RCODE.NOERROR, RCODE.NOERROR, RCODE.REFUSED, RCODE.REFUSED, RCODE.REFUSED]);
  t.deepEqual(report.asked, ['n0.unlisted.test', 'n1.unlisted.test', 'n2.unlisted.test'], 'refused queries are not resolved');
});

test('a sustained flood is reported every 10 s, not once per query', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 1, burst: 1 } } });
  for (let s = 0; s < 25; s++) {
    for (let i = 0; i < 50; i++) await h.ask('f.evil.test');
    h.clock.t += 1000 - 1; // never quiet for a whole second
    h.responder.tick();
  }
  h.responder.tick(true);
  const bursts = h.lines.filter((l) => l.refused !== undefined);
  t.true(bursts.length >= 2 && bursts.length <= 4, `${bursts.length} lines`);
  const answered = h.lines.filter((l) => l.rcode === 'NXDOMAIN').length;
  t.is(bursts.reduce((n, l) => n + Number(l.refused), 0) + answered, 25 * 50);
});

test('audit sampling: a flood of denials writes a bounded number of lines plus summaries that add up', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 1_000_000, burst: 1_000_000 }, auditSampling: { linesPerSecond: 10, burst: 20 } } });
  for (let i = 0; i < 2000; i++) await h.ask(`${randomBytes(8).toString('hex')}.exfil.evil.test`, QTYPE.TXT);
  h.responder.tick();
  const single = h.lines.filter((l) => l.suppressed === undefined);
  const summaries = h.lines.filter((l) => l.suppressed !== undefined);
  t.is(single.length, 20);
  t.is(summaries.length, 1);
  t.like(summaries[0], { event: 'dns', decision: 'deny', sandbox: 'agent', user: 'alice', suppressed: 1980, domains: { 'evil.test': 1980 } });
});

test('the sandbox cannot make sandgate resolve a name it may not use (10,000 hostile queries)', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 1_000_000, burst: 1_000_000 } } });
  const labels = (n: number): string => Array.from({ length: n }, () => randomBytes(31).toString('hex').slice(0, 63)).join('.');
  for (let i = 0; i < 2500; i++) {
    await h.ask(`${labels(3)}.evil.test`, [QTYPE.A, QTYPE.TXT, QTYPE.AAAA, QTYPE.NULL][i % 4]);
    await h.ask(`${randomBytes(6).toString('hex')}.example.test`);
    await h.ask(`${randomBytes(6).toString('hex')}.api.example.test`);
    await h.ask(`wild.example.test.${randomBytes(3).toString('hex')}.test`);
  }
  t.deepEqual(h.asked, []);
});

test('fuzz: random and mutated messages never throw; every reply parses and echoes the id', async (t) => {
  const h = harness({ dns: { rateLimit: { qps: 1_000_000, burst: 1_000_000 }, auditSampling: { linesPerSecond: 1, burst: 1 } } });
  const seeds = [
    buildQuery(1, 'api.example.test', QTYPE.A),
    buildQuery(2, 'x.wild.example.test', QTYPE.AAAA, { edns: { udpSize: 4096 } }),
    buildQuery(3, 'evil.test', QTYPE.TXT),
  ];
  let replies = 0;
  for (let i = 0; i < 20_000; i++) {
    let msg: Buffer;
    if (i % 3 === 0) msg = randomBytes(Math.floor(Math.random() * 64));
    else {
      msg = Buffer.from(seeds[i % seeds.length]!);
      for (let k = 0; k < 1 + (i % 4); k++) msg[Math.floor(Math.random() * msg.length)] = Math.floor(Math.random() * 256);
      if (i % 7 === 0) msg = msg.subarray(0, Math.floor(Math.random() * msg.length));
      if (i % 11 === 0) msg = Buffer.concat([msg, randomBytes(5)]);
    }
    const reply = await h.responder.handle(msg, SBX, 1, i % 2 ? 'udp' : 'tcp');
    if (!reply) continue;
    replies++;
    const r = parseResponse(reply);
    t.is(r.id, msg.readUInt16BE(0));
    t.true(r.qr);
  }
  t.true(replies > 10_000);
  for (const name of h.asked) t.true(name === 'api.example.test' || name.endsWith('.wild.example.test'), name);
  t.is((await h.ask('api.example.test')).rcode, RCODE.NOERROR);
});

test('a retransmitted query (same source, same bytes) while the first is being answered is answered too, with no audit line of its own', async (t) => {
  const h = harness();
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  const resolver = h.rt.upstream.resolver as unknown as { resolveWithTtl(host: string): Promise<{ addrs: string[]; ttl: number }> };
  const answer = resolver.resolveWithTtl.bind(resolver);
  resolver.resolveWithTtl = async (host) => {
    await held;
    return answer(host);
  };
  // A stub resolver retransmits the identical datagram (same id, same socket) on its timeout.
  const msg = buildQuery(77, 'api.example.test', QTYPE.A);
  const first = h.responder.handle(msg, SBX, 40000, 'udp');
  const again = h.responder.handle(Buffer.from(msg), SBX, 40000, 'udp');
  const third = h.responder.handle(Buffer.from(msg), SBX, 40000, 'udp');
  // Another socket asking the same thing is another query.
  const elsewhere = h.responder.handle(Buffer.from(msg), SBX, 40001, 'udp');
  release();
  const replies = await Promise.all([first, again, third, elsewhere]);
  for (const r of replies) {
    const p = parseResponse(r as Buffer);
    t.is(p.id, 77);
    t.deepEqual(
      p.answers.map((a) => a.address),
      ['10.77.2.2'],
    );
  }
  t.is(h.lines.filter((l) => l.event === 'dns').length, 2, JSON.stringify(h.lines));
  t.is(h.asked.length, 4, 'each copy is answered (the real resolver asks upstream once for them)');
  // Once answered, the same query again is a new query (the reply may have been lost): a new line.
  await h.responder.handle(Buffer.from(msg), SBX, 40000, 'udp');
  t.is(h.lines.filter((l) => l.event === 'dns').length, 3);
});

test('metadata.google.internal: 169.254.169.254 for a sandbox whose policy enables GCE metadata, the usual NXDOMAIN for others; never asked upstream', async (t) => {
  const h = harness({
    policies: {
      default: { allow: [{ host: 'api.example.test' }], metadata: { gce: { projectId: 'proj' } } },
      narrow: { allow: [{ host: 'only.example.test' }], metadata: { aws: {} } },
    },
  });
  const r = await h.ask('metadata.google.internal');
  t.is(r.rcode, RCODE.NOERROR);
  t.deepEqual(
    r.answers.map((a) => a.address),
    ['169.254.169.254'],
  );
  t.like(h.lines.at(-1), { event: 'dns', decision: 'allow', host: 'metadata.google.internal', rule: 'policies.default.metadata.gce', rcode: 'NOERROR' });
  const aaaa = await h.ask('metadata.google.internal', QTYPE.AAAA);
  t.is(aaaa.rcode, RCODE.NOERROR);
  t.is(aaaa.answers.length, 0);
  // The other sandbox's policy answers AWS metadata only: the name is not covered there.
  const other = await h.ask('metadata.google.internal', QTYPE.A, { src: '10.77.9.2' });
  t.is(other.rcode, RCODE.NXDOMAIN);
  t.like(h.lines.at(-1), { decision: 'deny', sandbox: 'other', host: 'metadata.google.internal', rcode: 'NXDOMAIN' });
  t.deepEqual(h.asked, []);
});

test('a placeholder in a name is REFUSED with a tripwire line (never sampled), nothing asked; under quarantine the sandbox gets REFUSED for everything', async (t) => {
  process.env['SG_DNS_TRIPWIRE_K'] = 'k-secret-0123456789';
  const creds = { credentials: { k: { secret: { env: 'SG_DNS_TRIPWIRE_K' }, placeholder: 'sk-sandgate-k-ph' } } };
  const h = harness({ ...creds, onTripwire: 'quarantine' });
  t.is((await h.ask('api.example.test')).rcode, RCODE.NOERROR);
  const r = await h.ask('x.SK-SANDGATE-K-PH.evil.test');
  t.is(r.rcode, RCODE.REFUSED);
  t.false(
    h.asked.some((n) => n.includes('evil')),
    'nothing looked up',
  );
  t.like(
    h.lines.find((l) => l.event === 'tripwire'),
    { proto: 'dns', sandbox: 'agent', decision: 'deny', credential: 'k', rcode: 'REFUSED', onTripwire: 'quarantine' },
  );
  t.true(h.rt.quarantine.has('agent'));
  t.is((await h.ask('api.example.test')).rcode, RCODE.REFUSED, 'quarantined: an allowed name too');
  t.like(h.lines.at(-1), { event: 'dns', decision: 'deny', reason: 'quarantined', rcode: 'REFUSED' });
  t.is((await h.ask('only.example.test', QTYPE.A, { src: '10.77.9.2' })).rcode, RCODE.NOERROR, 'another sandbox is not affected');
});
