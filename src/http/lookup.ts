import type { LookupFunction } from 'node:net';
import { SandgateError } from '../errors.js';
import type { Runtime } from '../runtime.js';

const cache = new WeakMap<Runtime, LookupFunction>();

/**
 * DNS for upstream connections: sandgate's own resolver, then the SSRF guard. Node calls lookup
 * with {all: true} when autoSelectFamily is on (Node 20 default). One function per Runtime.
 */
export function guardedLookup(rt: Runtime): LookupFunction {
  let fn = cache.get(rt);
  if (fn) return fn;
  fn = (hostname, options, cb) => {
    rt.resolver.resolve(hostname).then((addrs) => {
      const ok = addrs.filter((a) => rt.guard.check(a) === undefined);
      if (ok.length === 0) {
        const why = addrs[0] !== undefined ? rt.guard.check(addrs[0]) : `no address for ${hostname}`;
        throw new SandgateError(why ?? 'no usable address', 'UPSTREAM_FORBIDDEN');
      }
      if ((options as { all?: boolean }).all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, ok.map((address) => ({ address, family: 4 })));
      else cb(null, ok[0] as string, 4);
    }).catch((err: Error) => cb(err as NodeJS.ErrnoException, '', 4));
  };
  cache.set(rt, fn);
  return fn;
}
