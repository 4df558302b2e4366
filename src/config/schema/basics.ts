/** The small sections: listen, log, tls, firewall, packets, dns, workers. Defaults: ../defaults.ts. */
import type { Config } from '../types.js';
import { autoWorkers, DEFAULTS, MAX_WORKERS, sourceRateFor } from '../defaults.js';
import { parseHostPort } from '../../util/ip.js';
import type { Reader } from './reader.js';

export function listen(v: Reader, raw: unknown): Config['listen'] {
  const d = DEFAULTS.listen;
  const l = v.optObj(raw, ['listen'], ['port', 'dnsPort', 'address', 'control']);
  const out = {
    port: l.port === undefined ? d.port : (v.port(l.port, ['listen', 'port']) ?? d.port),
    dnsPort: l.dnsPort === undefined ? d.dnsPort : (v.port(l.dnsPort, ['listen', 'dnsPort']) ?? d.dnsPort),
    address: l.address === undefined ? d.address : (v.ipAddress(l.address, ['listen', 'address']) ?? d.address),
    control: controlPath(v, l.control),
  };
  if (out.port === out.dnsPort) v.fail(['listen', 'dnsPort'], 'must differ from listen.port');
  return out;
}

/**
 * listen.control: an absolute path for the control API's unix socket, or false (no control
 * API). A unix socket path holds at most 107 bytes (sun_path is 108 with the NUL, unix(7)).
 */
function controlPath(v: Reader, raw: unknown): string | false {
  const p = ['listen', 'control'];
  if (raw === undefined || raw === null) return DEFAULTS.listen.control;
  if (raw === false) return false;
  if (typeof raw !== 'string' || !raw.startsWith('/')) {
    v.fail(p, 'must be an absolute path for the control socket, or false to turn the control API off');
    return false;
  }
  if (Buffer.byteLength(raw) > 107) {
    v.fail(p, 'is too long for a unix socket path (at most 107 bytes)');
    return false;
  }
  if (raw.endsWith('/')) {
    v.fail(p, 'must name a socket file, not a directory');
    return false;
  }
  return raw;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

export function log(v: Reader, raw: unknown): Config['log'] {
  const lg = v.optObj(raw, ['log'], ['file', 'level']);
  return {
    ...(lg.file !== undefined ? { file: v.str(lg.file, ['log', 'file']) ?? '' } : {}),
    level: lg.level === undefined ? DEFAULTS.log.level : (v.oneOf(lg.level, ['log', 'level'], LEVELS) ?? DEFAULTS.log.level),
  };
}

export const ECH_CHOICES = ['allow', 'refuse'] as const;

export function tls(v: Reader, raw: unknown): Config['tls'] {
  const t = v.optObj(raw, ['tls'], ['caDir', 'ech', 'ticketKeyRotationMs']);
  return {
    caDir: t.caDir === undefined ? DEFAULTS.tls.caDir : (v.str(t.caDir, ['tls', 'caDir']) ?? ''),
    ech: t.ech === undefined ? DEFAULTS.tls.ech : (v.oneOf(t.ech, ['tls', 'ech'], ECH_CHOICES) ?? DEFAULTS.tls.ech),
    ticketKeyRotationMs: v.int(t.ticketKeyRotationMs, ['tls', 'ticketKeyRotationMs'], 1000, 86_400_000, DEFAULTS.tls.ticketKeyRotationMs),
  };
}

export function firewall(v: Reader, raw: unknown): Config['firewall'] {
  const d = DEFAULTS.firewall;
  const fw = v.optObj(raw, ['firewall'], ['table', 'mark', 'routeTable', 'backend', 'queue', 'flowMark', 'queueMark']);
  const out = {
    // At most 21 characters: the iptables backend names its chains "<TABLE>-SBXFWD" (28 max).
    table:
      fw.table === undefined
        ? d.table
        : (v.str(fw.table, ['firewall', 'table'], /^[A-Za-z][A-Za-z0-9_]{0,20}$/, 'a valid table name (a letter, then up to 20 letters, digits or "_")') ??
          d.table),
    mark: v.int(fw.mark, ['firewall', 'mark'], 1, 0xffffffff, d.mark),
    routeTable: v.int(fw.routeTable, ['firewall', 'routeTable'], 1, 0xfffffffe, d.routeTable),
    backend: fw.backend === undefined ? d.backend : (v.oneOf(fw.backend, ['firewall', 'backend'], ['nft', 'iptables', 'auto'] as const) ?? d.backend),
    queue: v.int(fw.queue, ['firewall', 'queue'], 0, 65535, d.queue),
    flowMark: v.int(fw.flowMark, ['firewall', 'flowMark'], 1, 0xffffffff, d.flowMark),
    queueMark: v.int(fw.queueMark, ['firewall', 'queueMark'], 1, 0xffffffff, d.queueMark),
  };
  if ([253, 254, 255].includes(out.routeTable))
    v.fail(['firewall', 'routeTable'], "must not be one of the kernel's own tables (253 default, 254 main, 255 local)");
  if (new Set([out.mark, out.flowMark, out.queueMark]).size !== 3) v.fail(['firewall'], 'mark, flowMark and queueMark must be three different values');
  return out;
}

/** Packet-path limits; documented in docs/packets.md. */
export function packets(v: Reader, raw: unknown): Config['packets'] {
  const p = ['packets'];
  const d = DEFAULTS.packets;
  const o = v.optObj(raw, p, ['rateLimit', 'auditSampling']);
  const rl = v.optObj(o.rateLimit, [...p, 'rateLimit'], ['pps', 'burst']);
  const au = v.optObj(o.auditSampling, [...p, 'auditSampling'], ['linesPerSecond', 'burst']);
  return {
    rateLimit: {
      pps: v.int(rl.pps, [...p, 'rateLimit', 'pps'], 1, 1_000_000, d.rateLimit.pps),
      burst: v.int(rl.burst, [...p, 'rateLimit', 'burst'], 1, 1_000_000, d.rateLimit.burst),
    },
    auditSampling: {
      linesPerSecond: v.int(au.linesPerSecond, [...p, 'auditSampling', 'linesPerSecond'], 1, 1_000_000, d.auditSampling.linesPerSecond),
      burst: v.int(au.burst, [...p, 'auditSampling', 'burst'], 1, 1_000_000, d.auditSampling.burst),
    },
  };
}

/** DNS responder limits; documented in docs/dns.md. */
export function dns(v: Reader, raw: unknown): Config['dns'] {
  const p = ['dns'];
  const d = DEFAULTS.dns;
  const o = v.optObj(raw, p, ['rateLimit', 'sourceRateLimit', 'tcp', 'auditSampling']);
  const rl = v.optObj(o.rateLimit, [...p, 'rateLimit'], ['qps', 'burst']);
  const src = v.optObj(o.sourceRateLimit, [...p, 'sourceRateLimit'], ['pps', 'burst']);
  const tcp = v.optObj(o.tcp, [...p, 'tcp'], ['idleTimeoutMs', 'maxConnections']);
  const au = v.optObj(o.auditSampling, [...p, 'auditSampling'], ['linesPerSecond', 'burst']);
  const rateLimit = {
    qps: v.int(rl.qps, [...p, 'rateLimit', 'qps'], 1, 1_000_000, d.rateLimit.qps),
    burst: v.int(rl.burst, [...p, 'rateLimit', 'burst'], 1, 1_000_000, d.rateLimit.burst),
  };
  const derived = sourceRateFor(rateLimit);
  return {
    rateLimit,
    sourceRateLimit: {
      pps: v.int(src.pps, [...p, 'sourceRateLimit', 'pps'], 1, 1_000_000, derived.pps),
      burst: v.int(src.burst, [...p, 'sourceRateLimit', 'burst'], 1, 1_000_000, derived.burst),
    },
    tcp: {
      idleTimeoutMs: v.int(tcp.idleTimeoutMs, [...p, 'tcp', 'idleTimeoutMs'], 100, 300_000, d.tcp.idleTimeoutMs),
      maxConnections: v.int(tcp.maxConnections, [...p, 'tcp', 'maxConnections'], 1, 4096, d.tcp.maxConnections),
    },
    auditSampling: {
      linesPerSecond: v.int(au.linesPerSecond, [...p, 'auditSampling', 'linesPerSecond'], 1, 1_000_000, d.auditSampling.linesPerSecond),
      burst: v.int(au.burst, [...p, 'auditSampling', 'burst'], 1, 1_000_000, d.auditSampling.burst),
    },
  };
}

/** A whole number of processes, or "auto" (resolved here, once). */
export function workers(v: Reader, raw: unknown): number {
  if (raw === 'auto') return autoWorkers();
  if (raw === undefined || raw === null) return DEFAULTS.workers;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 1 || raw > MAX_WORKERS) {
    v.fail(['workers'], `must be a whole number from 1 to ${MAX_WORKERS}, or "auto"`);
    return DEFAULTS.workers;
  }
  return raw;
}

/** `metrics: { listen: "IP:PORT" }`: the Prometheus endpoint; absent means off. */
export function metrics(v: Reader, raw: unknown, ports: { port: number; dnsPort: number }): Config['metrics'] {
  if (raw === undefined) return undefined;
  const p = ['metrics'];
  const m = v.obj(raw, p, ['listen'], ['listen']);
  if (!m || m.listen === undefined) return undefined;
  // The port is required: no well-known default should open a listener by surprise.
  const hp = typeof m.listen === 'string' && /:\d+$/.test(m.listen) ? parseHostPort(m.listen, 0) : undefined;
  if (!hp) return v.fail([...p, 'listen'], 'must be "IP:PORT" (IPv6 as "[IP]:PORT"), e.g. "127.0.0.1:9464"');
  if (hp.port === ports.port || hp.port === ports.dnsPort) return v.fail([...p, 'listen'], `port ${hp.port} is sandgate's own listen.port or listen.dnsPort`);
  return { address: hp.host, port: hp.port };
}
