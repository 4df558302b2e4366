/**
 * sandgate's own resolver (src/upstream/resolver.ts) against a fake DNS server on loopback: its cache
 * must stay bounded whatever names a sandbox makes it resolve (a wildcard rule allows unboundedly
 * many), and answers keep their remaining lifetime.
 */
import test from 'ava';
import dgram from 'node:dgram';
import { UpstreamResolver } from '../../src/upstream/resolver.js';
import { RCODE, buildResponse, parseQuery } from '../../src/dns/wire.js';

/** Answers every A query with 10.0.0.1 (TTL 60); counts the queries. */
async function fakeDns(): Promise<{ port: number; queries: () => number; close: () => void }> {
  const sock = dgram.createSocket('udp4');
  let n = 0;
  sock.on('message', (msg, rinfo) => {
    const r = parseQuery(msg);
    if (!r.ok) return;
    n++;
    sock.send(buildResponse(r.query, RCODE.NOERROR, [{ type: 1, ttl: 60, address: '10.0.0.1' }]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  return { port: sock.address().port, queries: () => n, close: () => sock.close() };
}

const cacheSize = (r: UpstreamResolver): number => (r as unknown as { cache: Map<string, unknown> }).cache.size;

test('the resolver cache holds at most 10,000 names, however many distinct names are resolved', async (t) => {
  const dns = await fakeDns();
  try {
    const r = new UpstreamResolver({ hosts: {}, resolver: `127.0.0.1:${dns.port}`, allowPrivate: [], connectTimeoutMs: 1000 } as never);
    const N = 12_000;
    for (let i = 0; i < N; i += 200) {
      await Promise.all(Array.from({ length: 200 }, (_, k) => r.resolve(`n${i + k}.wild.example.test`)));
    }
    t.is(dns.queries(), N);
    t.true(cacheSize(r) <= 10_000, `${cacheSize(r)} names cached`);
    // The newest names are the ones kept: asking again costs no query.
    t.deepEqual(await r.resolve(`n${N - 1}.wild.example.test`), ['10.0.0.1']);
    t.is(dns.queries(), N);
    // A cached answer is handed on with its remaining lifetime, never more than the upstream's TTL.
    const { ttl } = await r.resolveWithTtl(`n${N - 1}.wild.example.test`);
    t.true(ttl > 0 && ttl <= 60, `ttl ${ttl}`);
  } finally {
    dns.close();
  }
});
