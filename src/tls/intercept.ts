/**
 * TLS interception toward the sandbox: sandgate terminates the sandbox's TLS with a leaf for the
 * SNI host (minted by LeafCache, signed by the interception CA the sandbox trusts), then hands the
 * decrypted stream to the same HTTP/1.1 relay as plain HTTP (src/http/relay.ts), where every
 * request is checked, gets its credential, and goes upstream over a new, verified TLS connection.
 *
 * Only hosts whose rule has inject, methods or paths come here; every other allowed host is an
 * SNI-checked passthrough, never decrypted (src/net/connection.ts).
 *
 * ALPN offers h2 and http/1.1 (RFC 7301): a connection that settles on h2 is served by the HTTP/2
 * front (src/http/h2-front.ts), every stream an exchange of the same core as HTTP/1.1; any other
 * goes to the HTTP/1.1 relay. A client offering neither fails the handshake
 * (no_application_protocol) rather than speak a protocol sandgate would misparse.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { ConnInfo } from '../net/conn-info.js';
import { who } from '../net/conn-info.js';
import type { CompiledRule } from '../policy/policy.js';
import { normaliseHost } from '../policy/host-name.js';
import { serveH2 } from '../http/h2-front.js';
import { serveHttp } from '../http/relay.js';
import type { LeafCache } from './leaf-cache.js';

export interface InterceptorDeps {
  readonly leaves: LeafCache;
  /**
   * Registers the terminated TLS socket as the sandbox's open connection in place of the TCP
   * socket under it (src/net/conn-registry.ts); false: the sandbox is gone, drop it.
   */
  readonly track?: (sandbox: ConnInfo['sandbox'], tlsSocket: net.Socket, tcpSocket: net.Socket) => boolean;
}

export type Interceptor = (socket: net.Socket, head: Buffer, info: ConnInfo, rule: CompiledRule) => void;

export function createInterceptor(deps: InterceptorDeps): Interceptor {
  return (socket, head, info, rule) => {
    terminate(deps, socket, head, info, rule).catch((err: Error) => {
      info.rt.audit.write({ event: 'error', ...who(info), host: info.sni, reason: `interception failed: ${err.message}` });
      socket.destroy();
    });
  };
}

async function terminate(deps: InterceptorDeps, socket: net.Socket, head: Buffer, info: ConnInfo, rule: CompiledRule): Promise<void> {
  const { rt } = info;
  const sni = normaliseHost(info.sni ?? '');
  const base = { event: 'conn' as const, ...who(info), ...(info.ech ? { ech: true } : {}), proto: 'tls' as const, host: sni, rule: rule.id };
  let ctx: tls.SecureContext;
  try {
    ctx = deps.leaves.peek(sni) ?? (await deps.leaves.get(sni));
  } catch (err) {
    rt.audit.write({ ...base, decision: 'deny', reason: `cannot issue a certificate: ${(err as Error).message}` });
    socket.resetAndDestroy();
    return;
  }
  if (socket.destroyed) return;
  // The peeked ClientHello goes back into the socket's buffer; TLSSocket feeds buffered bytes
  // to OpenSSL before it starts reading the handle (node lib/_tls_wrap.js initRead).
  socket.unshift(head);
  const t = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: ctx,
    ALPNProtocols: ['h2', 'http/1.1'],
    requestCert: false,
  });
  let secure = false;
  let failed = false;
  /** A handshake that did not complete gets one audit line, however it ended. */
  const fail = (why: string): void => {
    if (secure || failed) return;
    failed = true;
    clearTimeout(timer);
    rt.audit.write({ ...base, decision: 'allow', intercept: true, error: `TLS handshake with the sandbox failed (${why})` });
    t.destroy();
  };
  // The handshake is bounded like the peek; an established stream has no timeout.
  const timer = setTimeout(() => fail(`not completed within ${rt.peekTimeoutMs} ms`), rt.peekTimeoutMs);
  t.once('secure', () => {
    secure = true;
    clearTimeout(timer);
    if (deps.track && !deps.track(info.sandbox, t, socket)) return;
    t.setNoDelay(true);
    const h2 = t.alpnProtocol === 'h2';
    rt.audit.write({ ...base, decision: 'allow', intercept: true, tlsVersion: t.getProtocol() ?? undefined, ...(h2 ? { alpn: 'h2' } : {}) });
    if (h2) serveH2(t, { ...info, sni, alpn: 'h2' });
    else serveHttp(t, { ...info, sni }, undefined);
  });
  // After the handshake the relay owns the socket and its errors. Before it, most often: the
  // sandbox does not trust sandgate's CA (alert "unknown ca" / "bad certificate").
  t.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
  // The sandbox hung up mid-handshake (a Node client that rejects the certificate closes without
  // an alert): the listener allows half-open connections, so nothing else would notice before
  // the handshake timer.
  t.once('end', () => fail('the sandbox closed the connection'));
  t.once('close', () => {
    clearTimeout(timer);
    if (!socket.destroyed) socket.destroy();
  });
}
