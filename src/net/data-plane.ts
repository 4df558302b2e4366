/**
 * The TCP data path, wired once for the single process (src/daemon.ts) and for each worker
 * (src/cluster/worker.ts): accepted connections are classified and served (src/net/connection.ts)
 * with interception from this process's leaf cache, tracked per sandbox.
 */
import type net from 'node:net';
import type { Runtime } from '../runtime.js';
import type { LeafCache } from '../tls/leaf-cache.js';
import { createInterceptor } from '../tls/intercept.js';
import type { ConnRegistry } from './conn-registry.js';
import { handleConnection, type Gate } from './connection.js';
import { RouteIfaceCache } from './route-iface.js';

export interface DataPlaneDeps {
  /** The current runtime (swapped on reload and on control API changes). */
  readonly runtime: () => Runtime;
  readonly leaves: LeafCache;
  readonly conns: ConnRegistry;
  /** A worker asks the primary's DNS answer log (Gate.answered); unset, the runtime's own is read. */
  readonly answered?: Gate['answered'];
  /** `unlisted: ask` approvals (src/approvals/); unset, unlisted names are denied. */
  readonly ask?: Gate['ask'];
}

export interface DataPlane {
  /** Interface lookups by route (cleared when the sandbox table changes). */
  readonly ifaces: RouteIfaceCache;
  /** Serve one accepted (TPROXY'd) connection. */
  accept(socket: net.Socket): void;
}

export function createDataPlane(deps: DataPlaneDeps): DataPlane {
  const { conns } = deps;
  const gate: Gate = {
    runtime: deps.runtime,
    ifaces: new RouteIfaceCache(),
    intercept: createInterceptor({ leaves: deps.leaves, track: (sb, t, raw) => conns.handOver(sb, raw, t) }),
    conns,
    ...(deps.answered !== undefined ? { answered: deps.answered } : {}),
    ...(deps.ask !== undefined ? { ask: deps.ask } : {}),
  };
  return {
    ifaces: gate.ifaces,
    accept(socket) {
      handleConnection(gate, socket).catch((err: Error) => {
        deps.runtime().audit.write({ event: 'error', reason: `connection handler failed: ${err.message}` });
        socket.destroy();
      });
    },
  };
}
