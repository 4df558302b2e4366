/** The upstream section: resolver, static hosts, trust, the SSRF guard's exceptions, timeouts. */
import net from 'node:net';
import type { Config } from '../types.js';
import { DEFAULTS } from '../defaults.js';
import { isHostName, normaliseHost } from '../../policy/host-name.js';
import { parseCidr, parseHostPort } from '../../util/ip.js';
import type { Obj, Reader } from './reader.js';

export function upstream(v: Reader, raw: unknown): Config['upstream'] {
  const p = ['upstream'];
  const u = v.optObj(raw, p, ['resolver', 'hosts', 'caFile', 'allowPrivate', 'connectTimeoutMs']);
  let resolver: string | undefined;
  if (u.resolver !== undefined) {
    if (typeof u.resolver !== 'string' || !parseHostPort(u.resolver, 53)) v.fail([...p, 'resolver'], 'must be "IP" or "IP:PORT" (IPv6 as "[IP]:PORT")');
    else resolver = u.resolver;
  }
  const hosts: Record<string, string[]> = {};
  if (u.hosts !== undefined && u.hosts !== null) {
    if (typeof u.hosts !== 'object' || Array.isArray(u.hosts)) v.fail([...p, 'hosts'], 'must be a mapping of host name to IP address(es)');
    else
      for (const [name, val] of Object.entries(u.hosts as Obj)) {
        const hp = [...p, 'hosts', name];
        const host = normaliseHost(name);
        if (!isHostName(host)) {
          v.fail(hp, `"${name}" is not a valid host name`, true);
          continue;
        }
        const addrs = Array.isArray(val) ? val : [val];
        const ok: string[] = [];
        addrs.forEach((a, i) => {
          if (typeof a !== 'string' || net.isIP(a) === 0) v.fail(Array.isArray(val) ? [...hp, i] : hp, 'must be an IP address (or a list of them)');
          else ok.push(a);
        });
        if (addrs.length === 0) v.fail(hp, 'must list at least one IP address');
        hosts[host] = ok;
      }
  }
  const allowPrivate: string[] = [];
  if (u.allowPrivate !== undefined) {
    (v.list(u.allowPrivate, [...p, 'allowPrivate']) ?? []).forEach((c, i) => {
      const cp = [...p, 'allowPrivate', i];
      if (typeof c !== 'string') return v.fail(cp, 'must be a CIDR such as 10.0.0.0/8');
      const parsed = parseCidr(c);
      if ('error' in parsed) return v.fail(cp, parsed.error);
      allowPrivate.push(c);
      return undefined;
    });
  }
  return {
    ...(resolver !== undefined ? { resolver } : {}),
    hosts,
    ...(u.caFile !== undefined ? { caFile: v.str(u.caFile, [...p, 'caFile']) ?? '' } : {}),
    allowPrivate,
    connectTimeoutMs: v.int(u.connectTimeoutMs, [...p, 'connectTimeoutMs'], 100, 120000, DEFAULTS.upstream.connectTimeoutMs),
  };
}
