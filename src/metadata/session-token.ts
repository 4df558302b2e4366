/**
 * IMDSv2 session tokens (AWS: `PUT /latest/api/token`), without state: a token is its expiry and
 * an HMAC of (sandbox, expiry) under a key of this sandgate run, so no table grows with the
 * tokens a sandbox asks for, and a token one sandbox got is refused for another.
 *
 * What a token proves is only that the client could send a PUT with a custom header first (the
 * point of IMDSv2: a server-side request forgery through a GET-only fetcher cannot), so the key
 * needs no more protection than process memory. With `workers: N` every process must accept the
 * tokens of the others: the first process to need the key puts it in its environment, which the
 * workers node:cluster forks afterwards inherit.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const ENV = 'SANDGATE_METADATA_KEY';

let key: Buffer | undefined;

/** This run's key (created once; inherited by forked workers through the environment). */
export function sessionKey(): Buffer {
  if (key !== undefined) return key;
  const inherited = process.env[ENV];
  if (inherited !== undefined && /^[0-9a-f]{64}$/.test(inherited)) key = Buffer.from(inherited, 'hex');
  else {
    key = randomBytes(32);
    process.env[ENV] = key.toString('hex');
  }
  return key;
}

/** AWS accepts 1 to 21600 seconds (6 hours) in X-aws-ec2-metadata-token-ttl-seconds. */
export const MAX_TTL_S = 21_600;

function mac(k: Buffer, sandbox: string, expiryS: number): string {
  return createHmac('sha256', k).update(`${sandbox}\n${expiryS}`).digest('base64url');
}

/** A token for `sandbox` valid until nowS + ttlS. */
export function issueSessionToken(k: Buffer, sandbox: string, nowS: number, ttlS: number): string {
  const expiryS = nowS + ttlS;
  return `SG${expiryS}.${mac(k, sandbox, expiryS)}`;
}

/** Whether `token` was issued by this key for `sandbox` and has not expired at nowS. */
export function validSessionToken(k: Buffer, sandbox: string, token: string, nowS: number): boolean {
  const m = /^SG(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return false;
  const expiryS = Number(m[1]);
  if (expiryS <= nowS) return false;
  const want = Buffer.from(mac(k, sandbox, expiryS));
  const got = Buffer.from(m[2] as string);
  return got.length === want.length && timingSafeEqual(got, want);
}
