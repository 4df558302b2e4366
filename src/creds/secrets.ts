import { readFileSync } from 'node:fs';
import type { Config, SecretSource } from '../config/types.js';
import { SandgateError } from '../errors.js';
import { compileCredential, type Credential } from './credential.js';

/** Shorter secrets would make response scrubbing mangle ordinary text, and are guessable anyway. */
export const MIN_SECRET_LENGTH = 8;

export interface SecretReaders {
  env: NodeJS.ProcessEnv;
  readFile: (file: string) => string;
}

const defaultReaders: SecretReaders = { env: process.env, readFile: (f) => readFileSync(f, 'utf8') };

/**
 * Resolve every credential's secret once, at config load (the data path never reads env or
 * files). A missing variable or unreadable file is a config error (exit 2) naming
 * `credentials.ID.secret`; the message never contains the value.
 */
export function loadCredentials(config: Config, readers: SecretReaders = defaultReaders): ReadonlyMap<string, Credential> {
  const out = new Map<string, Credential>();
  for (const [id, c] of Object.entries(config.credentials)) {
    out.set(id, compileCredential(id, c, readSecret(id, c.secret, readers)));
  }
  return out;
}

function readSecret(id: string, src: SecretSource, r: SecretReaders): string {
  const key = `credentials.${id}.secret`;
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
