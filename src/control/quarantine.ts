/**
 * Quarantined sandboxes: a tripwire (src/creds/tripwire.ts) under `onTripwire: quarantine` cuts
 * its sandbox off from everything (every new connection, DNS query and packet is denied with
 * reason `quarantined`; what it has open is closed) until an operator releases it through the
 * control API (`DELETE /quarantine/NAME`, `sandgate sandbox release NAME`).
 *
 * One instance per process, carried from runtime to runtime (reloads and control API changes
 * keep it), held in memory: a restart forgets it. The data path only asks has(), a lookup in a
 * map that is empty unless something tripped. What a quarantine does beyond the record (the
 * audit line, closing connections, telling the other processes of `workers: N`) is the
 * listener's, set by the daemon or a worker.
 */

import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';
import type { TripwireHit } from '../creds/tripwire.js';

/** The reason a quarantined sandbox's connections, requests, queries and packets are refused with. */
export const QUARANTINED = 'quarantined';

/** The reason a tripwire line gives: the credential and where, never the placeholder or a secret. */
export function tripwireReason(hit: TripwireHit, host: string | undefined): string {
  const to = host !== undefined ? ` toward ${host}` : '';
  return `tripwire: the placeholder of credential "${hit.credential}" in the ${hit.where}${to}, where that credential is not bound`;
}

/**
 * After a tripwire's own audit line: under `onTripwire: quarantine` (the sandbox's policy, else
 * the global key) the sandbox is quarantined. True if this tripwire quarantined it.
 */
export function afterTripwire(rt: Runtime, sandbox: Sandbox, hit: TripwireHit, reason: string): boolean {
  if (sandbox.policy.onTripwire !== 'quarantine') return false;
  return rt.quarantine.trip({ sandbox: sandbox.name, since: new Date().toISOString(), credential: hit.credential, reason });
}

/** One quarantined sandbox, as the control API lists it. */
export interface QuarantineEntry {
  readonly sandbox: string;
  /** ISO 8601 time of the tripwire. */
  readonly since: string;
  /** The credential whose placeholder tripped it. */
  readonly credential: string;
  /** Why, in words (never a placeholder or a secret). */
  readonly reason: string;
}

export class Quarantine {
  readonly #held = new Map<string, QuarantineEntry>();
  #onTrip: ((entry: QuarantineEntry) => void) | undefined;

  /** The process's reaction to a new quarantine (audit, closing connections, telling the others). */
  listen(fn: (entry: QuarantineEntry) => void): void {
    this.#onTrip = fn;
  }

  has(sandbox: string): boolean {
    return this.#held.size !== 0 && this.#held.has(sandbox);
  }

  list(): QuarantineEntry[] {
    return [...this.#held.values()];
  }

  /** Quarantines the sandbox (once: a second tripwire while held changes nothing); true if it was new. */
  trip(entry: QuarantineEntry): boolean {
    if (this.#held.has(entry.sandbox)) return false;
    this.#held.set(entry.sandbox, entry);
    this.#onTrip?.(entry);
    return true;
  }

  /** Lifts the quarantine; the entry that was lifted, or undefined if the sandbox was not held. */
  release(sandbox: string): QuarantineEntry | undefined {
    const e = this.#held.get(sandbox);
    if (e !== undefined) this.#held.delete(sandbox);
    return e;
  }

  /**
   * Replaces the whole set (a worker takes the primary's, src/cluster/worker.ts) without calling
   * the listener; returns the names that were not held before.
   */
  replace(entries: readonly QuarantineEntry[]): string[] {
    const added = entries.filter((e) => !this.#held.has(e.sandbox)).map((e) => e.sandbox);
    this.#held.clear();
    for (const e of entries) this.#held.set(e.sandbox, e);
    return added;
  }
}
