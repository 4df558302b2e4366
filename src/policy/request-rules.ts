import type { AllowRule } from '../config/types.js';

/**
 * What an intercepted rule checks per request, compiled once per config load (by Policy, into
 * CompiledRule.checks): the method set, path globs as anchored RegExps. The data path only runs them.
 */
export interface RequestChecks {
  readonly methods: ReadonlySet<string> | undefined;
  readonly paths: readonly RegExp[] | undefined;
  /** The globs as written, for the denial reason. */
  readonly pathGlobs: readonly string[] | undefined;
}

export function compileRequestChecks(rule: AllowRule): RequestChecks {
  return {
    methods: rule.methods ? new Set(rule.methods.map((m) => m.toUpperCase())) : undefined,
    paths: rule.paths ? rule.paths.map(compileGlob) : undefined,
    pathGlobs: rule.paths,
  };
}

/**
 * Path glob -> anchored RegExp. Segments are split on "/":
 * - a segment that is exactly `**` matches zero or more whole segments ("/v1/**" matches "/v1",
 *   "/v1/" and "/v1/a/b");
 * - `*` inside a segment matches any run of characters except "/" ("/v1/*" is one segment,
 *   "/files/*.json" works too);
 * - everything else is literal.
 */
export function compileGlob(glob: string): RegExp {
  const segments = glob.split('/').slice(1); // globs start with "/" (validated)
  let re = '^';
  for (const seg of segments) {
    if (seg === '**') re += '(?:/[^/]*)*';
    else re += '/' + seg.split('*').map(escapeRe).join('[^/]*');
  }
  return new RegExp(re + '$');
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export type PathResult = { readonly ok: true; readonly path: string } | { readonly ok: false; readonly reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * Normalise a request path (no query) for matching, the way RFC 3986 §6.2.2 allows without
 * changing what the upstream sees: percent-encoded unreserved characters are decoded, other
 * escapes are upper-cased and kept. Anything an upstream might interpret differently from us is
 * refused rather than guessed at: dot segments (also encoded ones, "%2e%2e", and with path
 * parameters, "..;"), encoded "/" or
 * "\" (%2F, %5C), a raw "\", NUL, empty segments ("//"), and malformed escapes.
 */
export function normalisePath(raw: string): PathResult {
  if (!raw.startsWith('/')) return { ok: false, reason: 'path must start with "/"' };
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string;
    if (ch === '%') {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { ok: false, reason: 'malformed percent-encoding in path' };
      const code = parseInt(hex, 16);
      const dec = String.fromCharCode(code);
      if (code === 0x2f || code === 0x5c) return { ok: false, reason: 'encoded "/" or "\\" in path' };
      if (code === 0) return { ok: false, reason: 'NUL in path' };
      out += UNRESERVED.test(dec) ? dec : '%' + hex.toUpperCase();
      i += 2;
    } else if (ch === '\\') {
      return { ok: false, reason: '"\\" in path' };
    } else {
      out += ch;
    }
  }
  const segs = out.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i] as string;
    // "..;x" is ".." to servlet containers (Tomcat, Jetty), which drop a segment's ";" parameters first.
    if (s === '.' || s === '..' || s.startsWith('.;') || s.startsWith('..;')) return { ok: false, reason: 'dot segment ("." or "..") in path' };
    // An empty last segment is a trailing slash ("/v1/models/"): fine. Empty ones inside are not.
    if (s === '' && i < segs.length - 1) return { ok: false, reason: 'empty segment ("//") in path' };
  }
  return { ok: true, path: out };
}

export type Check = { readonly status: 400 | 403; readonly reason: string } | undefined;

/** Methods and paths of one request against a rule; undefined when allowed. */
export function checkRequest(rules: RequestChecks, method: string, path: string): Check {
  if (rules.methods && !rules.methods.has(method)) {
    return { status: 403, reason: `method ${method} is not allowed here (allowed: ${[...rules.methods].join(', ')})` };
  }
  if (rules.paths) {
    const n = normalisePath(path);
    if (!n.ok) return { status: 400, reason: n.reason };
    if (!rules.paths.some((re) => re.test(n.path))) {
      return { status: 403, reason: `path ${n.path} is not allowed here (allowed: ${(rules.pathGlobs ?? []).join(', ')})` };
    }
  }
  return undefined;
}
