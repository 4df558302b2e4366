import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createTopology, sweepStale, type Topology, type TopologySpec, type ExecResult } from '../../src/demo/topology.js';
import { createTestPki, type TestPki } from './certs.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Node arguments for a script run in a sandbox with DNS wire helpers: `[...WIRE_NODE_ARGS, WIRE_PRELUDE + code]`.
 * The script sees `wire`: sandgate's codec as built (dist/dns/wire.js) plus the test-only client
 * half (test/helpers/dns-client.ts, loaded through tsx).
 */
export const WIRE_NODE_ARGS: readonly string[] = ['--import', pathToFileURL(join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href, '--input-type=module', '-e'];
export const WIRE_PRELUDE = `const wire = { ...(await import(${JSON.stringify(join(ROOT, 'dist/dns/wire.js'))})), ...(await import(${JSON.stringify(join(ROOT, 'test/helpers/dns-client.ts'))})) };\n`;
export const CLI = join(ROOT, 'dist/cli.js');
const UPSTREAM = join(ROOT, 'test/helpers/upstream-server.mjs');

export type Line = Record<string, unknown>;

/** Collect JSON lines from a child's stdout; waitFor resolves on the first line (past or future) matching. */
export class LineLog {
  readonly lines: Line[] = [];
  readonly raw: string[] = [];
  private waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  private buf = '';

  attach(proc: ChildProcess): void {
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const text = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.raw.push(text);
        let line: Line;
        try {
          line = JSON.parse(text) as Line;
        } catch {
          continue;
        }
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(line)) return true;
          w.resolve(line);
          return false;
        });
      }
    });
  }

  find(pred: (l: Line) => boolean): Line | undefined {
    return this.lines.find(pred);
  }

  waitFor(pred: (l: Line) => boolean, timeoutMs = 5000, what = 'a matching line'): Promise<Line> {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n${this.raw.slice(-8).join('\n')}`));
      }, timeoutMs);
      const done = (l: Line): void => {
        clearTimeout(timer);
        res(l);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }
}

export interface Upstream {
  proc: ChildProcess;
  log: LineLog;
  port: number;
}

/** A reload's outcome line (the control API writes `config` lines of its own: sandbox-added, ...). */
const isReload = (l: Line): boolean => l.event === 'config' && (l.action === 'reloaded' || l.action === 'rejected');

export async function startUpstream(topo: Topology, node: string, args: string[]): Promise<Upstream> {
  const proc = topo.spawn(topo.ns(node), process.execPath, [UPSTREAM, ...args]);
  const log = new LineLog();
  log.attach(proc);
  const l = await log.waitFor((x) => typeof x.listening === 'number', 5000, `upstream ${node} ${args.join(' ')}`);
  return { proc, log, port: l.listening as number };
}

/** A fake service (test/helpers/<script>) in a namespace node; resolves once it prints {"listening":PORT}. */
export interface Fake {
  proc: ChildProcess;
  log: LineLog;
  port: number;
}

export async function startFake(w: { topo: Topology }, node: string, script: string, args: string[]): Promise<Fake> {
  const proc = w.topo.spawn(w.topo.ns(node), process.execPath, [join(ROOT, 'test/helpers', script), ...args]);
  const log = new LineLog();
  log.attach(proc);
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<never>((_, rej) => proc.once('exit', (code) => rej(new Error(`${script} exited (${code}): ${err}`))));
  const l = await Promise.race([log.waitFor((x) => typeof x.listening === 'number', 10000, `${script} in ${node}`), exited]);
  exited.catch(() => {});
  return { proc, log, port: l.listening as number };
}

export interface Gate {
  proc: ChildProcess;
  log: LineLog;
  stderr: () => string;
  configPath: string;
  /** Rewrite the config and send SIGHUP; resolves on the config reloaded/rejected line. */
  reload(config: unknown): Promise<Line>;
}

/** `opts.env`: extra environment variables for sandgate's process (e.g. credential secrets), on top of ours. */
export async function startGate(
  topo: Topology,
  dir: string,
  config: unknown,
  name = 'sandgate.json',
  opts: { env?: Record<string, string> } = {},
): Promise<Gate> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
  const configPath = join(dir, name);
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const proc = topo.spawn(topo.hostNs, process.execPath, [CLI, 'run', '-c', configPath], opts.env ? { env: { ...process.env, ...opts.env } } : {});
  const log = new LineLog();
  log.attach(proc);
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<never>((_, rej) => proc.once('exit', (code) => rej(new Error(`sandgate exited (${code}) before ready: ${err}`))));
  try {
    await Promise.race([log.waitFor((l) => l.event === 'ready', 10000, 'ready'), exited]);
  } catch (err) {
    // A gate that is still starting would otherwise keep the world's control socket and ports,
    // and the next test's gate would (rightly) refuse to run beside it.
    proc.kill('SIGKILL');
    throw err;
  } finally {
    exited.catch(() => {});
  }
  let reloads = 0;
  return {
    proc,
    log,
    configPath,
    stderr: () => err,
    async reload(next) {
      writeFileSync(configPath, JSON.stringify(next, null, 2));
      const seen = log.lines.filter((l) => isReload(l)).length;
      reloads++;
      proc.kill('SIGHUP');
      const target = seen + 1;
      return log
        .waitFor(() => log.lines.filter((l) => isReload(l)).length >= target, 5000, `reload #${reloads}`)
        .then(() => log.lines.filter((l) => isReload(l))[target - 1] as Line);
    },
  };
}

/**
 * The standard world: sandbox "sbx" (10.77.1.0/24), upstream "a" (listed, 10.77.2.2), upstream
 * "b" (not listed, 10.77.3.2). Both upstreams serve HTTPS with certificates from the test PKI
 * valid for every test name, so which one answered is told by the body, not by a TLS failure.
 */
export interface World {
  topo: Topology;
  pki: TestPki;
  dir: string;
  a: string;
  b: string;
  sandbox: string;
  upstreams: Upstream[];
  curl(args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  cleanup(): Promise<void>;
}

export const NAMES = [
  'api.example.test',
  'evil.example.test',
  'plain.example.test',
  'x.wild.example.test',
  'wild.example.test',
  'deep.x.wild.example.test',
  'private.example.test',
];

export async function createWorld(spec?: Partial<TopologySpec>, opts: { https?: boolean } = {}): Promise<World> {
  await sweepStale();
  const topo = await createTopology({
    sandboxes: [{ name: 'sbx', subnet: 1 }],
    upstreams: [
      { name: 'a', subnet: 2 },
      { name: 'b', subnet: 3 },
    ],
    ...spec,
  });
  const pki = createTestPki();
  const dir = mkdtempSync(join(tmpdir(), 'sg-world-'));
  const upstreams: Upstream[] = [];
  try {
    if (opts.https !== false) {
      const certA = pki.issue(NAMES, { tag: 'a' });
      const certB = pki.issue(NAMES, { tag: 'b' });
      upstreams.push(await startUpstream(topo, 'a', ['--name', 'a', '--port', '443', '--tls', certA.cert, certA.key]));
      upstreams.push(await startUpstream(topo, 'b', ['--name', 'b', '--port', '443', '--tls', certB.cert, certB.key]));
      upstreams.push(await startUpstream(topo, 'a', ['--name', 'a-plain', '--port', '80']));
      upstreams.push(await startUpstream(topo, 'b', ['--name', 'b-plain', '--port', '80']));
    }
  } catch (err) {
    await topo.destroy();
    pki.cleanup();
    throw err;
  }
  return {
    topo,
    pki,
    dir,
    upstreams,
    a: topo.addr('a'),
    b: topo.addr('b'),
    sandbox: topo.ns('sbx'),
    curl(args, o = {}) {
      return topo.exec(topo.ns('sbx'), 'curl', ['-sS', '--max-time', String((o.timeoutMs ?? 5000) / 1000), '--cacert', pki.caFile, ...args], {
        timeoutMs: (o.timeoutMs ?? 5000) + 2000,
      });
    },
    async cleanup() {
      await topo.destroy();
      pki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The firewall backend integration tests run against: SANDGATE_TEST_BACKEND=nft|iptables|auto
 * (scripts/test.sh runs the firewall-dependent files a second time with iptables). Unset: the
 * config's default (auto, which is nft on these machines).
 */
export const TEST_BACKEND: string | undefined = process.env['SANDGATE_TEST_BACKEND'] || undefined;

/** A config for the standard world; `policy` replaces the default allow list. */
export function baseConfig(
  world: World,
  extra: { allow?: unknown[]; mode?: string; upstream?: Record<string, unknown>; sandbox?: Record<string, unknown>; log?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return {
    // The control socket in the world's own directory: parallel test files never share one.
    listen: { port: 15001, dnsPort: 15053, control: join(world.dir, 'control.sock') },
    tls: { caDir: join(world.dir, 'ca') },
    upstream: {
      hosts: Object.fromEntries(NAMES.map((n) => [n, world.a])),
      allowPrivate: ['10.77.0.0/16'],
      ...extra.upstream,
    },
    sandboxes: [{ name: 'agent', interface: 'sbx-*', cidr: '10.77.1.0/24', policy: 'default', user: 'alice', ...extra.sandbox }],
    policies: {
      default: {
        mode: extra.mode ?? 'enforce',
        allow: extra.allow ?? [{ host: 'api.example.test' }, { host: 'plain.example.test', ports: [80] }, { host: '*.wild.example.test' }],
      },
    },
    ...(extra.log ? { log: extra.log } : {}),
    ...(TEST_BACKEND !== undefined ? { firewall: { backend: TEST_BACKEND } } : {}),
  };
}

/** curl -w output for "what happened": http code and the exit status. */
export function bodyOf(r: ExecResult): Record<string, unknown> | undefined {
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * A fake upstream DNS resolver (test/helpers/fake-resolver.mjs, needs `npm run build`) on port 53
 * of `node`. Its log has one line {query, type, proto} per query it ever received.
 * args: [--ttl S] [--answer NAME=IP[,IP]]... [--cname ALIAS=TARGET]...
 */
export async function startFakeResolver(topo: Topology, node: string, args: string[]): Promise<Upstream> {
  const proc = topo.spawn(topo.ns(node), process.execPath, [join(ROOT, 'test/helpers/fake-resolver.mjs'), '--port', '53', ...args]);
  const log = new LineLog();
  log.attach(proc);
  const l = await log.waitFor((x) => typeof x.listening === 'number', 5000, `fake resolver on ${node}`);
  return { proc, log, port: l.listening as number };
}
