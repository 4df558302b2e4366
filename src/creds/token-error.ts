import { SandgateError } from '../errors.js';
/**
 * Why a token could not be obtained. `message` goes to the audit line: it names the credential's
 * service and what went wrong (status, timeout, connection error, which field was bad) and never
 * carries a token, a key or a response body. The sandbox only ever sees `short`.
 */
export class TokenError extends SandgateError {
  /** Worth another try (connection refused, timeout, 5xx, 429); a 4xx or a malformed answer is not. */
  readonly retryable: boolean;
  /** For the sandbox's 503 body: no internal detail. */
  readonly short: string;

  constructor(message: string, retryable: boolean, short = 'the credential for this request could not be obtained') {
    super(message, 'TOKEN');
    this.name = 'TokenError';
    this.retryable = retryable;
    this.short = short;
  }
}

export function asTokenError(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  // Not expected (the clients wrap their failures); keep the message generic rather than risk
  // echoing anything a library put in it.
  return new TokenError(`token source failed (${(err as NodeJS.ErrnoException)?.code ?? 'internal error'})`, false);
}
