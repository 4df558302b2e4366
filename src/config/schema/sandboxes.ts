/** Sandboxes: who is this source (interface glob and/or IPv4 CIDR), under which policy, for which user. */
import type { PolicyConfig, SandboxConfig } from '../types.js';
import { parseCidr } from '../../util/ip.js';
import { NAME, type Obj, type PathPart, type Reader } from './reader.js';

// The firewall's own rule (render-nft.ts IFACE_RE): IFNAMSIZ-1 = 15 characters counting the "*",
// and no lone "*" (it would cover loopback too); `check` must refuse what `run` cannot install.
const IFACE_GLOB = /^(?:[A-Za-z0-9_.-]{1,15}|[A-Za-z0-9_.-]{1,14}\*)$/;
const USER = /^[\x20-\x7e]{1,128}$/;

/** One sandbox entry (config `sandboxes[i]`, or a control API request at path []). */
export function sandboxEntry(v: Reader, val: unknown, p: PathPart[], policies: Readonly<Record<string, unknown>>): SandboxConfig | undefined {
  const s = v.obj(val, p, ['name', 'interface', 'cidr', 'policy', 'user'], ['name', 'policy']);
  if (!s) return undefined;
  const name = v.str(s.name, [...p, 'name'], NAME, 'a sandbox name matching [A-Za-z0-9_.-]{1,64}');
  let iface: string | undefined;
  if (s.interface !== undefined)
    iface = v.str(s.interface, [...p, 'interface'], IFACE_GLOB, 'an interface name, or a name prefix ending in one "*" (at most 15 characters in all)');
  let cidr: string | undefined;
  if (s.cidr !== undefined) {
    if (typeof s.cidr !== 'string') v.fail([...p, 'cidr'], 'must be an IPv4 CIDR such as 10.77.0.0/24');
    else {
      const c = parseCidr(s.cidr);
      if ('error' in c) v.fail([...p, 'cidr'], c.error);
      else if (c.family !== 4) v.fail([...p, 'cidr'], "must be an IPv4 CIDR (sandboxes' IPv6 is dropped, not routed)");
      else cidr = s.cidr;
    }
  }
  if (s.interface === undefined && s.cidr === undefined) v.fail(p, 'needs "interface" or "cidr" (or both) to say whose traffic this is');
  const policy = v.str(s.policy, [...p, 'policy']);
  if (policy !== undefined && !Object.hasOwn(policies, policy)) v.fail([...p, 'policy'], `unknown policy "${policy}" (not under policies)`);
  let user: string | undefined;
  if (s.user !== undefined) user = v.str(s.user, [...p, 'user'], USER, 'a user name of printable ASCII');
  if (name === undefined || policy === undefined || (iface === undefined && cidr === undefined)) return undefined;
  return {
    name,
    policy,
    ...(iface !== undefined ? { interface: iface } : {}),
    ...(cidr !== undefined ? { cidr } : {}),
    ...(user !== undefined ? { user } : {}),
  };
}

export function sandboxes(v: Reader, raw: unknown, policies: Record<string, PolicyConfig>): SandboxConfig[] {
  const out: SandboxConfig[] = [];
  if (raw === undefined || raw === null) return out; // already reported as a missing required key
  const list = v.list(raw, ['sandboxes']) ?? [];
  const seen = new Set<string>();
  list.forEach((val, i) => {
    const p = ['sandboxes', i];
    const name = (val as Obj | null)?.name;
    if (typeof name === 'string' && NAME.test(name)) {
      if (seen.has(name)) v.fail([...p, 'name'], `duplicate sandbox name "${name}"`);
      seen.add(name);
    }
    const entry = sandboxEntry(v, val, p, policies);
    if (entry) out.push(entry);
  });
  return out;
}
