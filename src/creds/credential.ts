import type { Agent as HttpsAgent } from 'node:https';
import type { LookupFunction } from 'node:net';
import type { CredentialConfig, PlaceholderPlace } from '../config/types.js';
import type { AwsKeys } from './aws.js';

/**
 * A credential ready for the data path: the secret is resolved and every derived string
 * (header value, Basic form, needles to scrub) is computed once at load.
 *
 * How it is injected (docs/interception.md, "Injection"; src/http/request-head.ts does it):
 * - `query: NAME` set: the query parameter NAME is set to the secret (replacing any the sandbox
 *   sent); no header is added.
 * - otherwise the header `header` (default Authorization) is set to `format` with {secret}
 *   replaced, or with `basic: {username}` to "Basic base64(username:secret)" (RFC 7617 §2).
 *   Whatever value the sandbox sent in that header is replaced, never duplicated.
 * - `placeholder`, in every mode: that string, wherever it appears in any request header value,
 *   becomes the secret.
 */
export interface Credential {
  readonly id: string;
  /** Lower-case header name (Node's IncomingMessage.headers keys are lower-case). */
  readonly header: string;
  /** The exact header value sent upstream (undefined in query mode). */
  readonly value: string | undefined;
  readonly query: string | undefined;
  readonly placeholder: string | undefined;
  readonly secret: string;
  /** Everything that must never reach the sandbox, longest first. */
  readonly needles: readonly string[];
  /**
   * Headers an auth service returned (`{headers}` form, docs/auth-service.md): lower-case name and
   * value, each set upstream, replacing whatever the sandbox sent under that name.
   */
  readonly headers?: readonly (readonly [string, string])[];
  /** Where `placeholder` is replaced (default header only; docs/credentials-placeholders.md). */
  readonly placeholderIn?: ReadonlySet<PlaceholderPlace>;
  /** Bodies searched for the placeholder are buffered up to this many bytes. */
  readonly maxBodyBytes?: number;
  /** An `awsSigV4` credential: the request is re-signed with these keys (docs/credentials-aws.md). */
  readonly aws?: AwsKeys;
}

export function compileCredential(id: string, c: CredentialConfig, secret: string): Credential {
  let value: string | undefined;
  let basic: string | undefined;
  if (c.query === undefined) {
    if (c.basic) {
      basic = Buffer.from(`${c.basic.username}:${secret}`, 'utf8').toString('base64');
      value = `Basic ${basic}`;
    } else {
      // A function replacement: "$&" and friends in the secret must not be interpreted.
      value = c.format.split('{secret}').join(secret);
    }
  }
  const needles = new Set<string>();
  addForms(needles, secret);
  if (value !== undefined) needles.add(value);
  if (basic !== undefined) needles.add(basic);
  return {
    id,
    header: c.header.toLowerCase(),
    value,
    query: c.query,
    placeholder: c.placeholder,
    secret,
    needles: [...needles].sort((a, b) => b.length - a.length),
    ...(c.placeholderIn !== undefined ? { placeholderIn: new Set(c.placeholderIn) } : {}),
    ...(c.maxBodyBytes !== undefined ? { maxBodyBytes: c.maxBodyBytes } : {}),
  };
}

/**
 * Forms an echoing upstream may reflect a secret in: as is, URL-encoded (query echo), base64 (a
 * debug endpoint decoding or re-encoding credentials), JSON-escaped (a body that quotes the request;
 * with "/" escaped too, as some encoders write it).
 */
export function addForms(needles: Set<string>, secret: string): void {
  needles.add(secret);
  needles.add(encodeURIComponent(secret));
  needles.add(Buffer.from(secret, 'utf8').toString('base64'));
  for (const run of base64Runs(secret)) needles.add(run);
  const json = JSON.stringify(secret).slice(1, -1);
  needles.add(json);
  // JSON allows "\/" for "/" (RFC 8259 §7), and PHP's json_encode, among others, writes it so by
  // default: a base64 token or an AWS secret key echoed by such a server would otherwise go by.
  if (json.includes('/')) needles.add(json.replaceAll('/', '\\/'));
}

/**
 * The secret base64-encoded inside a longer text (an upstream echoing a whole header block or body
 * in base64): its bytes can start at any of three offsets in a 3-byte group, and each offset gives
 * other characters (RFC 4648 §4). For each, the characters that depend on the secret's bytes alone,
 * in the standard and the URL-safe alphabets (§5). The one or two characters at each end that also
 * depend on the neighbouring bytes are not masked: at most 4 bits of the secret each.
 */
function base64Runs(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const runs: string[] = [];
  for (let k = 0; k < 3; k++) {
    const enc = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
    const run = enc.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6));
    if (run.length < MIN_NEEDLE) continue;
    runs.push(run);
    const url = run.replaceAll('+', '-').replaceAll('/', '_');
    if (url !== run) runs.push(url);
  }
  return runs;
}

/** Shorter header values are not scrubbed from responses: masking them would mangle ordinary text. */
const MIN_NEEDLE = 8;

/**
 * A credential from an auth service's `{headers}` answer: every header is set upstream. Values of
 * at least 8 characters are scrubbed from responses (with their encoded forms), and so is the part
 * after an auth scheme ("Bearer <token>" -> "<token>"); shorter ones (a tenant id, a version) are
 * not secrets worth mangling responses for. Names and values are validated by the caller
 * (src/creds/auth-service.ts).
 */
export function compileHeaderCredential(id: string, header: string, headers: readonly (readonly [string, string])[]): Credential {
  const needles = new Set<string>();
  for (const [, v] of headers) {
    if (v.length >= MIN_NEEDLE) addForms(needles, v);
    const sp = v.indexOf(' ');
    if (sp > 0 && v.length - sp - 1 >= MIN_NEEDLE) addForms(needles, v.slice(sp + 1));
  }
  return {
    id,
    header: header.toLowerCase(),
    value: undefined,
    query: undefined,
    placeholder: undefined,
    secret: '',
    needles: [...needles].sort((a, b) => b.length - a.length),
    headers: headers.map(([k, v]) => [k.toLowerCase(), v] as const),
  };
}

/** Facts about one request that a token source may be asked about (docs/auth-service.md). */
export interface TokenRequest {
  readonly sandbox: string;
  readonly user: string | undefined;
  readonly host: string;
  readonly port: number;
  readonly method: string;
  readonly path: string;
}

/** Counters of one credential's token cache (src/creds/token-cache.ts). */
export interface TokenCacheStats {
  readonly entries: number;
  /** Requests served from the cache without waiting. */
  readonly hits: number;
  /** Requests that had to wait for a token (first use, expired, invalidated). */
  readonly misses: number;
  /** Of the misses, those that joined a call already in flight (single-flight). */
  readonly coalesced: number;
  /** Calls made to the token service (each may include retries). */
  readonly fetches: number;
  /** Of the fetches, those started ahead of expiry while the old token was still served. */
  readonly refreshes: number;
  readonly failures: number;
  readonly invalidations: number;
  readonly evictions: number;
}

/**
 * A credential minted per request context (authService, oauth2): looked up in a bounded token
 * cache, fetched single-flight when missing. `acquire` returns the credential synchronously on a
 * cache hit (no promise on the hot path), a promise otherwise; it rejects with a TokenError
 * (src/creds/token-error.ts) whose message is safe to audit and never carries a token.
 */
export interface TokenSource {
  readonly id: string;
  readonly kind: 'authService' | 'oauth2' | 'googleServiceAccount';
  /** Identifies config and secrets: a reload keeps the source (and its cache) when this is unchanged. */
  readonly fingerprint: string;
  acquire(req: TokenRequest, net: TokenNet): Credential | Promise<Credential>;
  /** The upstream answered 401 to a request that carried `used`: forget it, unless already replaced. */
  reject(req: TokenRequest, used: Credential): void;
  stats(): TokenCacheStats;
}

/** What a token source needs of the current Runtime to reach its service (src/creds/token-client.ts). */
export interface TokenNet {
  /** sandgate's own resolver followed by the SSRF guard (the one upstream requests use). */
  readonly lookup: LookupFunction;
  /** The SSRF guard, for IP-literal URLs (they are not looked up). */
  readonly guard: { check(address: string): string | undefined };
  /** Verified TLS with the upstream trust (system roots + upstream.caFile), keep-alive. */
  readonly httpsAgent: HttpsAgent;
}

/** A static credential (compiled at load) or a token source. */
export type CredentialSource = Credential | TokenSource;

export function isTokenSource(c: CredentialSource): c is TokenSource {
  return 'acquire' in c;
}

/** The request target with the credential's query parameter set (query mode), else unchanged. */
export function injectQuery(target: string, cred: Credential): string {
  return cred.query === undefined ? target : withQueryParam(target, cred.query, cred.secret);
}

/**
 * Set query parameter `name` to `value` in an origin-form target, dropping every existing
 * parameter of that name (compared after decoding, so "k%65y" counts as "key"). Other parameters
 * keep their exact bytes and order.
 */
export function withQueryParam(target: string, name: string, value: string): string {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  const kept =
    query === ''
      ? []
      : query.split('&').filter((part) => {
          if (part === '') return false;
          const eq = part.indexOf('=');
          return decodeComponent(eq < 0 ? part : part.slice(0, eq)) !== name;
        });
  kept.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
  return `${path}?${kept.join('&')}`;
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * Token cache counters of every token source, by credential id, with the hit rate
 * (hits / (hits + misses)); undefined when there are none. For the `stop` audit line.
 */
export function tokenCacheStats(creds: ReadonlyMap<string, CredentialSource>): Record<string, TokenCacheStats & { hitRate: number | null }> | undefined {
  let out: Record<string, TokenCacheStats & { hitRate: number | null }> | undefined;
  for (const [id, c] of creds) {
    if (!isTokenSource(c)) continue;
    const s = c.stats();
    const asked = s.hits + s.misses;
    (out ??= {})[id] = { ...s, hitRate: asked === 0 ? null : Math.round((s.hits / asked) * 10_000) / 10_000 };
  }
  return out;
}
