/**
 * Open connections per sandbox, so that removing (or re-terming) a registered sandbox closes
 * every connection it has at once: TLS passthrough and raw TCP relays, plain and intercepted
 * HTTP (keep-alive included), WebSockets, DNS over TCP. Without this, a removed sandbox would
 * keep whatever it had open for as long as it liked.
 *
 * track() is called right after a connection is identified, in the same tick; close() runs in
 * the same tick as the runtime swap that forgets the sandbox. A connection identified with the
 * runtime from before the swap (it waited for a route lookup meanwhile) is caught by the spec
 * check in track(): a registered sandbox's spec object changes on every update and is gone on
 * removal, so a stale one is refused and its socket destroyed.
 */
import type net from 'node:net';
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';

export class ConnRegistry {
  private readonly bySandbox = new Map<string, Set<net.Socket>>();
  /** Sockets close() destroyed that have not emitted 'close' yet (see settled()). */
  private readonly closing = new Set<Promise<void>>();

  constructor(private readonly runtime: () => Runtime) {}

  /**
   * Remembers `socket` as one of `sandbox`'s until it closes. False (and the socket destroyed)
   * when the sandbox is a registered one that has since been removed or changed.
   */
  track(sandbox: Sandbox, socket: net.Socket): boolean {
    if (sandbox.source === 'api' && this.runtime().sandboxes.byName(sandbox.name)?.spec !== sandbox.spec) {
      destroy(socket);
      return false;
    }
    if (socket.destroyed) return true;
    let set = this.bySandbox.get(sandbox.name);
    if (!set) {
      set = new Set();
      this.bySandbox.set(sandbox.name, set);
    }
    const owned = set;
    owned.add(socket);
    socket.once('close', () => {
      owned.delete(socket);
      if (owned.size === 0 && this.bySandbox.get(sandbox.name) === owned) this.bySandbox.delete(sandbox.name);
    });
    return true;
  }

  /**
   * `to` carries on what `from` was (the TLS socket sandgate terminated on top of the TCP one):
   * `to` is tracked in its place, so a connection counts once, and destroying `to` closes `from`.
   */
  handOver(sandbox: Sandbox, from: net.Socket, to: net.Socket): boolean {
    const set = this.bySandbox.get(sandbox.name);
    if (!this.track(sandbox, to)) return false;
    set?.delete(from);
    return true;
  }

  /** Resets every open connection (a stop whose grace period ran out); returns how many there were. */
  closeAll(): number {
    let n = 0;
    for (const name of [...this.bySandbox.keys()]) n += this.close(name);
    return n;
  }

  /** Open connections of a sandbox. */
  count(name: string): number {
    return this.bySandbox.get(name)?.size ?? 0;
  }

  /** Resets every open connection of the sandbox; returns how many there were. */
  close(name: string): number {
    const set = this.bySandbox.get(name);
    if (!set) return 0;
    this.bySandbox.delete(name);
    const n = set.size;
    for (const s of set) {
      if (!s.closed) {
        const p = new Promise<void>((resolve) => s.once('close', () => resolve()));
        this.closing.add(p);
        void p.then(() => this.closing.delete(p));
      }
      destroy(s);
    }
    return n;
  }

  /**
   * Resolves once every socket close() destroyed has emitted 'close', so whatever runs on that
   * event (the relay's last audit line for a request cut off) has run: a stop waits for this
   * before its own last line and the flush.
   */
  async settled(): Promise<void> {
    await Promise.all([...this.closing]);
  }
}

/**
 * A TCP socket is reset (RST, as for a denial); a TLS socket sandgate terminated is destroyed,
 * which closes the TCP socket under it. Either way the relay or HTTP exchange on it ends, and
 * splice/forward tear down the upstream side.
 */
function destroy(socket: net.Socket): void {
  if (socket.destroyed) return;
  // Already closing on sandgate's side (end() called: a refusal on its way, as the request that
  // tripped a quarantine gets): closed without a reset, which would discard that answer unsent.
  if (socket.writableEnded) {
    socket.destroy();
    return;
  }
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy(); // not a plain TCP handle (a TLSSocket): resetAndDestroy refuses it
  }
}
