/**
 * Requests whose head cannot be built from the head alone (src/http/exchange.ts runs them): an
 * AWS request re-signed with the real keys (src/http/aws-resign.ts), and a body whose credential
 * placeholder is replaced (src/http/placeholder-body.ts). Either may need the whole body first
 * (buffered by src/http/body-buffer.ts, bounded), or transform it as it streams.
 */
import { DEFAULT_MAX_SIGNED_BODY } from '../creds/aws-placeholder.js';
import type { Credential } from '../creds/credential.js';
import { planAws, type AwsRequest } from './aws-resign.js';
import { bodyKind, replaceInBody } from './placeholder-body.js';
import { placeholderIn, renderHead, requestTarget, upstreamFields } from './request-head.js';

/** Transforms a streamed body; same total length out as in. Throws SandgateError on a malformed body. */
export interface BodyTransform {
  push(c: Buffer): Buffer;
  end(): void;
  /** The exchange is over: let go of what is held (idempotent; push throws afterwards). */
  release(): void;
}

export interface Built {
  readonly head: string;
  /** The body to send (length-framed) when it was buffered. */
  readonly body: Buffer | undefined;
  /** Strings this request put upstream that must not come back to the sandbox (a signature). */
  readonly needles?: readonly string[];
  readonly transform?: BodyTransform | undefined;
}

export interface Rewrite {
  /** Set: the body must be buffered whole (at most this many bytes) before build(). */
  readonly bufferLimit: number | undefined;
  /** The head (and body); `body` is the buffered body, if bufferLimit was set. Throws SandgateError. */
  build(body: Buffer | undefined, nowMs: number): Built;
}

export type Planned =
  | { readonly ok: true; readonly rewrite: Rewrite | undefined }
  | { readonly ok: false; readonly status: number; readonly error: string; readonly reason: string };

const DROP_FRAMING: ReadonlySet<string> = new Set(['content-length']);
const NONE: Planned = { ok: true, rewrite: undefined };

function header(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === name) return raw[i + 1];
  return undefined;
}

/** How the request is rewritten with `cred` (undefined rewrite: the ordinary path, headers only). */
export function planRewrite(req: AwsRequest, host: string, hostHeader: string, cred: Credential): Planned {
  if (cred.aws !== undefined) return planAws(req, host, hostHeader, cred, cred.aws);
  if (!placeholderIn(cred, 'body') || !req.hasBody) return NONE;
  const kind = bodyKind(header(req.rawHeaders, 'content-type'));
  const coding = header(req.rawHeaders, 'content-encoding')?.trim().toLowerCase();
  // Only bodies sandgate can read as sent: a textual type, not compressed.
  if (kind === undefined || (coding !== undefined && coding !== '' && coding !== 'identity')) return NONE;
  const limit = cred.maxBodyBytes ?? DEFAULT_MAX_SIGNED_BODY;
  if (req.length > limit)
    return {
      ok: false,
      status: 413,
      error: 'content too large',
      reason: `a body searched for the placeholder is held whole; this one is larger than ${limit} bytes`,
    };
  return {
    ok: true,
    rewrite: {
      bufferLimit: limit,
      build(body: Buffer | undefined): Built {
        const out = replaceInBody(body ?? Buffer.alloc(0), kind, cred);
        // Sent with its new length; a chunked upload is re-framed as one length-delimited body.
        const fields = upstreamFields(req, hostHeader, cred, false, DROP_FRAMING);
        fields.push(['Content-Length', String(out.length)]);
        return { head: renderHead(req.method, requestTarget(req.url, cred), fields), body: out };
      },
    },
  };
}
