/** Policies: named lists of allow rules (TLS/HTTP by name, raw TCP, UDP). Documented in docs/policy.md. */
import type { AllowRule, CredentialConfig, PolicyConfig, UdpRule } from '../types.js';
import { hostPatternProblem, normaliseHost } from '../../policy/host-name.js';
import { parseCidr } from '../../util/ip.js';
import { ECH_CHOICES } from './basics.js';
import { DEFAULTS } from '../defaults.js';
import { readMetadata } from './metadata.js';
import { NAME, TOKEN, type Obj, type PathPart, type Reader } from './reader.js';

export function policies(v: Reader, raw: unknown, credentials: Record<string, CredentialConfig>): Record<string, PolicyConfig> {
  const out: Record<string, PolicyConfig> = {};
  if (raw === undefined || raw === null) return out; // already reported as a missing required key
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    v.fail(['policies'], 'must be a mapping of policy name to policy');
    return out;
  }
  for (const [name, val] of Object.entries(raw as Obj)) {
    const p = ['policies', name];
    if (!NAME.test(name)) {
      v.fail(p, `policy name "${name}" must match [A-Za-z0-9_.-]{1,64}`, true);
      continue;
    }
    const po = v.obj(val, p, ['mode', 'allow', 'unlisted', 'askTimeoutMs', 'metadata', 'onTripwire']);
    if (!po) continue;
    const mode = po.mode === undefined ? 'enforce' : (v.oneOf(po.mode, [...p, 'mode'], ['enforce', 'report'] as const) ?? 'enforce');
    const allow: AllowRule[] = [];
    const udp: UdpRule[] = [];
    if (po.allow !== undefined && po.allow !== null) {
      (v.list(po.allow, [...p, 'allow']) ?? []).forEach((r, i) => {
        if (r !== null && typeof r === 'object' && (r as Obj).protocol === 'udp') {
          const u = udpRule(v, r as Obj, [...p, 'allow', i], `policies.${name}.allow[${i}]`);
          if (u) udp.push(u);
          return;
        }
        const rule = readRule(v, r, [...p, 'allow', i], credentials);
        if (rule) allow.push(rule);
      });
    }
    const metadata = po.metadata !== undefined && po.metadata !== null ? readMetadata(v, po.metadata, [...p, 'metadata']) : undefined;
    const unlisted = po.unlisted === undefined ? 'deny' : (v.oneOf(po.unlisted, [...p, 'unlisted'], ['deny', 'ask'] as const) ?? 'deny');
    const askTimeoutMs = v.int(po.askTimeoutMs, [...p, 'askTimeoutMs'], 1000, 3_600_000, DEFAULTS.askTimeoutMs);
    if (po.askTimeoutMs !== undefined && (po.unlisted === undefined || po.unlisted === 'deny'))
      v.fail([...p, 'askTimeoutMs'], 'only applies with unlisted: ask');
    const onTripwire = po.onTripwire === undefined ? undefined : v.oneOf(po.onTripwire, [...p, 'onTripwire'], ['deny', 'quarantine'] as const);
    out[name] = {
      mode,
      allow,
      unlisted,
      askTimeoutMs,
      ...(udp.length > 0 ? { udp } : {}),
      ...(metadata ? { metadata } : {}),
      ...(onTripwire !== undefined ? { onTripwire } : {}),
    };
  }
  return out;
}

/**
 * `protocol: udp`: an exact host name (no wildcard: a datagram carries no name, so only
 * addresses sandgate resolved for the name can match) or a CIDR, and explicit ports.
 */
function udpRule(v: Reader, r: Obj, p: PathPart[], id: string): UdpRule | undefined {
  const o = v.obj(r, p, ['protocol', 'host', 'cidr', 'ports'], ['ports']);
  if (!o) return undefined;
  if ((o.host === undefined) === (o.cidr === undefined)) return v.fail(p, 'a udp rule needs exactly one of "host" or "cidr"');
  let host: string | undefined;
  let cidr: string | undefined;
  if (o.host !== undefined) {
    if (typeof o.host !== 'string') return v.fail([...p, 'host'], 'must be a host name such as ntp.example.com');
    host = normaliseHost(o.host);
    if (host.startsWith('*.'))
      return v.fail([...p, 'host'], 'a udp rule needs an exact host name (a datagram carries no name to match a wildcard against); use "cidr" for a range');
    const problem = hostPatternProblem(host);
    if (problem) return v.fail([...p, 'host'], problem);
  } else {
    if (typeof o.cidr !== 'string') return v.fail([...p, 'cidr'], 'must be an IPv4 CIDR such as 192.0.2.0/24');
    const c = parseCidr(o.cidr);
    if ('error' in c) return v.fail([...p, 'cidr'], c.error);
    if (c.family !== 4) return v.fail([...p, 'cidr'], 'must be an IPv4 CIDR (sandbox IPv6 is never carried)');
    cidr = o.cidr;
  }
  if (o.ports === undefined || o.ports === null) return undefined; // reported as a missing required key
  const list = v.list(o.ports, [...p, 'ports']);
  if (!list) return undefined;
  if (list.length === 0) return v.fail([...p, 'ports'], 'must list at least one port');
  const ports = list.map((x, i) => v.port(x, [...p, 'ports', i]));
  if (ports.some((x) => x === undefined)) return undefined;
  return { id, ...(host !== undefined ? { host } : {}), ...(cidr !== undefined ? { cidr } : {}), ports: ports as number[] };
}

function readRule(v: Reader, raw: unknown, p: PathPart[], credentials: Record<string, CredentialConfig>): AllowRule | undefined {
  const r = v.obj(raw, p, ['host', 'ports', 'protocol', 'inject', 'methods', 'paths', 'plainHttp', 'ech'], ['host']);
  if (!r) return undefined;
  let host: string | undefined;
  if (typeof r.host !== 'string') v.fail([...p, 'host'], 'must be a host name such as api.example.com or *.example.com');
  else {
    host = normaliseHost(r.host);
    const problem = hostPatternProblem(host);
    if (problem) {
      v.fail([...p, 'host'], problem);
      host = undefined;
    }
  }
  let ports = [443];
  if (r.ports !== undefined) {
    const list = v.list(r.ports, [...p, 'ports']) ?? [];
    if (list.length === 0) v.fail([...p, 'ports'], 'must list at least one port');
    ports = list.map((x, i) => v.port(x, [...p, 'ports', i]) ?? 0);
  }
  // 'udp' never gets here (policies() hands it to udpRule), but it is a valid answer to name.
  const protocol =
    r.protocol === undefined ? 'tls' : r.protocol === 'tls' || r.protocol === 'tcp' ? r.protocol : v.fail([...p, 'protocol'], 'must be one of: tls, tcp, udp');
  let inject: string | undefined;
  if (r.inject !== undefined) {
    inject = v.str(r.inject, [...p, 'inject']);
    if (inject !== undefined && !credentials[inject]) {
      v.fail([...p, 'inject'], `unknown credential "${inject}" (not under credentials)`);
      inject = undefined;
    }
  }
  let methods: string[] | undefined;
  if (r.methods !== undefined) {
    methods = (v.list(r.methods, [...p, 'methods']) ?? []).map((m, i) => (v.str(m, [...p, 'methods', i], TOKEN, 'an HTTP method') ?? '').toUpperCase());
    if (methods.length === 0) v.fail([...p, 'methods'], 'must list at least one method (omit the key to allow any)');
  }
  let paths: string[] | undefined;
  if (r.paths !== undefined) {
    paths = (v.list(r.paths, [...p, 'paths']) ?? []).map((g, i) => v.str(g, [...p, 'paths', i], /^\/[\x21-\x7e]*$/, 'a path glob starting with "/"') ?? '');
    if (paths.length === 0) v.fail([...p, 'paths'], 'must list at least one glob (omit the key to allow any path)');
  }
  let plainHttp: boolean | undefined;
  if (r.plainHttp !== undefined) {
    if (typeof r.plainHttp !== 'boolean') v.fail([...p, 'plainHttp'], 'must be true or false');
    else plainHttp = r.plainHttp;
  }
  const ech = r.ech === undefined ? undefined : v.oneOf(r.ech, [...p, 'ech'], ECH_CHOICES);
  const intercepted = inject !== undefined || methods !== undefined || paths !== undefined;
  if (protocol === 'tcp' && r.ech !== undefined) v.fail([...p, 'ech'], 'only applies to TLS rules (a raw TCP rule never reads a ClientHello)');
  if (protocol === 'tcp' && (intercepted || plainHttp))
    v.fail([...p, 'protocol'], 'a raw TCP rule cannot inject, check methods/paths or use plainHttp (those need TLS interception)');
  if (plainHttp && !intercepted) v.fail([...p, 'plainHttp'], 'only applies to an intercepted host (one with inject, methods or paths)');
  // plainHttp means "http://host/ works": without explicit ports, port 80 joins the default 443
  // (docs/interception.md: plain HTTP on 80 goes upstream as TLS on 443).
  if (plainHttp && r.ports === undefined) ports = [443, 80];
  if (host === undefined || protocol === undefined) return undefined;
  if (protocol === 'tcp' && host.startsWith('*.'))
    v.fail([...p, 'host'], 'a raw TCP rule needs an exact host name: without SNI a wildcard could only be matched from DNS answers');
  return {
    host,
    ports,
    protocol,
    ...(inject !== undefined ? { inject } : {}),
    ...(methods !== undefined ? { methods } : {}),
    ...(paths !== undefined ? { paths } : {}),
    ...(plainHttp !== undefined ? { plainHttp } : {}),
    ...(ech !== undefined ? { ech } : {}),
  };
}
