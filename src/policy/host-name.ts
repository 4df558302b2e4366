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
 * Public suffixes with more than one label under which a wildcard would cover unrelated owners.
 * A wildcard directly under any single label ("*.com", "*.test") is refused outright; this list
 * catches the common multi-label registries. It is deliberately small and conservative: see
 * docs/policy.md ("Wildcards") for the limitation.
 */
const MULTI_LABEL_PUBLIC_SUFFIXES = new Set([
  'co.uk',
  'org.uk',
  'me.uk',
  'ltd.uk',
  'plc.uk',
  'net.uk',
  'ac.uk',
  'gov.uk',
  'nhs.uk',
  'sch.uk',
  'com.au',
  'net.au',
  'org.au',
  'edu.au',
  'gov.au',
  'id.au',
  'co.nz',
  'org.nz',
  'net.nz',
  'govt.nz',
  'co.jp',
  'ne.jp',
  'or.jp',
  'ac.jp',
  'go.jp',
  'com.br',
  'net.br',
  'org.br',
  'gov.br',
  'com.cn',
  'net.cn',
  'org.cn',
  'gov.cn',
  'edu.cn',
  'com.hk',
  'com.tw',
  'com.sg',
  'com.my',
  'co.in',
  'net.in',
  'org.in',
  'gov.in',
  'co.za',
  'org.za',
  'gov.za',
  'com.mx',
  'com.ar',
  'com.tr',
  'com.ua',
  'co.kr',
  'or.kr',
  'co.il',
  'org.il',
  'com.pl',
  'co.id',
  'or.id',
  'com.ph',
  'com.vn',
  'com.eg',
  'com.sa',
  'com.ng',
  'github.io',
  'githubusercontent.com',
  'herokuapp.com',
  'appspot.com',
  'azurewebsites.net',
  'cloudfront.net',
  'amazonaws.com',
  's3.amazonaws.com',
  'blogspot.com',
  'netlify.app',
  'vercel.app',
  'pages.dev',
  'workers.dev',
  'web.app',
  'firebaseapp.com',
  'fly.dev',
  'onrender.com',
]);

/** Why a host pattern is unacceptable, or undefined when it is fine. Expects a normalised pattern. */
export function hostPatternProblem(pattern: string): string | undefined {
  const wildcard = pattern.startsWith('*.');
  const name = wildcard ? pattern.slice(2) : pattern;
  if (name.includes('*')) return 'only a leading "*." wildcard is supported';
  if (!isHostName(name)) return `"${pattern}" is not a valid host name (IP literals are not allowed: policy is by name)`;
  if (wildcard) {
    if (!name.includes('.')) return `wildcard "${pattern}" is directly under a public suffix`;
    if (MULTI_LABEL_PUBLIC_SUFFIXES.has(name)) return `wildcard "${pattern}" is directly under a public suffix`;
  }
  return undefined;
}
