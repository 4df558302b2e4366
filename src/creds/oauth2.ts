/**
 * `oauth2` credentials: an access token from an OAuth 2.0 token endpoint, with the client
 * credentials grant (RFC 6749 §4.4) or the refresh token grant (§6), injected as a bearer token
 * (RFC 6750 §2.1) through the credential's `header`/`format` (or `basic`/`query`).
 *
 * One token per credential, not per user: the client authenticates as itself, so every sandbox
 * using this credential acts as the same client (docs/auth-service.md, "OAuth2"). Cached and
 * refreshed like auth-service tokens (token-cache.ts), one call in flight at a time.
 *
 * A rotated refresh token (§6: the server "MAY issue a new refresh token") replaces the configured
 * one in memory; it survives SIGHUP reloads that leave this credential unchanged, not a restart.
 */
import type { CredentialConfig, OAuth2Config } from '../config/types.js';
import { compileCredential, type Credential, type TokenNet, type TokenRequest, type TokenSource, type TokenCacheStats } from './credential.js';
import { DEFAULT_DELAYS_MS, MAX_LIFETIME_MS, TokenCache, realClock, withRetries, type Clock, type Issued } from './token-cache.js';
import { parseJsonBody, postToken, retryableStatus } from './token-client.js';
import { TokenError } from './token-error.js';
import { checkToken } from './auth-service.js';

/** RFC 6749 §5.1 makes expires_in optional; without it a token is kept this long. */
export const DEFAULT_EXPIRES_IN_S = 300;
/** RFC 6749 §5.2 error codes are %x20-21 / %x23-5B / %x5D-7E: safe to put in an audit line. */
const ERROR_CODE = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/;
const KEY = '';

export interface OAuth2Answer {
  readonly accessToken: string;
  readonly lifetimeMs: number;
  readonly refreshToken: string | undefined;
}

/** Check a successful token response (RFC 6749 §5.1). Messages never carry a value. */
export function parseOAuth2Answer(body: unknown): OAuth2Answer {
  const bad = (why: string): TokenError => new TokenError(`token endpoint answer rejected: ${why}`, false);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('not a JSON object');
  const o = body as Record<string, unknown>;
  const accessToken = checkToken(o.access_token, '"access_token"', bad);
  // §5.1: token_type is required and case-insensitive; sandgate only knows how to send bearer
  // tokens (RFC 6750). A DPoP or MAC token sent as a bearer token would be refused anyway.
  if (typeof o.token_type !== 'string' || o.token_type.toLowerCase() !== 'bearer') throw bad('"token_type" must be "Bearer"');
  let expiresIn = DEFAULT_EXPIRES_IN_S;
  if (o.expires_in !== undefined) {
    // Some servers send it as a string ("3600"); the RFC's examples use a number.
    const n = typeof o.expires_in === 'string' && /^\d+(\.\d+)?$/.test(o.expires_in) ? Number(o.expires_in) : o.expires_in;
    if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) throw bad('"expires_in" must be a positive number of seconds');
    expiresIn = n;
  }
  const refreshToken = o.refresh_token === undefined ? undefined : checkToken(o.refresh_token, '"refresh_token"', bad);
  return { accessToken, lifetimeMs: Math.min(expiresIn * 1000, MAX_LIFETIME_MS), refreshToken };
}

/** The reason an error response gives (§5.2 `error`), when it is a well-formed code. */
function errorCode(text: string): string | undefined {
  try {
    const o = JSON.parse(text) as { error?: unknown };
    return typeof o.error === 'string' && ERROR_CODE.test(o.error) ? o.error : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One token request (RFC 6749 §3.2) through sandgate's upstream path, for the OAuth2 grants and
 * Google's JWT bearer grant alike: a non-2xx answer is a TokenError naming its §5.2 code (never
 * the body), retryable as its status says; a 2xx one is parsed as a §5.1 answer.
 */
export async function requestToken(url: URL, headers: Record<string, string>, body: string, timeoutMs: number, tnet: TokenNet): Promise<OAuth2Answer> {
  const where = `token endpoint ${url.origin}`;
  const r = await postToken(url, headers, body, timeoutMs, tnet, 'token endpoint');
  if (r.status < 200 || r.status > 299) {
    const code = errorCode(r.body);
    throw new TokenError(`${where} answered ${r.status}${code !== undefined ? ` (${code})` : ''}`, retryableStatus(r.status));
  }
  return parseOAuth2Answer(parseJsonBody(r, where));
}

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded, then joined for HTTP Basic. */
export function basicClientAuth(clientId: string, clientSecret: string): string {
  const enc = (s: string): string => new URLSearchParams({ s }).toString().slice(2);
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`, 'utf8').toString('base64')}`;
}

/** The form body and headers of one token request (pure, for the unit tests). */
export function tokenRequestBody(
  cfg: OAuth2Config,
  clientSecret: string | undefined,
  refreshToken: string | undefined,
): { body: string; headers: Record<string, string> } {
  const form = new URLSearchParams();
  form.set('grant_type', cfg.grant);
  if (cfg.grant === 'refresh_token' && refreshToken !== undefined) form.set('refresh_token', refreshToken);
  if (cfg.scope !== undefined) form.set('scope', cfg.scope);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (clientSecret !== undefined && cfg.clientAuth === 'basic') {
    headers.authorization = basicClientAuth(cfg.clientId, clientSecret);
  } else {
    // A public client (no secret) identifies itself with client_id (§3.2.1); "body" auth sends both.
    form.set('client_id', cfg.clientId);
    if (clientSecret !== undefined) form.set('client_secret', clientSecret);
  }
  return { body: form.toString(), headers };
}

export class OAuth2Source implements TokenSource {
  readonly kind = 'oauth2' as const;
  readonly #cache: TokenCache<Credential>;
  readonly #url: URL;
  readonly #clock: Clock;
  #refreshToken: string | undefined;

  constructor(
    readonly id: string,
    private readonly cfg: CredentialConfig & { readonly oauth2: OAuth2Config },
    private readonly clientSecret: string | undefined,
    refreshToken: string | undefined,
    readonly fingerprint: string,
    opts: { clock?: Clock } = {},
  ) {
    this.#url = new URL(cfg.oauth2.tokenUrl);
    this.#refreshToken = refreshToken;
    this.#clock = opts.clock ?? realClock;
    this.#cache = new TokenCache<Credential>({ maxEntries: 1, clock: this.#clock });
  }

  acquire(_req: TokenRequest, tnet: TokenNet): Credential | Promise<Credential> {
    return this.#cache.get(KEY, () =>
      withRetries((left) => this.#call(tnet, left), { delaysMs: DEFAULT_DELAYS_MS, timeoutMs: this.cfg.oauth2.timeoutMs }, this.#clock),
    );
  }

  reject(_req: TokenRequest, used: Credential): void {
    this.#cache.invalidate(KEY, used);
  }

  stats(): TokenCacheStats {
    return this.#cache.stats();
  }

  async #call(tnet: TokenNet, timeoutMs: number): Promise<Issued<Credential>> {
    const { body, headers } = tokenRequestBody(this.cfg.oauth2, this.clientSecret, this.#refreshToken);
    const answer = await requestToken(this.#url, headers, body, timeoutMs, tnet);
    if (answer.refreshToken !== undefined && this.cfg.oauth2.grant === 'refresh_token') this.#refreshToken = answer.refreshToken;
    return { value: compileCredential(this.id, this.cfg, answer.accessToken), lifetimeMs: answer.lifetimeMs };
  }
}
