/**
 * The upstream room: everything sandgate uses to reach the outside on a sandbox's behalf, built
 * once per config load as plain fields of the Runtime (rt.upstream, rt.tokenNet). The data path
 * reads the fields; nothing here is looked up per request.
 *
 * What a reload keeps (buildUpstream's `previous`): the resolver and its cache, when the
 * `upstream` section is unchanged (names resolve the same way). The TLS trust is rebuilt on every
 * load (a SIGHUP picks up a rotated upstream.caFile), and the pool with it: connections made
 * under one trust are never reused under another. A Runtime derived without a reload
 * (withDynamicSandboxes) shares the whole room, pool included.
 */
import type { LookupFunction } from 'node:net';
import type { Config } from '../config/types.js';
import type { TokenNet } from '../creds/credential.js';
import { AddressGuard } from './address-guard.js';
import { createGuardedLookup } from './lookup.js';
import { UpstreamPool } from './pool.js';
import { UpstreamResolver } from './resolver.js';
import { createUpstreamTls, type UpstreamTls } from './tls.js';

export interface Upstream {
  /** sandgate's own resolver (static hosts, upstream.resolver), with its cache. */
  readonly resolver: UpstreamResolver;
  /** The SSRF guard (upstream.allowPrivate). */
  readonly guard: AddressGuard;
  /** resolver then guard, for Node's `lookup` option: the relay's pool, WebSocket upgrades, token services. */
  readonly lookup: LookupFunction;
  /** Trust roots (system + upstream.caFile) and the https.Agent token services use. */
  readonly tls: UpstreamTls;
  /** The relay's keep-alive pool, made under `tls`. */
  readonly pool: UpstreamPool;
}

/** `previous`: the room of the Runtime being replaced, and the config it was built from. */
export function buildUpstream(cfg: Config['upstream'], previous?: { readonly cfg: Config['upstream']; readonly upstream: Upstream }): Upstream {
  // Keep the resolver's cache across reloads that do not change how names resolve.
  const same = previous !== undefined && JSON.stringify(previous.cfg) === JSON.stringify(cfg);
  const resolver = same ? previous.upstream.resolver : new UpstreamResolver(cfg);
  const guard = new AddressGuard(cfg.allowPrivate);
  const lookup = createGuardedLookup(resolver, guard);
  const tls = createUpstreamTls(cfg);
  return { resolver, guard, lookup, tls, pool: new UpstreamPool(tls, lookup, guard, cfg.connectTimeoutMs) };
}

/** How token sources reach their services: the same resolver, SSRF guard and upstream TLS trust. */
export function tokenNetOf(up: Upstream): TokenNet {
  return { lookup: up.lookup, guard: up.guard, httpsAgent: up.tls.agent };
}
