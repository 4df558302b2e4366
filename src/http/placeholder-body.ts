/**
 * A credential's placeholder replaced beyond header values, where the credential opts in with
 * `placeholderIn` (docs/credentials-placeholders.md): in the query string, and in request bodies
 * of textual types (JSON, form, text), each time in the encoding that place uses, so the real
 * value arrives as the same string the placeholder stood for.
 */
import type { Credential } from '../creds/credential.js';

/** The target with the placeholder (as is, or percent-encoded) replaced in its query by the URL-encoded secret. */
export function queryPlaceholder(target: string, cred: Credential): string {
  const ph = cred.placeholder;
  const q = target.indexOf('?');
  if (ph === undefined || q < 0) return target;
  const enc = encodeURIComponent(cred.secret);
  let query = target
    .slice(q + 1)
    .split(ph)
    .join(enc);
  const phEnc = encodeURIComponent(ph);
  if (phEnc !== ph) query = query.split(phEnc).join(enc);
  return `${target.slice(0, q + 1)}${query}`;
}

export type BodyKind = 'json' | 'form' | 'text';

/** Which bodies are searched: JSON (application/json, +json), forms, text/*; anything else streams untouched. */
export function bodyKind(contentType: string | undefined): BodyKind | undefined {
  if (contentType === undefined) return undefined;
  const t = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  if (t === 'application/json' || t.endsWith('+json')) return 'json';
  if (t === 'application/x-www-form-urlencoded') return 'form';
  if (t.startsWith('text/')) return 'text';
  return undefined;
}

/**
 * The body with every placeholder replaced by the secret in the body's own encoding: JSON-escaped
 * in JSON (RFC 8259 §7), form-encoded in forms (the placeholder's encoded form too), as is in text.
 * Bytes are handled as latin1, so anything around the placeholder passes through unchanged.
 */
export function replaceInBody(body: Buffer, kind: BodyKind, cred: Credential): Buffer {
  const ph = cred.placeholder;
  if (ph === undefined) return body;
  let text = body.toString('latin1');
  if (!text.includes(ph) && (kind !== 'form' || !text.includes(formEncode(ph)))) return body;
  const secret = cred.secret;
  switch (kind) {
    case 'json':
      text = text.split(ph).join(JSON.stringify(secret).slice(1, -1));
      break;
    case 'form': {
      const enc = formEncode(secret);
      text = text.split(ph).join(enc);
      const phEnc = formEncode(ph);
      if (phEnc !== ph) text = text.split(phEnc).join(enc);
      break;
    }
    case 'text':
      text = text.split(ph).join(secret);
      break;
    default: {
      const never: never = kind;
      return never;
    }
  }
  return Buffer.from(text, 'latin1');
}

/** application/x-www-form-urlencoded (WHATWG URL §5.2): percent-encoding with "+" for spaces. */
function formEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, '+');
}
