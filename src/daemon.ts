import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { loadConfigFile, ConfigError } from './config/load.js';
import { createAudit, type PrimaryAudit } from './audit/logger.js';
import { buildRuntime, type Runtime } from './runtime.js';
import { planFromConfig } from './firewall/from-config.js';
import { dynamicUnsupported, firewallUp, firewallUpdateDynamic, resolveBackend } from './firewall/backend.js';
import { loadBinding, startPacketGate, type PacketGate } from './packets/packet-gate.js';
import { listenTransparent } from './net/transparent-listener.js';
import { startDnsServer } from './dns/server.js';
import { createDataPlane } from './net/data-plane.js';
import { SandgateError } from './errors.js';
import { initCa } from './tls/ca.js';
import { LeafCache } from './tls/leaf-cache.js';
import { tokenCacheStats } from './creds/credential.js';
import { ConnRegistry } from './net/conn-registry.js';
import { createControlService } from './control/service.js';
import { startControlServer, type ControlServer } from './control/server.js';
import { reloadConflict } from './control/registry.js';
import { endAcceptedFlows } from './net/flows.js';
import type { WorkerPool } from './cluster/primary.js';

/**
 * With workers, a sandbox's open connections are in the worker processes: closing them there
 * too (src/cluster/primary.ts). The counts stay this process's own (DNS over TCP).
 */
class PoolConns extends ConnRegistry {
  constructor(runtime: () => Runtime, private readonly pool: WorkerPool) { super(runtime); }
  override close(name: string): number {
    this.pool.close(name);
    return super.close(name);
  }
}

/** How long a stop waits for open connections before resetting them. */
const STOP_GRACE_MS = 2_000;

/** Load-time errors of the runtime (secrets, upstream.caFile) name the config file too. */
function inFile<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (err) {
    if (err instanceof SandgateError && !(err instanceof ConfigError)) throw new SandgateError(`${file}: ${err.message}`, err.code, { cause: err });
    throw err;
  }
}

export interface Daemon {
  readonly runtime: () => Runtime;
  reload(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `sandgate run`: firewall, transparent listener, audit; SIGHUP reloads, SIGTERM/SIGINT stop and
 * leave the firewall in place so sandboxes stay cut off (fail closed).
 */
export async function runDaemon(file: string): Promise<Daemon> {
  const config = loadConfigFile(file);
  const audit: PrimaryAudit = createAudit(config.log.file, config.log.level);
  let rt = inFile(file, () => buildRuntime(config, audit));
  // The interception CA is created on first run (contract), so `ca cert` has something to hand
  // to sandboxes even before any rule intercepts. One leaf cache for the daemon's lifetime.
  const { material: ca } = await initCa(config.tls.caDir);
  // One set of TLS session ticket keys for the daemon's life, shared with the workers: a ticket
  // resumes in whichever process the sandbox's next connection lands. Never written anywhere.
  const ticketKeys = randomBytes(48);
  const leaves = await LeafCache.create(ca, { ticketKeys });
  // `workers: N` > 1: the TCP data path runs in N worker processes; this one keeps the listener,
  // the firewall, DNS, packets, the control API and the audit stream (src/cluster/primary.ts).
  // Loaded only then: with the default (1) this process never touches node:cluster.
  const pool = config.workers > 1
    ? await (await import('./cluster/primary.js')).startWorkers({ count: config.workers, runtime: () => rt, audit, ticketKeys })
    : undefined;
  // Open connections per sandbox, so removing a registered one closes what it has open.
  const conns = pool ? new PoolConns(() => rt, pool) : new ConnRegistry(() => rt);
  const track = conns.track.bind(conns);
  const gate = createDataPlane({ runtime: () => rt, leaves, conns });
  const servers: net.Server[] = [];

  servers.push(await listenTransparent(config.listen.address, config.listen.port, pool ? (s) => pool.dispatch(s) : (s) => { gate.accept(s); }));
  // The DNS responder reads the current runtime per query (`() => rt`), so reloads reach it.
  const dns = await startDnsServer({ runtime: () => rt, ifaces: gate.ifaces, address: config.listen.address, port: config.listen.dnsPort, track });
  // The queue reader starts before the rules that feed it. Without it (binding absent or the
  // queue taken), the kernel drops queued packets: fail closed, said once here.
  let packets: PacketGate | undefined;
  const loaded = await loadBinding();
  let packetsOff = loaded.reason;
  if (loaded.binding) {
    try {
      packets = startPacketGate({ runtime: () => rt, queueNum: config.firewall.queue, flowMark: config.firewall.flowMark, binding: loaded.binding });
    } catch (err) {
      packetsOff = `could not open NFQUEUE ${config.firewall.queue} (${(err as Error).message})`;
    }
  }
  if (packetsOff !== undefined) {
    audit.write({ event: 'error', reason: `packet verdicts are off: ${packetsOff}; the kernel drops every packet that is neither TCP nor DNS, without audit lines` });
  }
  const backend = await resolveBackend(config.firewall.backend);
  const up = await firewallUp(planFromConfig(config), backend);
  for (const w of up.warnings) audit.write({ event: 'error', reason: w });

  // One queue for everything that changes the firewall or the runtime: SIGHUP reloads and
  // control API changes never interleave (a reload re-creates the table from rt.dynamic).
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

  // The control API (registered sandboxes), on a unix socket, once the firewall is in place.
  let control: ControlServer | undefined;
  if (config.listen.control !== false) {
    const svc = createControlService({
      runtime: () => rt,
      swap: (next) => { rt = next; gate.ifaces.clear(); pool?.sandboxes(next); },
      serial,
      updateFirewall: (before, after) => firewallUpdateDynamic({ table: config.firewall.table }, backend, before, after),
      ...(dynamicUnsupported(backend) !== undefined ? { unsupported: dynamicUnsupported(backend) } : {}),
      conns,
      endFlows: (specs) => endAcceptedFlows(specs, config.firewall.flowMark),
    });
    control = await startControlServer(config.listen.control, svc);
  }
  audit.write({ event: 'config', action: 'loaded', file, sandboxes: config.sandboxes.length, policies: Object.keys(config.policies).length });
  audit.write({
    event: 'ready', pid: process.pid, port: config.listen.port, ...(pool ? { workers: config.workers } : {}), dnsPort: config.listen.dnsPort, backend, packets: packets ? 'verdicts' : 'dropped',
    ...(control ? { control: control.path } : {}),
  });

  const reload = async (): Promise<void> => {
    try {
      const next = loadConfigFile(file);
      for (const k of ['port', 'dnsPort', 'address', 'control'] as const) {
        if (next.listen[k] !== rt.config.listen[k]) throw new SandgateError(`${file}: listen.${k} cannot change on reload (restart sandgate)`, 'CONFIG');
      }
      // A new table/mark/route table would be installed beside the old one, which nothing then removes.
      for (const k of ['table', 'mark', 'routeTable', 'backend', 'queue', 'flowMark', 'queueMark'] as const) {
        if (next.firewall[k] !== rt.config.firewall[k]) throw new SandgateError(`${file}: firewall.${k} cannot change on reload (run "sandgate firewall down" with the old config, then restart)`, 'CONFIG');
      }
      if (next.workers !== rt.config.workers) throw new SandgateError(`${file}: workers cannot change on reload (restart sandgate)`, 'CONFIG');
      if (next.log.file !== rt.config.log.file) throw new SandgateError(`${file}: log.file cannot change on reload (restart sandgate)`, 'CONFIG');
      if (next.tls.caDir !== rt.config.tls.caDir) throw new SandgateError(`${file}: tls.caDir cannot change on reload (restart sandgate)`, 'CONFIG');
      // Registered sandboxes stay across a reload, so the new config must leave room for them.
      const clash = reloadConflict(next, rt.dynamic);
      if (clash !== undefined) throw new SandgateError(`${file}: ${clash} (remove it through the control API first)`, 'CONFIG');
      const nextRt = inFile(file, () => buildRuntime(next, audit, rt));
      // One transaction (nft, or one restore per family): the old ruleset until the new one is
      // whole. With the control API the sets are re-created holding the registered sandboxes.
      const reup = await firewallUp(planFromConfig(next, nextRt.dynamic), backend);
      for (const w of reup.warnings) audit.write({ event: 'error', reason: w });
      rt = nextRt;
      gate.ifaces.clear();
      pool?.reloaded(nextRt);
      audit.write({ event: 'config', action: 'reloaded', file, sandboxes: next.sandboxes.length, registered: nextRt.dynamic.length });
    } catch (err) {
      const reason = err instanceof ConfigError ? err.problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.path}: ${p.message}`).join('; ') : (err as Error).message;
      audit.write({ event: 'config', action: 'rejected', file, reason });
    }
  };

  return {
    runtime: () => rt,
    reload: () => serial(reload),
    async stop() {
      packets?.close();
      await control?.close();
      const closed = Promise.all([...servers.map((s) => new Promise<void>((r) => s.close(() => r()))), dns.close()]);
      // Workers first: the listener's close waits for the connections they hold.
      await pool?.stop();
      // Requests in flight get a grace period; then whatever is still open (idle keep-alive
      // connections, a sandbox that never hangs up) is reset, so a stop is bounded.
      let reset = 0;
      const grace = setTimeout(() => { reset = conns.closeAll(); }, STOP_GRACE_MS);
      await closed;
      clearTimeout(grace);
      // Token caches (authService/oauth2 credentials): hit rate and call counts over the daemon's life.
      const tokenCache = tokenCacheStats(rt.credentials);
      audit.write({ event: 'stop', reason: 'signal; firewall rules stay installed (fail closed)', ...(reset > 0 ? { connectionsReset: reset } : {}), ...(tokenCache ? { tokenCache } : {}) });
      audit.flush();
    },
  };
}
