/** Credentials: where each secret or token comes from, and how it is put into requests (docs/interception.md, docs/auth-service.md). */
import net from 'node:net';
import type { AuthServiceConfig, AwsSigV4Config, Config, CredentialConfig, GoogleServiceAccountConfig, OAuth2Config, PlaceholderPlace } from '../types.js';
import { AWS_PLACEHOLDER_KEY_ID, DEFAULT_MAX_SIGNED_BODY } from '../../creds/aws-placeholder.js';
import { DEFAULTS } from '../defaults.js';
import { inAny, parseCidr, parseIp, type Cidr } from '../../util/ip.js';
import { NAME, TOKEN, type Obj, type PathPart, type Reader } from './reader.js';

export function credentials(v: Reader, raw: unknown, upstream: Config['upstream']): Record<string, CredentialConfig> {
  const out: Record<string, CredentialConfig> = {};
  if (raw === undefined || raw === null) return out;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    v.fail(['credentials'], 'must be a mapping of credential id to credential');
    return out;
  }
  for (const [id, val] of Object.entries(raw as Obj)) {
    const p = ['credentials', id];
    if (!NAME.test(id)) {
      v.fail(p, `credential id "${id}" must match [A-Za-z0-9_.-]{1,64}`, true);
      continue;
    }
    const c = v.obj(val, p, [
      'secret',
      'authService',
      'oauth2',
      'googleServiceAccount',
      'awsSigV4',
      'header',
      'format',
      'placeholder',
      'placeholderIn',
      'maxBodyBytes',
      'basic',
      'query',
    ]);
    if (!c) continue;
    const sources = (['secret', 'authService', 'oauth2', 'googleServiceAccount', 'awsSigV4'] as const).filter((k) => c[k] !== undefined && c[k] !== null);
    if (sources.length !== 1) {
      v.fail(
        p,
        sources.length === 0
          ? 'needs one of "secret", "authService", "oauth2", "googleServiceAccount" or "awsSigV4" (where the credential comes from)'
          : `has ${sources.map((k) => `"${k}"`).join(' and ')}: exactly one source is allowed`,
      );
      continue;
    }
    const secret = c.secret !== undefined ? v.secret(c.secret, [...p, 'secret']) : undefined;
    const authService = c.authService !== undefined ? readAuthService(v, c.authService, [...p, 'authService'], upstream) : undefined;
    const oauth2 = c.oauth2 !== undefined ? readOAuth2(v, c.oauth2, [...p, 'oauth2'], upstream) : undefined;
    const googleServiceAccount =
      c.googleServiceAccount !== undefined ? readGoogleServiceAccount(v, c.googleServiceAccount, [...p, 'googleServiceAccount']) : undefined;
    const awsSigV4 = c.awsSigV4 !== undefined ? readAwsSigV4(v, c.awsSigV4, [...p, 'awsSigV4'], upstream) : undefined;
    if (awsSigV4) {
      // The request is re-signed whole: nothing else of an injected credential applies.
      for (const k of ['header', 'format', 'placeholder', 'placeholderIn', 'maxBodyBytes', 'basic', 'query'] as const)
        if (c[k] !== undefined) v.fail([...p, k], 'does not apply to an "awsSigV4" credential (see docs/credentials-aws.md)');
      out[id] = { awsSigV4, header: 'Authorization', format: 'Bearer {secret}' };
      continue;
    }
    let placeholderIn: PlaceholderPlace[] | undefined;
    if (c.placeholderIn !== undefined) {
      const list = v.list(c.placeholderIn, [...p, 'placeholderIn']);
      if (list) {
        placeholderIn = [];
        list.forEach((x, i) => {
          const place = v.oneOf(x, [...p, 'placeholderIn', i], ['header', 'query', 'body'] as const);
          if (place !== undefined && !placeholderIn?.includes(place)) placeholderIn?.push(place);
        });
        if (c.placeholder === undefined) v.fail([...p, 'placeholderIn'], 'needs "placeholder" (the string to replace)');
      }
    }
    const maxBodyBytes =
      c.maxBodyBytes !== undefined ? v.int(c.maxBodyBytes, [...p, 'maxBodyBytes'], 1024, 1024 * 1024 * 1024, DEFAULT_MAX_SIGNED_BODY) : undefined;
    const header = c.header === undefined ? 'Authorization' : (v.str(c.header, [...p, 'header'], TOKEN, 'a valid header name') ?? 'Authorization');
    let format = 'Bearer {secret}';
    if (c.format !== undefined) {
      const f = v.str(c.format, [...p, 'format']);
      if (f !== undefined && !f.includes('{secret}')) v.fail([...p, 'format'], 'must contain "{secret}"');
      else if (f !== undefined && /[\r\n\0]/.test(f)) v.fail([...p, 'format'], 'must not contain CR, LF or NUL');
      else if (f !== undefined) format = f;
    }
    let placeholder: string | undefined;
    if (c.placeholder !== undefined) {
      placeholder = v.str(c.placeholder, [...p, 'placeholder'], /^[\x21-\x7e]{8,256}$/, 'a placeholder of 8 to 256 visible ASCII characters');
    }
    let basic: { username: string } | undefined;
    if (c.basic !== undefined) {
      const b = v.obj(c.basic, [...p, 'basic'], ['username'], ['username']);
      const username = b ? v.str(b.username, [...p, 'basic', 'username'], /^[^:\r\n\0]+$/, 'a user name without ":" or line breaks') : undefined;
      if (username !== undefined) basic = { username };
    }
    let query: string | undefined;
    if (c.query !== undefined) query = v.str(c.query, [...p, 'query'], /^[A-Za-z0-9_.~-]{1,64}$/, 'a query parameter name');
    if (basic && c.format !== undefined) v.fail([...p, 'format'], 'cannot be combined with "basic" (Basic builds the header value itself)');
    const source = secret ? { secret } : authService ? { authService } : oauth2 ? { oauth2 } : googleServiceAccount ? { googleServiceAccount } : undefined;
    if (source)
      out[id] = {
        ...source,
        header,
        format,
        ...(placeholder ? { placeholder } : {}),
        ...(basic ? { basic } : {}),
        ...(query ? { query } : {}),
        ...(placeholderIn ? { placeholderIn } : {}),
        ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
      };
  }
  return out;
}

/** AWS region and service names: lower-case letters, digits and dashes. */
const AWS_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

function readAwsSigV4(v: Reader, raw: unknown, p: PathPart[], upstream: Config['upstream']): AwsSigV4Config | undefined {
  const a = v.obj(raw, p, ['accessKeyId', 'secretAccessKey', 'sessionToken', 'authService', 'region', 'service', 'placeholderKeyId', 'maxBodyBytes']);
  if (!a) return undefined;
  const keyed = a.accessKeyId !== undefined || a.secretAccessKey !== undefined || a.sessionToken !== undefined;
  if (keyed === (a.authService !== undefined)) {
    v.fail(p, 'needs either "accessKeyId" and "secretAccessKey" (optionally "sessionToken") or "authService" (temporary keys), not both');
    return undefined;
  }
  if (keyed && (a.accessKeyId === undefined || a.secretAccessKey === undefined)) {
    v.fail(p, 'needs both "accessKeyId" and "secretAccessKey"');
    return undefined;
  }
  const authService = a.authService !== undefined ? readAuthService(v, a.authService, [...p, 'authService'], upstream) : undefined;
  const accessKeyId = a.accessKeyId !== undefined ? v.secret(a.accessKeyId, [...p, 'accessKeyId']) : undefined;
  const secretAccessKey = a.secretAccessKey !== undefined ? v.secret(a.secretAccessKey, [...p, 'secretAccessKey']) : undefined;
  const sessionToken = a.sessionToken !== undefined ? v.secret(a.sessionToken, [...p, 'sessionToken']) : undefined;
  const region = a.region !== undefined ? v.str(a.region, [...p, 'region'], AWS_NAME, 'a region name such as us-east-1') : undefined;
  const service = a.service !== undefined ? v.str(a.service, [...p, 'service'], AWS_NAME, 'a signing name such as s3 or bedrock') : undefined;
  const placeholderKeyId =
    a.placeholderKeyId !== undefined
      ? (v.str(a.placeholderKeyId, [...p, 'placeholderKeyId'], /^[A-Z0-9]{16,128}$/, 'an access key id of 16 to 128 upper-case letters and digits') ??
        AWS_PLACEHOLDER_KEY_ID)
      : AWS_PLACEHOLDER_KEY_ID;
  const maxBodyBytes = v.int(a.maxBodyBytes, [...p, 'maxBodyBytes'], 1024, 1024 * 1024 * 1024, DEFAULT_MAX_SIGNED_BODY);
  if (authService)
    return { authService, placeholderKeyId, maxBodyBytes, ...(region !== undefined ? { region } : {}), ...(service !== undefined ? { service } : {}) };
  if (!accessKeyId || !secretAccessKey) return undefined;
  return {
    accessKeyId,
    secretAccessKey,
    placeholderKeyId,
    maxBodyBytes,
    ...(sessionToken ? { sessionToken } : {}),
    ...(region !== undefined ? { region } : {}),
    ...(service !== undefined ? { service } : {}),
  };
}

/**
 * Where a token service lives. https: the name resolves like an upstream's and its address passes
 * the SSRF guard (upstream.allowPrivate); the certificate is verified like an upstream's.
 * http: only to an IP literal that is loopback or inside upstream.allowPrivate, because the
 * service key and the tokens cross that hop in clear; a name is refused, so that no DNS answer can
 * decide where they go (docs/auth-service.md, "Transport").
 */
function readTokenUrl(v: Reader, raw: unknown, p: PathPart[], upstream: Config['upstream']): string | undefined {
  const problem = tokenUrlProblem(raw, upstream.allowPrivate);
  return problem === undefined ? (raw as string) : v.fail(p, problem);
}

/**
 * What is wrong with a token service URL under the rules above, or undefined. Shared with the
 * token_uri of a Google service-account key file, which is only read at load
 * (src/creds/google-service-account.ts).
 */
export function tokenUrlProblem(raw: unknown, allowPrivate: readonly string[]): string | undefined {
  if (typeof raw !== 'string' || raw.length === 0) return 'must be an http(s) URL such as https://auth.internal.example/token';
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return `"${raw}" is not a URL`;
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'must be an https:// (or, to a loopback or allowPrivate address, http://) URL';
  if (u.username !== '' || u.password !== '') return 'must not carry user:password (the key goes in "secret")';
  if (u.hash !== '') return 'must not have a #fragment';
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  if (u.protocol === 'http:') {
    const ip = net.isIP(host) !== 0 ? parseIp(host) : undefined;
    if (!ip) return 'http:// is only allowed to an IP address (loopback or in upstream.allowPrivate); use https:// for a name';
    const allowed = allowPrivate.map((t) => parseCidr(t)).filter((c): c is Cidr => !('error' in c));
    if (!isLoopback(host) && !inAny(allowed, ip))
      return `http:// to ${host} is refused: tokens would cross the network in clear (use https://, or list the address in upstream.allowPrivate if it is a private link)`;
  }
  return undefined;
}

/** RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/**
 * `googleServiceAccount`: the key file's path (read at load, like a secret file: the private key
 * never lives in the config), the scopes the minted tokens carry, an optional subject.
 */
function readGoogleServiceAccount(v: Reader, raw: unknown, p: PathPart[]): GoogleServiceAccountConfig | undefined {
  const o = v.obj(raw, p, ['keyFile', 'scopes', 'subject', 'timeoutMs'], ['keyFile', 'scopes']);
  if (!o) return undefined;
  const keyFile = o.keyFile !== undefined ? v.str(o.keyFile, [...p, 'keyFile'], /^\//, 'an absolute path') : undefined;
  let scopes: string[] | undefined;
  if (o.scopes !== undefined && o.scopes !== null) {
    const list = v.list(o.scopes, [...p, 'scopes']);
    if (list && list.length === 0) v.fail([...p, 'scopes'], 'must list at least one scope (such as https://www.googleapis.com/auth/cloud-platform)');
    else if (list) {
      const got = list.map((s, i) => v.str(s, [...p, 'scopes', i], SCOPE_TOKEN, 'a scope (RFC 6749 §3.3: no spaces or quotes)'));
      if (got.every((s): s is string => s !== undefined)) scopes = got;
    }
  }
  const subject = o.subject !== undefined ? v.str(o.subject, [...p, 'subject'], /^[^\s@]+@[^\s@]+$/, 'an email address') : undefined;
  const timeoutMs = v.int(o.timeoutMs, [...p, 'timeoutMs'], 100, 60_000, DEFAULTS.tokenTimeoutMs);
  if (keyFile === undefined || scopes === undefined) return undefined;
  return { keyFile, scopes, timeoutMs, ...(subject !== undefined ? { subject } : {}) };
}

function readAuthService(v: Reader, raw: unknown, p: PathPart[], upstream: Config['upstream']): AuthServiceConfig | undefined {
  const a = v.obj(raw, p, ['url', 'timeoutMs', 'secret'], ['url', 'secret']);
  if (!a) return undefined;
  const url = a.url !== undefined ? readTokenUrl(v, a.url, [...p, 'url'], upstream) : undefined;
  const timeoutMs = v.int(a.timeoutMs, [...p, 'timeoutMs'], 100, 60_000, DEFAULTS.tokenTimeoutMs);
  const secret = a.secret !== undefined && a.secret !== null ? v.secret(a.secret, [...p, 'secret']) : undefined;
  return url !== undefined && secret ? { url, timeoutMs, secret } : undefined;
}

function readOAuth2(v: Reader, raw: unknown, p: PathPart[], upstream: Config['upstream']): OAuth2Config | undefined {
  const o = v.obj(
    raw,
    p,
    ['tokenUrl', 'grant', 'clientId', 'clientSecret', 'refreshToken', 'scope', 'clientAuth', 'timeoutMs'],
    ['tokenUrl', 'grant', 'clientId'],
  );
  if (!o) return undefined;
  const tokenUrl = o.tokenUrl !== undefined ? readTokenUrl(v, o.tokenUrl, [...p, 'tokenUrl'], upstream) : undefined;
  const grant = o.grant !== undefined ? v.oneOf(o.grant, [...p, 'grant'], ['client_credentials', 'refresh_token'] as const) : undefined;
  // RFC 6749 §2.3.1: client_id is form-encoded; printable ASCII keeps it unambiguous in a Basic header.
  const clientId = o.clientId !== undefined ? v.str(o.clientId, [...p, 'clientId'], /^[\x20-\x7e]{1,256}$/, 'a client id of printable ASCII') : undefined;
  const clientSecret = o.clientSecret !== undefined ? v.secret(o.clientSecret, [...p, 'clientSecret']) : undefined;
  const refreshToken = o.refreshToken !== undefined ? v.secret(o.refreshToken, [...p, 'refreshToken']) : undefined;
  if (grant === 'client_credentials' && o.clientSecret === undefined) v.fail(p, 'grant client_credentials needs "clientSecret"');
  if (grant === 'client_credentials' && o.refreshToken !== undefined) v.fail([...p, 'refreshToken'], 'only applies to grant refresh_token');
  if (grant === 'refresh_token' && o.refreshToken === undefined) v.fail(p, 'grant refresh_token needs "refreshToken"');
  let scope: string | undefined;
  // RFC 6749 §3.3: space-delimited scope-tokens of %x21 / %x23-5B / %x5D-7E.
  if (o.scope !== undefined)
    scope = v.str(
      o.scope,
      [...p, 'scope'],
      /^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$/,
      'a space-separated list of scope tokens (RFC 6749 §3.3)',
    );
  const clientAuth = o.clientAuth === undefined ? ('basic' as const) : (v.oneOf(o.clientAuth, [...p, 'clientAuth'], ['basic', 'body'] as const) ?? 'basic');
  const timeoutMs = v.int(o.timeoutMs, [...p, 'timeoutMs'], 100, 60_000, DEFAULTS.tokenTimeoutMs);
  if (tokenUrl === undefined || grant === undefined || clientId === undefined) return undefined;
  if (grant === 'client_credentials' && !clientSecret) return undefined;
  if (grant === 'refresh_token' && !refreshToken) return undefined;
  return {
    tokenUrl,
    grant,
    clientId,
    clientAuth,
    timeoutMs,
    ...(clientSecret ? { clientSecret } : {}),
    ...(refreshToken ? { refreshToken } : {}),
    ...(scope !== undefined ? { scope } : {}),
  };
}

/** 127.0.0.0/8 and ::1 (and ::ffff:127.x): the host itself, never routed off it. */
function isLoopback(host: string): boolean {
  if (host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return net.isIPv4(v4) && v4.startsWith('127.');
}
