import type net from 'node:net';
import type { Config } from './config/types.js';
import { loadConfigFile, ConfigError } from './config/load.js';
import { createAudit, type Audit } from './audit/logger.js';
import { buildRuntime, type Runtime } from './runtime.js';
import { planFromConfig } from './firewall/from-config.js';
import { firewallUp } from './firewall/apply-nft.js';
import { listenTransparent } from './net/transparent-listener.js';
import { handleConnection, type Gate } from './net/connection.js';
import { createHttpFront } from './http/proxy.js';
import { RouteIfaceCache } from './net/route-iface.js';
import { SandgateError } from './errors.js';

/**
 * Refuse what this build cannot enforce yet, rather than silently passing it through.
 * (Interception lands with the TLS interception issue.)
 */
export function unsupported(config: Config): string | undefined {
  for (const [name, p] of Object.entries(config.policies)) {
    const i = p.allow.findIndex((r) => r.inject !== undefined || r.methods !== undefined || r.paths !== undefined);
    if (i >= 0) return `policies.${name}.allow[${i}]: inject/methods/paths need TLS interception, which this build does not provide yet`;
  }
  return undefined;
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
  const bad = unsupported(config);
  if (bad) throw new SandgateError(`${file}: ${bad}`, 'CONFIG');
  const audit: Audit = createAudit(config.log.file, config.log.level);
  let rt = buildRuntime(config, audit);
  const gate: Gate = { runtime: () => rt, ifaces: new RouteIfaceCache(), httpFront: createHttpFront() };
  const servers: net.Server[] = [];

  servers.push(await listenTransparent(config.listen.address, config.listen.port, (s) => {
    handleConnection(gate, s).catch((err: Error) => {
      rt.audit.write({ event: 'error', reason: `connection handler failed: ${err.message}` });
      s.destroy();
    });
  }));
  await firewallUp(planFromConfig(config));
  audit.write({ event: 'config', action: 'loaded', file, sandboxes: config.sandboxes.length, policies: Object.keys(config.policies).length });
  audit.write({ event: 'ready', pid: process.pid, port: config.listen.port, dnsPort: config.listen.dnsPort });

  let reloading: Promise<void> | undefined;
  const reload = async (): Promise<void> => {
    try {
      const next = loadConfigFile(file);
      const why = unsupported(next);
      if (why) throw new SandgateError(`${file}: ${why}`, 'CONFIG');
      for (const k of ['port', 'dnsPort', 'address'] as const) {
        if (next.listen[k] !== rt.config.listen[k]) throw new SandgateError(`${file}: listen.${k} cannot change on reload (restart sandgate)`, 'CONFIG');
      }
      if (next.log.file !== rt.config.log.file) throw new SandgateError(`${file}: log.file cannot change on reload (restart sandgate)`, 'CONFIG');
      const nextRt = buildRuntime(next, audit, rt);
      await firewallUp(planFromConfig(next));   // one nft transaction: the old ruleset until the new one is whole
      rt = nextRt;
      gate.ifaces.clear();
      audit.write({ event: 'config', action: 'reloaded', file, sandboxes: next.sandboxes.length });
    } catch (err) {
      const reason = err instanceof ConfigError ? err.problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.path}: ${p.message}`).join('; ') : (err as Error).message;
      audit.write({ event: 'config', action: 'rejected', file, reason });
    }
  };

  return {
    runtime: () => rt,
    reload: () => {
      reloading = (reloading ?? Promise.resolve()).then(reload);
      return reloading;
    },
    async stop() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      audit.write({ event: 'stop', reason: 'signal; firewall rules stay installed (fail closed)' });
      audit.flush();
    },
  };
}
