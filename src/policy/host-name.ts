import { getPublicSuffix } from 'tldts';

/**
 * Host names and the one matcher that TLS (SNI), plain HTTP (Host) and DNS all use, so the three
 * can never disagree about what a rule covers.
 */

/** Lowercase, strip one trailing dot (RFC 1034 §3.1 absolute names). */
export function normaliseHost(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A DNS host name (LDH labels, underscore tolerated), not an IP literal. Expects a normalised name. */
export function isHostName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  if (labels.length < 1) return false;
  for (const l of labels) if (!LABEL.test(l)) return false;
  // An all-numeric last label is how IPv4 literals look; real TLDs are never numeric.
  if (/^\d+$/.test(labels[labels.length - 1] ?? '')) return false;
  return true;
}

/**
 * Pattern semantics (docs/policy.md): "api.example.test" matches exactly that name; "*.example.test"
 * matches any name below example.test (one or more labels), never the apex itself.
 */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1); // ".example.test"
    return host.length > suffix.length && host.endsWith(suffix);
  }
  return pattern === host;
}

/**
 * Platform apexes under which the Public Suffix List lists suffixes of its own (each customer's
 * names live below "s3.amazonaws.com", "blob.core.windows.net", ...) without listing the apex
 * itself: "*.amazonaws.com" would cover every customer of those suffixes, so it is refused too.
 * The PSL cannot be asked "is there a suffix below this name?", hence this short list.
 */
const PLATFORM_APEXES = new Set(['amazonaws.com', 'windows.net', 'core.windows.net']);

const PSL = { allowPrivateDomains: true } as const;

/**
 * Whether a wildcard directly under `name` would span unrelated owners: `name` is a public suffix
 * (the PSL's ICANN and private sections alike: "co.uk", "github.io"; tldts also counts the parent
 * of a PSL wildcard rule such as "*.sch.uk"), or it is a platform apex above such suffixes. The whole
 * Public Suffix List, through tldts; a single label is always a suffix (the PSL's default rule "*").
 */
export function isPublicSuffixOrAbove(name: string): boolean {
  if (!name.includes('.')) return true;
  if (getPublicSuffix(name, PSL) === name) return true;
  return PLATFORM_APEXES.has(name);
}

/** Why a host pattern is unacceptable, or undefined when it is fine. Expects a normalised pattern. */
export function hostPatternProblem(pattern: string): string | undefined {
  const wildcard = pattern.startsWith('*.');
  const name = wildcard ? pattern.slice(2) : pattern;
  if (name.includes('*')) return 'only a leading "*." wildcard is supported';
  if (!isHostName(name)) return `"${pattern}" is not a valid host name (IP literals are not allowed: policy is by name)`;
  if (wildcard) {
    if (isPublicSuffixOrAbove(name)) return `wildcard "${pattern}" is directly under a public suffix`;
  }
  return undefined;
}
