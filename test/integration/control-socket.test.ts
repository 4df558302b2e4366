import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlServer } from '../../src/control/server.js';
import { controlRequest } from '../../src/control/client.js';
import type { ControlService } from '../../src/control/service.js';

/** A service that lists one sandbox and refuses everything else: only the socket is under test here. */
const svc: ControlService = {
  list: () => [{ name: 'agent', source: 'config', policy: 'default', connections: 0 }],
  get: (name) => ({ ok: false, status: 404, error: `no sandbox named "${name}"` }),
  add: async () => ({ ok: false, status: 409, error: 'no' }),
  update: async () => ({ ok: false, status: 409, error: 'no' }),
  remove: async () => ({ ok: false, status: 409, error: 'no' }),
  reload: async () => ({ ok: false, status: 400, error: 'no' }),
  quarantined: () => [],
  release: (name) => ({ ok: false, status: 404, error: `sandbox "${name}" is not quarantined` }),
};

let dir: string;
test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-control-'));
});
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('the socket is 0600 in a new 0700 directory, and is removed on close', async (t) => {
  const path = join(dir, 'new', 'deeper', 'control.sock');
  const s = await startControlServer(path, svc);
  t.is(statSync(path).mode & 0o777, 0o600);
  t.is(statSync(join(dir, 'new', 'deeper')).mode & 0o777, 0o700);
  const r = await controlRequest(path, 'GET', '/sandboxes');
  t.deepEqual(r, { status: 200, body: { sandboxes: [{ name: 'agent', source: 'config', policy: 'default', connections: 0 }] } });
  await s.close();
  t.false(existsSync(path));
});

test('a socket something still answers on is not taken over; a stale one is replaced; a file is never deleted', async (t) => {
  const path = join(dir, 'busy.sock');
  const first = await startControlServer(path, svc);
  await t.throwsAsync(startControlServer(path, svc), { message: /control socket .*busy\.sock \(listen\.control\): another process is serving it/ });
  t.is((await controlRequest(path, 'GET', '/sandboxes')).status, 200, 'the first one still serves');
  await first.close();

  // A process killed while listening leaves its socket file behind.
  const stale = join(dir, 'stale.sock');
  try {
    execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`], {
      stdio: 'ignore',
    });
  } catch {
    /* killed by SIGKILL, as intended */
  }
  t.true(statSync(stale).isSocket());
  const s = await startControlServer(stale, svc);
  t.is((await controlRequest(stale, 'GET', '/sandboxes')).status, 200);
  await s.close();

  const file = join(dir, 'plain-file');
  writeFileSync(file, 'keep me');
  await t.throwsAsync(startControlServer(file, svc), { message: /the path exists and is not a socket/ });
  t.true(existsSync(file));
});

test('routing: unknown paths 404, wrong methods 405 with Allow, oversized bodies 413, bad JSON 400', async (t) => {
  const path = join(dir, 'routes.sock');
  const s = await startControlServer(path, svc);
  try {
    t.like(await controlRequest(path, 'GET', '/'), { status: 404 });
    t.like(await controlRequest(path, 'DELETE', '/sandboxes'), { status: 405 });
    t.like(await controlRequest(path, 'POST', '/sandboxes/x'), { status: 405 });
    t.like(await controlRequest(path, 'GET', '/sandboxes/a%20b'), { status: 404 });
    t.like(await controlRequest(path, 'POST', '/sandboxes', { pad: 'x'.repeat(70 * 1024) }), { status: 413 });
    const bad = await controlRequest(path, 'POST', '/sandboxes', undefined);
    t.is(bad.status, 400);
    t.regex(String(bad.body.error), /empty/);
  } finally {
    await s.close();
  }
});

test('the client: no daemon is one sentence (exit 1 material)', async (t) => {
  await t.throwsAsync(controlRequest(join(dir, 'nobody.sock'), 'GET', '/sandboxes'), {
    message: /^cannot reach sandgate's control socket .*nobody\.sock \(ENOENT\): is sandgate running/,
  });
});
