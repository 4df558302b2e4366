import http from 'node:http';
import type net from 'node:net';
import { getConnInfo, who, type ConnInfo } from '../net/conn-info.js';
import { admit, type Refused } from './admit.js';
import { forward } from './forward.js';
import { rawResponse, relayUpgrade } from './websocket.js';

export { guardedLookup } from './lookup.js';

/**
 * The HTTP/1.1 front: requests a sandbox sends in plain HTTP and, with interception, inside TLS
 * that sandgate terminated (src/tls/intercept.ts) are parsed by Node's own llhttp parser, admitted
 * request by request (src/http/admit.ts), and forwarded as new requests to the upstream sandgate
 * resolved itself (src/http/forward.ts). Because every request is re-issued to the upstream named
 * by its own Host, a keep-alive connection cannot carry a second request to a host the policy does
 * not allow (no fronting through a shared upstream).
 *
 * Why llhttp (node:http) and not http-parser-js: llhttp is strict where smuggling lives (it rejects
 * Content-Length together with Transfer-Encoding, bad chunk sizes, obs-fold, bare LF), is Node's
 * maintained parser, and is several times faster; http-parser-js lets chunked silently win over a
 * Content-Length and parses chunk sizes with parseInt. See docs/architecture.md.
 */
export function createHttpFront(): http.Server {
  const server = http.createServer({
    maxHeaderSize: 16 * 1024,
    requireHostHeader: false, // checked in admit(), with an agent-readable reason
    keepAliveTimeout: 60_000,
    headersTimeout: 30_000,
    requestTimeout: 0,        // bodies may stream for as long as they need (uploads, SSE)
    noDelay: true,
  }, (req, res) => { onRequest(req, res, false); });
  // With a listener here Node does not answer "Expect: 100-continue" by itself: the request is
  // admitted first, so a denied upload is refused before its body is sent (RFC 9110 §10.1.1).
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => { onRequest(req, res, true); });
  server.on('upgrade', onUpgrade);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const info = getConnInfo(socket);
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    // ECONNRESET and friends are the sandbox hanging up, not a malformed request.
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'ERR_SSL_PROTOCOL_ERROR') { socket.destroy(); return; }
    if (info) info.rt.audit.write({ event: 'http', decision: 'deny', ...who(info), proto: info.sni !== undefined ? 'tls' : 'http', ...(info.sni !== undefined ? { host: info.sni } : {}), status: code, reason: `malformed request (${err.code ?? 'parse error'})` });
    if (socket.writable) {
      const body = JSON.stringify({ error: code === 431 ? 'request header fields too large' : 'malformed request', by: 'sandgate' });
      socket.end(`HTTP/1.1 ${code} ${http.STATUS_CODES[code]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    }
    socket.destroySoon();
  });
  return server;
}

/** Hand an accepted sandbox socket (bytes already peeked are passed as `head`) to the HTTP front. */
export function serveHttp(front: http.Server, socket: net.Socket, head: Buffer | undefined): void {
  if (head && head.length > 0) socket.unshift(head);
  front.emit('connection', socket);
  socket.resume();
}

export function deny(res: http.ServerResponse, status: number, error: string, reason: string): void {
  const body = JSON.stringify({ error, reason, by: 'sandgate' });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}

function audit(info: ConnInfo, r: Refused, started: number): void {
  info.rt.audit.write({ ...r.base, ...(r.host ? { host: r.host } : {}), decision: 'deny', status: r.status, reason: r.reason, ms: Math.round(performance.now() - started) });
}

function onRequest(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean): void {
  const info = getConnInfo(req.socket);
  if (!info) { req.socket.destroy(); return; }
  const started = performance.now();
  const adm = admit(req, info);
  if (!adm.ok) {
    audit(info, adm, started);
    deny(res, adm.status, adm.error, adm.reason);
    return;
  }
  if (expectsContinue) res.writeContinue();
  forward(req, res, adm);
}

function onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
  const info = getConnInfo(socket);
  if (!info) { socket.destroy(); return; }
  socket.on('error', () => { /* handled by whoever owns the relay */ });
  const started = performance.now();
  const adm = admit(req, info);
  if (!adm.ok) {
    audit(info, adm, started);
    rawResponse(socket, adm.status, { error: adm.error, reason: adm.reason });
    return;
  }
  // Only WebSocket (RFC 6455): h2c and other upgrades are not relayed.
  const proto = (req.headers.upgrade ?? '').trim().toLowerCase();
  if (proto !== 'websocket') {
    const reason = `upgrade to "${proto}" is not supported (only websocket)`;
    audit(info, { ...adm, ok: false, status: 400, error: 'bad request', reason, host: adm.host }, started);
    rawResponse(socket, 400, { error: 'bad request', reason });
    return;
  }
  relayUpgrade(req, socket, head, adm);
}

export type { ConnInfo };
