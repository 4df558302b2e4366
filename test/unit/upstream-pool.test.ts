import test from 'ava';
import { lookup } from 'node:dns';
import net from 'node:net';
import { UpstreamPool, type PooledSocket, type Target } from '../../src/upstream/pool.js';
import type { AddressGuard } from '../../src/upstream/address-guard.js';
import type { UpstreamTls } from '../../src/upstream/tls.js';

/** A plain TCP upstream on loopback that records the connections it accepted. */
async function upstream(): Promise<{ port: number; accepted: net.Socket[]; server: net.Server }> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    accepted.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, accepted, server };
}

const noGuard = { check: () => undefined } as unknown as AddressGuard;
const pool = (idleMs: number, sweepMs: number): UpstreamPool =>
  new UpstreamPool(undefined as unknown as UpstreamTls, lookup as never, noGuard, 5000, { idleMs, sweepMs });

function connect(p: UpstreamPool, t: Target): Promise<PooledSocket> {
  return new Promise((resolve, reject) => {
    p.connect(t, resolve, reject);
  });
}

test('a released connection is taken again; once idle for idleMs the sweep closes it and it is no longer handed out', async (t) => {
  const up = await upstream();
  t.teardown(() => up.server.close());
  const p = pool(150, 20);
  const target: Target = { tls: false, host: '127.0.0.1', port: up.port };
  const first = await connect(p, target);
  p.release(first);
  const again = p.take(target);
  t.is(again?.socket, first.socket);
  t.true(again?.reused);
  p.release(again as PooledSocket);
  // The upstream sees the connection close (no timed assertion: the test's own timeout is the hang detector).
  await new Promise((r) => (up.accepted[0] as net.Socket).once('close', r));
  t.true(first.socket.destroyed);
  t.is(p.take(target), undefined);
  t.is(up.accepted.length, 1);
});

test('after a burst of 300 connections in use at once, all 300 are kept idle and handed out again (none reopened)', async (t) => {
  const up = await upstream();
  const p = pool(60_000, 60_000);
  const n = 300;
  const target: Target = { tls: false, host: '127.0.0.1', port: up.port };
  const burst = await Promise.all(Array.from({ length: n }, () => connect(p, target)));
  t.teardown(() => {
    for (const c of burst) c.socket.destroy();
    for (const s of up.accepted) s.destroy();
    p.drain();
    up.server.close();
  });
  for (const c of burst) p.release(c);
  const again = new Set<net.Socket>();
  for (let i = 0; i < n; i++) {
    const c = p.take(target);
    if (c !== undefined) again.add(c.socket);
  }
  t.is(again.size, n);
  t.true(burst.every((c) => again.has(c.socket) && !c.socket.destroyed));
});
