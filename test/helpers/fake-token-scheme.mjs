// Tokens the fake auth service mints and the fake API checks (test helpers only). A token names
// its subject (a user, or "client:<id>" for OAuth2 clients), a serial and its expiry, and is
// signed with a key both fakes were given, so the API can tell whose token it is and whether it
// has expired without asking the service. Every token starts with "tk_": a test finding "tk_" in
// bytes a sandbox received, or in sandgate's output, has found a leak.
import { createHmac, timingSafeEqual } from 'node:crypto';

const hex = (s) => Buffer.from(s, 'utf8').toString('hex');
const sign = (key, body) => createHmac('sha256', key).update(body).digest('base64url').slice(0, 22);

export function mint(key, subject, serial, ttlMs) {
  const body = `tk_${hex(subject)}_${serial}_${Date.now() + Math.round(ttlMs)}`;
  return `${body}_${sign(key, body)}`;
}

/** {ok: true, subject, serial, expired} or {ok: false, why}. */
export function verify(key, token) {
  const m = /^(tk_([0-9a-f]+)_(\d+)_(\d+))_([A-Za-z0-9_-]{22})$/.exec(token ?? '');
  if (!m) return { ok: false, why: 'malformed' };
  const good = Buffer.from(sign(key, m[1]));
  const got = Buffer.from(m[5]);
  if (good.length !== got.length || !timingSafeEqual(good, got)) return { ok: false, why: 'bad signature' };
  return { ok: true, subject: Buffer.from(m[2], 'hex').toString('utf8'), serial: Number(m[3]), expired: Date.now() >= Number(m[4]) };
}
