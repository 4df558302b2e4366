/**
 * `googleServiceAccount` credentials: an access token minted from a Google service-account key
 * with the JWT bearer grant (RFC 7523 §2.1, Google's "OAuth 2.0 for server to server
 * applications"), injected as a bearer token (RFC 6750 §2.1) through the credential's
 * `header`/`format`. The key file stays in sandgate: only a signed assertion (valid one hour,
 * for one audience) goes to the token endpoint, and only the access token goes upstream.
 *
 * One token per credential (its scope list), cached and refreshed ahead of expiry like oauth2
 * tokens (token-cache.ts), one call in flight at a time; a 401 from the API drops it.
 */
import { createPrivateKey, createSign, type KeyObject } from 'node:crypto';
import type { Config, CredentialConfig, GoogleServiceAccountConfig } from '../config/types.js';
import { tokenUrlProblem } from '../config/schema/credentials.js';
import { SandgateError } from '../errors.js';
import { compileCredential, type Credential, type TokenCacheStats, type TokenNet, type TokenRequest, type TokenSource } from './credential.js';
import { DEFAULT_DELAYS_MS, TokenCache, realClock, withRetries, type Clock, type Issued } from './token-cache.js';
import { requestToken } from './oauth2.js';

/** RFC 7523 §2.1: the grant type of a JWT used as an authorization grant. */
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** Google accepts assertions valid for at most one hour. */
export const ASSERTION_LIFETIME_S = 3600;
const KEY = '';

/** The parts of a service-account key file sandgate uses. */
export interface ServiceAccountKey {
  readonly clientEmail: string;
  readonly privateKey: KeyObject;
  readonly privateKeyId: string | undefined;
  readonly tokenUri: string;
}

/**
 * Parse and check a key file's text. `where` names the config key in messages; no message ever
 * carries a value from the file other than token_uri, which is not a secret.
 */
export function parseServiceAccountKey(text: string, where: string, allowPrivate: readonly string[]): ServiceAccountKey {
  const bad = (why: string): SandgateError => new SandgateError(`${where}: ${why}`, 'SECRET');
  let o: Record<string, unknown>;
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    o = v as Record<string, unknown>;
  } catch {
    throw bad('the key file is not a JSON object (a service-account key file from the Google Cloud console is)');
  }
  if (o.type !== undefined && o.type !== 'service_account') throw bad('the key file\'s "type" must be "service_account"');
  const clientEmail = o.client_email;
  if (typeof clientEmail !== 'string' || !/^[^\s@"\\]+@[^\s@"\\]+$/.test(clientEmail)) throw bad('the key file needs "client_email", an email address');
  if (typeof o.private_key !== 'string') throw bad('the key file needs "private_key", a PEM private key');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: o.private_key, format: 'pem' });
  } catch {
    throw bad('"private_key" in the key file is not a PEM private key');
  }
  // RS256 (RFC 7518 §3.3) is what Google's token endpoint verifies; it needs an RSA key of 2048 bits or more.
  if (privateKey.asymmetricKeyType !== 'rsa' || (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    throw bad('"private_key" in the key file must be an RSA key of at least 2048 bits (RS256)');
  const tokenUri = o.token_uri ?? 'https://oauth2.googleapis.com/token';
  const problem = tokenUrlProblem(tokenUri, allowPrivate);
  if (problem !== undefined) throw bad(`"token_uri" in the key file ${problem}`);
  const privateKeyId = typeof o.private_key_id === 'string' && /^[A-Za-z0-9_-]{1,128}$/.test(o.private_key_id) ? o.private_key_id : undefined;
  return { clientEmail, privateKey, privateKeyId, tokenUri: tokenUri as string };
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/**
 * The signed assertion (RFC 7523 §3; RFC 7519 JWT, RFC 7515 compact JWS with RS256): issuer the
 * service account, audience the token endpoint, `scope` the space-separated scopes (Google's
 * extension), issued now, expiring an hour later. `nowS`: Unix seconds (wall clock: the server
 * checks iat and exp against its own clock).
 */
export function signAssertion(key: ServiceAccountKey, scopes: readonly string[], subject: string | undefined, nowS: number): string {
  const header = { alg: 'RS256', typ: 'JWT', ...(key.privateKeyId !== undefined ? { kid: key.privateKeyId } : {}) };
  const claims = {
    iss: key.clientEmail,
    scope: scopes.join(' '),
    aud: key.tokenUri,
    iat: nowS,
    exp: nowS + ASSERTION_LIFETIME_S,
    ...(subject !== undefined ? { sub: subject } : {}),
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createSign('RSA-SHA256').update(input).sign(key.privateKey);
  return `${input}.${b64url(sig)}`;
}

/** The form body of the token request (RFC 7523 §2.1). */
export function jwtBearerBody(assertion: string): string {
  return new URLSearchParams({ grant_type: JWT_BEARER_GRANT, assertion }).toString();
}

export class GoogleServiceAccountSource implements TokenSource {
  readonly kind = 'googleServiceAccount' as const;
  readonly #cache: TokenCache<Credential>;
  readonly #url: URL;
  readonly #clock: Clock;
  readonly #wallS: () => number;

  constructor(
    readonly id: string,
    private readonly cfg: CredentialConfig & { readonly googleServiceAccount: GoogleServiceAccountConfig },
    private readonly key: ServiceAccountKey,
    readonly fingerprint: string,
    opts: { clock?: Clock; wallS?: () => number } = {},
  ) {
    this.#url = new URL(key.tokenUri);
    this.#clock = opts.clock ?? realClock;
    this.#wallS = opts.wallS ?? (() => Math.floor(Date.now() / 1000));
    this.#cache = new TokenCache<Credential>({ maxEntries: 1, clock: this.#clock });
  }

  acquire(_req: TokenRequest, tnet: TokenNet): Credential | Promise<Credential> {
    return this.#cache.get(KEY, () =>
      withRetries((left) => this.#call(tnet, left), { delaysMs: DEFAULT_DELAYS_MS, timeoutMs: this.cfg.googleServiceAccount.timeoutMs }, this.#clock),
    );
  }

  reject(_req: TokenRequest, used: Credential): void {
    this.#cache.invalidate(KEY, used);
  }

  stats(): TokenCacheStats {
    return this.#cache.stats();
  }

  async #call(tnet: TokenNet, timeoutMs: number): Promise<Issued<Credential>> {
    const g = this.cfg.googleServiceAccount;
    // A fresh assertion per call: its iat must be recent, and a retry must not reuse an old one.
    const body = jwtBearerBody(signAssertion(this.key, g.scopes, g.subject, this.#wallS()));
    const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    const answer = await requestToken(this.#url, headers, body, timeoutMs, tnet);
    return { value: compileCredential(this.id, this.cfg, answer.accessToken), lifetimeMs: answer.lifetimeMs };
  }
}

/** Read and parse the key file at load (`read`: the secret readers' readFile). */
export function loadServiceAccountKey(
  config: Config,
  id: string,
  g: GoogleServiceAccountConfig,
  read: (file: string) => string,
): { key: ServiceAccountKey; text: string } {
  const where = `credentials.${id}.googleServiceAccount.keyFile`;
  let text: string;
  try {
    text = read(g.keyFile);
  } catch (err) {
    throw new SandgateError(`${where}: cannot read ${g.keyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 'SECRET');
  }
  return { key: parseServiceAccountKey(text, where, config.upstream.allowPrivate), text };
}
