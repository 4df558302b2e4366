/**
 * `sandgate suggest`'s pure core: what a report-mode run's audit lines show a sandbox needed,
 * drafted as allow rules in the config's own shape (docs/policy.md), each fact with its count.
 * Conservative by construction: only traffic that went through (allow, would-deny) is drafted
 * (denied traffic only with `includeDenied`); a wildcard only where several passthrough names
 * share a registrable domain, never at or above a public suffix (the whole Public Suffix List,
 * src/policy/host-name.ts); ids in paths become `*` one segment at a time.
 */
import { getDomain } from 'tldts';
import type { AuditFields } from './logger.js';
import { hostPatternProblem, isHostName, normaliseHost } from '../policy/host-name.js';
import { normalisePath } from '../policy/request-rules.js';
import { portOf } from './query.js';

/** A count per value (a port, a method, a path glob, a credential id), insertion-ordered. */
export type Counts<K extends string | number = string> = Map<K, number>;

function bump<K extends string | number>(m: Counts<K>, k: K, n = 1): void {
  m.set(k, (m.get(k) ?? 0) + n);
}

/** What the lines say about one host name of one sandbox. */
export interface HostFacts {
  readonly host: string;
  /** `conn` lines (TLS passthrough or intercepted, raw TCP) and `http` requests. */
  conns: number;
  requests: number;
  readonly ports: Counts<number>;
  /** Raw TCP (a `conn` line with proto tcp): needs `protocol: tcp`. */
  tcp: boolean;
  /** Requests inside TLS that sandgate terminated (a rule with inject, methods or paths). */
  intercepted: boolean;
  /** Plain-HTTP requests that sandgate sent upstream as TLS (a `plainHttp` rule). */
  plainHttpUpgraded: boolean;
  /** Plain-HTTP requests sent upstream as they came (an ordinary rule for port 80, ...). */
  plainHttp: boolean;
  readonly methods: Counts;
  /** Generalised path glob -> requests. */
  readonly paths: Counts;
  /** Requests whose path cannot be a glob (sandgate would refuse it: dot segments, "//", ...). */
  unmatchablePaths: number;
  readonly credentials: Counts;
  /** Lines by decision, for the comments. */
  readonly decisions: Counts;
}

/** Per sandbox: hosts, plus what cannot become a rule (no name to go by). */
export interface SandboxFacts {
  readonly sandbox: string;
  /** Policies named in the lines' rule ids ("policies.default.allow[0]" -> default). */
  readonly policies: Counts;
  readonly hosts: Map<string, HostFacts>;
  /** Destinations reached without a name (IP-literal TLS without SNI, raw TCP to an unlisted port). */
  readonly unnamed: Counts;
  lines: number;
  first: string | undefined;
  last: string | undefined;
}

export interface GatherOptions {
  /** Only this sandbox's lines. */
  readonly sandbox?: string;
  /** Also draft what was denied (a log of an enforce-mode run). */
  readonly includeDenied?: boolean;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * One path segment, generalised when it looks like an id: all digits, a UUID, a hex string of
 * 12+ characters with a digit (hashes, object ids), or a 20+ character token mixing letters and
 * digits (opaque ids). Anything else is kept literally; a "*" already there stays a glob.
 */
export function generaliseSegment(seg: string): string {
  if (/^\d+$/.test(seg)) return '*';
  if (UUID.test(seg)) return '*';
  if (/^[0-9a-f]{12,}$/i.test(seg) && /\d/.test(seg)) return '*';
  if (/^[A-Za-z0-9_-]{20,}$/.test(seg) && /\d/.test(seg) && /[A-Za-z]/.test(seg)) return '*';
  return seg;
}

/** A request path (query already stripped) -> the glob that drafts it, or undefined if sandgate would refuse the path. */
export function pathGlob(rawPath: string): string | undefined {
  const n = normalisePath(rawPath.split('?')[0] ?? rawPath);
  if (!n.ok) return undefined;
  const glob = n.path
    .split('/')
    .map((seg, i) => (i === 0 ? seg : generaliseSegment(seg)))
    .join('/');
  // A config path glob is printable ASCII without spaces (src/config/schema/policies.ts).
  return /^\/[\x21-\x7e]*$/.test(glob) ? glob : undefined;
}

function facts(into: SandboxFacts, host: string): HostFacts {
  let h = into.hosts.get(host);
  if (!h) {
    h = {
      host,
      conns: 0,
      requests: 0,
      ports: new Map(),
      tcp: false,
      intercepted: false,
      plainHttpUpgraded: false,
      plainHttp: false,
      methods: new Map(),
      paths: new Map(),
      unmatchablePaths: 0,
      credentials: new Map(),
      decisions: new Map(),
    };
    into.hosts.set(host, h);
  }
  return h;
}

/** Adds one line to the per-sandbox facts. Lines that say nothing about egress are skipped. */
export function gather(into: Map<string, SandboxFacts>, l: AuditFields, opts: GatherOptions = {}): void {
  if (l.event !== 'conn' && l.event !== 'http') return;
  if (typeof l.sandbox !== 'string') return;
  if (opts.sandbox !== undefined && l.sandbox !== opts.sandbox) return;
  const d = l.decision;
  if (d !== 'allow' && d !== 'would-deny' && !(d === 'deny' && opts.includeDenied === true)) return;
  // A conn whose upstream failed (unresolvable, refused, SSRF guard) proves nothing was needed there.
  if (l.event === 'conn' && l.error !== undefined && d !== 'allow') return;
  let s = into.get(l.sandbox);
  if (!s) {
    s = { sandbox: l.sandbox, policies: new Map(), hosts: new Map(), unnamed: new Map(), lines: 0, first: undefined, last: undefined };
    into.set(l.sandbox, s);
  }
  s.lines++;
  if (typeof l.time === 'string') {
    s.first ??= l.time;
    s.last = l.time;
  }
  if (typeof l.rule === 'string') {
    const m = /^policies\.([^.]+)\.allow\[/.exec(l.rule);
    if (m) bump(s.policies, m[1] as string);
  }
  const port = portOf(l.dst);
  const host = typeof l.host === 'string' ? normaliseHost(l.host) : undefined;
  if (host === undefined || !isHostName(host)) {
    if (typeof l.dst === 'string') bump(s.unnamed, `${l.dst} (${l.proto ?? l.event})`);
    return;
  }
  const h = facts(s, host);
  bump(h.decisions, d);
  if (port !== undefined) bump(h.ports, port);
  if (l.event === 'conn') {
    h.conns++;
    if (l.proto === 'tcp') h.tcp = true;
    return;
  }
  h.requests++;
  if (l.proto === 'tls') h.intercepted = true;
  else if (typeof l.upstream === 'string' && l.upstream.startsWith('https://')) h.plainHttpUpgraded = true;
  else h.plainHttp = true;
  // A method is an HTTP token (RFC 9110 §5.6.2), as the config requires; anything else is not drafted.
  if (typeof l.method === 'string' && TOKEN.test(l.method)) bump(h.methods, l.method.toUpperCase());
  const glob = typeof l.path === 'string' ? pathGlob(l.path) : undefined;
  if (glob === undefined) h.unmatchablePaths++;
  else bump(h.paths, glob);
  if (typeof l.credential === 'string') bump(h.credentials, l.credential);
}

/** One drafted allow rule, in the config's shape, with what the comments say. */
export interface DraftRule {
  readonly host: string;
  readonly ports: number[];
  readonly protocol?: 'tcp';
  readonly inject?: string;
  readonly methods?: string[];
  readonly paths?: string[];
  readonly plainHttp?: true;
  /** The names a wildcard stands for (absent for an exact name). */
  readonly covers?: string[];
  readonly counts: {
    readonly conns: number;
    readonly requests: number;
    readonly ports: Counts<number>;
    readonly methods: Counts;
    readonly paths: Counts;
    readonly credentials: Counts;
    readonly decisions: Counts;
  };
  /** Observations that did not become keys (methods and paths of a plain-HTTP host, ...). */
  readonly notes: string[];
}

export interface Draft {
  readonly sandbox: string;
  readonly policy: string;
  readonly rules: DraftRule[];
  readonly unnamed: Counts;
  readonly lines: number;
  readonly first: string | undefined;
  readonly last: string | undefined;
}

export interface DraftOptions {
  /** Names under one registrable domain from which a wildcard is proposed; 0: never. Default 3. */
  readonly wildcardMin?: number;
  /** The policy's name; default: the one the lines' rules name, else the sandbox's name. */
  readonly policy?: string;
  /** More paths than this on one host: they are drafted as the first segment plus `/**`. Default 20. */
  readonly maxPaths?: number;
}

const sortedKeys = <K extends string | number>(m: Counts<K>): K[] => [...m.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

function collapsePaths(paths: Counts, max: number): Counts {
  if (paths.size <= max) return paths;
  const out: Counts = new Map();
  for (const [p, n] of paths) {
    const first = p.split('/')[1] ?? '';
    bump(out, first === '' || first === '*' ? '/**' : `/${first}/**`, n);
  }
  return out;
}

function ruleFor(h: HostFacts, maxPaths: number): DraftRule {
  const ports = sortedKeys(h.ports);
  const counts = {
    conns: h.conns,
    requests: h.requests,
    ports: h.ports,
    methods: h.methods,
    paths: h.paths,
    credentials: h.credentials,
    decisions: h.decisions,
  };
  const notes: string[] = [];
  if (h.tcp) return { host: h.host, ports, protocol: 'tcp', counts, notes };
  // Methods and paths make a rule intercepted (TLS terminated): drafted only for hosts sandgate
  // already intercepted, so a passthrough host does not silently become a decrypted one.
  if (h.intercepted || h.plainHttpUpgraded) {
    const paths = collapsePaths(h.paths, maxPaths);
    if (paths !== h.paths) notes.push(`${h.paths.size} distinct paths, drafted by their first segment`);
    if (h.unmatchablePaths > 0) notes.push(`${h.unmatchablePaths} requests with a path sandgate refuses (dot segments, "//", ...): not drafted`);
    const creds = sortedKeys(h.credentials);
    if (creds.length > 1) notes.push(`several credentials were injected (${creds.join(', ')}): choose one`);
    if (h.plainHttp) notes.push('also plain HTTP sent upstream as plain HTTP: check which rule served it');
    return {
      host: h.host,
      ports,
      ...(creds.length === 1 ? { inject: creds[0] as string } : {}),
      ...(h.methods.size > 0 ? { methods: sortedKeys(h.methods) } : {}),
      ...(paths.size > 0 && h.unmatchablePaths === 0 ? { paths: sortedKeys(paths) } : {}),
      ...(h.plainHttpUpgraded ? { plainHttp: true as const } : {}),
      counts: { ...counts, paths },
      notes,
    };
  }
  if (h.plainHttp && h.methods.size > 0) {
    const seen = sortedKeys(h.methods)
      .map((m) => `${m} ${h.methods.get(m)}`)
      .join(', ');
    notes.push(`plain HTTP seen: ${seen}; paths ${sortedKeys(collapsePaths(h.paths, maxPaths)).join(' ')}`);
    notes.push('methods/paths would make this host intercepted (and need plainHttp: TLS upstream): not drafted');
  }
  return { host: h.host, ports, counts, notes };
}

/** A plain passthrough rule (no interception, not raw TCP): the only kind a wildcard may stand for. */
function isPassthrough(r: DraftRule): boolean {
  return r.protocol === undefined && r.inject === undefined && r.methods === undefined && r.paths === undefined && r.plainHttp === undefined;
}

/** The longest common label suffix of names ("a.cdn.x.com", "b.cdn.x.com" -> "cdn.x.com"). */
export function commonSuffix(names: readonly string[]): string {
  const split = names.map((n) => n.split('.').reverse());
  const first = split[0] ?? [];
  let k = 0;
  while (k < first.length && split.every((s) => s[k] === first[k])) k++;
  return first.slice(0, k).reverse().join('.');
}

/**
 * Several passthrough names under one registrable domain become `*.<parent>`, the deepest parent
 * (at or below the registrable domain) with at least `min` of them strictly below it; repeated
 * until no parent has enough. The parent itself, if reached, stays an exact rule (a wildcard never
 * covers its apex), as do names no such parent gathers. Never at or above a public suffix: a
 * registrable domain is, by definition, below one, and the pattern must still pass the config's
 * own check (hostPatternProblem).
 */
function proposeWildcards(rules: DraftRule[], min: number): DraftRule[] {
  if (min <= 0) return rules;
  const groups = new Map<string, DraftRule[]>();
  for (const r of rules) {
    if (!isPassthrough(r)) continue;
    const domain = getDomain(r.host, { allowPrivateDomains: true });
    if (domain === null) continue;
    const g = groups.get(domain) ?? [];
    g.push(r);
    groups.set(domain, g);
  }
  const replaced = new Set<DraftRule>();
  const added: DraftRule[] = [];
  for (const [domain, group] of groups) {
    let left = group;
    for (;;) {
      const parent = deepestParent(left, domain, min);
      if (parent === undefined) break;
      const below = left.filter((r) => r.host.endsWith(`.${parent}`));
      left = left.filter((r) => !below.includes(r));
      added.push(merged(`*.${parent}`, below));
      for (const r of below) replaced.add(r);
    }
  }
  return [...rules.filter((r) => !replaced.has(r)), ...added];
}

/** The deepest ancestor of the names, at or below `domain`, with `min` or more names strictly below it. */
function deepestParent(rules: readonly DraftRule[], domain: string, min: number): string | undefined {
  const under: Counts = new Map();
  for (const r of rules) {
    const labels = r.host.split('.');
    // Every proper ancestor of the name down to the registrable domain.
    for (let i = 1; i < labels.length; i++) {
      const parent = labels.slice(i).join('.');
      if (parent !== domain && !parent.endsWith(`.${domain}`)) break;
      bump(under, parent);
    }
  }
  let best: string | undefined;
  for (const [parent, n] of under) {
    if (n < min || hostPatternProblem(`*.${parent}`) !== undefined) continue;
    if (best === undefined || parent.split('.').length > best.split('.').length) best = parent;
  }
  return best;
}

function merged(pattern: string, below: readonly DraftRule[]): DraftRule {
  const ports: Counts<number> = new Map();
  const decisions: Counts = new Map();
  let conns = 0;
  let requests = 0;
  for (const r of below) {
    for (const [p, n] of r.counts.ports) bump(ports, p, n);
    for (const [d, n] of r.counts.decisions) bump(decisions, d, n);
    conns += r.counts.conns;
    requests += r.counts.requests;
  }
  return {
    host: pattern,
    ports: sortedKeys(ports),
    covers: below.map((r) => r.host).sort(),
    counts: { conns, requests, ports, methods: new Map(), paths: new Map(), credentials: new Map(), decisions },
    notes: below.flatMap((r) => r.notes.map((n) => `${r.host}: ${n}`)),
  };
}

/** The drafted policy of one sandbox; rules ordered by host (wildcards after exact names, as the gate matches). */
export function draft(s: SandboxFacts, opts: DraftOptions = {}): Draft {
  const maxPaths = opts.maxPaths ?? 20;
  const exact = [...s.hosts.values()].map((h) => ruleFor(h, maxPaths));
  const rules = proposeWildcards(exact, opts.wildcardMin ?? 3).sort(
    (a, b) => Number(a.host.startsWith('*.')) - Number(b.host.startsWith('*.')) || a.host.localeCompare(b.host),
  );
  const named = [...s.policies.keys()];
  const policy = opts.policy ?? (named.length === 1 ? (named[0] as string) : s.sandbox);
  return { sandbox: s.sandbox, policy, rules, unnamed: s.unnamed, lines: s.lines, first: s.first, last: s.last };
}

/** The rule as the config file writes it (no counts). */
export function configRule(r: DraftRule): Record<string, unknown> {
  return {
    host: r.host,
    ports: r.ports,
    ...(r.protocol !== undefined ? { protocol: r.protocol } : {}),
    ...(r.inject !== undefined ? { inject: r.inject } : {}),
    ...(r.methods !== undefined ? { methods: r.methods } : {}),
    ...(r.paths !== undefined ? { paths: r.paths } : {}),
    ...(r.plainHttp !== undefined ? { plainHttp: r.plainHttp } : {}),
  };
}

/** `policies:` as the config reads it: every drafted policy in enforce mode. */
export function configPolicies(drafts: readonly Draft[]): Record<string, { mode: 'enforce'; allow: Record<string, unknown>[] }> {
  return Object.fromEntries(drafts.map((d) => [d.policy, { mode: 'enforce' as const, allow: d.rules.map(configRule) }]));
}
