/**
 * The demo's world: throwaway network namespaces (src/demo/topology.ts), a demo PKI, fake upstream
 * servers and one sandgate process, plus the idempotent teardown that removes all of it.
 *
 * Shape (addresses from the topology: host side .1, node side .2 of 10.77.<subnet>.0/24):
 *
 *   sandbox "agent" 10.77.1.2 --veth-- [ host namespace: sandgate + its firewall ] --veth-- upstream "api"  10.77.2.2
 *                                                                                 --veth-- upstream "evil" 10.77.3.2
 *
 * The host namespace has no route anywhere else, so nothing the demo does can reach the machine's
 * own network (docs/testing.md).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTopology, namespaceExists, type Topology } from './topology.js';
import { createDemoPki } from './demo-pki.js';
import { JsonLines } from './json-lines.js';
import { SandgateError } from '../errors.js';

/** A fake upstream: its topology node, the names it serves, and whether the policy lists it. */
export interface ServerSpec {
  readonly node: string;
  readonly subnet: number;
  /** DNS names; the first is its own. Its certificate covers `certNames` (default: these). */
  readonly names: readonly string[];
  readonly certNames?: readonly string[];
  readonly listed: boolean;
}

export interface DemoServer extends ServerSpec {
  /** Its own name (names[0]). */
  readonly host: string;
  readonly ip: string;
  /** What it reported: {"request":...} and {"udp":...} lines. */
  readonly log: JsonLines;
}

export const SANDBOX = { node: 'agent', subnet: 1 } as const;
/** Where every fake upstream listens. */
export const PORTS = { https: 443, http: 80, udp: 9999 } as const;

export interface Gate {
  readonly proc: ChildProcess;
  readonly audit: JsonLines;
  stderr(): string;
}

export interface TeardownReport {
  ok: boolean;
  /** Namespaces that existed and are gone now. */
  removed: string[];
  /** Namespaces still present afterwards (a failure). */
  left: string[];
  processes: number;
  error?: string;
}

export interface DemoWorld {
  readonly topo: Topology;
  readonly dir: string;
  readonly caFile: string;
  readonly configFile: string;
  readonly sandbox: { readonly name: string; readonly ns: string; readonly ip: string };
  readonly servers: ReadonlyMap<string, DemoServer>;
  /** Every namespace of the world, the host's last. */
  readonly namespaces: readonly string[];
  gate: Gate | undefined;
  /** Writes the config and starts sandgate in the host namespace; resolves once it is ready. */
  startGate(config: unknown, env: Record<string, string>): Promise<Gate>;
  /** Idempotent: kills every process the world started, deletes its namespaces and files. */
  teardown(): Promise<TeardownReport>;
}

export class DemoSetupError extends SandgateError {
  constructor(message: string) {
    super(message, 'DEMO');
    this.name = 'DemoSetupError';
  }
}

/**
 * A file shipped in dist/, next to this module once compiled. Run from source (tsx), this module is
 * src/demo/world.ts and the compiled programs are found in dist/ instead.
 */
export function distFile(rel: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const fromSource = import.meta.url.endsWith('.ts');
  const file = fromSource ? path.resolve(here, '../../dist/demo', rel) : path.resolve(here, rel);
  if (!existsSync(file)) throw new DemoSetupError(`${file} is missing; run "npm run build" first.`);
  return file;
}

const READY_TIMEOUT_MS = 10_000;

/** Waits for a child's first stdout line matching `pred`, or fails with its stderr if it exits first. */
async function ready(proc: ChildProcess, log: JsonLines, pred: (l: Record<string, unknown>) => boolean, what: string, stderr: () => string): Promise<void> {
  let onExit: ((code: number | null) => void) | undefined;
  const exited = new Promise<never>((_, reject) => {
    onExit = (code) => {
      const why = (
        stderr()
          .trim()
          .split('\n')
          .find((l) => l.trim() !== '') ??
        log.other[0] ??
        ''
      ).trim();
      reject(new DemoSetupError(`${what} exited (code ${code ?? 'signal'}) before it was ready${why ? `: ${why}` : ''}`));
    };
    proc.once('exit', onExit);
  });
  try {
    const line = await Promise.race([log.waitFor(pred, { timeoutMs: READY_TIMEOUT_MS }), exited]);
    if (!line) throw new DemoSetupError(`${what} was not ready within ${READY_TIMEOUT_MS / 1000} s`);
  } finally {
    if (onExit) proc.off('exit', onExit);
    exited.catch(() => undefined);
  }
}

function collect(stream: NodeJS.ReadableStream | null): () => string {
  let text = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (d: string) => {
    // Bounded: only the start matters for an error message.
    if (text.length < 16_384) text += d;
  });
  return () => text;
}

export async function createWorld(specs: readonly ServerSpec[]): Promise<DemoWorld> {
  const topo = await createTopology({
    sandboxes: [{ name: SANDBOX.node, subnet: SANDBOX.subnet }],
    upstreams: specs.map((s) => ({ name: s.node, subnet: s.subnet })),
  });
  const namespaces = [topo.ns(SANDBOX.node), ...specs.map((s) => topo.ns(s.node)), topo.hostNs];
  let dir: string | undefined;
  let torn: Promise<TeardownReport> | undefined;
  const procs: ChildProcess[] = [];

  const teardown = (): Promise<TeardownReport> => {
    torn ??= (async () => {
      const present = namespaces.filter(namespaceExists);
      const processes = procs.filter((p) => p.exitCode === null && p.signalCode === null).length;
      let error: string | undefined;
      try {
        // Kills the tracked children (SIGTERM, then SIGKILL) and deletes the namespaces; the
        // host namespace takes sandgate's nftables table, ip rules and routes with it.
        await topo.destroy();
      } catch (err) {
        error = (err as Error).message;
      }
      if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      const left = namespaces.filter(namespaceExists);
      return { ok: left.length === 0 && error === undefined, removed: present.filter((n) => !left.includes(n)), left, processes, ...(error ? { error } : {}) };
    })();
    return torn;
  };

  try {
    dir = await mkdtemp(path.join(tmpdir(), 'sg-demo-'));
    const pki = await createDemoPki(dir);
    const servers = new Map<string, DemoServer>();
    for (const s of specs) servers.set(s.node, { ...s, host: s.names[0] ?? s.node, ip: topo.addr(s.node), log: new JsonLines() });

    // The sandbox knows both servers' addresses, as an agent that read them somewhere would, so
    // every attempt below reaches sandgate without depending on DNS. `ip netns exec` bind-mounts
    // /etc/netns/<ns>/hosts over /etc/hosts (the topology created the file; it removes it).
    const hosts = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
    for (const s of servers.values()) hosts.push(`${s.ip}\t${s.names.join(' ')}`);
    await writeFile(`/etc/netns/${topo.ns(SANDBOX.node)}/hosts`, hosts.join('\n') + '\n');

    const upstreamJs = distFile('fake-upstream.js');
    await Promise.all(
      [...servers.values()].map(async (s) => {
        const { certFile, keyFile } = await pki.issue(s.node, s.certNames ?? s.names);
        const proc = topo.spawn(topo.ns(s.node), process.execPath, [
          upstreamJs,
          '--name',
          s.node,
          '--cert',
          certFile,
          '--key',
          keyFile,
          '--https',
          String(PORTS.https),
          '--http',
          String(PORTS.http),
          '--udp',
          String(PORTS.udp),
        ]);
        procs.push(proc);
        s.log.attach(proc.stdout);
        await ready(proc, s.log, (l) => typeof l.listening === 'object', `the fake server ${s.host}`, collect(proc.stderr));
      }),
    );

    const world: DemoWorld = {
      topo,
      dir,
      caFile: pki.caFile,
      configFile: path.join(dir, 'sandgate.json'),
      sandbox: { name: SANDBOX.node, ns: topo.ns(SANDBOX.node), ip: topo.addr(SANDBOX.node) },
      servers,
      namespaces,
      gate: undefined,
      async startGate(config, env) {
        const cli = distFile('../cli.js');
        // JSON is valid YAML, which is what `run -c` reads.
        await writeFile(world.configFile, JSON.stringify(config, null, 2) + '\n');
        const proc = topo.spawn(topo.hostNs, process.execPath, [cli, 'run', '-c', world.configFile], { env: { ...process.env, ...env } });
        procs.push(proc);
        const audit = new JsonLines().attach(proc.stdout);
        const stderr = collect(proc.stderr);
        world.gate = { proc, audit, stderr };
        await ready(proc, audit, (l) => l.event === 'ready', 'sandgate', stderr);
        return world.gate;
      },
      teardown,
    };
    return world;
  } catch (err) {
    await teardown();
    throw err;
  }
}
