import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { SandgateError } from '../errors.js';
import type { Credential } from '../creds/credential.js';
import { asTokenError } from '../creds/token-error.js';
import { refreshCredential, unavailableReason, withCredential, type Dynamic } from './credential-step.js';
import { HOP_BY_HOP, jsonResponse, nameCarriesSecret, unrelayableTransferCoding } from './headers.js';
import { httpLine } from './http-audit.js';
import type { UpgradeHandover } from './io.js';
import { requestTarget, upgradeFields } from './request-head.js';
import { addCodings } from './response-head.js';
import { scrubStream, scrubString } from './scrub.js';
import { scrubFrames } from './ws-scrub.js';
import { literalRefused } from '../upstream/lookup.js';
import { tlsFailure } from '../upstream/tls.js';

/** A whole HTTP response written straight to a socket the HTTP server has let go of. */
export function rawResponse(socket: net.Socket, status: number, body: Record<string, unknown>): void {
  if (socket.writable) socket.end(jsonResponse(status, body));
  socket.destroySoon();
}

function head(status: number, message: string, raw: readonly string[], needles: readonly string[] | undefined, drop?: ReadonlySet<string>): string {
  const sc = (s: string): string => (needles ? scrubString(s, needles) : s);
  let out = `HTTP/1.1 ${status} ${sc(message)}\r\n`;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    if (drop?.has(k.toLowerCase())) continue;
    out += `${k}: ${sc(raw[i + 1] as string)}\r\n`;
  }
  if (drop) out += 'Connection: close\r\n';
  return out + '\r\n';
}

/**
 * Why an upstream's answer to an upgrade request cannot be relayed, or undefined. Bodies here are
 * relayed as Node's client decoded them (chunked framing only) and scrubbed as bytes, so a body
 * under any other transfer or content coding would pass the scrubber still compressed.
 */
function notRelayable(raw: readonly string[], needles: readonly string[] | undefined, hasBody: boolean): string | undefined {
  if (needles !== undefined && nameCarriesSecret(raw, needles)) return 'upstream sent a header field whose name carries the credential';
  if (!hasBody) return undefined;
  const te: string[] = [];
  let ce: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = (raw[i] as string).toLowerCase();
    if (k === 'transfer-encoding') te.push(raw[i + 1] as string);
    else if (k === 'content-encoding') ce = addCodings(ce, raw[i + 1] as string);
  }
  const coding = unrelayableTransferCoding(te);
  if (coding !== undefined) return `upstream sent Transfer-Encoding ${coding}, which sandgate does not relay`;
  if (needles !== undefined && ce !== undefined && ce !== '' && ce !== 'identity')
    return `upstream sent Content-Encoding ${ce} on an upgrade answer, which sandgate does not scrub`;
  return undefined;
}

/**
 * A WebSocket upgrade (RFC 6455 §4): the same admission as any request, the credential injected
 * into the upgrade request, a dedicated upstream connection (TLS when intercepted), the 101
 * relayed with scrubbed headers, then frames spliced both ways, the upstream's scrubbed frame by
 * frame (ws-scrub.ts: a secret split across a message's fragments is masked too). With a credential injected,
 * `Sec-WebSocket-Extensions` is not forwarded, so permessage-deflate (RFC 7692) is never
 * negotiated and the scrubber can see every upstream frame's payload; the mask keeps frame
 * lengths intact.
 *
 * With a token source, the credential is awaited first (503 if none can be had), and an upstream
 * 401 to the upgrade drops the token and retries once with a fresh one: the upgrade request has no
 * body and nothing has reached the sandbox yet, so it can be replayed.
 */
export function relayUpgrade(req: UpgradeHandover, socket: net.Socket): void {
  const { adm } = req;
  const started = performance.now();
  const refused = (status: number, reason: string): void => {
    adm.info.rt.audit.write(
      httpLine(adm.base, {
        host: adm.host,
        decision: adm.decision,
        websocket: true,
        rule: adm.rule?.id,
        credential: adm.credential?.id,
        status,
        ms: Math.round(performance.now() - started),
        reason,
      }),
    );
  };
  withCredential(adm, {
    credentialReady(cred, dyn) {
      if (socket.destroyed) {
        refused(499, 'sandbox closed the connection while its credential was fetched');
        return;
      }
      relayWith(req, socket, started, cred, dyn);
    },
    credentialFailed(err) {
      refused(socket.destroyed ? 499 : 503, unavailableReason(adm, err));
      rawResponse(socket, 503, { error: 'credential unavailable', reason: err.short });
    },
  });
}

function relayWith(req: UpgradeHandover, socket: net.Socket, started: number, first: Credential | undefined, dyn: Dynamic | undefined): void {
  const { adm, rest: clientHead } = req;
  const { info, upstream: up } = adm;
  const { rt } = info;
  let cred = first;
  let needles = cred?.needles;
  let rejected: 'retried' | undefined;
  let logged = false;
  let bytesIn = 0;
  let bytesOut = 0;
  const log = (status: number, extra: { reason?: string; error?: string; deny?: boolean } = {}): void => {
    if (logged) return;
    logged = true;
    rt.audit.write(
      httpLine(adm.base, {
        host: adm.host,
        decision: extra.deny ? 'deny' : adm.decision,
        websocket: true,
        rule: adm.rule?.id,
        credential: cred?.id,
        tokenRejected: rejected,
        status,
        bytesIn,
        bytesOut,
        ms: Math.round(performance.now() - started),
        reason: extra.reason ?? adm.reason,
        error: extra.error,
        needles,
      }),
    );
  };

  const open = (): void => {
    const refused = literalRefused(up.host, rt.upstream.guard);
    if (refused !== undefined) {
      log(502, { reason: refused.message, deny: true });
      rawResponse(socket, 502, { error: 'bad gateway', reason: 'upstream unreachable' });
      return;
    }
    let headers: string[];
    try {
      headers = upgradeFields(req, up.hostHeader, cred);
    } catch (err) {
      log(502, { reason: (err as Error).message });
      rawResponse(socket, 502, { error: 'bad gateway', reason: 'sandgate could not build the upstream request' });
      return;
    }
    const target = requestTarget(req.url, cred);
    const opts: https.RequestOptions = {
      host: up.host,
      port: up.port,
      method: req.method,
      path: target,
      headers,
      setHost: false,
      lookup: rt.upstream.lookup,
      agent: false, // an upgraded connection is never pooled
      ...(up.tls ? { servername: up.host, secureContext: rt.upstream.tls.context, ALPNProtocols: ['http/1.1'] } : {}),
    };
    const upReq = up.tls ? https.request(opts) : http.request(opts);
    let upgraded = false;
    const onSandboxClose = (): void => {
      if (!upgraded) {
        upReq.destroy();
        log(499, { error: 'sandbox closed the connection' });
      }
    };
    socket.once('close', onSandboxClose);

    const connectMs = rt.config.upstream.connectTimeoutMs;
    upReq.once('socket', (s: net.Socket) => {
      const timer = setTimeout(
        () => upReq.destroy(new SandgateError(`connect to ${up.host}:${up.port} timed out after ${connectMs} ms`, 'UPSTREAM_CONNECT')),
        connectMs,
      );
      s.once(up.tls ? 'secureConnect' : 'connect', () => clearTimeout(timer));
      s.once('close', () => clearTimeout(timer));
    });

    let failed = false;
    upReq.on('error', (err: NodeJS.ErrnoException) => {
      if (failed || upgraded) return;
      failed = true;
      const tlsReason = up.tls ? tlsFailure(err) : undefined;
      const reason = tlsReason ?? (err instanceof SandgateError ? err.message : `upstream unreachable (${err.code ?? err.message})`);
      log(502, { reason, deny: err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN' });
      rawResponse(socket, 502, { error: 'bad gateway', reason: tlsReason ? "the upstream's TLS certificate could not be verified" : 'upstream unreachable' });
    });

    // Not upgraded (401, 426...): relay that response and close; the connection was committed to
    // the upgrade, so it cannot go back to carrying requests.
    upReq.once('response', (upRes) => {
      const status = upRes.statusCode ?? 502;
      if (status === 401 && dyn !== undefined && cred !== undefined && rejected === undefined) {
        // Nothing has reached the sandbox yet: drop the token and try once more with a fresh one.
        rejected = 'retried';
        failed = true; // errors of this exchange are no longer the sandbox's concern
        socket.removeListener('close', onSandboxClose);
        upRes.resume();
        const used = cred;
        refreshCredential(dyn, used).then(
          (next) => {
            if (socket.destroyed) {
              log(499, { error: 'sandbox closed the connection' });
              return;
            }
            cred = next;
            needles = [...new Set([...used.needles, ...next.needles])].sort((a, b) => b.length - a.length);
            open();
          },
          (e: unknown) => {
            const err = asTokenError(e);
            log(503, { reason: unavailableReason(adm, err) });
            rawResponse(socket, 503, { error: 'credential unavailable', reason: err.short });
          },
        );
        return;
      }
      const refused = notRelayable(upRes.rawHeaders, needles, true);
      if (refused !== undefined) {
        upRes.destroy();
        log(502, { reason: refused });
        rawResponse(socket, 502, { error: 'bad gateway', reason: 'the upstream response cannot be relayed safely' });
        return;
      }
      upRes.on('data', (c: Buffer) => {
        bytesIn += c.length;
      });
      socket.write(head(status, upRes.statusMessage ?? '', upRes.rawHeaders, needles, HOP_BY_HOP));
      const body = needles ? upRes.pipe(scrubStream(needles)) : upRes;
      body.pipe(socket);
      upRes.once('end', () => log(status));
      upRes.once('error', () => socket.destroy());
    });

    upReq.once('upgrade', (upRes: http.IncomingMessage, upSock: net.Socket, upHead: Buffer) => {
      upgraded = true;
      socket.removeListener('close', onSandboxClose);
      const status = upRes.statusCode ?? 101;
      // With a credential no extension was offered (upgradeFields): one negotiated anyway
      // (RFC 6455 §9.1 forbids it) could compress frames past the scrubber.
      const unoffered = needles !== undefined && upRes.rawHeaders.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'sec-websocket-extensions');
      const refused = unoffered ? 'upstream negotiated a WebSocket extension sandgate did not offer' : notRelayable(upRes.rawHeaders, needles, false);
      if (refused !== undefined) {
        upSock.destroy();
        log(502, { reason: refused });
        rawResponse(socket, 502, { error: 'bad gateway', reason: 'the upstream response cannot be relayed safely' });
        return;
      }
      upSock.setNoDelay(true);
      socket.setNoDelay(true);
      socket.write(head(status, upRes.statusMessage ?? 'Switching Protocols', upRes.rawHeaders, needles));
      const toSandbox = needles ? scrubFrames(needles) : undefined;
      let error: string | undefined;
      const fail =
        (side: string) =>
        (err: NodeJS.ErrnoException): void => {
          error ??= `${side}: ${err.code ?? err.message}`;
          if (!socket.destroyed) socket.destroy();
          if (!upSock.destroyed) upSock.destroy();
        };
      socket.on('error', fail('sandbox'));
      upSock.on('error', fail('upstream'));
      toSandbox?.on('error', fail('upstream frames'));
      let closed = 0;
      const onClose = (): void => {
        if (!socket.destroyed) socket.destroy();
        if (!upSock.destroyed) upSock.destroy();
        if (++closed === 2) log(status, error !== undefined ? { error } : {});
      };
      socket.once('close', onClose);
      upSock.once('close', onClose);
      socket.on('data', (c: Buffer) => {
        bytesOut += c.length;
      });
      upSock.on('data', (c: Buffer) => {
        bytesIn += c.length;
      });
      if (clientHead.length > 0) {
        bytesOut += clientHead.length;
        upSock.write(clientHead);
      }
      if (upHead.length > 0) {
        bytesIn += upHead.length;
        (toSandbox ?? socket).write(upHead);
      }
      socket.pipe(upSock);
      if (toSandbox) upSock.pipe(toSandbox).pipe(socket);
      else upSock.pipe(socket);
    });

    upReq.end();
  };
  open();
}
