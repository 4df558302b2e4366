/**
 * `GET /events` on a real control socket. First with a bare hub (the stream's backpressure, no
 * daemon needed), then end to end: a real sandgate, an allowed and a denied request from the
 * sandbox, and the stream's filters.
 */
import test from 'ava';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlServer } from '../../src/control/server.js';
import { controlRequest, controlStream } from '../../src/control/client.js';
import { EventHub, MAX_SUBSCRIBERS } from '../../src/control/events.js';
import type { ControlService } from '../../src/control/service.js';
import { EVENTS_QUEUE_BYTES } from '../../src/control/events-http.js';
import { baseConfig, createWorld, startGate, type Gate, type World } from '../helpers/gate.js';

const svc: ControlService = {
  list: () => [],
  get: (name) => ({ ok: false, status: 404, error: `no sandbox named "${name}"` }),
  add: async () => ({ ok: false, status: 409, error: 'no' }),
  update: async () => ({ ok: false, status: 409, error: 'no' }),
  remove: async () => ({ ok: false, status: 409, error: 'no' }),
  reload: async () => ({ ok: false, status: 400, error: 'no' }),
  quarantined: () => [],
  release: (name) => ({ ok: false, status: 404, error: `"${name}" is not quarantined` }),
};

let dir: string;
test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-events-'));
});
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`hang detector: no ${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.serial('a subscriber that does not read loses lines, not memory: a drop marker stands where they are missing', async (t) => {
  let active = 0;
  const hub = new EventHub((a) => {
    active += a ? 1 : -1;
  });
  const path = join(dir, 'drop.sock');
  const server = await startControlServer(path, svc, undefined, undefined, hub);
  const text: string[] = [];
  let res: http.IncomingMessage | undefined;
  const done = new Promise<void>((resolve, reject) => {
    const req = http.request({ socketPath: path, path: '/events' }, (r) => {
      res = r;
      r.pause();
      r.setEncoding('utf8');
      r.on('data', (d: string) => text.push(d));
      r.on('close', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
  await until(() => res !== undefined && hub.size === 1, 'subscriber');
  t.is(res?.headers['content-type'], 'application/x-ndjson');
  // Far more than the socket buffers and the bounded queue hold: 16 MiB of lines, published while
  // the client reads nothing.
  const pad = 'x'.repeat(200);
  const N = 64_000;
  for (let i = 0; i < N; i += 1000) {
    let batch = '';
    for (let j = i; j < i + 1000; j++) batch += `{"event":"conn","seq":${j},"pad":"${pad}"}\n`;
    hub.publish(batch);
  }
  res?.resume();
  // Once the reader caught up, one more line proves the stream still flows after the gap.
  await until(() => text.join('').includes('"event":"dropped"'), 'drop marker');
  hub.publish(`{"event":"conn","seq":${N}}\n`);
  await until(() => text.join('').includes(`"seq":${N}}`), 'the line after the gap');
  await server.close();
  await done;
  const lines = text
    .join('')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { event: string; seq?: number; count?: number });
  const seqs = lines.filter((l) => l.seq !== undefined).map((l) => l.seq as number);
  const markers = lines.filter((l) => l.event === 'dropped');
  t.is(markers.length, 1);
  const dropped = markers[0]?.count ?? 0;
  t.true(dropped > 0);
  t.is(seqs.length + dropped, N + 1, 'every line is either delivered or counted');
  // In order, with exactly one gap, right where the marker is.
  const at = lines.findIndex((l) => l.event === 'dropped');
  const before = lines[at - 1]?.seq ?? -1;
  const after = lines[at + 1]?.seq ?? -1;
  t.is(after - before - 1, dropped);
  t.deepEqual(
    seqs,
    seqs.slice().sort((a, b) => a - b),
  );
  // What reached the client before the gap is bounded by the queue and the socket buffers, not by N.
  const early = seqs.filter((s) => s <= before).length;
  t.log(`delivered before the gap: ${early} lines (${early * 230} bytes), dropped ${dropped}`);
  t.true(early * 230 < EVENTS_QUEUE_BYTES + 2 * 1024 * 1024);
  await until(() => active === 0, 'unsubscribe after close');
  t.is(hub.size, 0);
});

test.serial('a client that goes away unsubscribes: nobody watching, no tap', async (t) => {
  const seen: boolean[] = [];
  const hub = new EventHub((a) => seen.push(a));
  const path = join(dir, 'leave.sock');
  const server = await startControlServer(path, svc, undefined, undefined, hub);
  const got: Record<string, unknown>[] = [];
  const open = await controlStream(path, '/events?decision=deny', (l) => got.push(l));
  if (!open.ok) throw new Error(`status ${open.status}`);
  t.deepEqual(seen, [true]);
  hub.publish('{"event":"conn","decision":"allow"}\n{"event":"conn","decision":"deny"}\n');
  await until(() => got.length === 1, 'the deny line');
  t.deepEqual(got, [{ event: 'conn', decision: 'deny' }]);
  open.stream.close();
  await until(() => seen.length === 2, 'unsubscribe');
  t.deepEqual(seen, [true, false]);
  t.like(await controlRequest(path, 'GET', '/events?decision=maybe'), { status: 400 });
  t.like(await controlRequest(path, 'POST', '/events'), { status: 405 });
  await server.close();
});

test.serial('at most MAX_SUBSCRIBERS streams: one more is refused with 503, and admitted once one leaves', async (t) => {
  const hub = new EventHub(() => undefined);
  const path = join(dir, 'cap.sock');
  const server = await startControlServer(path, svc, undefined, undefined, hub);
  const open = await Promise.all(Array.from({ length: MAX_SUBSCRIBERS }, () => controlStream(path, '/events', () => undefined)));
  t.true(open.every((o) => o.ok));
  t.like(await controlStream(path, '/events', () => undefined), { ok: false, status: 503 });
  const first = open[0];
  if (first?.ok) first.stream.close();
  await until(() => hub.size === MAX_SUBSCRIBERS - 1, 'one stream closed');
  const again = await controlStream(path, '/events', () => undefined);
  t.true(again.ok);
  await server.close();
});

let w: World | undefined;
let g: Gate | undefined;
test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

test.serial('end to end: a real gate streams its audit lines, filtered by sandbox, host and decision', async (t) => {
  w = await createWorld();
  const config = baseConfig(w);
  const sock = (config.listen as { control: string }).control;
  g = await startGate(w.topo, w.dir, config);
  const all: Record<string, unknown>[] = [];
  const denied: Record<string, unknown>[] = [];
  const api: Record<string, unknown>[] = [];
  const other: Record<string, unknown>[] = [];
  const streams = await Promise.all([
    controlStream(sock, '/events', (l) => all.push(l)),
    controlStream(sock, '/events?decision=deny', (l) => denied.push(l)),
    controlStream(sock, '/events?sandbox=agent&host=API.*', (l) => api.push(l)),
    controlStream(sock, '/events?sandbox=nobody', (l) => other.push(l)),
  ]);
  const ok = await w.curl(['--resolve', `api.example.test:443:${w.a}`, 'https://api.example.test/events-ok']);
  t.is(ok.code, 0, ok.stderr);
  const bad = await w.curl(['--resolve', `evil.example.test:443:${w.b}`, 'https://evil.example.test/events-bad']);
  t.not(bad.code, 0);
  const isApi = (l: Record<string, unknown>): boolean => l.host === 'api.example.test' && l.decision === 'allow';
  const isEvil = (l: Record<string, unknown>): boolean => l.host === 'evil.example.test' && l.decision === 'deny';
  await until(() => all.some(isApi) && all.some(isEvil) && denied.some(isEvil) && api.some(isApi), 'both decisions on the streams');
  // The same objects as the audit log, field for field.
  const logged = await g.log.waitFor(isEvil);
  t.deepEqual(all.find(isEvil), logged);
  t.true(denied.every((l) => l.decision === 'deny'));
  t.false(denied.some(isApi));
  t.true(api.every((l) => l.sandbox === 'agent' && l.host === 'api.example.test'));
  t.deepEqual(other, []);
  for (const s of streams) if (s.ok) s.stream.close();
});
