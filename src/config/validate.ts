import type { AllowRule, Config, CredentialConfig, PolicyConfig, SandboxConfig, SecretSource } from './types.js';
import { hostPatternProblem, isHostName, normaliseHost } from '../policy/host-name.js';
import { parseCidr, parseHostPort } from '../util/ip.js';
import net from 'node:net';

export type PathPart = string | number;
export interface Problem { path: PathPart[]; message: string; atKey?: boolean }

type Obj = Record<string, unknown>;

/**
 * Schema validation of the parsed YAML, by hand: every message names what is wrong in words an
 * operator can act on, unknown keys are errors (a typo must never silently widen or narrow a
 * policy), and defaults are filled in here, once. Returns the config only when there are no problems.
 */
export function validateConfig(raw: unknown): { config?: Config; problems: Problem[] } {
  const v = new Validator();
  const config = v.root(raw);
  return v.problems.length === 0 ? { config, problems: [] } : { problems: v.problems };
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
// The firewall's own rule (render-nft.ts IFACE_RE): IFNAMSIZ-1 = 15 characters counting the "*",
// and no lone "*" (it would cover loopback too); `check` must refuse what `run` cannot install.
const IFACE_GLOB = /^(?:[A-Za-z0-9_.-]{1,15}|[A-Za-z0-9_.-]{1,14}\*)$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // RFC 9110 §5.6.2 token (header names, methods)
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

class Validator {
  problems: Problem[] = [];

  private fail(path: PathPart[], message: string, atKey = false): undefined {
    this.problems.push({ path, message, atKey });
    return undefined;
  }

  private obj(v: unknown, path: PathPart[], keys: readonly string[], required: readonly string[] = []): Obj | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.fail(path, 'must be a mapping');
    const o = v as Obj;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k)) this.fail([...path, k], `unknown key "${k}" (expected one of: ${keys.join(', ')})`, true);
    }
    for (const k of required) if (o[k] === undefined || o[k] === null) this.fail(path, `missing required key "${k}"`);
    return o;
  }

  private optObj(v: unknown, path: PathPart[], keys: readonly string[]): Obj {
    if (v === undefined || v === null) return {};
    return this.obj(v, path, keys) ?? {};
  }

  private str(v: unknown, path: PathPart[], re?: RegExp, what?: string): string | undefined {
    if (typeof v !== 'string' || v.length === 0) return this.fail(path, 'must be a non-empty string');
    if (re && !re.test(v)) return this.fail(path, `"${v}" is not ${what ?? 'valid'}`);
    return v;
  }

  private port(v: unknown, path: PathPart[]): number | undefined {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) return this.fail(path, 'must be a port number from 1 to 65535');
    return v;
  }

  private int(v: unknown, path: PathPart[], min: number, max: number, dflt: number): number {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(path, `must be a whole number from ${min} to ${max}`);
      return dflt;
    }
    return v;
  }

  private list(v: unknown, path: PathPart[]): unknown[] | undefined {
    if (!Array.isArray(v)) return this.fail(path, 'must be a list');
    return v;
  }

  root(raw: unknown): Config {
    const r = this.obj(raw ?? {}, [], ['listen', 'dns', 'log', 'tls', 'upstream', 'firewall', 'sandboxes', 'policies', 'credentials'], ['sandboxes', 'policies']) ?? {};

    const l = this.optObj(r.listen, ['listen'], ['port', 'dnsPort', 'address']);
    const listen = {
      port: l.port === undefined ? 15001 : this.port(l.port, ['listen', 'port']) ?? 15001,
      dnsPort: l.dnsPort === undefined ? 15053 : this.port(l.dnsPort, ['listen', 'dnsPort']) ?? 15053,
      address: l.address === undefined ? '0.0.0.0' : this.ipAddress(l.address, ['listen', 'address']) ?? '0.0.0.0',
    };
    if (listen.port === listen.dnsPort) this.fail(['listen', 'dnsPort'], 'must differ from listen.port');

    const lg = this.optObj(r.log, ['log'], ['file', 'level']);
    const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];
    const log = {
      ...(lg.file !== undefined ? { file: this.str(lg.file, ['log', 'file']) ?? '' } : {}),
      level: lg.level === undefined ? 'info' : this.oneOf(lg.level, ['log', 'level'], levels) ?? 'info',
    };

    const t = this.optObj(r.tls, ['tls'], ['caDir']);
    const tls = { caDir: t.caDir === undefined ? '/var/lib/sandgate' : this.str(t.caDir, ['tls', 'caDir']) ?? '' };

    const upstream = this.upstream(r.upstream);

    const fw = this.optObj(r.firewall, ['firewall'], ['table', 'mark', 'routeTable']);
    const firewall = {
      table: fw.table === undefined ? 'sandgate' : this.str(fw.table, ['firewall', 'table'], /^[A-Za-z][A-Za-z0-9_]{0,31}$/, 'a valid nft table name') ?? 'sandgate',
      mark: this.int(fw.mark, ['firewall', 'mark'], 1, 0xffffffff, 0x5347),
      routeTable: this.int(fw.routeTable, ['firewall', 'routeTable'], 1, 0xfffffffe, 5347),
    };
    if ([253, 254, 255].includes(firewall.routeTable)) this.fail(['firewall', 'routeTable'], 'must not be one of the kernel\'s own tables (253 default, 254 main, 255 local)');

    const credentials = this.credentials(r.credentials);
    const policies = this.policies(r.policies, credentials);
    const sandboxes = this.sandboxes(r.sandboxes, policies);

    const dns = this.dns(r.dns);

    return { listen, dns, log, tls, upstream, firewall, sandboxes, policies, credentials };
  }

  /** DNS responder limits; defaults documented in docs/dns.md. */
  private dns(raw: unknown): Config['dns'] {
    const p = ['dns'];
    const d = this.optObj(raw, p, ['rateLimit', 'tcp', 'auditSampling']);
    const rl = this.optObj(d.rateLimit, [...p, 'rateLimit'], ['qps', 'burst']);
    const tcp = this.optObj(d.tcp, [...p, 'tcp'], ['idleTimeoutMs', 'maxConnections']);
    const au = this.optObj(d.auditSampling, [...p, 'auditSampling'], ['linesPerSecond', 'burst']);
    return {
      rateLimit: {
        qps: this.int(rl.qps, [...p, 'rateLimit', 'qps'], 1, 1_000_000, 200),
        burst: this.int(rl.burst, [...p, 'rateLimit', 'burst'], 1, 1_000_000, 400),
      },
      tcp: {
        idleTimeoutMs: this.int(tcp.idleTimeoutMs, [...p, 'tcp', 'idleTimeoutMs'], 100, 300_000, 10_000),
        maxConnections: this.int(tcp.maxConnections, [...p, 'tcp', 'maxConnections'], 1, 4096, 16),
      },
      auditSampling: {
        linesPerSecond: this.int(au.linesPerSecond, [...p, 'auditSampling', 'linesPerSecond'], 1, 1_000_000, 50),
        burst: this.int(au.burst, [...p, 'auditSampling', 'burst'], 1, 1_000_000, 200),
      },
    };
  }

  private oneOf<T extends string>(v: unknown, path: PathPart[], options: readonly T[]): T | undefined {
    if (typeof v !== 'string' || !options.includes(v as T)) return this.fail(path, `must be one of: ${options.join(', ')}`);
    return v as T;
  }

  private ipAddress(v: unknown, path: PathPart[]): string | undefined {
    if (typeof v !== 'string' || net.isIP(v) === 0) return this.fail(path, 'must be an IP address');
    return v;
  }

  private upstream(raw: unknown): Config['upstream'] {
    const p = ['upstream'];
    const u = this.optObj(raw, p, ['resolver', 'hosts', 'caFile', 'allowPrivate', 'connectTimeoutMs']);
    let resolver: string | undefined;
    if (u.resolver !== undefined) {
      if (typeof u.resolver !== 'string' || !parseHostPort(u.resolver, 53)) this.fail([...p, 'resolver'], 'must be "IP" or "IP:PORT" (IPv6 as "[IP]:PORT")');
      else resolver = u.resolver;
    }
    const hosts: Record<string, string[]> = {};
    if (u.hosts !== undefined && u.hosts !== null) {
      if (typeof u.hosts !== 'object' || Array.isArray(u.hosts)) this.fail([...p, 'hosts'], 'must be a mapping of host name to IP address(es)');
      else for (const [name, val] of Object.entries(u.hosts as Obj)) {
        const hp = [...p, 'hosts', name];
        const host = normaliseHost(name);
        if (!isHostName(host)) { this.fail(hp, `"${name}" is not a valid host name`, true); continue; }
        const addrs = Array.isArray(val) ? val : [val];
        const ok: string[] = [];
        addrs.forEach((a, i) => {
          if (typeof a !== 'string' || net.isIP(a) === 0) this.fail(Array.isArray(val) ? [...hp, i] : hp, 'must be an IP address (or a list of them)');
          else ok.push(a);
        });
        if (addrs.length === 0) this.fail(hp, 'must list at least one IP address');
        hosts[host] = ok;
      }
    }
    const allowPrivate: string[] = [];
    if (u.allowPrivate !== undefined) {
      (this.list(u.allowPrivate, [...p, 'allowPrivate']) ?? []).forEach((c, i) => {
        const cp = [...p, 'allowPrivate', i];
        if (typeof c !== 'string') return this.fail(cp, 'must be a CIDR such as 10.0.0.0/8');
        const parsed = parseCidr(c);
        if ('error' in parsed) return this.fail(cp, parsed.error);
        allowPrivate.push(c);
        return undefined;
      });
    }
    return {
      ...(resolver !== undefined ? { resolver } : {}),
      hosts,
      ...(u.caFile !== undefined ? { caFile: this.str(u.caFile, [...p, 'caFile']) ?? '' } : {}),
      allowPrivate,
      connectTimeoutMs: this.int(u.connectTimeoutMs, [...p, 'connectTimeoutMs'], 100, 120000, 5000),
    };
  }

  private credentials(raw: unknown): Record<string, CredentialConfig> {
    const out: Record<string, CredentialConfig> = {};
    if (raw === undefined || raw === null) return out;
    if (typeof raw !== 'object' || Array.isArray(raw)) { this.fail(['credentials'], 'must be a mapping of credential id to credential'); return out; }
    for (const [id, val] of Object.entries(raw as Obj)) {
      const p = ['credentials', id];
      if (!NAME.test(id)) { this.fail(p, `credential id "${id}" must match [A-Za-z0-9_.-]{1,64}`, true); continue; }
      const c = this.obj(val, p, ['secret', 'header', 'format', 'placeholder', 'basic', 'query'], ['secret']);
      if (!c) continue;
      const secret = this.secret(c.secret, [...p, 'secret']);
      const header = c.header === undefined ? 'Authorization' : this.str(c.header, [...p, 'header'], TOKEN, 'a valid header name') ?? 'Authorization';
      let format = 'Bearer {secret}';
      if (c.format !== undefined) {
        const f = this.str(c.format, [...p, 'format']);
        if (f !== undefined && !f.includes('{secret}')) this.fail([...p, 'format'], 'must contain "{secret}"');
        else if (f !== undefined && /[\r\n\0]/.test(f)) this.fail([...p, 'format'], 'must not contain CR, LF or NUL');
        else if (f !== undefined) format = f;
      }
      let placeholder: string | undefined;
      if (c.placeholder !== undefined) {
        placeholder = this.str(c.placeholder, [...p, 'placeholder'], /^[\x21-\x7e]{8,256}$/, 'a placeholder of 8 to 256 visible ASCII characters');
      }
      let basic: { username: string } | undefined;
      if (c.basic !== undefined) {
        const b = this.obj(c.basic, [...p, 'basic'], ['username'], ['username']);
        const username = b ? this.str(b.username, [...p, 'basic', 'username'], /^[^:\r\n\0]+$/, 'a user name without ":" or line breaks') : undefined;
        if (username !== undefined) basic = { username };
      }
      let query: string | undefined;
      if (c.query !== undefined) query = this.str(c.query, [...p, 'query'], /^[A-Za-z0-9_.~-]{1,64}$/, 'a query parameter name');
      if (basic && c.format !== undefined) this.fail([...p, 'format'], 'cannot be combined with "basic" (Basic builds the header value itself)');
      if (secret) out[id] = { secret, header, format, ...(placeholder ? { placeholder } : {}), ...(basic ? { basic } : {}), ...(query ? { query } : {}) };
    }
    return out;
  }

  private secret(raw: unknown, p: PathPart[]): SecretSource | undefined {
    const s = this.obj(raw, p, ['env', 'file']);
    if (!s) return undefined;
    if ((s.env === undefined) === (s.file === undefined)) return this.fail(p, 'must have exactly one of "env" or "file" (secrets never live in the config file)');
    if (s.env !== undefined) { const env = this.str(s.env, [...p, 'env'], ENV_NAME, 'an environment variable name'); return env ? { env } : undefined; }
    const file = this.str(s.file, [...p, 'file']);
    return file ? { file } : undefined;
  }

  private policies(raw: unknown, credentials: Record<string, CredentialConfig>): Record<string, PolicyConfig> {
    const out: Record<string, PolicyConfig> = {};
    if (raw === undefined || raw === null) return out; // already reported as a missing required key
    if (typeof raw !== 'object' || Array.isArray(raw)) { this.fail(['policies'], 'must be a mapping of policy name to policy'); return out; }
    for (const [name, val] of Object.entries(raw as Obj)) {
      const p = ['policies', name];
      if (!NAME.test(name)) { this.fail(p, `policy name "${name}" must match [A-Za-z0-9_.-]{1,64}`, true); continue; }
      const po = this.obj(val, p, ['mode', 'allow']);
      if (!po) continue;
      const mode = po.mode === undefined ? 'enforce' : this.oneOf(po.mode, [...p, 'mode'], ['enforce', 'report'] as const) ?? 'enforce';
      const allow: AllowRule[] = [];
      if (po.allow !== undefined && po.allow !== null) {
        (this.list(po.allow, [...p, 'allow']) ?? []).forEach((r, i) => {
          const rule = this.rule(r, [...p, 'allow', i], credentials);
          if (rule) allow.push(rule);
        });
      }
      out[name] = { mode, allow };
    }
    return out;
  }

  private rule(raw: unknown, p: PathPart[], credentials: Record<string, CredentialConfig>): AllowRule | undefined {
    const r = this.obj(raw, p, ['host', 'ports', 'protocol', 'inject', 'methods', 'paths', 'plainHttp'], ['host']);
    if (!r) return undefined;
    let host: string | undefined;
    if (typeof r.host !== 'string') this.fail([...p, 'host'], 'must be a host name such as api.example.com or *.example.com');
    else {
      host = normaliseHost(r.host);
      const problem = hostPatternProblem(host);
      if (problem) { this.fail([...p, 'host'], problem); host = undefined; }
    }
    let ports = [443];
    if (r.ports !== undefined) {
      const list = this.list(r.ports, [...p, 'ports']) ?? [];
      if (list.length === 0) this.fail([...p, 'ports'], 'must list at least one port');
      ports = list.map((x, i) => this.port(x, [...p, 'ports', i]) ?? 0);
    }
    const protocol = r.protocol === undefined ? 'tls' : this.oneOf(r.protocol, [...p, 'protocol'], ['tls', 'tcp'] as const);
    let inject: string | undefined;
    if (r.inject !== undefined) {
      inject = this.str(r.inject, [...p, 'inject']);
      if (inject !== undefined && !credentials[inject]) { this.fail([...p, 'inject'], `unknown credential "${inject}" (not under credentials)`); inject = undefined; }
    }
    let methods: string[] | undefined;
    if (r.methods !== undefined) {
      methods = (this.list(r.methods, [...p, 'methods']) ?? []).map((m, i) => (this.str(m, [...p, 'methods', i], TOKEN, 'an HTTP method') ?? '').toUpperCase());
      if (methods.length === 0) this.fail([...p, 'methods'], 'must list at least one method (omit the key to allow any)');
    }
    let paths: string[] | undefined;
    if (r.paths !== undefined) {
      paths = (this.list(r.paths, [...p, 'paths']) ?? []).map((g, i) => this.str(g, [...p, 'paths', i], /^\/[\x21-\x7e]*$/, 'a path glob starting with "/"') ?? '');
      if (paths.length === 0) this.fail([...p, 'paths'], 'must list at least one glob (omit the key to allow any path)');
    }
    let plainHttp: boolean | undefined;
    if (r.plainHttp !== undefined) {
      if (typeof r.plainHttp !== 'boolean') this.fail([...p, 'plainHttp'], 'must be true or false');
      else plainHttp = r.plainHttp;
    }
    const intercepted = inject !== undefined || methods !== undefined || paths !== undefined;
    if (protocol === 'tcp' && (intercepted || plainHttp)) this.fail([...p, 'protocol'], 'a raw TCP rule cannot inject, check methods/paths or use plainHttp (those need TLS interception)');
    if (plainHttp && !intercepted) this.fail([...p, 'plainHttp'], 'only applies to an intercepted host (one with inject, methods or paths)');
    // plainHttp means "http://host/ works": without explicit ports, port 80 joins the default 443
    // (docs/interception.md: plain HTTP on 80 goes upstream as TLS on 443).
    if (plainHttp && r.ports === undefined) ports = [443, 80];
    if (host === undefined || protocol === undefined) return undefined;
    if (protocol === 'tcp' && host.startsWith('*.')) this.fail([...p, 'host'], 'a raw TCP rule needs an exact host name: without SNI a wildcard could only be matched from DNS answers');
    return {
      host, ports, protocol,
      ...(inject !== undefined ? { inject } : {}),
      ...(methods !== undefined ? { methods } : {}),
      ...(paths !== undefined ? { paths } : {}),
      ...(plainHttp !== undefined ? { plainHttp } : {}),
    };
  }

  private sandboxes(raw: unknown, policies: Record<string, PolicyConfig>): SandboxConfig[] {
    const out: SandboxConfig[] = [];
    if (raw === undefined || raw === null) return out; // already reported as a missing required key
    const list = this.list(raw, ['sandboxes']) ?? [];
    const seen = new Set<string>();
    list.forEach((val, i) => {
      const p = ['sandboxes', i];
      const s = this.obj(val, p, ['name', 'interface', 'cidr', 'policy', 'user'], ['name', 'policy']);
      if (!s) return;
      const name = this.str(s.name, [...p, 'name'], NAME, 'a sandbox name matching [A-Za-z0-9_.-]{1,64}');
      if (name !== undefined && seen.has(name)) this.fail([...p, 'name'], `duplicate sandbox name "${name}"`);
      if (name !== undefined) seen.add(name);
      let iface: string | undefined;
      if (s.interface !== undefined) iface = this.str(s.interface, [...p, 'interface'], IFACE_GLOB, 'an interface name, or a name prefix ending in one "*" (at most 15 characters in all)');
      let cidr: string | undefined;
      if (s.cidr !== undefined) {
        if (typeof s.cidr !== 'string') this.fail([...p, 'cidr'], 'must be an IPv4 CIDR such as 10.77.0.0/24');
        else {
          const c = parseCidr(s.cidr);
          if ('error' in c) this.fail([...p, 'cidr'], c.error);
          else if (c.family !== 4) this.fail([...p, 'cidr'], 'must be an IPv4 CIDR (sandboxes\' IPv6 is dropped, not routed)');
          else cidr = s.cidr;
        }
      }
      if (s.interface === undefined && s.cidr === undefined) this.fail(p, 'needs "interface" or "cidr" (or both) to say whose traffic this is');
      const policy = this.str(s.policy, [...p, 'policy']);
      if (policy !== undefined && !policies[policy]) this.fail([...p, 'policy'], `unknown policy "${policy}" (not under policies)`);
      let user: string | undefined;
      if (s.user !== undefined) user = this.str(s.user, [...p, 'user'], /^[\x20-\x7e]{1,128}$/, 'a user name of printable ASCII');
      if (name !== undefined && policy !== undefined && (iface !== undefined || cidr !== undefined)) {
        out.push({ name, policy, ...(iface !== undefined ? { interface: iface } : {}), ...(cidr !== undefined ? { cidr } : {}), ...(user !== undefined ? { user } : {}) });
      }
    });
    return out;
  }
}
