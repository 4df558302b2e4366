/**
 * The socket side of the instance-metadata responder: a connection from a sandbox whose policy
 * has `metadata` to 169.254.169.254:80 is served here, in memory, by node:http (these are a few
 * small requests per token lifetime, not the relay's hot path). It never opens a connection: the
 * answers come from answer.ts. One `metadata` audit line per request.
 */
import http from 'node:http';
import type net from 'node:net';
import type { MetadataConfig } from '../config/types.js';
import { who, type ConnInfo } from '../net/conn-info.js';
import { answerMetadata, type MetadataAnswer } from './answer.js';
import { sessionKey } from './session-token.js';

/** Request heads are small; bodies are not read (no metadata request has one worth reading). */
const MAX_HEADER_BYTES = 8 * 1024;
const HEADERS_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_MS = 5_000;
/**
 * A connection that sends nothing for this long is closed. node:http checks headersTimeout and
 * requestTimeout only for servers that listen, and this one never does (it is handed sockets), so
 * the socket's own idle timeout is what bounds a silent or dripping client (with the head limit).
 */
export const IDLE_TIMEOUT_MS = 10_000;

export function serveMetadata(socket: net.Socket, info: ConnInfo, cfg: MetadataConfig, idleTimeoutMs = IDLE_TIMEOUT_MS): void {
  const ident = who(info);
  const key = sessionKey();
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: HEADERS_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_MS }, (req, res) => {
    const target = req.url ?? '/';
    let a: MetadataAnswer;
    try {
      a = answerMetadata(cfg, { method: req.method ?? 'GET', target, headers: req.headers }, { sandbox: info.sandbox.name, nowMs: Date.now(), key });
    } catch (err) {
      // Whatever a request makes answer.ts throw must not leave this handler: node:http would
      // rethrow it from the socket's read, out of the process (every sandbox's gate with it).
      info.rt.audit.write({ event: 'error', ...ident, proto: 'http', reason: `metadata answer failed (${(err as Error).name})` });
      req.resume();
      res.writeHead(500, { 'content-length': 0, connection: 'close' });
      res.end();
      return;
    }
    const q = target.indexOf('?');
    info.rt.audit.write({
      event: 'metadata',
      ...ident,
      proto: 'http',
      decision: a.denied ? 'deny' : 'allow',
      ...(a.service !== undefined ? { service: a.service } : {}),
      method: req.method,
      // The path without its query: a query is the sandbox's to choose and goes nowhere.
      path: q < 0 ? target : target.slice(0, q),
      status: a.status,
      ...(a.denied ? { reason: a.what } : { answer: a.what }),
    });
    req.resume();
    res.writeHead(a.status, { ...a.headers, 'content-length': Buffer.byteLength(a.body), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : a.body);
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // No 'timeout' listener: node:http destroys the socket when it fires.
  server.timeout = idleTimeoutMs;
  server.on('clientError', (_err, s) => {
    info.rt.audit.write({ event: 'metadata', ...ident, proto: 'http', decision: 'deny', status: 400, reason: 'malformed request' });
    if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else s.destroy();
  });
  server.emit('connection', socket);
  // The transparent listener accepts paused (pauseOnConnect) so that nothing is read before the
  // connection is routed; reading starts here.
  socket.resume();
}
