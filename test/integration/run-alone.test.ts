/**
 * Operator mistakes against a live sandgate: a second `sandgate run` (same table on other ports,
 * another table name over the same interfaces, the same control socket) and `firewall up|down`
 * while the daemon serves. Each is refused before anything in the kernel changes, and the live
 * daemon's sandboxes, the config's and one registered through the control API, still reach
 * their allowed upstream afterwards.
 *
 * Serial: one live sandgate in the world's host namespace.
 */
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, bodyOf, CLI, TEST_BACKEND, type World, type Gate } from '../helpers/gate.js';
import { controlRequest } from '../../src/control/client.js';
import type { ExecResult } from '../../src/demo/topology.js';

const NFT = '/usr/sbin/nft';

let w: World;
let g: Gate;
let sock: string;
let config: Record<string, unknown>;

test.before(async () => {
  w = await createWorld({
    sandboxes: [
      { name: 'sbx', subnet: 1 },
      { name: 'two', subnet: 4 },
    ],
  });
  sock = join(w.dir, 'run', 'control.sock');
  const base = baseConfig(w);
  config = {
    ...base,
    listen: { port: 15001, dnsPort: 15053, control: sock },
    sandboxes: [
      { name: 'agent', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'default' },
      { name: 'unregistered', interface: 'sbx-*', policy: 'none' },
    ],
    policies: { ...(base.policies as Record<string, unknown>), none: { mode: 'enforce' }, two: { allow: [{ host: 'x.wild.example.test' }] } },
  };
  g = await startGate(w.topo, w.dir, config);
  const r = await controlRequest(sock, 'POST', '/sandboxes', { name: 'two', interface: 'sbx-two', policy: 'two' });
  if (r.status !== 201) throw new Error(`registering "two": ${JSON.stringify(r.body)}`);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

function curlFrom(ns: string, host: string): Promise<ExecResult> {
  return w.topo.exec(w.topo.ns(ns), 'curl', ['-sS', '--max-time', '5', '--cacert', w.pki.caFile, '--resolve', `${host}:443:${w.a}`, `https://${host}/alone`], {
    timeoutMs: 7000,
  });
}

/** The live daemon still serves both sandboxes: the config's and the registered one. */
async function stillServes(t: ExecutionContext, what: string): Promise<void> {
  const one = await curlFrom('sbx', 'api.example.test');
  t.is(one.code, 0, `${what}: config sandbox: ${one.stderr}`);
  t.is(bodyOf(one)?.server, 'a');
  const two = await curlFrom('two', 'x.wild.example.test');
  t.is(two.code, 0, `${what}: registered sandbox: ${two.stderr}`);
  t.is(bodyOf(two)?.server, 'a');
  const ls = await controlRequest(sock, 'GET', '/sandboxes/two');
  t.is(ls.status, 200);
}

/** `sandgate run` of another config in the live daemon's namespace; it must exit by itself. */
async function secondRun(name: string, changes: Record<string, unknown>): Promise<ExecResult> {
  const path = join(w.dir, name);
  writeFileSync(path, JSON.stringify({ ...config, ...changes }, null, 2));
  return w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'run', '-c', path], { timeoutMs: 15_000 });
}

test.serial('the live daemon serves both sandboxes to begin with', async (t) => {
  await stillServes(t, 'before');
});

test.serial('a second run with the same table on other ports is refused before it installs anything', async (t) => {
  const r = await secondRun('same-table.json', { listen: { port: 15002, dnsPort: 15054, control: join(w.dir, 'other.sock') } });
  t.is(r.code, 1, `exit code (-1: still running): ${r.stderr}`);
  t.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  t.regex(
    r.stderr,
    /^sandgate: (table inet sandgate|iptables chains SANDGATE-\*) is installed and something listens on its TPROXY port 15001: another sandgate is serving it/,
  );
  await stillServes(t, 'after the same-table run');
});

test.serial('a second run under another table name over the same interfaces is refused', async (t) => {
  const r = await secondRun('other-table.json', {
    listen: { port: 15003, dnsPort: 15055, control: join(w.dir, 'third.sock') },
    firewall: {
      table: 'sgother',
      mark: 0x6001,
      routeTable: 6001,
      queue: 6001,
      flowMark: 0x6002,
      queueMark: 0x6003,
      ...(TEST_BACKEND ? { backend: TEST_BACKEND } : {}),
    },
  });
  t.is(r.code, 1, `exit code (-1: still running): ${r.stderr}`);
  t.regex(
    r.stderr,
    /^sandgate: (table inet sandgate|iptables chains SANDGATE-\*) \(served by another sandgate\) overlaps .*other-table\.json: it claims interface "sbx-\S+"/,
  );
  await stillServes(t, 'after the other-table run');
  const tables = await w.topo.exec(w.topo.hostNs, NFT, ['list', 'tables']);
  t.notRegex(tables.stdout, /sgother/, 'the refused run installed no table');
});

test.serial('a second run with the same control socket is refused', async (t) => {
  const r = await secondRun('same-socket.json', { listen: { port: 15004, dnsPort: 15056, control: sock } });
  t.is(r.code, 1, `exit code (-1: still running): ${r.stderr}`);
  t.regex(r.stderr, /^sandgate: another sandgate answers on the control socket .*control\.sock \(listen\.control\); stop it first/);
  await stillServes(t, 'after the same-socket run');
});

test.serial('firewall up and down refuse while the daemon answers; up --force goes ahead', async (t) => {
  for (const action of ['up', 'down']) {
    const r = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'firewall', action, '-c', g.configPath], { timeoutMs: 15_000 });
    t.is(r.code, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`^sandgate: firewall ${action}: a sandgate answers on the control socket .* give --force`));
  }
  await stillServes(t, 'after the refused firewall up/down');
  const forced = await w.topo.exec(w.topo.hostNs, process.execPath, [CLI, 'firewall', 'up', '--force', '-c', g.configPath], { timeoutMs: 15_000 });
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stdout, /^firewall installed: /);
});
