/**
 * `authService` credentials (docs/auth-service.md): sandgate POSTs the request's context to an
 * operator-run service, authenticated with sandgate's own key, and gets back a short-lived token
 * (`{token, expiresIn}`, injected like a static secret with `header`/`format`/`basic`/`query`) or
 * ready-made headers (`{headers, expiresIn}`). Tokens are cached per (user, host) for this
 * credential; see token-cache.ts for refresh, single-flight and bounds.
 */
import type { CredentialConfig } from '../config/types.js';
import { HOP_BY_HOP } from '../http/headers.js';
import {
  compileCredential,
  compileHeaderCredential,
  type Credential,
  type TokenNet,
  type TokenRequest,
  type TokenSource,
  type TokenCacheStats,
} from './credential.js';
import { DEFAULT_DELAYS_MS, MAX_LIFETIME_MS, TokenCache, realClock, withRetries, type Clock, type Issued } from './token-cache.js';
import { parseJsonBody, postToken, retryableStatus } from './token-client.js';
import { TokenError } from './token-error.js';
import { compileAwsCredential } from './aws.js';

/** Tokens kept per credential (keys are user x host); the least recently used go first. */
export const AUTH_CACHE_ENTRIES = 4096;
/** Shorter tokens would make response scrubbing mangle ordinary text (same rule as static secrets). */
export const MIN_TOKEN_LENGTH = 8;
export const MAX_TOKEN_LENGTH = 8192;
const MAX_HEADERS = 32;

const TOKEN_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // RFC 9110 §5.6.2
/** Visible ASCII and spaces, no leading/trailing space: no CR, LF, NUL or other control (RFC 9110 §5.5). */
const FIELD_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
/**
 * Headers an auth service may not set: hop-by-hop ones (RFC 9110 §7.6.1) and those that frame or
 * route the request (Host, Content-Length, Expect...), which sandgate owns.
 */
const REFUSED_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'host',
  'content-length',
  'content-encoding',
  'expect',
  'http2-settings',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'via',
]);

export type AuthAnswer =
  | { readonly kind: 'token'; readonly token: string; readonly lifetimeMs: number }
  | { readonly kind: 'aws'; readonly keys: AwsTemporaryKeys; readonly lifetimeMs: number }
  | { readonly kind: 'headers'; readonly headers: readonly (readonly [string, string])[]; readonly lifetimeMs: number };

/**
 * Check an auth service's JSON answer. Messages name the field and the rule broken, never a value
 * (a malformed answer may still hold a real token).
 */
export interface AwsTemporaryKeys {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string | undefined;
}

/** An access key id: AWS's are upper-case letters and digits (AKIA..., ASIA...). */
const KEY_ID = /^[A-Z0-9]{16,128}$/;

/**
 * `aws`: the credential is awsSigV4, whose service answers
 * `{aws: {accessKeyId, secretAccessKey, sessionToken?}, expiresIn}` and nothing else.
 */
export function parseAuthAnswer(body: unknown, aws = false): AuthAnswer {
  const bad = (why: string): TokenError => new TokenError(`auth service answer rejected: ${why}`, false);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('not a JSON object');
  const o = body as Record<string, unknown>;
  const exp = o.expiresIn;
  if (typeof exp !== 'number' || !Number.isFinite(exp) || exp <= 0) throw bad('"expiresIn" must be a positive number of seconds');
  const lifetimeMs = Math.min(exp * 1000, MAX_LIFETIME_MS);
  if (aws) {
    const k = o.aws;
    if (o.token !== undefined || o.headers !== undefined || k === null || typeof k !== 'object' || Array.isArray(k))
      throw bad('an awsSigV4 credential needs "aws": {accessKeyId, secretAccessKey, sessionToken?} (and no "token" or "headers")');
    const a = k as Record<string, unknown>;
    if (typeof a.accessKeyId !== 'string' || !KEY_ID.test(a.accessKeyId)) throw bad('"aws.accessKeyId" must be 16 to 128 upper-case letters and digits');
    const secretAccessKey = checkToken(a.secretAccessKey, '"aws.secretAccessKey"', bad);
    const sessionToken = a.sessionToken === undefined ? undefined : checkToken(a.sessionToken, '"aws.sessionToken"', bad);
    return { kind: 'aws', keys: { accessKeyId: a.accessKeyId, secretAccessKey, sessionToken }, lifetimeMs };
  }
  if (o.aws !== undefined) throw bad('"aws" keys are only for an awsSigV4 credential');
  const hasToken = o.token !== undefined;
  const hasHeaders = o.headers !== undefined;
  if (hasToken === hasHeaders) throw bad('needs exactly one of "token" or "headers"');
  if (hasToken) return { kind: 'token', token: checkToken(o.token, '"token"', bad), lifetimeMs };
  const h = o.headers;
  if (h === null || typeof h !== 'object' || Array.isArray(h)) throw bad('"headers" must be an object of header name to value');
  const entries = Object.entries(h as Record<string, unknown>);
  if (entries.length === 0 || entries.length > MAX_HEADERS) throw bad(`"headers" must hold 1 to ${MAX_HEADERS} headers`);
  const seen = new Set<string>();
  const headers: (readonly [string, string])[] = [];
  for (const [name, value] of entries) {
    const lower = name.toLowerCase();
    // The name is safe to show once it is a valid token (no CR/LF, no value in it).
    if (!TOKEN_NAME.test(name) || name.length > 256) throw bad('a header name is not a valid field name (RFC 9110 §5.6.2)');
    if (REFUSED_HEADERS.has(lower) || lower.startsWith('proxy-')) throw bad(`header "${lower}" may not be set by an auth service`);
    if (seen.has(lower)) throw bad(`header "${lower}" appears twice`);
    seen.add(lower);
    if (typeof value !== 'string' || value.length > MAX_TOKEN_LENGTH || !FIELD_VALUE.test(value)) {
      throw bad(`the value of header "${lower}" must be one line of visible ASCII (no CR, LF or control characters), at most ${MAX_TOKEN_LENGTH} characters`);
    }
    headers.push([lower, value]);
  }
  return { kind: 'headers', headers, lifetimeMs };
}

/** A token: printable ASCII without spaces at the ends, long enough to scrub, short enough to be sane. */
export function checkToken(v: unknown, what: string, bad: (why: string) => TokenError): string {
  if (typeof v !== 'string') throw bad(`${what} must be a string`);
  if (v.length < MIN_TOKEN_LENGTH || v.length > MAX_TOKEN_LENGTH) throw bad(`${what} must be ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH} characters long`);
  if (!FIELD_VALUE.test(v)) throw bad(`${what} must be one line of visible ASCII without spaces at either end`);
  return v;
}

/** The cache key: the user when the sandbox has one, else the sandbox itself (never shared across sandboxes without a user). */
export function cacheKey(req: TokenRequest): string {
  return `${req.user !== undefined ? `u:${req.user}` : `s:${req.sandbox}`}\n${req.host}`;
}

export class AuthServiceSource implements TokenSource {
  readonly kind = 'authService' as const;
  readonly #cache: TokenCache<Credential>;
  readonly #url: URL;
  readonly #clock: Clock;

  constructor(
    readonly id: string,
    private readonly cfg: CredentialConfig & { readonly authService: NonNullable<CredentialConfig['authService']> },
    private readonly serviceKey: string,
    readonly fingerprint: string,
    opts: { clock?: Clock; maxEntries?: number } = {},
  ) {
    this.#url = new URL(cfg.authService.url);
    this.#clock = opts.clock ?? realClock;
    this.#cache = new TokenCache<Credential>({ maxEntries: opts.maxEntries ?? AUTH_CACHE_ENTRIES, clock: this.#clock });
  }

  acquire(req: TokenRequest, tnet: TokenNet): Credential | Promise<Credential> {
    return this.#cache.get(cacheKey(req), () =>
      withRetries((left) => this.#call(req, tnet, left), { delaysMs: DEFAULT_DELAYS_MS, timeoutMs: this.cfg.authService.timeoutMs }, this.#clock),
    );
  }

  reject(req: TokenRequest, used: Credential): void {
    this.#cache.invalidate(cacheKey(req), used);
  }

  stats(): TokenCacheStats {
    return this.#cache.stats();
  }

  async #call(req: TokenRequest, tnet: TokenNet, timeoutMs: number): Promise<Issued<Credential>> {
    const where = `auth service ${this.#url.origin}`;
    const body = JSON.stringify({
      sandbox: req.sandbox,
      user: req.user ?? null,
      credential: this.id,
      host: req.host,
      port: req.port,
      method: req.method,
      path: req.path,
    });
    const r = await postToken(
      this.#url,
      {
        'content-type': 'application/json',
        accept: 'application/json',
        authorization: `Bearer ${this.serviceKey}`,
      },
      body,
      timeoutMs,
      tnet,
      'auth service',
    );
    if (r.status < 200 || r.status > 299) throw new TokenError(`${where} answered ${r.status}`, retryableStatus(r.status));
    const aws = this.cfg.awsSigV4;
    const answer = parseAuthAnswer(parseJsonBody(r, where), aws !== undefined);
    let value: Credential;
    if (answer.kind === 'aws') {
      if (aws === undefined) throw new TokenError(`${where} answered AWS keys for a credential that is not awsSigV4`, false);
      value = compileAwsCredential(this.id, aws, answer.keys);
    } else if (answer.kind === 'token') value = compileCredential(this.id, this.cfg, answer.token);
    else value = compileHeaderCredential(this.id, this.cfg.header, answer.headers);
    return { value, lifetimeMs: answer.lifetimeMs };
  }
}
