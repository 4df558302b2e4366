/**
 * Reads sandgate's NFQUEUE and gives every queued packet a verdict (docs/packets.md): the
 * first packet of each new flow that is neither TCP nor DNS, from any sandbox, and every
 * IPv6 packet a sandbox sends. Accept sets the flow mark, which the firewall copies into the
 * connection so later packets of the flow skip the queue; drop drops.
 *
 * The binding (`nfqueue`, GPL-2.0, an optional dependency built with node-gyp) is loaded
 * with a dynamic import: when it is absent, unbuilt, or disabled with SANDGATE_NFQUEUE=off,
 * nothing reads the queue and the kernel drops those packets (the firewall never uses
 * --queue-bypass): fail closed, at the cost of no `packet` audit lines.
 *
 * Bounded: the kernel queue holds at most 1024 packets (NFQNL_QMAX_DEFAULT) and the firewall
 * rate-limits per source before queueing; here at most MAX_PENDING verdicts wait on a name
 * lookup at once (more are dropped at once), and audit lines are sampled (packet-audit.ts).
 */
import os from 'node:os';
import type { Runtime } from '../runtime.js';
import { parsePacket } from './ip-header.js';
import { decidePacket } from './decide.js';
import { PacketAuditSampler } from './packet-audit.js';
import { IfNames } from './if-names.js';

type Binding = typeof import('nfqueue');
type NfPacket = import('nfqueue').NfPacket;

const MAX_PENDING = 256;
const LIVE_QUEUES = new Set<unknown>();
const RESOLVE_TIMEOUT_MS = 2000;
const FLUSH_MS = 1000;
const LOCAL_ADDRS_TTL_MS = 2000;
/** Netlink receive buffer: room for a burst of queued packets while the event loop is busy. */
const SOCKET_BUFFER = 4 * 1024 * 1024;

export interface LoadResult {
  binding?: Binding;
  /** Why there is no binding. */
  reason?: string;
}

/** The binding, or why not. SANDGATE_NFQUEUE=off simulates its absence (tests, operators). */
export async function loadBinding(env: NodeJS.ProcessEnv = process.env): Promise<LoadResult> {
  if (env['SANDGATE_NFQUEUE'] === 'off') return { reason: 'disabled by SANDGATE_NFQUEUE=off' };
  try {
    const mod = (await import('nfqueue')) as Binding & { default?: Binding };
    const binding = (mod.default ?? mod) as Binding;
    if (typeof binding.createQueueHandler !== 'function') return { reason: 'the nfqueue module has no createQueueHandler' };
    return { binding };
  } catch (err) {
    return { reason: `the optional nfqueue binding is not installed or not built (${(err as Error).message.split('\n')[0]})` };
  }
}

export interface PacketGateOptions {
  runtime: () => Runtime;
  queueNum: number;
  flowMark: number;
  binding: Binding;
}

export interface PacketGateStats {
  verdicts: number;
  accepted: number;
  dropped: number;
  /** Dropped without a decision: unparseable, or too many lookups pending. */
  shed: number;
  pending: number;
}

export interface PacketGate {
  stats(): PacketGateStats;
  close(): void;
}

/** The gate host's own addresses (all families), re-read at most every LOCAL_ADDRS_TTL_MS. */
class LocalAddrs {
  private addrs = new Set<string>();
  private at = -Infinity;
  has(ip: string): boolean {
    const now = performance.now();
    if (now - this.at > LOCAL_ADDRS_TTL_MS) {
      this.at = now;
      this.addrs = new Set(Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address)));
    }
    return this.addrs.has(ip) || ip.startsWith('127.');
  }
}

export function startPacketGate(opts: PacketGateOptions): PacketGate {
  const { binding } = opts;
  const names = new IfNames();
  const local = new LocalAddrs();
  const sampler = new PacketAuditSampler();
  const stats: PacketGateStats = { verdicts: 0, accepted: 0, dropped: 0, shed: 0, pending: 0 };

  const verdict = (packet: NfPacket, accept: boolean): void => {
    stats.verdicts++;
    try {
      if (accept) {
        stats.accepted++;
        packet.setVerdict(binding.NF_ACCEPT, opts.flowMark);
      } else {
        stats.dropped++;
        packet.setVerdict(binding.NF_DROP);
      }
    } catch {
      /* the queue is gone: the kernel has dropped the packet already */
    }
  };

  const handle = (packet: NfPacket): void => {
    const rt = opts.runtime();
    const header = parsePacket(packet.payload);
    if (!header || stats.pending >= MAX_PENDING) {
      stats.shed++;
      verdict(packet, false);
      return;
    }
    const iface = names.name(packet.info.indev) ?? (packet.info.indev_name && packet.info.indev_name !== '*' ? packet.info.indev_name : undefined);
    stats.pending++;
    decidePacket({ rt, iface, isLocal: (ip) => local.has(ip), resolveTimeoutMs: RESOLVE_TIMEOUT_MS }, header)
      .then(
        (v) => {
          verdict(packet, v.accept);
          const spec = { rate: rt.config.packets.auditSampling.linesPerSecond, burst: rt.config.packets.auditSampling.burst };
          if (sampler.admit(v.line, v.what, spec, performance.now())) rt.audit.write({ event: 'packet', ...v.line });
        },
        () => verdict(packet, false),
      )
      .finally(() => {
        stats.pending--;
      });
  };

  // The binding calls back from C++ and cannot survive a JavaScript exception thrown through
  // it; every packet must also get a verdict, or it sits in the kernel queue until that fills.
  const queue = binding.createQueueHandler(opts.queueNum, SOCKET_BUFFER, (packet) => {
    try {
      handle(packet);
    } catch {
      verdict(packet, false);
    }
  });
  // Held for the process's lifetime: the addon's poll callback keeps a raw pointer to the
  // native object, which nan deletes once its JavaScript wrapper is garbage-collected.
  LIVE_QUEUES.add(queue);

  const timer = setInterval(() => {
    const rt = opts.runtime();
    for (const s of sampler.flush()) rt.audit.write({ event: 'packet', ...s, reason: 'more packets than the audit sampling writes individually' });
  }, FLUSH_MS);
  timer.unref();

  return {
    stats: () => ({ ...stats }),
    close() {
      clearInterval(timer);
      const rt = opts.runtime();
      for (const s of sampler.flush()) rt.audit.write({ event: 'packet', ...s, reason: 'more packets than the audit sampling writes individually' });
    },
  };
}
