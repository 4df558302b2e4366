import { inAny, parseCidr, parseIp, FORBIDDEN_UPSTREAM, type Cidr } from '../util/ip.js';

/**
 * The SSRF guard: loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved and
 * unspecified upstream addresses are refused unless `upstream.allowPrivate` lists them.
 * Returns the reason, or undefined when the address may be used.
 */
export class AddressGuard {
  private readonly allowed: readonly Cidr[];
  constructor(allowPrivate: readonly string[]) {
    this.allowed = allowPrivate.map((t) => parseCidr(t)).filter((c): c is Cidr => !('error' in c));
  }

  check(address: string): string | undefined {
    const ip = parseIp(address);
    if (!ip) return `${address} is not an IP address`;
    const bad = inAny(FORBIDDEN_UPSTREAM, ip);
    if (!bad) return undefined;
    if (inAny(this.allowed, ip)) return undefined;
    return `upstream address ${address} is in ${bad.text}, a range not allowed (upstream.allowPrivate)`;
  }
}
