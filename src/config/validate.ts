import type { AllowRule, AuthServiceConfig, Config, CredentialConfig, OAuth2Config, PolicyConfig, SandboxConfig, SecretSource, UdpRule } from './types.js';
import { hostPatternProblem, isHostName, normaliseHost } from '../policy/host-name.js';
import { inAny, parseCidr, parseHostPort, parseIp, type Cidr } from '../util/ip.js';
import net from 'node:net';
import { availableParallelism } from 'node:os';

/** `workers` upper bound: more processes than this only add IPC and memory on any host we know. */
export const MAX_WORKERS = 64;

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
const USER = /^[\x20-\x7e]{1,128}$/;
/** Where the control API listens unless listen.control says otherwise (docs/control-api.md). */
export const DEFAULT_CONTROL_SOCKET = '/run/sandgate/control.sock';

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

  private workerCount(v: unknown): number {
    if (v === undefined || v === null) return 1;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_WORKERS) {
      this.fail(['workers'], `must be a whole number from 1 to ${MAX_WORKERS}, or "auto"`);
      return 1;
    }
    return v;
  }

  private list(v: unknown, path: PathPart[]): unknown[] | undefined {
    if (!Array.isArray(v)) return this.fail(path, 'must be a list');
    return v;
  }

  root(raw: unknown): Config {
    const r = this.obj(raw ?? {}, [], ['listen', 'dns', 'packets', 'log', 'tls', 'upstream', 'firewall', 'sandboxes', 'policies', 'credentials', 'workers', 'stateDir'], ['sandboxes', 'policies']) ?? {};

    const l = this.optObj(r.listen, ['listen'], ['port', 'dnsPort', 'address', 'control']);
    const listen = {
      port: l.port === undefined ? 15001 : this.port(l.port, ['listen', 'port']) ?? 15001,
      dnsPort: l.dnsPort === undefined ? 15053 : this.port(l.dnsPort, ['listen', 'dnsPort']) ?? 15053,
      address: l.address === undefined ? '0.0.0.0' : this.ipAddress(l.address, ['listen', 'address']) ?? '0.0.0.0',
      control: this.controlPath(l.control),
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
    // Where registered sandboxes are kept across restarts; beside the CA unless said otherwise.
    const stateDir = r.stateDir === undefined ? tls.caDir : this.str(r.stateDir, ['stateDir']) ?? '';

    const upstream = this.upstream(r.upstream);

    const fw = this.optObj(r.firewall, ['firewall'], ['table', 'mark', 'routeTable', 'backend', 'queue', 'flowMark', 'queueMark']);
    const firewall = {
      // At most 21 characters: the iptables backend names its chains "<TABLE>-SBXFWD" (28 max).
      table: fw.table === undefined ? 'sandgate' : this.str(fw.table, ['firewall', 'table'], /^[A-Za-z][A-Za-z0-9_]{0,20}$/, 'a valid table name (a letter, then up to 20 letters, digits or "_")') ?? 'sandgate',
      mark: this.int(fw.mark, ['firewall', 'mark'], 1, 0xffffffff, 0x5347),
      routeTable: this.int(fw.routeTable, ['firewall', 'routeTable'], 1, 0xfffffffe, 5347),
      backend: fw.backend === undefined ? 'auto' as const : this.oneOf(fw.backend, ['firewall', 'backend'], ['nft', 'iptables', 'auto'] as const) ?? 'auto',
      queue: this.int(fw.queue, ['firewall', 'queue'], 0, 65535, 5347),
      flowMark: this.int(fw.flowMark, ['firewall', 'flowMark'], 1, 0xffffffff, 0x5348),
      queueMark: this.int(fw.queueMark, ['firewall', 'queueMark'], 1, 0xffffffff, 0x5349),
    };
    if ([253, 254, 255].includes(firewall.routeTable)) this.fail(['firewall', 'routeTable'], 'must not be one of the kernel\'s own tables (253 default, 254 main, 255 local)');
    if (new Set([firewall.mark, firewall.flowMark, firewall.queueMark]).size !== 3) this.fail(['firewall'], 'mark, flowMark and queueMark must be three different values');

    const packets = this.packets(r.packets);

    const credentials = this.credentials(r.credentials, upstream);
    const policies = this.policies(r.policies, credentials);
    const sandboxes = this.sandboxes(r.sandboxes, policies);

    const dns = this.dns(r.dns);

    // "auto": one worker per core the process may use (cgroup/affinity aware), capped like N.
    const workers = r.workers === 'auto' ? Math.min(MAX_WORKERS, Math.max(1, availableParallelism())) : this.workerCount(r.workers);

    return { listen, dns, packets, log, tls, stateDir, upstream, firewall, sandboxes, policies, credentials, workers };
  }

  /** Packet-path limits; defaults documented in docs/packets.md. */
  private packets(raw: unknown): Config['packets'] {
    const p = ['packets'];
    const d = this.optObj(raw, p, ['rateLimit', 'auditSampling']);
    const rl = this.optObj(d.rateLimit, [...p, 'rateLimit'], ['pps', 'burst']);
    const au = this.optObj(d.auditSampling, [...p, 'auditSampling'], ['linesPerSecond', 'burst']);
    return {
      rateLimit: {
        pps: this.int(rl.pps, [...p, 'rateLimit', 'pps'], 1, 1_000_000, 100),
        burst: this.int(rl.burst, [...p, 'rateLimit', 'burst'], 1, 1_000_000, 200),
      },
      auditSampling: {
        linesPerSecond: this.int(au.linesPerSecond, [...p, 'auditSampling', 'linesPerSecond'], 1, 1_000_000, 20),
        burst: this.int(au.burst, [...p, 'auditSampling', 'burst'], 1, 1_000_000, 50),
      },
    };
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

  /**
   * listen.control: an absolute path for the control API's unix socket, or false (no control
   * API). A unix socket path holds at most 107 bytes (sun_path is 108 with the NUL, unix(7)).
   */
  private controlPath(v: unknown): string | false {
    const p = ['listen', 'control'];
    if (v === undefined || v === null) return DEFAULT_CONTROL_SOCKET;
    if (v === false) return false;
    if (typeof v !== 'string' || !v.startsWith('/')) {
      this.fail(p, 'must be an absolute path for the control socket, or false to turn the control API off');
      return false;
    }
    if (Buffer.byteLength(v) > 107) {
      this.fail(p, 'is too long for a unix socket path (at most 107 bytes)');
      return false;
    }
    if (v.endsWith('/')) {
      this.fail(p, 'must name a socket file, not a directory');
      return false;
    }
    return v;
  }

  /** One sandbox entry (config `sandboxes[i]`, or a control API request at path []). */
  sandboxEntry(val: unknown, p: PathPart[], policies: Readonly<Record<string, unknown>>): SandboxConfig | undefined {
    const s = this.obj(val, p, ['name', 'interface', 'cidr', 'policy', 'user'], ['name', 'policy']);
    if (!s) return undefined;
    const name = this.str(s.name, [...p, 'name'], NAME, 'a sandbox name matching [A-Za-z0-9_.-]{1,64}');
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
    if (policy !== undefined && !Object.prototype.hasOwnProperty.call(policies, policy)) this.fail([...p, 'policy'], `unknown policy "${policy}" (not under policies)`);
    let user: string | undefined;
    if (s.user !== undefined) user = this.str(s.user, [...p, 'user'], USER, 'a user name of printable ASCII');
    if (name === undefined || policy === undefined || (iface === undefined && cidr === undefined)) return undefined;
    return { name, policy, ...(iface !== undefined ? { interface: iface } : {}), ...(cidr !== undefined ? { cidr } : {}), ...(user !== undefined ? { user } : {}) };
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

  private credentials(raw: unknown, upstream: Config['upstream']): Record<string, CredentialConfig> {
    const out: Record<string, CredentialConfig> = {};
    if (raw === undefined || raw === null) return out;
    if (typeof raw !== 'object' || Array.isArray(raw)) { this.fail(['credentials'], 'must be a mapping of credential id to credential'); return out; }
    for (const [id, val] of Object.entries(raw as Obj)) {
      const p = ['credentials', id];
      if (!NAME.test(id)) { this.fail(p, `credential id "${id}" must match [A-Za-z0-9_.-]{1,64}`, true); continue; }
      const c = this.obj(val, p, ['secret', 'authService', 'oauth2', 'header', 'format', 'placeholder', 'basic', 'query']);
      if (!c) continue;
      const sources = (['secret', 'authService', 'oauth2'] as const).filter((k) => c[k] !== undefined && c[k] !== null);
      if (sources.length !== 1) {
        this.fail(p, sources.length === 0 ? 'needs one of "secret", "authService" or "oauth2" (where the credential comes from)' : `has ${sources.map((k) => `"${k}"`).join(' and ')}: exactly one source is allowed`);
        continue;
      }
      const secret = c.secret !== undefined ? this.secret(c.secret, [...p, 'secret']) : undefined;
      const authService = c.authService !== undefined ? this.authService(c.authService, [...p, 'authService'], upstream) : undefined;
      const oauth2 = c.oauth2 !== undefined ? this.oauth2(c.oauth2, [...p, 'oauth2'], upstream) : undefined;
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
      const source = secret ? { secret } : authService ? { authService } : oauth2 ? { oauth2 } : undefined;
      if (source) out[id] = { ...source, header, format, ...(placeholder ? { placeholder } : {}), ...(basic ? { basic } : {}), ...(query ? { query } : {}) };
    }
    return out;
  }

  /**
   * Where a token service lives. https: the name resolves like an upstream's and its address passes
   * the SSRF guard (upstream.allowPrivate); the certificate is verified like an upstream's.
   * http: only to an IP literal that is loopback or inside upstream.allowPrivate, because the
   * service key and the tokens cross that hop in clear; a name is refused, so that no DNS answer can
   * decide where they go (docs/auth-service.md, "Transport").
   */
  private tokenUrl(v: unknown, p: PathPart[], upstream: Config['upstream']): string | undefined {
    if (typeof v !== 'string' || v.length === 0) return this.fail(p, 'must be an http(s) URL such as https://auth.internal.example/token');
    let u: URL;
    try { u = new URL(v); } catch { return this.fail(p, `"${v}" is not a URL`); }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return this.fail(p, 'must be an https:// (or, to a loopback or allowPrivate address, http://) URL');
    if (u.username !== '' || u.password !== '') return this.fail(p, 'must not carry user:password (the key goes in "secret")');
    if (u.hash !== '') return this.fail(p, 'must not have a #fragment');
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    if (u.protocol === 'http:') {
      const ip = net.isIP(host) !== 0 ? parseIp(host) : undefined;
      if (!ip) return this.fail(p, 'http:// is only allowed to an IP address (loopback or in upstream.allowPrivate); use https:// for a name');
      const allowed = upstream.allowPrivate.map((t) => parseCidr(t)).filter((c): c is Cidr => !('error' in c));
      if (!isLoopback(host) && !inAny(allowed, ip)) return this.fail(p, `http:// to ${host} is refused: tokens would cross the network in clear (use https://, or list the address in upstream.allowPrivate if it is a private link)`);
    }
    return v;
  }

  private authService(raw: unknown, p: PathPart[], upstream: Config['upstream']): AuthServiceConfig | undefined {
    const a = this.obj(raw, p, ['url', 'timeoutMs', 'secret'], ['url', 'secret']);
    if (!a) return undefined;
    const url = a.url !== undefined ? this.tokenUrl(a.url, [...p, 'url'], upstream) : undefined;
    const timeoutMs = this.int(a.timeoutMs, [...p, 'timeoutMs'], 100, 60_000, 2000);
    const secret = a.secret !== undefined && a.secret !== null ? this.secret(a.secret, [...p, 'secret']) : undefined;
    return url !== undefined && secret ? { url, timeoutMs, secret } : undefined;
  }

  private oauth2(raw: unknown, p: PathPart[], upstream: Config['upstream']): OAuth2Config | undefined {
    const o = this.obj(raw, p, ['tokenUrl', 'grant', 'clientId', 'clientSecret', 'refreshToken', 'scope', 'clientAuth', 'timeoutMs'], ['tokenUrl', 'grant', 'clientId']);
    if (!o) return undefined;
    const tokenUrl = o.tokenUrl !== undefined ? this.tokenUrl(o.tokenUrl, [...p, 'tokenUrl'], upstream) : undefined;
    const grant = o.grant !== undefined ? this.oneOf(o.grant, [...p, 'grant'], ['client_credentials', 'refresh_token'] as const) : undefined;
    // RFC 6749 §2.3.1: client_id is form-encoded; printable ASCII keeps it unambiguous in a Basic header.
    const clientId = o.clientId !== undefined ? this.str(o.clientId, [...p, 'clientId'], /^[\x20-\x7e]{1,256}$/, 'a client id of printable ASCII') : undefined;
    const clientSecret = o.clientSecret !== undefined ? this.secret(o.clientSecret, [...p, 'clientSecret']) : undefined;
    const refreshToken = o.refreshToken !== undefined ? this.secret(o.refreshToken, [...p, 'refreshToken']) : undefined;
    if (grant === 'client_credentials' && o.clientSecret === undefined) this.fail(p, 'grant client_credentials needs "clientSecret"');
    if (grant === 'client_credentials' && o.refreshToken !== undefined) this.fail([...p, 'refreshToken'], 'only applies to grant refresh_token');
    if (grant === 'refresh_token' && o.refreshToken === undefined) this.fail(p, 'grant refresh_token needs "refreshToken"');
    let scope: string | undefined;
    // RFC 6749 §3.3: space-delimited scope-tokens of %x21 / %x23-5B / %x5D-7E.
    if (o.scope !== undefined) scope = this.str(o.scope, [...p, 'scope'], /^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$/, 'a space-separated list of scope tokens (RFC 6749 §3.3)');
    const clientAuth = o.clientAuth === undefined ? 'basic' as const : this.oneOf(o.clientAuth, [...p, 'clientAuth'], ['basic', 'body'] as const) ?? 'basic';
    const timeoutMs = this.int(o.timeoutMs, [...p, 'timeoutMs'], 100, 60_000, 2000);
    if (tokenUrl === undefined || grant === undefined || clientId === undefined) return undefined;
    if (grant === 'client_credentials' && !clientSecret) return undefined;
    if (grant === 'refresh_token' && !refreshToken) return undefined;
    return {
      tokenUrl, grant, clientId, clientAuth, timeoutMs,
      ...(clientSecret ? { clientSecret } : {}),
      ...(refreshToken ? { refreshToken } : {}),
      ...(scope !== undefined ? { scope } : {}),
    };
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
      const udp: UdpRule[] = [];
      if (po.allow !== undefined && po.allow !== null) {
        (this.list(po.allow, [...p, 'allow']) ?? []).forEach((r, i) => {
          if (r !== null && typeof r === 'object' && (r as Obj).protocol === 'udp') {
            const u = this.udpRule(r as Obj, [...p, 'allow', i], `policies.${name}.allow[${i}]`);
            if (u) udp.push(u);
            return;
          }
          const rule = this.rule(r, [...p, 'allow', i], credentials);
          if (rule) allow.push(rule);
        });
      }
      out[name] = { mode, allow, ...(udp.length > 0 ? { udp } : {}) };
    }
    return out;
  }

  /**
   * `protocol: udp`: an exact host name (no wildcard: a datagram carries no name, so only
   * addresses sandgate resolved for the name can match) or a CIDR, and explicit ports.
   */
  private udpRule(r: Obj, p: PathPart[], id: string): UdpRule | undefined {
    const o = this.obj(r, p, ['protocol', 'host', 'cidr', 'ports'], ['ports']);
    if (!o) return undefined;
    if ((o.host === undefined) === (o.cidr === undefined)) return this.fail(p, 'a udp rule needs exactly one of "host" or "cidr"');
    let host: string | undefined;
    let cidr: string | undefined;
    if (o.host !== undefined) {
      if (typeof o.host !== 'string') return this.fail([...p, 'host'], 'must be a host name such as ntp.example.com');
      host = normaliseHost(o.host);
      if (host.startsWith('*.')) return this.fail([...p, 'host'], 'a udp rule needs an exact host name (a datagram carries no name to match a wildcard against); use "cidr" for a range');
      const problem = hostPatternProblem(host);
      if (problem) return this.fail([...p, 'host'], problem);
    } else {
      if (typeof o.cidr !== 'string') return this.fail([...p, 'cidr'], 'must be an IPv4 CIDR such as 192.0.2.0/24');
      const c = parseCidr(o.cidr);
      if ('error' in c) return this.fail([...p, 'cidr'], c.error);
      if (c.family !== 4) return this.fail([...p, 'cidr'], 'must be an IPv4 CIDR (sandbox IPv6 is never carried)');
      cidr = o.cidr;
    }
    if (o.ports === undefined || o.ports === null) return undefined; // reported as a missing required key
    const list = this.list(o.ports, [...p, 'ports']);
    if (!list) return undefined;
    if (list.length === 0) return this.fail([...p, 'ports'], 'must list at least one port');
    const ports = list.map((x, i) => this.port(x, [...p, 'ports', i]));
    if (ports.some((x) => x === undefined)) return undefined;
    return { id, ...(host !== undefined ? { host } : {}), ...(cidr !== undefined ? { cidr } : {}), ports: ports as number[] };
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
    // 'udp' never gets here (policies() hands it to udpRule), but it is a valid answer to name.
    const protocol = r.protocol === undefined ? 'tls' : r.protocol === 'tls' || r.protocol === 'tcp' ? r.protocol : this.fail([...p, 'protocol'], 'must be one of: tls, tcp, udp');
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
      const name = (val as Obj | null)?.name;
      if (typeof name === 'string' && NAME.test(name)) {
        if (seen.has(name)) this.fail([...p, 'name'], `duplicate sandbox name "${name}"`);
        seen.add(name);
      }
      const entry = this.sandboxEntry(val, p, policies);
      if (entry) out.push(entry);
    });
    return out;
  }
}

/**
 * Checks one sandbox as the config would (name, interface glob, IPv4 CIDR, policy among
 * `policies`, user): the control API registers sandboxes by the same rules as the file.
 * Problem paths are relative to the entry ("cidr", "policy", ...).
 */
export function validateSandboxEntry(raw: unknown, policies: Readonly<Record<string, unknown>>): { sandbox?: SandboxConfig; problems: Problem[] } {
  const v = new Validator();
  const sandbox = v.sandboxEntry(raw, [], policies);
  return v.problems.length === 0 && sandbox ? { sandbox, problems: [] } : { problems: v.problems };
}

/** 127.0.0.0/8 and ::1 (and ::ffff:127.x): the host itself, never routed off it. */
function isLoopback(host: string): boolean {
  if (host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return net.isIPv4(v4) && v4.startsWith('127.');
}
