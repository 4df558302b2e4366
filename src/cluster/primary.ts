/**
 * The primary side of `workers: N` (N > 1): forks N node:cluster workers (src/cluster/worker.ts)
 * and hands each connection its transparent listener accepts to the next ready worker in turn.
 *
 * Why not cluster's own round-robin listener: the TPROXY target must be the socket that really
 * listens, with IP_TRANSPARENT set on it (Documentation/networking/tproxy.rst), and with cluster's
 * scheduling that socket is created inside the cluster module, out of reach. So the primary keeps
 * the listener it always had (src/net/transparent-listener.ts, pauseOnConnect: no byte is read
 * here) and does what cluster's round-robin does: accept, then pass the descriptor to a worker
 * (SCM_RIGHTS over the IPC channel; the primary's copy is closed once the worker acknowledges).
 * The descriptor is the accepted socket itself, so the worker's localAddress:localPort is still
 * the original destination.
 *
 * A worker that dies is replaced; the connections it held are lost (their sandboxes see a reset
 * or EOF). The firewall stays as it is throughout, so nothing passes meanwhile (fail closed).
 */
import cluster, { type Worker } from 'node:cluster';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { PrimaryAudit } from '../audit/logger.js';
import type { Runtime } from '../runtime.js';
import { isTokenSource, type Credential } from '../creds/credential.js';
import { asTokenError, TokenError } from '../creds/token-error.js';
import { SandgateError } from '../errors.js';
import { sessionKey } from '../metadata/session-token.js';
import { isFromWorker, type FromWorker, type Question, type ToWorker } from './messages.js';
import type { Grant } from '../approvals/grants.js';
import type { Asker, Outcome, Via } from '../approvals/broker.js';
import type { QuarantineEntry } from '../control/quarantine.js';

export interface WorkerPool {
  /** Hands an accepted connection to the next ready worker (reset if none is). */
  dispatch(socket: net.Socket): void;
  /** A reload was accepted: every worker builds the new runtime. */
  reloaded(rt: Runtime): void;
  /** The control API swapped the registered sandboxes (sent with the closes of the same tick). */
  sandboxes(rt: Runtime): void;
  /** Reset `name`'s connections in every worker (with the sandboxes message of this tick). */
  close(name: string): void;
  /** Workers hand over their last audit lines and exit; kill what has not after a while. */
  stop(): Promise<void>;
  /** How many workers are ready to take connections now. */
  ready(): number;
  /** Every worker takes these TLS session ticket keys (rotation); a worker started later gets them at init. */
  ticketKeys(keys: Buffer): void;
  /** What approvals added changed: every worker compiles it in (a worker started later gets it at init). */
  grants(list: readonly Grant[]): void;
  /** Every worker takes this set of quarantined sandboxes (and closes the connections of those new to it). */
  quarantine(held: readonly QuarantineEntry[]): void;
}

export interface PoolOptions {
  readonly count: number;
  readonly runtime: () => Runtime;
  readonly audit: PrimaryAudit;
  /** The TLS session ticket keys in force, for every worker's leaf contexts (resumption across workers). */
  readonly ticketKeys: () => Buffer;
  /** How long the first workers may take to report ready. */
  readonly startTimeoutMs?: number;
  /** What approvals added, for a worker's init and a reload's config message. */
  readonly grants: () => readonly Grant[];
  /** A worker's held connection asks: the primary's pending decisions (src/approvals/broker.ts). */
  readonly approve: (who: Asker, host: string, port: number, via: Via, timeoutMs: number) => Promise<Outcome>;
}

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url));
/** A worker that dies sooner than this after its start is restarted after a pause (no fork loop). */
const QUICK_DEATH_MS = 2_000;

function same(a: Credential, b: Credential): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export async function startWorkers(opts: PoolOptions): Promise<WorkerPool> {
  const { audit } = opts;
  const ready: Worker[] = [];
  let next = 0;
  let stopping = false;
  const started = new Map<number, number>();

  // Structured clone keeps the config as validated (undefined fields, numbers) on the way over.
  cluster.setupPrimary({ exec: WORKER_MAIN, args: [], serialization: 'advanced' });

  const sendTo = (w: Worker, m: ToWorker): void => {
    if (w.isConnected())
      w.send(m, undefined, { keepOpen: false }, () => {
        /* a dead worker's channel: its exit is handled below */
      });
  };
  const broadcast = (m: ToWorker): void => {
    for (const w of Object.values(cluster.workers ?? {})) if (w) sendTo(w, m);
  };

  const answer = (w: Worker, n: number, q: Question): void => {
    const rt = opts.runtime();
    const reply = (m: ToWorker): void => {
      if (n !== 0) sendTo(w, m);
    };
    const fail = (err: unknown): void => {
      const e = asTokenError(err);
      reply({ t: 'reply', n, ok: false, error: { message: e.message, retryable: e.retryable, short: e.short } });
    };
    switch (q.kind) {
      case 'answered':
        reply({ t: 'reply', n, ok: true, value: rt.dnsAnswers.has(q.sandbox, q.host, q.ip) });
        return;
      case 'approve': {
        const who: Asker = { sandbox: q.sandbox, ...(q.user !== undefined ? { user: q.user } : {}), policy: q.policy };
        // A grant reaches every worker (pool.grants, same channel) before this reply does.
        opts.approve(who, q.host, q.port, q.via, q.timeoutMs).then(
          (value) => reply({ t: 'reply', n, ok: true, value }),
          (err: Error) => reply({ t: 'reply', n, ok: true, value: { allow: false, reason: `approval failed (${err.message})` } satisfies Outcome }),
        );
        return;
      }
      case 'acquire': {
        const src = rt.credentials.get(q.id);
        if (src === undefined || !isTokenSource(src)) {
          fail(new TokenError(`credential ${q.id} is not a token source here`, false));
          return;
        }
        let got: Credential | Promise<Credential>;
        try {
          got = src.acquire(q.req, rt.tokenNet);
        } catch (err) {
          fail(err);
          return;
        }
        if (got instanceof Promise) got.then((value) => reply({ t: 'reply', n, ok: true, value }), fail);
        else reply({ t: 'reply', n, ok: true, value: got });
        return;
      }
      case 'reject': {
        // The worker holds a copy of the token: drop the cached one only if it is still that
        // token (compare-and-invalidate, as in one process; a newer one stays).
        const src = rt.credentials.get(q.id);
        if (src === undefined || !isTokenSource(src)) return;
        let cur: Credential | Promise<Credential>;
        try {
          cur = src.acquire(q.req, rt.tokenNet);
        } catch {
          return;
        }
        if (cur instanceof Promise)
          cur.catch(() => undefined); // already gone: a new call is under way
        else if (same(cur, q.used)) src.reject(q.req, cur);
        return;
      }
      default: {
        const never: never = q;
        return never;
      }
    }
  };

  // IMDSv2 session tokens must be accepted by whichever worker the next connection lands on: the
  // key is made here, before any fork, and inherited through the environment (src/metadata/).
  sessionKey();
  const fork = (): Worker => {
    const w = cluster.fork();
    started.set(w.id, performance.now());
    w.on('message', (m: unknown) => {
      if (!isFromWorker(m)) return;
      const msg: FromWorker = m;
      switch (msg.t) {
        case 'hello': {
          const rt = opts.runtime();
          sendTo(w, {
            t: 'init',
            config: rt.config,
            dynamic: rt.dynamic,
            ticketKeys: opts.ticketKeys(),
            grants: opts.grants(),
            quarantined: rt.quarantine.list(),
          });
          return;
        }
        case 'ready':
          if (!ready.includes(w)) ready.push(w);
          w.emit('sandgate-ready');
          return;
        case 'audit':
          audit.raw(msg.text);
          return;
        case 'tripped':
          // The primary's record is the one the control API lists; its listener tells every worker.
          opts.runtime().quarantine.trip(msg.entry);
          return;
        case 'ask':
          answer(w, msg.n, msg.q);
          return;
        default: {
          const never: never = msg;
          return never;
        }
      }
    });
    return w;
  };

  cluster.on('exit', (w, code, signal) => {
    const i = ready.indexOf(w);
    if (i >= 0) ready.splice(i, 1);
    const lived = performance.now() - (started.get(w.id) ?? 0);
    started.delete(w.id);
    if (stopping) return;
    audit.write({
      event: 'error',
      worker: w.id,
      pid: w.process.pid,
      reason: `worker ${w.id} exited (${signal ?? `code ${code}`}); the connections it held are lost; starting another`,
    });
    setTimeout(
      () => {
        if (!stopping) fork();
      },
      lived < QUICK_DEATH_MS ? 1_000 : 0,
    );
  });

  const first = Array.from({ length: opts.count }, () => fork());
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  await Promise.all(
    first.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new SandgateError(`worker ${w.id} did not start within ${timeoutMs} ms`, 'RUNTIME')), timeoutMs);
          w.once('sandgate-ready', () => {
            clearTimeout(timer);
            resolve();
          });
          w.once('exit', (code) => {
            clearTimeout(timer);
            reject(new SandgateError(`worker ${w.id} exited (code ${code}) while starting`, 'RUNTIME'));
          });
        }),
    ),
  ).catch((err: unknown) => {
    stopping = true;
    for (const w of first) w.process.kill('SIGKILL');
    throw err;
  });

  // Changes of one tick leave in one message: the runtime swap and the resets it implies.
  let pending: { rt: Runtime; closes: string[] } | undefined;
  const schedule = (rt: Runtime): { rt: Runtime; closes: string[] } => {
    if (!pending) {
      pending = { rt, closes: [] };
      queueMicrotask(() => {
        const p = pending;
        pending = undefined;
        if (p) broadcast({ t: 'sandboxes', dynamic: p.rt.dynamic, closes: p.closes });
      });
    }
    pending.rt = rt;
    return pending;
  };

  return {
    dispatch(socket) {
      const w = ready.length === 0 ? undefined : ready[next++ % ready.length];
      if (w === undefined || !w.isConnected()) {
        opts.runtime().audit.write({
          event: 'conn',
          decision: 'deny',
          src: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`,
          dst: `${socket.localAddress ?? ''}:${socket.localPort ?? 0}`,
          reason: 'no worker process is available',
        });
        socket.resetAndDestroy();
        return;
      }
      w.send({ t: 'conn' } satisfies ToWorker, socket, { keepOpen: false }, (err) => {
        if (err) socket.destroy();
      });
    },
    reloaded(rt) {
      broadcast({ t: 'config', config: rt.config, dynamic: rt.dynamic, grants: opts.grants() });
    },
    ticketKeys(keys) {
      broadcast({ t: 'ticketKeys', keys });
    },
    grants(list) {
      broadcast({ t: 'grants', grants: list });
    },
    quarantine(held) {
      broadcast({ t: 'quarantine', held });
    },
    sandboxes(rt) {
      schedule(rt);
    },
    close(name) {
      schedule(pending?.rt ?? opts.runtime()).closes.push(name);
    },
    ready: () => ready.length,
    async stop() {
      stopping = true;
      const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
      await Promise.all(
        alive.map(
          (w) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                w.process.kill('SIGKILL');
                resolve();
              }, 3_000);
              w.once('exit', () => {
                clearTimeout(timer);
                resolve();
              });
              sendTo(w, { t: 'stop' });
            }),
        ),
      );
    },
  };
}
