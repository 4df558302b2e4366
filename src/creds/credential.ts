import type { OutgoingHttpHeaders } from 'node:http';
import type { CredentialConfig } from '../config/types.js';

/**
 * A credential ready for the data path: the secret is resolved and every derived string
 * (header value, Basic form, needles to scrub) is computed once at load.
 *
 * How it is injected (docs/interception.md, "Injection"):
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
  const needles = new Set<string>([secret]);
  if (value !== undefined) needles.add(value);
  if (basic !== undefined) needles.add(basic);
  // Forms an echoing upstream may reflect it in: URL-encoded (query echo), base64 (a debug
  // endpoint decoding or re-encoding credentials), JSON-escaped (a body that quotes the request).
  needles.add(encodeURIComponent(secret));
  needles.add(Buffer.from(secret, 'utf8').toString('base64'));
  needles.add(JSON.stringify(secret).slice(1, -1));
  return {
    id,
    header: c.header.toLowerCase(),
    value,
    query: c.query,
    placeholder: c.placeholder,
    secret,
    needles: [...needles].sort((a, b) => b.length - a.length),
  };
}

type Headers = OutgoingHttpHeaders;

/**
 * Inject into request headers (a fresh object the caller owns, lower-case keys): placeholder
 * replacement first, then the credential header is set, replacing whatever was there.
 */
export function injectHeaders(headers: Headers, cred: Credential): void {
  const ph = cred.placeholder;
  if (ph !== undefined) {
    for (const [k, v] of Object.entries(headers)) {
      if (typeof v === 'string') {
        if (v.includes(ph)) headers[k] = v.split(ph).join(cred.secret);
      } else if (Array.isArray(v)) {
        if (v.some((x) => x.includes(ph))) headers[k] = v.map((x) => x.split(ph).join(cred.secret));
      }
    }
  }
  if (cred.value !== undefined) headers[cred.header] = cred.value;
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
  const kept = query === '' ? [] : query.split('&').filter((part) => {
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
