import { promises as dnsp } from 'node:dns';
import net from 'node:net';
import type { Config } from '../config/types.js';
import { SandgateError } from '../errors.js';
import { parseHostPort } from '../util/ip.js';

const MIN_TTL_S = 5;
const MAX_TTL_S = 300;
const NEGATIVE_TTL_S = 5;
/** `upstream.hosts` answers are handed to sandboxes (DNS) with this TTL: a reload may change them. */
const STATIC_TTL_S = 60;
/**
 * Cache entries (positive and negative) kept at most. A wildcard rule lets a sandbox ask for
 * unboundedly many distinct allowed names, so the cache must not grow with them.
 */
const MAX_CACHE_ENTRIES = 10_000;

/**
 * How sandgate itself resolves upstream names: static `upstream.hosts` first (split horizon,
 * tests), then `upstream.resolver` (or the host's resolv.conf). Never the address the sandbox
 * chose: a sandbox cannot steer an allowed name to an address of its choosing.
 * Answers are cached with their TTL clamped to [5 s, 300 s]; one lookup in flight per name.
 */
export class UpstreamResolver {
  private readonly statics: ReadonlyMap<string, readonly string[]>;
  private readonly resolver: dnsp.Resolver;
  private readonly cache = new Map<string, { addrs: readonly string[]; expires: number; error?: string; code?: string }>();
  private readonly inflight = new Map<string, Promise<readonly string[]>>();

  constructor(cfg: Config['upstream']) {
    this.statics = new Map(Object.entries(cfg.hosts));
    this.resolver = new dnsp.Resolver({ timeout: 2000, tries: 2 });
    if (cfg.resolver !== undefined) {
      const hp = parseHostPort(cfg.resolver, 53);
      if (hp) this.resolver.setServers([net.isIPv6(hp.host) ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`]);
    }
  }

  /** Cached answer without I/O (undefined when not cached or expired). */
  peek(host: string): readonly string[] | undefined {
    const s = this.statics.get(host);
    if (s) return s;
    const c = this.cache.get(host);
    return c && c.expires > Date.now() && !c.error ? c.addrs : undefined;
  }

  async resolve(host: string): Promise<readonly string[]> {
    const s = this.statics.get(host);
    if (s) return s;
    const c = this.cache.get(host);
    if (c && c.expires > Date.now()) {
      if (c.error) throw new SandgateError(c.error, 'UPSTREAM_RESOLVE', { cause: Object.assign(new Error(c.error), { code: c.code }) });
      return c.addrs;
    }
    let p = this.inflight.get(host);
    if (!p) {
      p = this.lookup(host).finally(() => this.inflight.delete(host));
      this.inflight.set(host, p);
    }
    return p;
  }

  /**
   * resolve() plus the seconds the answer stays valid (for sandgate's DNS responder): the
   * remaining lifetime of the cached answer, so a sandbox never caches past sandgate's own view.
   * A failure's c-ares code (ENOTFOUND, ENODATA, ETIMEOUT...) is on `err.cause.code`.
   */
  async resolveWithTtl(host: string): Promise<{ addrs: readonly string[]; ttl: number }> {
    const s = this.statics.get(host);
    if (s) return { addrs: s, ttl: STATIC_TTL_S };
    const addrs = await this.resolve(host);
    const c = this.cache.get(host);
    const left = c && !c.error ? Math.ceil((c.expires - Date.now()) / 1000) : MIN_TTL_S;
    return { addrs, ttl: Math.min(MAX_TTL_S, Math.max(1, left)) };
  }

  private remember(host: string, entry: { addrs: readonly string[]; expires: number; error?: string; code?: string }): void {
    if (this.cache.size >= MAX_CACHE_ENTRIES && !this.cache.has(host)) {
      const now = Date.now();
      for (const [k, v] of this.cache) if (v.expires <= now) this.cache.delete(k);
      // Still full: drop the oldest tenth (Map iterates in insertion order), so the sweep above
      // runs once per MAX_CACHE_ENTRIES / 10 new names rather than on every one.
      for (const k of this.cache.keys()) {
        if (this.cache.size < MAX_CACHE_ENTRIES * 0.9) break;
        this.cache.delete(k);
      }
    }
    this.cache.delete(host); // re-insert at the end: the order is then oldest-written first
    this.cache.set(host, entry);
  }

  private async lookup(host: string): Promise<readonly string[]> {
    try {
      const records = await this.resolver.resolve4(host, { ttl: true });
      if (records.length === 0) throw Object.assign(new Error('no addresses'), { code: 'ENODATA' });
      const ttl = Math.min(MAX_TTL_S, Math.max(MIN_TTL_S, Math.min(...records.map((r) => r.ttl))));
      const addrs = Object.freeze(records.map((r) => r.address));
      this.remember(host, { addrs, expires: Date.now() + ttl * 1000 });
      return addrs;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      const message = `cannot resolve ${host} (${code})`;
      this.remember(host, { addrs: [], expires: Date.now() + NEGATIVE_TTL_S * 1000, error: message, code });
      throw new SandgateError(message, 'UPSTREAM_RESOLVE', { cause: err });
    }
  }

  clear(): void {
    this.cache.clear();
  }
}
