import test from 'ava';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { parseConfig } from '../../src/config/load.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import type { Audit, AuditFields } from '../../src/audit/logger.js';
import type { SandboxMatch } from '../../src/firewall/plan.js';
import { ConnRegistry } from '../../src/net/conn-registry.js';
import { createControlService } from '../../src/control/service.js';

const CONFIG = parseConfig(
  `sandboxes:
  - name: agent
    cidr: 10.77.1.0/24
    policy: default
policies:
  default:
    allow:
      - host: api.example.test
`,
  'c.yaml',
);

/** A socket stand-in: counts resets, emits close like a real one. */
class FakeSocket extends EventEmitter {
  destroyed = false;
  resets = 0;
  resetAndDestroy(): this {
    this.resets++;
    this.destroy();
    return this;
  }
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      queueMicrotask(() => this.emit('close'));
    }
    return this;
  }
}

function world(opts: { failFirewall?: (after: readonly SandboxMatch[]) => boolean } = {}) {
  const lines: AuditFields[] = [];
  const audit = {
    write: (f: AuditFields) => {
      lines.push(f);
    },
    flush: () => undefined,
  } as unknown as Audit;
  let rt: Runtime = buildRuntime(CONFIG, audit);
  const calls: { before: readonly SandboxMatch[]; after: readonly SandboxMatch[] }[] = [];
  let queue: Promise<unknown> = Promise.resolve();
  const conns = new ConnRegistry(() => rt);
  const svc = createControlService({
    runtime: () => rt,
    swap: (next) => {
      rt = next;
    },
    serial: <T>(fn: () => Promise<T>): Promise<T> => {
      const next = queue.then(fn, fn);
      queue = next.catch(() => undefined);
      return next;
    },
    updateFirewall: async (before, after) => {
      calls.push({ before, after });
      await new Promise((r) => setTimeout(r, 5));
      if (opts.failFirewall?.(after)) throw new Error('nft could not update the registered sandboxes: Could not process rule: No buffer space available.');
    },
    conns,
  });
  return { svc, lines, calls, conns, rt: () => rt };
}

test('one change alone goes through at once; its audit line names policy, user and match', async (t) => {
  const w = world();
  const o = await w.svc.add({ name: 'two', address: '10.77.4.2', policy: 'default', user: 'bob' });
  t.true(o.ok);
  t.deepEqual(w.calls, [{ before: [], after: [{ name: 'two', cidr: '10.77.4.2/32' }] }]);
  t.is(w.rt().sandboxes.identify('10.77.4.2', undefined)?.name, 'two');
  t.like(
    w.lines.find((l) => l.action === 'sandbox-added'),
    { event: 'config', sandbox: 'two', policy: 'default', user: 'bob', match: { name: 'two', cidr: '10.77.4.2/32' } },
  );
});

test('changes that arrive together are one firewall transaction; an invalid one is refused alone', async (t) => {
  const w = world();
  const results = await Promise.all([
    w.svc.add({ name: 'a', address: '10.77.4.2', policy: 'default' }),
    w.svc.add({ name: 'b', address: '10.77.4.3', policy: 'default' }),
    w.svc.add({ name: 'c', address: '10.77.4.2', policy: 'default' }), // overlaps a, planned after it
    w.svc.add({ name: 'd', address: '10.77.4.4', policy: 'default' }),
    w.svc.remove('b'),
  ]);
  t.deepEqual(
    results.map((r) => r.ok),
    [true, true, false, true, true],
  );
  t.like(results[2], { status: 409 });
  // Queued in the same tick: one transaction with the net effect.
  t.is(w.calls.length, 1);
  t.deepEqual(
    w.calls[0]?.after.map((m) => m.name),
    ['a', 'd'],
  );
  // One more while a transaction runs waits for it, then goes in the next one.
  const e = w.svc.add({ name: 'e', address: '10.77.4.5', policy: 'default' });
  await new Promise((r) => setImmediate(r));
  const f = w.svc.add({ name: 'f', address: '10.77.4.6', policy: 'default' });
  const g = w.svc.add({ name: 'g', address: '10.77.4.7', policy: 'default' });
  t.deepEqual(
    (await Promise.all([e, f, g])).map((r) => r.ok),
    [true, true, true],
  );
  t.deepEqual(
    w.calls.map((c) => c.after.length),
    [2, 3, 5],
  );
  t.deepEqual(
    w.rt().dynamic.map((s) => s.name),
    ['a', 'd', 'e', 'f', 'g'],
  );
  t.truthy(w.lines.find((l) => l.action === 'sandbox-rejected' && l.sandbox === 'c'));
});

test('a firewall failure changes nothing: same registry, same runtime, 500 with one sentence', async (t) => {
  const w = world({ failFirewall: (after) => after.some((m) => m.name === 'bad') });
  t.true((await w.svc.add({ name: 'ok', address: '10.77.4.2', policy: 'default' })).ok);
  const rt = w.rt();
  const o = await w.svc.add({ name: 'bad', address: '10.77.4.9', policy: 'default' });
  t.like(o, { ok: false, status: 500 });
  t.regex((o as { error: string }).error, /^the firewall could not be updated, so nothing changed: nft could not/);
  t.is(w.rt(), rt);
  t.deepEqual(
    w.rt().dynamic.map((s) => s.name),
    ['ok'],
  );
});

test('a failed batch is retried change by change, so one change never fails another', async (t) => {
  const w = world({ failFirewall: (after) => after.some((m) => m.name === 'bad') });
  const first = w.svc.add({ name: 'first', address: '10.77.4.1', policy: 'default' });
  const rest = Promise.all([
    w.svc.add({ name: 'good', address: '10.77.4.2', policy: 'default' }),
    w.svc.add({ name: 'bad', address: '10.77.4.3', policy: 'default' }),
    w.svc.add({ name: 'also', address: '10.77.4.4', policy: 'default' }),
  ]);
  t.true((await first).ok);
  const [good, bad, also] = await rest;
  t.true(good.ok);
  t.like(bad, { ok: false, status: 500 });
  t.true(also.ok);
  t.deepEqual(
    w.rt().dynamic.map((s) => s.name),
    ['first', 'good', 'also'],
  );
});

test("removal resets the sandbox's open connections, and a late one identified before it is refused", async (t) => {
  const w = world();
  await w.svc.add({ name: 'two', address: '10.77.4.2', policy: 'default' });
  const before = w.rt().sandboxes.byName('two');
  if (!before) {
    t.fail();
    return;
  }
  const socks = [new FakeSocket(), new FakeSocket()];
  for (const s of socks) t.true(w.conns.track(before, s as unknown as net.Socket));
  const other = new FakeSocket();
  t.true(w.conns.track(w.rt().sandboxes.byName('agent')!, other as unknown as net.Socket));
  t.is(w.svc.list().find((v) => v.name === 'two')?.connections, 2);
  const o = await w.svc.remove('two');
  t.deepEqual(o, { ok: true, value: { removed: 'two', closed: 2 } });
  t.deepEqual(
    socks.map((s) => s.resets),
    [1, 1],
  );
  t.false(other.destroyed, "another sandbox's connection is untouched");
  const late = new FakeSocket();
  t.false(w.conns.track(before, late as unknown as net.Socket), 'identified with the old runtime, tracked after the removal');
  t.true(late.destroyed);
  t.like(
    w.lines.find((l) => l.action === 'sandbox-removed'),
    { sandbox: 'two', closed: 2 },
  );
});

test('an update resets connections only when policy, user or match change', async (t) => {
  const w = world();
  await w.svc.add({ name: 'two', address: '10.77.4.2', policy: 'default' });
  const s = new FakeSocket();
  w.conns.track(w.rt().sandboxes.byName('two')!, s as unknown as net.Socket);
  t.like(await w.svc.update('two', { labels: { a: 'b' } }), { ok: true, value: { closed: 0 } });
  t.false(s.destroyed);
  t.like(await w.svc.update('two', { user: 'carol' }), { ok: true, value: { closed: 1, user: 'carol' } });
  t.true(s.destroyed);
});
