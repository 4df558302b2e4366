import { isIP, type LookupFunction } from 'node:net';
import { SandgateError } from '../errors.js';
import type { AddressGuard } from './address-guard.js';
import type { UpstreamResolver } from './resolver.js';

/**
 * DNS for upstream connections: sandgate's own resolver, then the SSRF guard. Node calls lookup
 * with {all: true} when autoSelectFamily is on (Node 20 default). Built once per config load
 * (src/upstream/upstream.ts), never per request.
 */
export function createGuardedLookup(resolver: UpstreamResolver, guard: AddressGuard): LookupFunction {
  return (hostname, options, cb) => {
    resolver
      .resolve(hostname)
      .then((addrs) => {
        const ok = addrs.filter((a) => guard.check(a) === undefined);
        if (ok.length === 0) {
          const why = addrs[0] !== undefined ? guard.check(addrs[0]) : `no address for ${hostname}`;
          throw new SandgateError(why ?? 'no usable address', 'UPSTREAM_FORBIDDEN');
        }
        if ((options as { all?: boolean }).all)
          (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(
            null,
            ok.map((address) => ({ address, family: 4 })),
          );
        else cb(null, ok[0] as string, 4);
      })
      .catch((err: Error) => cb(err as NodeJS.ErrnoException, '', 4));
  };
}

/**
 * Node's net.connect never calls `lookup` for a host that is an IP literal, so the guard above
 * would not see it: every connection to a literal (a plain-HTTP Host of 10.0.0.1 in report mode)
 * is checked here instead. The refusal, or undefined.
 */
export function literalRefused(host: string, guard: AddressGuard): SandgateError | undefined {
  if (isIP(host) === 0) return undefined;
  const why = guard.check(host);
  return why !== undefined ? new SandgateError(why, 'UPSTREAM_FORBIDDEN') : undefined;
}
