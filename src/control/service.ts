/**
 * The control API's effects: registry.ts decides, this applies. Every change runs in the
 * daemon's one queue (beside SIGHUP reloads) and in this order:
 *
 *   1. the new registry is computed and checked (pure; a bad request stops here);
 *   2. the firewall's sets are changed in one nft transaction (all or nothing; on failure the
 *      request fails with 500 and neither firewall nor runtime changed);
 *   3. in one tick: the runtime with the new SandboxTable is swapped in, the route-lookup cache
 *      is cleared, and the connections of a removed (or re-termed) sandbox are reset.
 *
 * So a new sandbox can talk as soon as the response is sent, and a removed one cannot: its
 * packets no longer match the sets, nothing identifies it any more, and what it had open is gone.
 */
import type { Runtime } from '../runtime.js';
import { withDynamicSandboxes } from '../runtime.js';
import type { SandboxSpec } from '../policy/sandboxes.js';
import type { SandboxMatch } from '../firewall/plan.js';
import { matchOf } from '../firewall/from-config.js';
import type { ConnRegistry } from '../net/conn-registry.js';
import type { QuarantineEntry } from './quarantine.js';
import { planAdd, planRemove, planUpdate, lookup, type Outcome, type RegistryState } from './registry.js';

export interface SandboxView {
  name: string;
  source: 'config' | 'api';
  policy: string;
  user?: string;
  interface?: string;
  cidr?: string;
  labels?: Readonly<Record<string, string>>;
  /** Open TCP connections (relays, HTTP, DNS over TCP) sandgate holds for it now. */
  connections: number;
}

export interface ControlDeps {
  runtime(): Runtime;
  /** Makes `next` the runtime every reader sees (one assignment) and clears the route cache. */
  swap(next: Runtime): void;
  /** Runs `fn` after every earlier change and reload has finished. */
  serial<T>(fn: () => Promise<T>): Promise<T>;
  /** One change of the firewall's sets (nft: atomic; iptables: undone on failure); throws (nothing changed) on failure. */
  updateFirewall(before: readonly SandboxMatch[], after: readonly SandboxMatch[]): Promise<void>;
  conns: ConnRegistry;
  /** Ends the flows the packet path accepted for these sandboxes (src/net/flows.ts); never throws. */
  endFlows?(specs: readonly SandboxSpec[]): Promise<void>;
  /** Re-reads the config file, as SIGHUP does (POST /reload). */
  reload?(): Promise<Outcome<ReloadResult>>;
  /** Quarantined sandboxes (src/control/quarantine.ts): the list, and a release (audited by the daemon). */
  quarantine?: { list(): QuarantineEntry[]; release(name: string): QuarantineEntry | undefined };
}

/** What an accepted reload loaded. */
export interface ReloadResult {
  file: string;
  sandboxes: number;
  policies: number;
  registered: number;
}

export interface ControlService {
  list(): SandboxView[];
  get(name: string): Outcome<SandboxView>;
  add(body: Record<string, unknown>): Promise<Outcome<SandboxView>>;
  update(name: string, body: Record<string, unknown>): Promise<Outcome<SandboxView & { closed: number }>>;
  remove(name: string): Promise<Outcome<{ removed: string; closed: number }>>;
  reload(): Promise<Outcome<ReloadResult>>;
  /** GET /quarantine */
  quarantined(): QuarantineEntry[];
  /** DELETE /quarantine/NAME: 404 when the sandbox is not quarantined. */
  release(name: string): Outcome<{ released: QuarantineEntry }>;
}

function view(spec: SandboxSpec, source: SandboxView['source'], connections: number): SandboxView {
  return {
    name: spec.name,
    source,
    policy: spec.policy,
    ...(spec.user !== undefined ? { user: spec.user } : {}),
    ...(spec.interface !== undefined ? { interface: spec.interface } : {}),
    ...(spec.cidr !== undefined ? { cidr: spec.cidr } : {}),
    ...(spec.labels !== undefined ? { labels: spec.labels } : {}),
    connections,
  };
}

/** Audit fields of a registry change (event `config`, docs/control-api.md). */
function auditFields(spec: SandboxSpec): Record<string, unknown> {
  return {
    sandbox: spec.name,
    policy: spec.policy,
    ...(spec.user !== undefined ? { user: spec.user } : {}),
    match: matchOf(spec),
    ...(spec.labels !== undefined ? { labels: spec.labels } : {}),
  };
}

/** Whether an update changes what the sandbox's connections were admitted under. */
function termsChanged(a: SandboxSpec, b: SandboxSpec): boolean {
  return a.policy !== b.policy || a.user !== b.user || a.interface !== b.interface || a.cidr !== b.cidr;
}

/** A change waiting for its turn; `plan` runs against the registry as the changes before it left it. */
interface Pending {
  readonly action: 'add' | 'update' | 'remove';
  readonly name: string | undefined;
  readonly started: number;
  plan(state: RegistryState): Outcome<Planned>;
  resolve(o: Outcome<Applied>): void;
}

/** What a change does once planned: the registry after it, and its effects once applied. */
interface Planned {
  readonly next: readonly SandboxSpec[];
  /** Audit action and fields, written once the change is in place. */
  readonly audit: { action: string; spec: SandboxSpec };
  /** Connections of this sandbox to reset once the change is in place (removal, new terms). */
  readonly closes?: string;
  /** The sandbox as it was, whose accepted packet flows end with the change. */
  readonly endsFlowsOf?: SandboxSpec;
  readonly forget?: string;
  readonly result: (closed: number) => Applied;
}

type Applied = SandboxView | (SandboxView & { closed: number }) | { removed: string; closed: number };

/** Changes applied together in one nft transaction at most (group commit). */
const MAX_BATCH = 256;

export function createControlService(deps: ControlDeps): ControlService {
  const audit = (fields: Record<string, unknown>): void => deps.runtime().audit.write({ event: 'config', ...fields });
  const rejected = (p: Pending, o: { status: number; error: string }): void =>
    audit({ action: 'sandbox-rejected', request: p.action, ...(p.name !== undefined ? { sandbox: p.name } : {}), status: o.status, reason: o.error });

  /**
   * Group commit: changes that arrive while the firewall is being changed wait, and are then
   * applied together, planned one after the other (each sees the registry the earlier ones
   * left; an invalid one is refused alone) and installed as one nft transaction. An orchestrator
   * starting a hundred sandboxes at once pays for a few transactions, not a hundred; one change
   * alone goes through at once. If the batch's transaction fails, each change is retried alone,
   * so one change never fails because of another.
   */
  const queue: Pending[] = [];
  let scheduled = false;

  const submit = (p: Omit<Pending, 'resolve' | 'started'>): Promise<Outcome<Applied>> =>
    new Promise((resolve) => {
      queue.push({ ...p, started: performance.now(), resolve });
      if (!scheduled) {
        scheduled = true;
        void deps.serial(drain);
      }
    });

  /** Plans `batch` in order against the current runtime; refuses the invalid ones at once. */
  const planAll = (rt: Runtime, batch: Pending[]): { next: readonly SandboxSpec[]; done: { p: Pending; planned: Planned }[] } => {
    let state: RegistryState = rt;
    const done: { p: Pending; planned: Planned }[] = [];
    for (const p of batch) {
      const o = p.plan(state);
      if (!o.ok) {
        rejected(p, o);
        p.resolve(o);
        continue;
      }
      state = { config: rt.config, dynamic: o.value.next };
      done.push({ p, planned: o.value });
    }
    return { next: state.dynamic, done };
  };

  /** Installs `next` (one nft transaction), swaps the runtime, then each change's effects. */
  const commit = async (rt: Runtime, next: readonly SandboxSpec[], done: { p: Pending; planned: Planned }[]): Promise<boolean> => {
    try {
      await deps.updateFirewall(rt.dynamic.map(matchOf), next.map(matchOf));
    } catch (err) {
      if (done.length > 1) return false;
      const o = {
        ok: false as const,
        status: 500,
        error: `the firewall could not be updated, so nothing changed: ${(err as Error).message.replace(/\.$/, '')}`,
      };
      for (const { p } of done) {
        rejected(p, o);
        p.resolve(o);
      }
      return true;
    }
    const nextRt = withDynamicSandboxes(rt, next);
    // Same tick as the swap: a connection identified before it is tracked and closed here; one
    // identified after it does not find the sandbox (src/net/conn-registry.ts).
    deps.swap(nextRt);
    const closed = done.map(({ planned }) => {
      if (planned.forget !== undefined) nextRt.dnsAnswers.forget(planned.forget);
      return planned.closes !== undefined ? deps.conns.close(planned.closes) : 0;
    });
    // Accepted UDP flows keep passing on their conntrack mark; they end before anyone is told.
    const ending = done.flatMap(({ planned }) => (planned.endsFlowsOf !== undefined ? [planned.endsFlowsOf] : []));
    if (ending.length > 0 && deps.endFlows) await deps.endFlows(ending);
    done.forEach(({ p, planned }, i) => {
      const n = closed[i] ?? 0;
      audit({
        action: planned.audit.action,
        ...auditFields(planned.audit.spec),
        ...(p.action !== 'add' ? { closed: n } : {}),
        ms: Math.round((performance.now() - p.started) * 10) / 10,
      });
      p.resolve({ ok: true, value: planned.result(n) });
    });
    return true;
  };

  const drain = async (): Promise<void> => {
    scheduled = false;
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      const rt = deps.runtime();
      const { next, done } = planAll(rt, batch);
      if (done.length === 0) continue;
      if (await commit(rt, next, done)) continue;
      // The batch's transaction failed: each change alone, in order.
      for (const { p } of done) {
        const one = deps.runtime();
        const alone = planAll(one, [p]);
        if (alone.done.length === 1) await commit(one, alone.next, alone.done);
      }
    }
  };

  return {
    list() {
      const rt = deps.runtime();
      return [
        ...rt.config.sandboxes.map((s) => view(s, 'config', deps.conns.count(s.name))),
        ...rt.dynamic.map((s) => view(s, 'api', deps.conns.count(s.name))),
      ];
    },

    get(name) {
      const rt = deps.runtime();
      const cfg = rt.config.sandboxes.find((s) => s.name === name);
      if (cfg) return { ok: true, value: view(cfg, 'config', deps.conns.count(name)) };
      const found = lookup(rt, name);
      return found.ok ? { ok: true, value: view(found.value, 'api', deps.conns.count(name)) } : found;
    },

    add(body) {
      return submit({
        action: 'add',
        name: typeof body.name === 'string' ? body.name : undefined,
        plan: (state) => {
          const o = planAdd(state, body);
          if (!o.ok) return o;
          const { spec, next } = o.value;
          return { ok: true, value: { next, audit: { action: 'sandbox-added', spec }, result: () => view(spec, 'api', 0) } };
        },
      }) as Promise<Outcome<SandboxView>>;
    },

    update(name, body) {
      return submit({
        action: 'update',
        name,
        plan: (state) => {
          const o = planUpdate(state, name, body);
          if (!o.ok) return o;
          const { before, spec, next } = o.value;
          // Connections admitted under other terms (policy, user, match) do not carry on under
          // the new ones; a labels-only change leaves them alone.
          return {
            ok: true,
            value: {
              next,
              audit: { action: 'sandbox-updated', spec },
              ...(termsChanged(before, spec) ? { closes: name, endsFlowsOf: before } : {}),
              result: (closed) => ({ ...view(spec, 'api', deps.conns.count(name)), closed }),
            },
          };
        },
      }) as Promise<Outcome<SandboxView & { closed: number }>>;
    },

    quarantined() {
      return deps.quarantine?.list() ?? [];
    },

    release(name) {
      const e = deps.quarantine?.release(name);
      return e !== undefined ? { ok: true, value: { released: e } } : { ok: false, status: 404, error: `sandbox ${JSON.stringify(name)} is not quarantined` };
    },

    reload() {
      return deps.reload ? deps.reload() : Promise.resolve({ ok: false, status: 501, error: 'this sandgate cannot reload through the control API' });
    },

    remove(name) {
      return submit({
        action: 'remove',
        name,
        plan: (state) => {
          const o = planRemove(state, name);
          if (!o.ok) return o;
          // What the DNS responder told it is forgotten too, so a later sandbox of the same name
          // does not inherit its raw-TCP destinations (src/dns/answer-log.ts).
          return {
            ok: true,
            value: {
              next: o.value.next,
              audit: { action: 'sandbox-removed', spec: o.value.removed },
              closes: name,
              endsFlowsOf: o.value.removed,
              forget: name,
              result: (closed) => ({ removed: name, closed }),
            },
          };
        },
      }) as Promise<Outcome<{ removed: string; closed: number }>>;
    },
  };
}
