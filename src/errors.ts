/**
 * One error type with stable codes (in the spirit of undici's UND_ERR_* and fastify's FST_ERR_*).
 * The CLI prints `message` only: one sentence naming the file, key or flag at fault, never a stack.
 */
export type ErrorCode =
  | 'CONFIG' // the config file is unreadable or invalid
  | 'USAGE' // bad command line
  | 'FIREWALL' // nft / ip failed
  | 'CA' // interception CA unreadable or invalid
  | 'SECRET' // a credential's secret source is missing
  | 'LISTEN' // a listener could not bind
  | 'UPSTREAM_RESOLVE'
  | 'UPSTREAM_CONNECT'
  | 'UPSTREAM_TLS'
  | 'UPSTREAM_FORBIDDEN'
  | 'UPSTREAM_REQUEST' // a request sandgate would send upstream is malformed (a header value with a line break)
  | 'REJECTED' // the daemon refused a request (control API 4xx): bad or conflicting input
  | 'TLS_LEAF' // a leaf certificate could not be issued for a name (src/tls/leaf-cache.ts)
  | 'TOKEN' // a token source could not produce a credential (src/creds/token-error.ts)
  | 'AWS_CHUNKED' // an aws-chunked request body that cannot be re-signed (src/http/aws-chunked.ts)
  | 'TOPOLOGY' // network namespaces for the demo or tests could not be built
  | 'DEMO' // the demo could not set itself up
  | 'RUNTIME';

export class SandgateError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, code: ErrorCode, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandgateError';
    this.code = code;
  }
}

/** Exit codes (docs/operations.md): 0 ok, 1 runtime failure, 2 bad usage or bad config. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof SandgateError && (err.code === 'CONFIG' || err.code === 'USAGE' || err.code === 'SECRET' || err.code === 'REJECTED')) return 2;
  return 1;
}
