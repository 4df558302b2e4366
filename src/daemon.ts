import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { ConfigError, formatLocated, loadConfigFile } from './config/load.js';
import { createAudit, type PrimaryAudit } from './audit/logger.js';
import { buildRuntime, withDynamicSandboxes, type Runtime } from './runtime.js';
import { readState, stateFilePath, writeState } from './control/state-file.js';
import { mkdirSync } from 'node:fs';
import { planFromConfig } from './firewall/from-config.js';
import { firewallMissing, firewallUp, firewallUpdateDynamic, resolveBackend } from './firewall/backend.js';
import { loadBinding, startPacketGate, type PacketGate } from './packets/packet-gate.js';
import { listenTransparent } from './net/transparent-listener.js';
import { startDnsServer } from './dns/server.js';
import { restartNeeded } from './config/restart.js';
import { createDataPlane } from './net/data-plane.js';
import { SandgateError } from './errors.js';
import { initCa } from './tls/ca.js';
import { LeafCache } from './tls/leaf-cache.js';
import { tokenCacheStats } from './creds/credential.js';
import { ConnRegistry } from './net/conn-registry.js';
import { createControlService, type ReloadResult } from './control/service.js';
import type { Outcome } from './control/registry.js';
import { startControlServer, type ControlServer } from './control/server.js';
import { EventHub } from './control/events.js';
import { reloadConflict } from './control/registry.js';
import { checkHealth, type HealthReport } from './control/health.js';
import type { MetricsListener } from './metrics/server.js';
import { endAcceptedFlows } from './net/flows.js';
import type { WorkerPool } from './cluster/primary.js';
import type { Config } from './config/types.js';
import { proveAlone } from './preflight.js';
import { pathProblems } from './config/paths.js';
import { ApprovalBroker } from './approvals/broker.js';
import { Grants, addedView } from './approvals/grants.js';
import { askWebhook } from './approvals/webhook.js';
import type { AskApproval } from './approvals/ask.js';
import type { ApprovalsApi } from './approvals/api.js';

/**
 * With workers, a sandbox's open connections are in the worker processes: closing them there
 * too (src/cluster/primary.ts). The counts stay this process's own (DNS over TCP).
 */
class PoolConns extends ConnRegistry {
  constructor(
    runtime: () => Runtime,
    private readonly pool: WorkerPool,
  ) {
    super(runtime);
  }
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

/** One line for a failure: a config's located problems (as `sandgate check` prints them), or the message. */
function reasonOf(err: unknown): string {
  return err instanceof ConfigError ? err.problems.map(formatLocated).join('; ') : (err as Error).message;
}

export interface Daemon {
  readonly runtime: () => Runtime;
  reload(): Promise<void>;
  /** Reopens log.file at its path (SIGUSR1, after logrotate moved it). */
  reopenLog(): void;
  stop(): Promise<void>;
}

/**
 * `sandgate run`: firewall, transparent listener, audit; SIGHUP reloads, SIGTERM/SIGINT stop and
 * leave the firewall in place so sandboxes stay cut off (fail closed).
 */
export async function runDaemon(file: string): Promise<Daemon> {
  const config = loadConfigFile(file);
  // Unusable paths fail here, named by key, before a log file or the kernel is touched.
  const paths = pathProblems(config);
  if (paths.length > 0) throw new SandgateError(paths.map((p) => `${file}: ${p.key}: ${p.message}`).join('; '), 'CONFIG');
  const audit: PrimaryAudit = createAudit(config.log.file, config.log.level);
  try {
    return await startDaemon(file, config, audit);
  } catch (err) {
    // One audit line for the failure too (the one-line message goes to stderr from the CLI),
    // written before the process exits: the log may be a file that is still opening.
    const reason = reasonOf(err);
    audit.writeLogOnly({ event: 'error', reason: `start-up failed: ${reason}` });
    await audit.settle();
    throw err;
  }
}

async function startDaemon(file: string, config: Config, audit: PrimaryAudit): Promise<Daemon> {
  // Metrics (opt-in; prom-client is loaded only then) count the audit lines as they are written,
  // from the first one on; the gauges read the runtime when scraped (src/metrics/).
  const metrics = config.metrics
    ? (await import('./metrics/server.js')).createMetrics({
        runtime: () => rt,
        openConnections: (name) => conns.count(name),
        ...(config.workers > 1 ? { workersReady: () => pool?.ready() ?? 0 } : {}),
      })
    : undefined;
  if (metrics)
    audit.observe((f) => {
      metrics.observe(f);
    });
  let rt = inFile(file, () => buildRuntime(config, audit));
  // Nothing below may touch the kernel while another sandgate serves these sandboxes.
  await proveAlone(config, file);
  // The interception CA is created on first run, so `ca cert` has something to hand
  // to sandboxes even before any rule intercepts. One leaf cache for the daemon's lifetime.
  const { material: ca } = await initCa(config.tls.caDir);
  // One set of TLS session ticket keys for the daemon's life, shared with the workers: a ticket
  // resumes in whichever process the sandbox's next connection lands. Never written anywhere.
  // Replaced every tls.ticketKeyRotationMs (forward secrecy for resumed sessions): a ticket key that
  // leaks opens only its own period's tickets. Never written anywhere.
  let ticketKeys = randomBytes(48);
  const leaves = await LeafCache.create(ca, { ticketKeys });
  // `unlisted: ask` (docs/approvals.md): pending decisions, and what `sandbox`/`policy` approvals
  // added, compiled into the runtime (one assignment, like every other change).
  const grants = new Grants();
  const broker = new ApprovalBroker({
    now: () => Date.now(),
    setTimer: (fn, ms) => setTimeout(fn, ms),
    clearTimer: (t) => clearTimeout(t as NodeJS.Timeout),
    maxPendingPerSandbox: () => rt.config.approvals.maxPendingPerSandbox,
    grant: (item, policy, scope, approver) => {
      grants.add(item, policy, scope, approver, Date.now());
      rt = grants.apply(rt);
      // Before the reply that releases a worker's held connection (same IPC channel, in order).
      pool?.grants(grants.all());
    },
    audit: (f) => rt.audit.write({ event: 'approval', ...f }),
  });
  const ask: AskApproval = (sandbox, host, port, via) =>
    broker.ask(
      { sandbox: sandbox.name, ...(sandbox.user !== undefined ? { user: sandbox.user } : {}), policy: sandbox.policy.name },
      host,
      port,
      via,
      sandbox.policy.askTimeoutMs,
    );
  // The webhook approver: called from this process on the host's network, once per pending item.
  broker.subscribe((e) => {
    const url = rt.config.approvals.webhook;
    if (e.event !== 'pending' || url === undefined) return;
    const { event: _, ...item } = e;
    void askWebhook(url, item, rt.config.approvals.webhookTimeoutMs).then((r) => {
      if (r.ok) broker.decide(item.id, r.action, 'webhook');
      else rt.audit.write({ event: 'error', reason: `approvals webhook failed for ${item.id} (${r.reason}); it stays pending` });
    });
  });
  const approvalsApi: ApprovalsApi = {
    list: () => broker.list(),
    subscribe: (fn) => broker.subscribe(fn),
    decide: (id, action, approver) => broker.decide(id, action, approver),
    added: () => addedView(rt.config, grants.all()),
  };
  // `workers: N` > 1: the TCP data path runs in N worker processes; this one keeps the listener,
  // the firewall, DNS, packets, the control API and the audit stream (src/cluster/primary.ts).
  // Loaded only then: with the default (1) this process never touches node:cluster.
  const pool =
    config.workers > 1
      ? await (await import('./cluster/primary.js')).startWorkers({
          count: config.workers,
          runtime: () => rt,
          audit,
          ticketKeys: () => ticketKeys,
          grants: () => grants.all(),
          approve: (who, host, port, via, timeoutMs) => broker.ask(who, host, port, via, timeoutMs),
        })
      : undefined;
  const rotation = setInterval(() => {
    ticketKeys = randomBytes(48);
    leaves.rotateTicketKeys(ticketKeys);
    pool?.ticketKeys(ticketKeys);
  }, config.tls.ticketKeyRotationMs);
  rotation.unref();
  // Open connections per sandbox, so removing a registered one closes what it has open.
  const conns = pool ? new PoolConns(() => rt, pool) : new ConnRegistry(() => rt);
  const track = conns.track.bind(conns);
  // A tripwire under `onTripwire: quarantine` (src/control/quarantine.ts), in this process or a
  // worker: one line; with workers, every worker takes the set first, then everything the sandbox
  // has open is closed (here and there) and the packet flows it was allowed end.
  rt.quarantine.listen((entry) => {
    const user = rt.sandboxes.byName(entry.sandbox)?.user;
    audit.write({ event: 'quarantine', action: 'start', ...entry, ...(user !== undefined ? { user } : {}) });
    pool?.quarantine(rt.quarantine.list());
    conns.close(entry.sandbox);
    const spec = rt.sandboxes.byName(entry.sandbox)?.spec;
    if (spec !== undefined) void endAcceptedFlows([spec], config.firewall.flowMark);
  });
  const quarantine = {
    list: () => rt.quarantine.list(),
    release: (name: string) => {
      const e = rt.quarantine.release(name);
      if (e !== undefined) {
        audit.write({ event: 'quarantine', action: 'release', sandbox: name, since: e.since, credential: e.credential });
        pool?.quarantine(rt.quarantine.list());
      }
      return e;
    },
  };
  const gate = createDataPlane({ runtime: () => rt, leaves, conns, ask });
  const servers: net.Server[] = [];

  servers.push(
    await listenTransparent(
      config.listen.address,
      config.listen.port,
      pool
        ? (s) => pool.dispatch(s)
        : (s) => {
            gate.accept(s);
          },
    ),
  );
  // The DNS responder reads the current runtime per query (`() => rt`), so reloads reach it.
  const dns = await startDnsServer({ runtime: () => rt, ifaces: gate.ifaces, address: config.listen.address, port: config.listen.dnsPort, track, ask });
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
    audit.write({
      event: 'error',
      reason: `packet verdicts are off: ${packetsOff}; the kernel drops every packet that is neither TCP nor DNS, without audit lines`,
    });
  }
  const backend = await resolveBackend(config.firewall.backend);
  // Sandboxes registered before a restart are in the sets from the first packet on.
  if (config.listen.control !== false) {
    const restored = readState(config);
    for (const reason of restored.skipped) audit.write({ event: 'error', reason });
    if (restored.specs.length > 0) {
      rt = withDynamicSandboxes(rt, restored.specs);
      pool?.sandboxes(rt);
      audit.write({ event: 'config', action: 'restored', file: stateFilePath(config), registered: restored.specs.length });
    }
  }
  const up = await firewallUp(planFromConfig(config, rt.dynamic), backend);
  for (const w of up.warnings) audit.write({ event: 'error', reason: w });

  // One queue for everything that changes the firewall or the runtime: SIGHUP reloads and
  // control API changes never interleave (a reload re-creates the table from rt.dynamic).
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

  let metricsListener: MetricsListener | undefined;
  if (metrics && config.metrics) metricsListener = await metrics.listen(config.metrics.address, config.metrics.port);
  const endpoint = (address: string, port: number): string => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
  const health = (): Promise<HealthReport> =>
    checkHealth({
      backend,
      firewallMissing: () => firewallMissing(planFromConfig(rt.config, rt.dynamic), backend),
      listeners: () => [
        { name: 'tcp', address: endpoint(config.listen.address, config.listen.port), up: servers.every((s) => s.listening) },
        { name: 'dns', address: endpoint(config.listen.address, config.listen.dnsPort), up: dns.listening() },
        ...(metricsListener && config.metrics
          ? [{ name: 'metrics', address: endpoint(config.metrics.address, config.metrics.port), up: metricsListener.listening() }]
          : []),
      ],
      ...(pool ? { workers: () => ({ ready: pool.ready(), expected: config.workers }) } : {}),
    });

  // Each applied change rewrites the state file; a failure to write it loses nothing now, but
  // the change would not survive a restart, so it is said.
  const persist = (next: Runtime): void => {
    try {
      mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      writeState(config, next.dynamic);
    } catch (err) {
      audit.write({
        event: 'error',
        reason: `registered sandboxes could not be saved to ${stateFilePath(config)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); they are lost on restart`,
      });
    }
  };

  // The control API (registered sandboxes), on a unix socket, once the firewall is in place.
  let control: ControlServer | undefined;
  if (config.listen.control !== false) {
    const svc = createControlService({
      runtime: () => rt,
      swap: (next) => {
        // Approvals given while the firewall changed are compiled in again; a removed sandbox's go.
        if (grants.prune(next)) pool?.grants(grants.all());
        broker.endPasses((name) => next.sandboxes.byName(name) !== undefined);
        rt = grants.all().length > 0 ? grants.apply(next) : next;
        gate.ifaces.clear();
        pool?.sandboxes(next);
        persist(next);
      },
      serial,
      updateFirewall: (before, after) => firewallUpdateDynamic({ table: config.firewall.table }, backend, before, after),
      conns,
      endFlows: (specs) => endAcceptedFlows(specs, config.firewall.flowMark),
      reload: () => serial(reload),
      quarantine,
    });
    // The decision stream taps the audit text only while someone watches (GET /events).
    const events = new EventHub((active) => audit.tap(active ? (text) => events.publish(text) : undefined));
    control = await startControlServer(config.listen.control, svc, health, approvalsApi, events);
  }
  audit.write({ event: 'config', action: 'loaded', file, sandboxes: config.sandboxes.length, policies: Object.keys(config.policies).length });
  audit.write({
    event: 'ready',
    pid: process.pid,
    port: config.listen.port,
    ...(pool ? { workers: config.workers } : {}),
    dnsPort: config.listen.dnsPort,
    dnsRecvBuffer: dns.udpRecvBuffer,
    backend,
    packets: packets ? 'verdicts' : 'dropped',
    ...(control ? { control: control.path } : {}),
    ...(config.metrics ? { metrics: endpoint(config.metrics.address, config.metrics.port) } : {}),
  });

  const reload = async (): Promise<Outcome<ReloadResult>> => {
    try {
      const next = loadConfigFile(file);
      const restart = restartNeeded(rt.config, next);
      if (restart !== undefined) throw new SandgateError(`${file}: ${restart}`, 'CONFIG');
      // Registered sandboxes stay across a reload, so the new config must leave room for them.
      const clash = reloadConflict(next, rt.dynamic);
      if (clash !== undefined) throw new SandgateError(`${file}: ${clash} (remove it through the control API first)`, 'CONFIG');
      const nextRt = inFile(file, () => buildRuntime(next, audit, rt));
      // One transaction (nft, or one restore per family): the old ruleset until the new one is
      // whole. With the control API the sets are re-created holding the registered sandboxes.
      const reup = await firewallUp(planFromConfig(next, nextRt.dynamic), backend);
      for (const w of reup.warnings) audit.write({ event: 'error', reason: w });
      // `sandbox` approvals end with a reload; `policy` ones stay while their policy does.
      grants.reloaded(next);
      broker.endPasses();
      rt = grants.all().length > 0 ? grants.apply(nextRt) : nextRt;
      gate.ifaces.clear();
      pool?.reloaded(nextRt);
      audit.write({ event: 'config', action: 'reloaded', file, sandboxes: next.sandboxes.length, registered: nextRt.dynamic.length });
      return { ok: true, value: { file, sandboxes: next.sandboxes.length, policies: Object.keys(next.policies).length, registered: nextRt.dynamic.length } };
    } catch (err) {
      const reason = reasonOf(err);
      audit.write({ event: 'config', action: 'rejected', file, reason });
      // A config the daemon refuses is the caller's to fix (400); a firewall that failed is not (500).
      const refused = err instanceof SandgateError && (err.code === 'CONFIG' || err.code === 'SECRET');
      return { ok: false, status: refused ? 400 : 500, error: reason };
    }
  };

  return {
    runtime: () => rt,
    reload: async () => {
      await serial(reload);
    },
    reopenLog: () => {
      audit.reopen();
    },
    async stop() {
      clearInterval(rotation);
      broker.close('sandgate is stopping');
      packets?.close();
      await control?.close();
      await metricsListener?.close();
      const closed = Promise.all([...servers.map((s) => new Promise<void>((r) => s.close(() => r()))), dns.close()]);
      // Workers first: the listener's close waits for the connections they hold.
      await pool?.stop();
      // Requests in flight get a grace period; then whatever is still open (idle keep-alive
      // connections, a sandbox that never hangs up) is reset, so a stop is bounded.
      let reset = 0;
      const grace = setTimeout(() => {
        reset = conns.closeAll();
      }, STOP_GRACE_MS);
      await closed;
      clearTimeout(grace);
      // The connections reset above write their last lines (a stream cut off mid-response) as they close.
      await conns.settled();
      // Token caches (authService/oauth2 credentials): hit rate and call counts over the daemon's life.
      const tokenCache = tokenCacheStats(rt.credentials);
      audit.write({
        event: 'stop',
        reason: 'signal; firewall rules stay installed (fail closed)',
        ...(reset > 0 ? { connectionsReset: reset } : {}),
        ...(tokenCache ? { tokenCache } : {}),
      });
      audit.flush();
    },
  };
}
