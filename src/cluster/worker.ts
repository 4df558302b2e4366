/**
 * A worker process (`workers: N` > 1): runs the TCP data path for the connections the primary
 * accepts on its transparent listener and hands over (src/cluster/primary.ts). Everything else
 * stays with the primary, and the worker asks it where state must be one:
 *
 * - config and registered sandboxes: pushed by the primary (start, reload, control API); a
 *   removal resets the sandbox's connections here in the same tick as the runtime swap;
 * - raw TCP rules: "did the DNS responder give this sandbox that address?" (the answer log lives
 *   beside the responder);
 * - `unlisted: ask`: a held connection asks the primary, which holds the pending decisions beside
 *   the control API; what approvals added is pushed here whole (`grants`) and compiled in;
 * - authService/oauth2 credentials: acquire and reject go to the primary's token sources, so
 *   single-flight fetches and 401 invalidation are global, not per worker;
 * - audit: lines are formatted here and handed to the primary, the one writer of the stream.
 *
 * Static secrets are read from env/files here as in the primary (the worker inherits its
 * environment); the leaf cache is this worker's own, minted from the shared CA files.
 */
import cluster from 'node:cluster';
import net from 'node:net';
import type { Config } from '../config/types.js';
import { createLineAudit, type Audit } from '../audit/logger.js';
import { buildRuntime, withDynamicSandboxes, type Runtime } from '../runtime.js';
import type { SandboxSpec } from '../policy/sandboxes.js';
import { createDataPlane, type DataPlane } from '../net/data-plane.js';
import { loadCa } from '../tls/ca.js';
import { LeafCache } from '../tls/leaf-cache.js';
import { ConnRegistry } from '../net/conn-registry.js';
import { isTokenSource, type Credential, type CredentialSource, type TokenRequest, type TokenSource } from '../creds/credential.js';
import { TokenError } from '../creds/token-error.js';
import type { FromWorker, Question, ToWorker } from './messages.js';
import { Grants, type Grant } from '../approvals/grants.js';
import type { Outcome } from '../approvals/broker.js';
import type { AskApproval } from '../approvals/ask.js';
import type { QuarantineEntry } from '../control/quarantine.js';

function send(m: FromWorker, cb?: () => void): void {
  if (!process.connected) return;
  process.send?.(m, undefined, {}, cb ? () => cb() : undefined);
}

/** Questions in flight to the primary, by number. */
class Asker {
  private n = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  ask(q: Question, timeoutMs: number): Promise<unknown> {
    const n = ++this.n;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(n);
        reject(new TokenError('the primary process did not answer in time', true));
      }, timeoutMs);
      this.pending.set(n, { resolve, reject, timer });
      send({ t: 'ask', n, q });
    });
  }

  tell(q: Question): void {
    send({ t: 'ask', n: 0, q });
  }

  settle(m: Extract<ToWorker, { t: 'reply' }>): void {
    const p = this.pending.get(m.n);
    if (!p) return;
    this.pending.delete(m.n);
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.value);
    else p.reject(new TokenError(m.error.message, m.error.retryable, m.error.short));
  }
}

/**
 * A token source whose cache is the primary's: every acquire is a question (a round trip on the
 * IPC channel; the primary answers cache hits at once), reject is a notice. Bounded by the
 * credential's own timeout in the primary, plus a margin here.
 */
class RemoteTokenSource implements TokenSource {
  readonly id: string;
  readonly kind: TokenSource['kind'];
  readonly fingerprint: string;

  constructor(
    local: TokenSource,
    private readonly asker: Asker,
    private readonly timeoutMs: number,
  ) {
    this.id = local.id;
    this.kind = local.kind;
    this.fingerprint = local.fingerprint;
  }

  acquire(req: TokenRequest): Promise<Credential> {
    return this.asker.ask({ kind: 'acquire', id: this.id, req: { ...req } }, this.timeoutMs) as Promise<Credential>;
  }

  reject(req: TokenRequest, used: Credential): void {
    this.asker.tell({ kind: 'reject', id: this.id, req: { ...req }, used });
  }

  stats(): ReturnType<TokenSource['stats']> {
    // The counters live with the cache, in the primary (its `stop` line reports them).
    return { entries: 0, hits: 0, misses: 0, coalesced: 0, fetches: 0, refreshes: 0, failures: 0, invalidations: 0, evictions: 0 };
  }
}

/** The credential's timeout in the primary (retries included) plus a margin for the IPC hops. */
function tokenTimeoutMs(config: Config, id: string): number {
  const c = config.credentials[id];
  const t = c?.authService?.timeoutMs ?? c?.oauth2?.timeoutMs ?? c?.googleServiceAccount?.timeoutMs ?? 10_000;
  return t + 5_000;
}

/**
 * Registered sandboxes as pushed: a spec equal to the one already held keeps its object, since
 * ConnRegistry tells a changed sandbox from an unchanged one by the spec's identity.
 */
function sameSpecs(before: readonly SandboxSpec[], after: readonly SandboxSpec[]): readonly SandboxSpec[] {
  const held = new Map(before.map((s) => [s.name, s]));
  return after.map((s) => {
    const old = held.get(s.name);
    return old !== undefined && JSON.stringify(old) === JSON.stringify(s) ? old : Object.freeze(s);
  });
}

/** Audit lines are collected for one turn of the event loop and leave in one message. */
function auditBatcher(): { out: (line: string) => void; flush: (cb?: () => void) => void } {
  let text = '';
  let scheduled = false;
  const flush = (cb?: () => void): void => {
    scheduled = false;
    if (text === '') {
      cb?.();
      return;
    }
    const t = text;
    text = '';
    send({ t: 'audit', text: t }, cb);
  };
  return {
    out(line) {
      text += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(() => flush());
      }
    },
    flush,
  };
}

export async function runWorker(): Promise<void> {
  if (!cluster.isWorker || cluster.worker === undefined) throw new Error('runWorker: not a cluster worker');
  const id = cluster.worker.id;
  // The primary owns the signals: a SIGHUP/SIGTERM/SIGINT sent to the whole process group must
  // not end (or reload) a worker behind the primary's back.
  for (const sig of ['SIGHUP', 'SIGTERM', 'SIGINT', 'SIGUSR1'] as const)
    process.on(sig, () => {
      /* the primary decides */
    });
  const batch = auditBatcher();
  const asker = new Asker();
  let audit: Audit | undefined;
  let rt: Runtime | undefined;
  let gate: DataPlane | undefined;
  const current = (): Runtime => {
    if (!rt) throw new Error('worker runtime not initialised');
    return rt;
  };
  const conns = new ConnRegistry(current);
  // What approvals added, as the primary last sent it, compiled into every runtime built here.
  let grants: readonly Grant[] = [];
  const withGrants = (r: Runtime): Runtime => (grants.length > 0 ? Grants.of(grants).apply(r) : r);
  // A held connection's question goes to the primary, which holds the pending decisions; a
  // missing answer (the decision's own timeout plus a margin) is a denial.
  const ask: AskApproval = async (sandbox, host, port, via) => {
    const timeoutMs = sandbox.policy.askTimeoutMs;
    try {
      return (await asker.ask(
        {
          kind: 'approve',
          sandbox: sandbox.name,
          ...(sandbox.user !== undefined ? { user: sandbox.user } : {}),
          policy: sandbox.policy.name,
          host,
          port,
          via,
          timeoutMs,
        },
        timeoutMs + 5_000,
      )) as Outcome;
    } catch {
      return { allow: false, reason: 'the primary process did not answer about the approval' };
    }
  };

  const build = (config: Config, dynamic: readonly SandboxSpec[], previous: Runtime | undefined): Runtime => {
    audit ??= createLineAudit(config.log.level, { worker: id }, batch.out, { stderr: config.log.file !== undefined });
    const remote = (loaded: ReadonlyMap<string, CredentialSource>): ReadonlyMap<string, CredentialSource> => {
      const out = new Map<string, CredentialSource>();
      for (const [k, c] of loaded)
        out.set(k, isTokenSource(c) ? (c instanceof RemoteTokenSource ? c : new RemoteTokenSource(c, asker, tokenTimeoutMs(config, k))) : c);
      return out;
    };
    const base = buildRuntime(config, audit, previous, { credentials: remote });
    return withDynamicSandboxes(base, sameSpecs(previous?.dynamic ?? [], dynamic));
  };

  let leaves: LeafCache | undefined;
  const init = async (config: Config, dynamic: readonly SandboxSpec[], ticketKeys: Buffer, quarantined: readonly QuarantineEntry[]): Promise<void> => {
    rt = withGrants(build(config, dynamic, undefined));
    // One Quarantine per process, carried by every later runtime: the primary's set, and a
    // tripwire here closes what this worker holds of the sandbox and tells the primary, which
    // writes the line and tells every worker (src/cluster/primary.ts).
    rt.quarantine.replace(quarantined);
    rt.quarantine.listen((entry) => {
      conns.close(entry.sandbox);
      send({ t: 'tripped', entry });
    });
    leaves = await LeafCache.create(await loadCa(config.tls.caDir), { ticketKeys: Buffer.from(ticketKeys) });
    gate = createDataPlane({
      runtime: current,
      leaves,
      conns,
      ask,
      answered: async (sandbox, host, ip) => {
        try {
          return (await asker.ask({ kind: 'answered', sandbox, host, ip }, 5_000)) === true;
        } catch {
          return false; // no answer: not known to have been answered (fail closed)
        }
      },
    });
    send({ t: 'ready' });
  };

  /** A pushed config or registry this worker cannot apply: it exits, and the primary starts a fresh one. */
  const fatal = (what: string, err: unknown): void => {
    current().audit.write({ event: 'error', reason: `worker ${id}: cannot apply ${what} (${(err as Error).message}); restarting` });
    batch.flush(() => process.exit(1));
  };

  process.on('message', (m: ToWorker, handle?: unknown) => {
    switch (m.t) {
      case 'init':
        grants = m.grants;
        init(m.config, m.dynamic, m.ticketKeys, m.quarantined).catch((err: Error) => {
          process.stderr.write(`sandgate worker ${id}: ${err.message}\n`);
          process.exit(1);
        });
        return;
      case 'conn': {
        const g = gate;
        if (!(handle instanceof net.Socket)) return;
        const socket = handle;
        // As the transparent listener's own sockets are (src/net/transparent-listener.ts): a
        // sandbox's FIN must not end our side of a relay. The received socket was built by
        // child_process with the defaults; TCP_NODELAY, a socket option, came over with the fd.
        socket.allowHalfOpen = true;
        if (!g || !rt) {
          socket.resetAndDestroy();
          return;
        }
        g.accept(socket);
        return;
      }
      case 'ticketKeys':
        // Buffers cross the IPC channel as JSON ({type, data}); Buffer.from takes that form back.
        leaves?.rotateTicketKeys(Buffer.from(m.keys));
        return;
      case 'config':
        try {
          grants = m.grants;
          rt = withGrants(build(m.config, m.dynamic, rt));
          gate?.ifaces.clear();
        } catch (err) {
          fatal('the reloaded config', err);
        }
        return;
      case 'sandboxes': {
        try {
          // One tick: the swap, then the resets (as src/control/service.ts does in one process).
          rt = withDynamicSandboxes(current(), sameSpecs(current().dynamic, m.dynamic));
          gate?.ifaces.clear();
          // The answer log a removed sandbox leaves is the primary's to forget (it holds it).
          for (const name of m.closes) conns.close(name);
        } catch (err) {
          fatal('the registered sandboxes', err);
        }
        return;
      }
      case 'grants':
        grants = m.grants;
        if (rt) rt = withGrants(rt);
        break;
      case 'quarantine':
        if (rt) for (const name of rt.quarantine.replace(m.held)) conns.close(name);
        return;
      case 'reply':
        asker.settle(m);
        return;
      case 'stop':
        batch.flush(() => process.exit(0));
        return;
      default: {
        const never: never = m;
        return never;
      }
    }
  });
  send({ t: 'hello' });
}
