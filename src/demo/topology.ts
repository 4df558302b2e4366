/**
 * Network-namespace topology builder, used by every integration test and by `sandgate demo`.
 *
 * Shape: one "host" namespace (sandgate runs there) and one namespace per sandbox or upstream
 * node, each node joined to the host by its own veth pair on 10.77.<subnet>.0/24 (host side .1,
 * node side .2). Nothing is routed between links: sandgate proxies, so forwarding stays off in
 * the host namespace and a sandbox can reach an upstream only through sandgate.
 *
 * Safety (docs/testing.md): every interface is created directly inside a namespace
 * made here (`ip -n HOST link add ... peer ... netns NODE`), so the root namespace's interfaces,
 * routes and sysctls are never touched; the only sysctls written are inside the host namespace.
 */
import { spawn as spawnChild, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { SandgateError } from '../errors.js';

/** Absolute path: node_modules/.bin may shadow system tools under npm (see common brief). */
const IP = '/usr/sbin/ip';
const SYSCTL = '/usr/sbin/sysctl';
/** iproute2's NETNS_RUN_DIR: `ip netns add X` bind-mounts the namespace at /run/netns/X. */
const NETNS_RUN_DIR = '/run/netns';
/** `ip netns exec X` bind-mounts every file in /etc/netns/X over the same name in /etc. */
const NETNS_ETC_DIR = '/etc/netns';
/** IFNAMSIZ is 16 including the NUL terminator (include/uapi/linux/if.h). */
const IFNAME_MAX = 15;
/** Longest file name (include/uapi/linux/limits.h); a namespace name is a file name. */
const NAME_MAX = 255;
/** Grace period between SIGTERM and SIGKILL for processes started through spawn()/exec(). */
const KILL_GRACE_MS = 500;
const IP_TIMEOUT_MS = 10_000;

export interface NodeSpec {
  name: string;
  /** k -> link 10.77.k.0/24: host side 10.77.k.1, node side 10.77.k.2 (and fd77:k::1/2 with ipv6). */
  subnet: number;
}

export interface TopologySpec {
  /** Default `sg-<pid>-<4 hex>-`; every namespace name starts with it (sweepStale parses the pid). */
  prefix?: string;
  sandboxes: NodeSpec[];
  upstreams: NodeSpec[];
  /** Also give every link an IPv6 ULA pair fd77:k::1/64 (host) and fd77:k::2/64 (node). */
  ipv6?: boolean;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 when killed on timeout or by a signal. */
  code: number;
}

export interface Topology {
  readonly prefix: string;
  readonly hostNs: string;
  /** Node names, in spec order. */
  readonly sandboxes: readonly string[];
  readonly upstreams: readonly string[];
  ns(name: string): string;
  addr(name: string): string;
  hostAddr(name: string): string;
  addr6(name: string): string | undefined;
  hostAddr6(name: string): string | undefined;
  hostIface(name: string): string;
  /** Runs `cmd` inside one of this topology's namespaces. Never throws on a non-zero exit. */
  exec(nsName: string, cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts `cmd` inside one of this topology's namespaces via `ip netns exec`; destroy() kills it. */
  spawn(nsName: string, cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv }): ChildProcess;
  /** Idempotent: kills tracked processes, deletes the namespaces and their /etc/netns dirs. */
  destroy(): Promise<void>;
}

export class TopologyError extends SandgateError {
  constructor(
    readonly step: string,
    detail: string,
  ) {
    super(`topology: ${step} failed: ${detail}`, 'TOPOLOGY');
    this.name = 'TopologyError';
  }
}

interface NodeInfo {
  readonly name: string;
  readonly kind: 'sandbox' | 'upstream';
  readonly subnet: number;
  readonly ns: string;
  readonly hostIface: string;
}

const NODE_NAME_RE = /^[a-z0-9][a-z0-9-]*$/;
const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/* ------------------------------------------------------------------------------------------ */
/* Process helpers                                                                            */
/* ------------------------------------------------------------------------------------------ */

/** Runs a program (argument array, no shell); resolves with its output and exit code. */
function run(cmd: string, args: string[], opts: ExecOptions & { track?: Set<ChildProcess> } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    opts.track?.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      opts.track?.delete(child);
      reject(e);
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      opts.track?.delete(child);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: timedOut || code === null ? -1 : code,
      });
    });
    if (opts.input !== undefined && child.stdin) {
      // A command that exits without reading its input would otherwise raise EPIPE here.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** Runs `ip [-n ns] -batch -` so a whole namespace is configured by one process. */
async function ipBatch(step: string, lines: string[], ns?: string): Promise<void> {
  const args = ns === undefined ? ['-batch', '-'] : ['-n', ns, '-batch', '-'];
  const r = await run(IP, args, { input: lines.join('\n') + '\n', timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new TopologyError(step, (r.stderr || r.stdout).trim() || `ip exited ${r.code}`);
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    child.once('exit', done);
    function done(): void {
      clearTimeout(timer);
      child.off('exit', done);
      resolve();
    }
  });
}

/** Kills processes we started, by pid: SIGTERM, then SIGKILL after a grace period. */
async function killTracked(children: Set<ChildProcess>): Promise<void> {
  const live = [...children].filter((c) => !exited(c) && c.pid !== undefined);
  for (const c of live) c.kill('SIGTERM');
  await Promise.all(live.map((c) => waitExit(c, KILL_GRACE_MS)));
  const stubborn = live.filter((c) => !exited(c));
  for (const c of stubborn) c.kill('SIGKILL');
  await Promise.all(stubborn.map((c) => waitExit(c, KILL_GRACE_MS)));
  children.clear();
}

function nsExists(name: string): boolean {
  return existsSync(`${NETNS_RUN_DIR}/${name}`);
}

/** Deletes the named namespaces that still exist, and their /etc/netns dirs. */
async function deleteNamespaces(names: readonly string[]): Promise<void> {
  const present = names.filter(nsExists);
  if (present.length > 0) {
    // -force: keep going past a name that vanished meanwhile; what is left is checked below.
    await run(IP, ['-force', '-batch', '-'], {
      input: present.map((n) => `netns del ${n}`).join('\n') + '\n',
      timeoutMs: IP_TIMEOUT_MS,
    });
  }
  await Promise.all(names.map((n) => rm(`${NETNS_ETC_DIR}/${n}`, { recursive: true, force: true })));
  const left = names.filter(nsExists);
  if (left.length > 0) throw new TopologyError('delete namespaces', `still present: ${left.join(', ')}`);
}

/* ------------------------------------------------------------------------------------------ */
/* Last-resort cleanup on process exit                                                        */
/* ------------------------------------------------------------------------------------------ */

const live = new Set<TopologyImpl>();
let exitHookInstalled = false;

/**
 * 'exit' handlers must be synchronous, hence execFileSync. This covers a test that throws or
 * forgets destroy(); a SIGKILLed run (no 'exit' event) is handled by sweepStale() next time.
 */
function exitHook(): void {
  for (const topo of live) topo.destroySync();
}

function track(topo: TopologyImpl): void {
  live.add(topo);
  if (!exitHookInstalled) {
    process.on('exit', exitHook);
    exitHookInstalled = true;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Topology                                                                                   */
/* ------------------------------------------------------------------------------------------ */

class TopologyImpl implements Topology {
  readonly hostNs: string;
  readonly sandboxes: readonly string[];
  readonly upstreams: readonly string[];
  readonly #nodes: ReadonlyMap<string, NodeInfo>;
  readonly #ipv6: boolean;
  readonly #children = new Set<ChildProcess>();
  #destroying: Promise<void> | undefined;

  constructor(
    readonly prefix: string,
    nodes: readonly NodeInfo[],
    ipv6: boolean,
  ) {
    this.hostNs = `${prefix}h`;
    this.#nodes = new Map(nodes.map((n) => [n.name, n]));
    this.#ipv6 = ipv6;
    this.sandboxes = Object.freeze(nodes.filter((n) => n.kind === 'sandbox').map((n) => n.name));
    this.upstreams = Object.freeze(nodes.filter((n) => n.kind === 'upstream').map((n) => n.name));
  }

  /** Every namespace of this topology: the nodes, then the host. */
  get namespaces(): string[] {
    return [...[...this.#nodes.values()].map((n) => n.ns), this.hostNs];
  }

  #node(name: string): NodeInfo {
    const n = this.#nodes.get(name);
    if (!n) throw new Error(`topology ${this.prefix}: no node named ${JSON.stringify(name)}`);
    return n;
  }

  #checkNs(nsName: string): void {
    // Only our own namespaces: a typo must not run a command somewhere else.
    if (nsName !== this.hostNs && ![...this.#nodes.values()].some((n) => n.ns === nsName)) {
      throw new Error(`topology ${this.prefix}: ${JSON.stringify(nsName)} is not one of its namespaces`);
    }
    if (this.#destroying) throw new Error(`topology ${this.prefix}: already destroyed`);
  }

  ns(name: string): string {
    return this.#node(name).ns;
  }
  addr(name: string): string {
    return `10.77.${this.#node(name).subnet}.2`;
  }
  hostAddr(name: string): string {
    return `10.77.${this.#node(name).subnet}.1`;
  }
  addr6(name: string): string | undefined {
    const n = this.#node(name);
    return this.#ipv6 ? `fd77:${v6Group(n.subnet)}::2` : undefined;
  }
  hostAddr6(name: string): string | undefined {
    const n = this.#node(name);
    return this.#ipv6 ? `fd77:${v6Group(n.subnet)}::1` : undefined;
  }
  hostIface(name: string): string {
    return this.#node(name).hostIface;
  }

  exec(nsName: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.#checkNs(nsName);
    return run(IP, ['netns', 'exec', nsName, cmd, ...args], { ...opts, track: this.#children });
  }

  spawn(nsName: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    this.#checkNs(nsName);
    // `ip netns exec` execs the command in place, so child.pid is the command's own pid.
    const child = spawnChild(IP, ['netns', 'exec', nsName, cmd, ...args], {
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      await killTracked(this.#children);
      await deleteNamespaces(this.namespaces);
      live.delete(this);
    })();
    return this.#destroying;
  }

  /** Synchronous variant for the process 'exit' hook: best effort, never throws. */
  destroySync(): void {
    try {
      this.#destroySync();
    } catch {
      /* best effort at exit: an exception here would replace the process's exit code */
    }
    live.delete(this);
  }

  #destroySync(): void {
    for (const c of this.#children) {
      if (!exited(c) && c.pid !== undefined) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    const present = this.namespaces.filter(nsExists);
    if (present.length > 0) {
      try {
        execFileSync(IP, ['-force', '-batch', '-'], {
          input: present.map((n) => `netns del ${n}`).join('\n') + '\n',
          stdio: ['pipe', 'ignore', 'ignore'],
          timeout: IP_TIMEOUT_MS,
        });
      } catch {
        /* best effort at exit */
      }
    }
    for (const n of this.namespaces) rmSync(`${NETNS_ETC_DIR}/${n}`, { recursive: true, force: true });
  }
}

function validate(spec: TopologySpec, prefix: string): NodeInfo[] {
  if (!PREFIX_RE.test(prefix)) throw new Error(`invalid prefix ${JSON.stringify(prefix)}`);
  const nodes: NodeInfo[] = [];
  const subnets = new Set<number>();
  const ifaces = new Set<string>();
  if (Buffer.byteLength(`${prefix}h`) > NAME_MAX) throw new Error(`prefix too long: ${prefix}`);
  const add = (s: NodeSpec, kind: NodeInfo['kind']): void => {
    if (!NODE_NAME_RE.test(s.name)) throw new Error(`invalid node name ${JSON.stringify(s.name)}`);
    // `${prefix}h` is the host namespace.
    if (s.name === 'h') throw new Error('node name "h" is reserved for the host namespace');
    if (nodes.some((n) => n.name === s.name)) throw new Error(`duplicate node name ${s.name}`);
    // The namespace name is a file name in /run/netns and /etc/netns.
    if (Buffer.byteLength(prefix + s.name) > NAME_MAX) throw new Error(`node ${s.name}: namespace name too long`);
    if (!Number.isInteger(s.subnet) || s.subnet < 0 || s.subnet > 255) {
      throw new Error(`node ${s.name}: subnet must be an integer 0..255`);
    }
    if (subnets.has(s.subnet)) throw new Error(`node ${s.name}: subnet ${s.subnet} used twice`);
    // `sbx-` matches the `iifname "sbx-*"` globs in sandgate's rules; truncation may collide.
    const hostIface = `${kind === 'sandbox' ? 'sbx' : 'up'}-${s.name}`.slice(0, IFNAME_MAX);
    if (ifaces.has(hostIface)) throw new Error(`node ${s.name}: interface name ${hostIface} collides after truncation`);
    subnets.add(s.subnet);
    ifaces.add(hostIface);
    nodes.push({ name: s.name, kind, subnet: s.subnet, ns: `${prefix}${s.name}`, hostIface });
  };
  for (const s of spec.sandboxes) add(s, 'sandbox');
  for (const s of spec.upstreams) add(s, 'upstream');
  return nodes;
}

/** Builds the namespaces and links. On failure, removes what it made and throws a TopologyError. */
export async function createTopology(spec: TopologySpec): Promise<Topology> {
  const prefix = spec.prefix ?? `sg-${process.pid}-${randomBytes(2).toString('hex')}-`;
  let nodes: NodeInfo[];
  try {
    nodes = validate(spec, prefix);
  } catch (e) {
    throw new TopologyError('validate spec', (e as Error).message);
  }
  const ipv6 = spec.ipv6 ?? false;
  const topo = new TopologyImpl(prefix, nodes, ipv6);
  const hostNs = topo.hostNs;

  // Never adopt (and later delete) a namespace that someone else made.
  const clash = topo.namespaces.filter(nsExists);
  if (clash.length > 0) throw new TopologyError('check names', `namespace already exists: ${clash.join(', ')}`);

  track(topo);
  try {
    await ipBatch(
      'add namespaces',
      topo.namespaces.map((n) => `netns add ${n}`),
    );

    // Per-namespace /etc overrides, so tests depend neither on the machine's resolver (which
    // must never be a target) nor on its /etc/hosts. The host namespace points at loopback.
    try {
      await Promise.all([writeEtc(hostNs, '127.0.0.1'), ...nodes.map((n) => writeEtc(n.ns, `10.77.${n.subnet}.1`))]);
    } catch (e) {
      throw new TopologyError('write /etc/netns files', (e as Error).message);
    }

    // Host side first: creating the pair from the host namespace puts the peer straight into the
    // node namespace, so no interface ever exists in the root namespace. The link goes up before
    // its address because IPv4 adds the connected route only for an up device (fib_add_ifaddr).
    const hostLines = ['link set lo up'];
    for (const n of nodes) {
      hostLines.push(
        `link add ${n.hostIface} type veth peer name eth0 netns ${n.ns}`,
        `link set ${n.hostIface} up`,
        `addr add 10.77.${n.subnet}.1/24 dev ${n.hostIface}`,
      );
      // nodad: usable at once instead of after ~1 s of duplicate address detection (RFC 4862 5.4).
      if (ipv6) hostLines.push(`addr add fd77:${v6Group(n.subnet)}::1/64 dev ${n.hostIface} nodad`);
    }
    await ipBatch('configure host namespace', hostLines, hostNs);

    await Promise.all(
      nodes.map((n) => {
        const lines = ['link set lo up', 'link set eth0 up', `addr add 10.77.${n.subnet}.2/24 dev eth0`, `route add default via 10.77.${n.subnet}.1 dev eth0`];
        if (ipv6) {
          const k = v6Group(n.subnet);
          lines.push(`addr add fd77:${k}::2/64 dev eth0 nodad`, `route add default via fd77:${k}::1 dev eth0`);
        }
        return ipBatch(`configure namespace ${n.ns}`, lines, n.ns);
      }),
    );

    // A new namespace inherits net.ipv4 "all"/"default" devconf (ip_forward included) from the
    // root namespace unless net.core.devconf_inherit_init_net says otherwise (IPv6 resets to
    // defaults). On a machine with forwarding on (e.g. Docker), the host namespace would route
    // sandbox packets straight to upstreams, so turn it off explicitly, inside it only.
    const sysctl = await run(IP, ['netns', 'exec', hostNs, SYSCTL, '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0'], {
      timeoutMs: IP_TIMEOUT_MS,
    });
    if (sysctl.code !== 0) throw new TopologyError('disable forwarding in host namespace', sysctl.stderr.trim());
  } catch (e) {
    try {
      await topo.destroy();
    } catch {
      /* the creation error is the one to report; the exit hook retries */
    }
    if (e instanceof TopologyError) throw e;
    throw new TopologyError('create', (e as Error).message);
  }
  return topo;
}

/**
 * The subnet's decimal digits used as the hex group (10.77.12.x <-> fd77:12::x): easier to read
 * than its hex value, and still unique because any 1-3 decimal digits form a distinct hex group.
 */
function v6Group(subnet: number): string {
  return String(subnet);
}

async function writeEtc(ns: string, nameserver: string): Promise<void> {
  const dir = `${NETNS_ETC_DIR}/${ns}`;
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/resolv.conf`, `nameserver ${nameserver}\n`);
  await writeFile(`${dir}/hosts`, '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
}

/* ------------------------------------------------------------------------------------------ */
/* Sweep                                                                                      */
/* ------------------------------------------------------------------------------------------ */

function pidAlive(pid: number): boolean {
  // kill(0, 0) would signal our own process group and "succeed": not a pid.
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Removes namespaces (and /etc/netns dirs) named `<prefixBase><pid>-...` whose pid is no longer a
 * live process: what a SIGKILLed run left behind. Returns the names removed, sorted.
 * Processes still running inside such a namespace are not killed (they were not started by
 * this process); `ip netns del` only unlinks the name, and the kernel frees the namespace
 * once they exit.
 */
export async function sweepStale(prefixBase = 'sg-'): Promise<string[]> {
  const re = new RegExp(`^${escapeRe(prefixBase)}(\\d+)-`);
  const candidates = new Set([...(await listDir(NETNS_RUN_DIR)), ...(await listDir(NETNS_ETC_DIR))]);
  const stale = [...candidates]
    .filter((name) => {
      const m = re.exec(name);
      return m !== null && m[1] !== undefined && !pidAlive(Number(m[1]));
    })
    .sort();
  if (stale.length > 0) await deleteNamespaces(stale);
  return stale;
}

/** For tests: whether a namespace with this name exists. */
export function namespaceExists(name: string): boolean {
  return nsExists(name);
}
