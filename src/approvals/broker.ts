/**
 * Pending decisions of `unlisted: ask` policies (docs/approvals.md): the data path asks, an
 * approver (control API, webhook) decides, the timer denies. One pending decision per (sandbox,
 * name, port): every DNS query and connection for it waits on the same one and gets the same
 * answer. Bounded per sandbox (approvals.maxPendingPerSandbox) so a sandbox cannot flood the
 * approver, and per decision (MAX_WAITERS) so it cannot pile up held connections behind one.
 *
 * No sockets here: the clock and timers are injected, the effects of a decision (the grant, the
 * audit line, the events) are callbacks, so the whole life of a decision is unit-tested.
 */
import { randomBytes } from 'node:crypto';

export type Via = 'dns' | 'tls' | 'http';
/** What an approver may answer. */
export type Action = 'once' | 'sandbox' | 'policy' | 'deny';
export const ACTIONS: readonly Action[] = ['once', 'sandbox', 'policy', 'deny'];

/** One pending decision as the control API shows it. */
export interface PendingItem {
  readonly id: string;
  readonly sandbox: string;
  readonly user?: string;
  readonly host: string;
  readonly port: number;
  readonly via: Via;
  /** ISO 8601 times: when it was first asked, when it becomes a denial (ask-timeout). */
  readonly since: string;
  readonly expires: string;
}

/** What the waiters get. */
export type Outcome =
  | { readonly allow: true; readonly action: 'once' | 'sandbox' | 'policy'; readonly id: string }
  | { readonly allow: false; readonly reason: string; readonly id?: string };

export type BrokerEvent =
  | ({ readonly event: 'pending' } & PendingItem)
  | { readonly event: 'decided'; readonly id: string; readonly action: Action | 'timeout'; readonly approver: string };

/** Who asks: the sandbox and the policy its decision would change. */
export interface Asker {
  readonly sandbox: string;
  readonly user?: string;
  readonly policy: string;
}

export interface BrokerDeps {
  /** Wall-clock milliseconds (the item's ISO times). */
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(t: unknown): void;
  maxPendingPerSandbox(): number;
  /**
   * Makes a `sandbox` or `policy` approval take effect (a new runtime) before the waiters are
   * released, so what they do next, and every later query, sees it.
   */
  grant(item: PendingItem, policy: string, scope: 'sandbox' | 'policy', approver: string): void;
  audit(fields: Record<string, unknown>): void;
}

/**
 * Connections and queries one sandbox may have held at once, over all its pending decisions: held
 * DNS queries take slots of the responder's shared UDP budget, so one sandbox must not take many.
 */
export const MAX_WAITERS_PER_SANDBOX = 128;

/**
 * How long a `once` approval of a question a DNS query asked also admits that sandbox's next
 * queries and connections for the same name and port. A client resolves, then connects: without
 * this, the connection would be a second question about the same name (two approvals for one
 * curl). Short and fixed: long enough for a client that was just answered to connect (and retry),
 * far shorter than the answer's TTL (up to 300 s) or askTimeoutMs (up to an hour), either of which
 * would make `once` a lasting grant.
 */
export const ONCE_AFTER_DNS_MS = 10_000;

interface Entry {
  readonly item: PendingItem;
  readonly key: string;
  readonly policy: string;
  readonly waiters: ((o: Outcome) => void)[];
  /** Whether a DNS query asked or joined it (a `once` then admits what follows for a while). */
  dns: boolean;
  timer: unknown;
}

/** A `once` approval of a DNS question, still admitting the same (sandbox, name, port). */
interface Pass {
  readonly id: string;
  readonly until: number;
}

function keyOf(sandbox: string, host: string, port: number): string {
  return `${sandbox}\0${host}\0${port}`;
}

export class ApprovalBroker {
  private readonly byId = new Map<string, Entry>();
  private readonly byKey = new Map<string, Entry>();
  private readonly perSandbox = new Map<string, number>();
  private readonly waiting = new Map<string, number>();
  private readonly listeners = new Set<(e: BrokerEvent) => void>();
  private readonly passes = new Map<string, Pass>();

  constructor(private readonly deps: BrokerDeps) {}

  /**
   * Waits for the decision on (who, host, port). `timeoutMs` applies when this call opens the
   * decision; a call that joins an open one waits for that one's deadline.
   */
  ask(who: Asker, host: string, port: number, via: Via, timeoutMs: number): Promise<Outcome> {
    const key = keyOf(who.sandbox, host, port);
    const pass = this.passes.get(key);
    if (pass !== undefined) {
      if (this.deps.now() < pass.until) return Promise.resolve({ allow: true, action: 'once', id: pass.id });
      this.passes.delete(key);
    }
    const held = this.waiting.get(who.sandbox) ?? 0;
    if (held >= MAX_WAITERS_PER_SANDBOX)
      return Promise.resolve({ allow: false, reason: `too many connections and queries waiting for approval (${MAX_WAITERS_PER_SANDBOX})` });
    const open = this.byKey.get(key);
    if (open) {
      if (via === 'dns') open.dns = true;
      this.waiting.set(who.sandbox, held + 1);
      return new Promise((resolve) => open.waiters.push(resolve));
    }
    const max = this.deps.maxPendingPerSandbox();
    const count = this.perSandbox.get(who.sandbox) ?? 0;
    if (count >= max) {
      const reason = `too many pending approvals for this sandbox (approvals.maxPendingPerSandbox: ${max})`;
      this.deps.audit({ action: 'refused', sandbox: who.sandbox, ...(who.user !== undefined ? { user: who.user } : {}), host, port, via, reason });
      return Promise.resolve({ allow: false, reason });
    }
    const now = this.deps.now();
    const item: PendingItem = {
      id: randomBytes(8).toString('hex'),
      sandbox: who.sandbox,
      ...(who.user !== undefined ? { user: who.user } : {}),
      host,
      port,
      via,
      since: new Date(now).toISOString(),
      expires: new Date(now + timeoutMs).toISOString(),
    };
    const entry: Entry = { item, key, policy: who.policy, waiters: [], dns: via === 'dns', timer: undefined };
    const promise = new Promise<Outcome>((resolve) => entry.waiters.push(resolve));
    this.byId.set(item.id, entry);
    this.byKey.set(key, entry);
    this.perSandbox.set(who.sandbox, count + 1);
    this.waiting.set(who.sandbox, held + 1);
    entry.timer = this.deps.setTimer(() => this.settle(entry, 'timeout', 'timeout'), timeoutMs);
    this.deps.audit({ action: 'pending', ...item, policy: who.policy });
    this.emit({ event: 'pending', ...item });
    return promise;
  }

  /** An approver's answer. Undefined: no such pending decision (unknown, or already decided). */
  decide(id: string, action: Action, approver: string): PendingItem | undefined {
    const entry = this.byId.get(id);
    if (!entry) return undefined;
    this.settle(entry, action, approver);
    return entry.item;
  }

  get(id: string): PendingItem | undefined {
    return this.byId.get(id)?.item;
  }

  list(): PendingItem[] {
    return [...this.byId.values()].map((e) => e.item);
  }

  /** Events from now on; the return value unsubscribes. */
  subscribe(fn: (e: BrokerEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Ends the `once` passes of sandboxes `keep` rejects (removed ones: a later sandbox of the same
   * name must not inherit them), or all of them without `keep` (a reload, as for `sandbox` grants).
   */
  endPasses(keep?: (sandbox: string) => boolean): void {
    for (const key of [...this.passes.keys()]) if (keep === undefined || !keep(key.slice(0, key.indexOf('\0')))) this.passes.delete(key);
  }

  /** Denies everything pending (the daemon stops). */
  close(reason: string): void {
    for (const e of [...this.byId.values()]) this.settle(e, 'deny', reason);
  }

  private settle(entry: Entry, action: Action | 'timeout', approver: string): void {
    if (this.byId.get(entry.item.id) !== entry) return;
    this.byId.delete(entry.item.id);
    this.byKey.delete(entry.key);
    const n = (this.perSandbox.get(entry.item.sandbox) ?? 1) - 1;
    if (n <= 0) this.perSandbox.delete(entry.item.sandbox);
    else this.perSandbox.set(entry.item.sandbox, n);
    const w = (this.waiting.get(entry.item.sandbox) ?? 0) - entry.waiters.length;
    if (w <= 0) this.waiting.delete(entry.item.sandbox);
    else this.waiting.set(entry.item.sandbox, w);
    this.deps.clearTimer(entry.timer);
    const { item } = entry;
    if (action === 'sandbox' || action === 'policy') this.deps.grant(item, entry.policy, action, approver);
    if (action === 'once' && entry.dns) this.addPass(entry.key, item.id);
    const ms = Math.max(0, this.deps.now() - Date.parse(item.since));
    this.deps.audit({
      action: action === 'timeout' ? 'timeout' : 'decided',
      id: item.id,
      sandbox: item.sandbox,
      ...(item.user !== undefined ? { user: item.user } : {}),
      host: item.host,
      port: item.port,
      via: item.via,
      decision: action === 'timeout' || action === 'deny' ? 'deny' : 'allow',
      ...(action === 'timeout' ? { reason: 'ask-timeout' } : { scope: action, approver }),
      waiters: entry.waiters.length,
      ms,
    });
    this.emit({ event: 'decided', id: item.id, action, approver });
    const outcome: Outcome =
      action === 'timeout'
        ? { allow: false, reason: 'ask-timeout', id: item.id }
        : action === 'deny'
          ? { allow: false, reason: `denied by approver (${approver})`, id: item.id }
          : { allow: true, action, id: item.id };
    for (const w of entry.waiters.splice(0)) w(outcome);
  }

  private addPass(key: string, id: string): void {
    const now = this.deps.now();
    // Expired passes go here (each lives ONCE_AFTER_DNS_MS): the map holds only recent approvals.
    for (const [k, p] of [...this.passes]) if (p.until <= now) this.passes.delete(k);
    this.passes.set(key, { id, until: now + ONCE_AFTER_DNS_MS });
  }

  private emit(e: BrokerEvent): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch {
        /* a watcher that fails (its stream closed) must not stop the others */
      }
    }
  }
}
