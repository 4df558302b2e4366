/**
 * One POST to a token service (auth service or OAuth2 token endpoint), bounded in time and size.
 *
 * Transport rules (docs/auth-service.md, "Transport"), the same trust as upstreams:
 * - https: verified TLS with the upstream roots (system + upstream.caFile) through the upstream
 *   keep-alive pool; a name resolves through sandgate's resolver and the SSRF guard.
 * - http: the validator only lets it name an IP literal that is loopback or in allowPrivate.
 * - An IP literal is not looked up, so the guard is applied here; a loopback literal is accepted
 *   as is (the operator wrote it, no DNS answer chose it, and it never leaves the host).
 * Failures become TokenErrors: connection errors, timeouts, 5xx, 408 and 429 are retryable;
 * certificate failures, guard refusals and other statuses are not.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { SandgateError } from '../errors.js';
import { tlsFailure } from '../upstream/tls.js';
import type { TokenNet } from './credential.js';
import { TokenError } from './token-error.js';

/** Token responses are small; a bigger one is a misconfigured URL, not a token. */
export const MAX_RESPONSE_BYTES = 64 * 1024;

/** Keep-alive for http:// services (loopback or a private link). */
const plainAgent = new http.Agent({ keepAlive: true, maxFreeSockets: 16, timeout: 30_000 });

export interface TokenResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

export function isLoopbackLiteral(host: string): boolean {
  if (host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return net.isIPv4(v4) && v4.startsWith('127.');
}

/**
 * POST `body` to `url` and return the status and body text; throws TokenError. `what` names the
 * service in messages ("auth service", "token endpoint"); it and the URL's origin are the only
 * things about the exchange that reach an error message.
 */
export function postToken(url: URL, headers: Record<string, string>, body: string, timeoutMs: number, tnet: TokenNet, what: string): Promise<TokenResponse> {
  const where = `${what} ${url.origin}`;
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const tls = url.protocol === 'https:';
  if (net.isIP(host) !== 0 && !isLoopbackLiteral(host)) {
    const why = tnet.guard.check(host);
    if (why !== undefined) return Promise.reject(new TokenError(`${where}: ${why}`, false));
  }
  return new Promise<TokenResponse>((resolve, reject) => {
    let settled = false;
    const fail = (err: TokenError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const opts: https.RequestOptions = {
      method: 'POST',
      host,
      port: url.port === '' ? (tls ? 443 : 80) : Number(url.port),
      path: url.pathname + url.search,
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      // Names go through sandgate's resolver and the guard; literals are not looked up at all.
      lookup: tnet.lookup,
      agent: tls ? tnet.httpsAgent : plainAgent,
      ...(tls && net.isIP(host) === 0 ? { servername: host } : {}),
    };
    const req = tls ? https.request(opts) : http.request(opts);
    const timer = setTimeout(() => fail(new TokenError(`${where} did not answer within ${timeoutMs} ms`, true)), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN') return fail(new TokenError(`${where}: ${err.message}`, false));
      if (err instanceof SandgateError && err.code === 'UPSTREAM_RESOLVE') return fail(new TokenError(`${where}: ${err.message}`, true));
      const tlsReason = tls ? tlsFailure(err) : undefined;
      if (tlsReason !== undefined) return fail(new TokenError(`${where}: ${tlsReason}`, false));
      fail(new TokenError(`${where} unreachable (${err.code ?? 'connection error'})`, true));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE_BYTES) {
          fail(new TokenError(`${where} sent a response larger than ${MAX_RESPONSE_BYTES} bytes`, false));
          return;
        }
        chunks.push(c);
      });
      res.on('error', () => fail(new TokenError(`${where} broke off its response`, true)));
      res.on('aborted', () => fail(new TokenError(`${where} broke off its response`, true)));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.end(body);
  });
}

/** RFC 9110 §15.6 server errors, 408 and 429 (RFC 6585 §4) are worth another try; other statuses are answers. */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** JSON.parse of a token response; a TokenError naming the service when it is not JSON. */
export function parseJsonBody(r: TokenResponse, where: string): unknown {
  try {
    return JSON.parse(r.body) as unknown;
  } catch {
    throw new TokenError(`${where} answered ${r.status} with a body that is not JSON`, false);
  }
}
