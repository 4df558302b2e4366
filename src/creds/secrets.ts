import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config, CredentialConfig, SecretSource } from '../config/types.js';
import { SandgateError } from '../errors.js';
import { compileCredential, isTokenSource, type Credential, type CredentialSource } from './credential.js';
import { AuthServiceSource } from './auth-service.js';
import { OAuth2Source } from './oauth2.js';
import { GoogleServiceAccountSource, loadServiceAccountKey } from './google-service-account.js';
import { compileAwsCredential } from './aws.js';

/** Shorter secrets would make response scrubbing mangle ordinary text, and are guessable anyway. */
export const MIN_SECRET_LENGTH = 8;

export interface SecretReaders {
  env: NodeJS.ProcessEnv;
  readFile: (file: string) => string;
}

const defaultReaders: SecretReaders = { env: process.env, readFile: (f) => readFileSync(f, 'utf8') };

/**
 * The static credentials only (`secret:`), compiled; see loadCredentialSources for all of them.
 * Every credential's secrets are still read and checked.
 */
export function loadCredentials(config: Config, readers: SecretReaders = defaultReaders): ReadonlyMap<string, Credential> {
  const out = new Map<string, Credential>();
  for (const [id, c] of loadCredentialSources(config, readers)) if (!isTokenSource(c)) out.set(id, c);
  return out;
}

/**
 * Resolve every credential's secrets once, at config load (the data path never reads env or
 * files): static secrets are compiled into credentials, `authService`/`oauth2` ones become token
 * sources holding their service key / client secret / refresh token, `googleServiceAccount` ones
 * token sources holding the parsed key file (src/creds/google-service-account.ts). A missing variable or
 * unreadable file is a config error (exit 2) naming the key (`credentials.ID.secret`,
 * `credentials.ID.authService.secret`...); the message never contains the value.
 *
 * `previous` (on reload): a token source whose config and secrets are unchanged is kept, with its
 * cache and any rotated refresh token, so a SIGHUP neither drops every token nor rolls a rotated
 * refresh token back to the (now revoked) one in the file.
 */
export function loadCredentialSources(
  config: Config,
  readers: SecretReaders = defaultReaders,
  previous?: ReadonlyMap<string, CredentialSource>,
): ReadonlyMap<string, CredentialSource> {
  const out = new Map<string, CredentialSource>();
  for (const [id, c] of Object.entries(config.credentials)) {
    const key = `credentials.${id}`;
    if (c.secret !== undefined) {
      out.set(id, compileCredential(id, c, readSecret(`${key}.secret`, c.secret, readers)));
      continue;
    }
    const keep = (fingerprint: string): CredentialSource | undefined => {
      const prev = previous?.get(id);
      return prev !== undefined && isTokenSource(prev) && prev.fingerprint === fingerprint ? prev : undefined;
    };
    const aws = c.awsSigV4;
    if (aws?.authService !== undefined) {
      // Temporary keys per (user, host) from the operator's service (docs/credentials-aws.md).
      const serviceKey = readSecret(`${key}.awsSigV4.authService.secret`, aws.authService.secret, readers);
      const fp = fingerprint(c, [serviceKey]);
      out.set(id, keep(fp) ?? new AuthServiceSource(id, { ...c, authService: aws.authService }, serviceKey, fp));
      continue;
    }
    if (aws !== undefined && aws.accessKeyId !== undefined && aws.secretAccessKey !== undefined) {
      out.set(
        id,
        compileAwsCredential(id, aws, {
          accessKeyId: readSecret(`${key}.awsSigV4.accessKeyId`, aws.accessKeyId, readers),
          secretAccessKey: readSecret(`${key}.awsSigV4.secretAccessKey`, aws.secretAccessKey, readers),
          sessionToken: aws.sessionToken !== undefined ? readSecret(`${key}.awsSigV4.sessionToken`, aws.sessionToken, readers) : undefined,
        }),
      );
      continue;
    }
    if (c.authService !== undefined) {
      const cfg = { ...c, authService: c.authService };
      const serviceKey = readSecret(`${key}.authService.secret`, c.authService.secret, readers);
      const fp = fingerprint(c, [serviceKey]);
      out.set(id, keep(fp) ?? new AuthServiceSource(id, cfg, serviceKey, fp));
    } else if (c.oauth2 !== undefined) {
      const o = c.oauth2;
      const cfg = { ...c, oauth2: o };
      const clientSecret = o.clientSecret !== undefined ? readSecret(`${key}.oauth2.clientSecret`, o.clientSecret, readers) : undefined;
      const refreshToken = o.refreshToken !== undefined ? readSecret(`${key}.oauth2.refreshToken`, o.refreshToken, readers) : undefined;
      const fp = fingerprint(c, [clientSecret ?? '', refreshToken ?? '']);
      out.set(id, keep(fp) ?? new OAuth2Source(id, cfg, clientSecret, refreshToken, fp));
    } else if (c.googleServiceAccount !== undefined) {
      const cfg = { ...c, googleServiceAccount: c.googleServiceAccount };
      const { key, text } = loadServiceAccountKey(config, id, c.googleServiceAccount, readers.readFile);
      const fp = fingerprint(c, [text]);
      out.set(id, keep(fp) ?? new GoogleServiceAccountSource(id, cfg, key, fp));
    }
  }
  return out;
}

/** The config and a hash of the secrets it resolved to: equal only when nothing about the credential changed. */
function fingerprint(c: CredentialConfig, secrets: readonly string[]): string {
  const h = createHash('sha256');
  for (const s of secrets) h.update(s).update('\0');
  return `${JSON.stringify(c)}#${h.digest('hex')}`;
}

function readSecret(key: string, src: SecretSource, r: SecretReaders): string {
  let raw: string;
  if ('env' in src) {
    const v = r.env[src.env];
    if (v === undefined) throw new SandgateError(`${key}: environment variable ${src.env} is not set`, 'SECRET');
    raw = v;
  } else {
    try {
      raw = r.readFile(src.file);
    } catch (err) {
      throw new SandgateError(`${key}: cannot read ${src.file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 'SECRET');
    }
  }
  // Files and `export X=$(cat f)` usually end in a newline that is not part of the secret.
  const value = raw.replace(/\r?\n$/, '');
  const where = 'env' in src ? `environment variable ${src.env}` : src.file;
  if (value.length === 0) throw new SandgateError(`${key}: ${where} is empty`, 'SECRET');
  // It goes into a header field (RFC 9110 §5.5: no CR/LF/NUL) and is matched byte for byte in
  // responses, so printable ASCII only.
  if (!/^[\x20-\x7e]+$/.test(value) || value.trim() !== value) {
    throw new SandgateError(`${key}: ${where} must hold one line of printable ASCII without leading or trailing spaces`, 'SECRET');
  }
  if (value.length < MIN_SECRET_LENGTH) {
    throw new SandgateError(`${key}: ${where} is shorter than ${MIN_SECRET_LENGTH} characters (too short to scrub reliably from responses)`, 'SECRET');
  }
  return value;
}
