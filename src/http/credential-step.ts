/**
 * Between admission and forwarding: the request's credential. Static credentials (and token-cache
 * hits) are handed over synchronously, so the common path adds no promise and no tick; a token
 * source with nothing usable cached is awaited (single-flight, bounded by its timeoutMs). If no
 * credential can be had, the request fails closed: 503, never forwarded without it
 * (docs/auth-service.md, "Failure").
 */
import { isTokenSource, type Credential, type TokenNet, type TokenRequest, type TokenSource } from '../creds/credential.js';
import { asTokenError, type TokenError } from '../creds/token-error.js';
import type { Admitted } from './admit.js';

/** A token source and the request it was asked for (to drop and refresh the token after a 401). */
export interface Dynamic {
  readonly src: TokenSource;
  readonly req: TokenRequest;
  readonly net: TokenNet;
}

/** Bodies up to this size are kept while they stream upstream, so a 401 can be retried with a new token. */
export const MAX_REPLAY_BODY = 64 * 1024;

/** What the token service is told: this request's own sandbox and user (never another connection's). */
export function tokenRequest(adm: Admitted): TokenRequest {
  return {
    sandbox: adm.info.sandbox.name,
    user: adm.info.sandbox.user,
    host: adm.host,
    port: adm.upstream.port,
    method: adm.base.method ?? 'GET',
    path: adm.base.path ?? '/',
  };
}

/** Told the request's credential, or why none can be had. */
export interface CredentialWaiter {
  /** `cred`: undefined when there is none to inject; `dyn`: set for a token source. */
  credentialReady(cred: Credential | undefined, dyn: Dynamic | undefined): void;
  credentialFailed(err: TokenError): void;
}

/**
 * Tell `waiter` the request's credential, synchronously when no wait is needed (a static one, a
 * token-cache hit), or why none could be had.
 */
export function withCredential(adm: Admitted, waiter: CredentialWaiter): void {
  const src = adm.credential;
  if (src === undefined || !isTokenSource(src)) {
    waiter.credentialReady(src, undefined);
    return;
  }
  const dyn: Dynamic = { src, req: tokenRequest(adm), net: adm.info.rt.tokenNet };
  let got: Credential | Promise<Credential>;
  try {
    got = src.acquire(dyn.req, dyn.net);
  } catch (err) {
    waiter.credentialFailed(asTokenError(err));
    return;
  }
  if (got instanceof Promise)
    got.then(
      (c) => {
        waiter.credentialReady(c, dyn);
      },
      (err: unknown) => {
        waiter.credentialFailed(asTokenError(err));
      },
    );
  else waiter.credentialReady(got, dyn);
}

/** After an upstream 401: drop the token `used` (unless a newer one replaced it already) and get the next one. */
export function refreshCredential(dyn: Dynamic, used: Credential): Promise<Credential> {
  dyn.src.reject(dyn.req, used);
  try {
    return Promise.resolve(dyn.src.acquire(dyn.req, dyn.net));
  } catch (err) {
    return Promise.reject(asTokenError(err));
  }
}

/** The audit reason for a request that got no credential (names the credential and the cause, never a value). */
export function unavailableReason(adm: Admitted, err: TokenError): string {
  return `credential ${adm.credential?.id ?? ''} unavailable: ${err.message}`;
}
