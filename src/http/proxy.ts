import http from 'node:http';
import type net from 'node:net';
import type { LookupFunction } from 'node:net';
import { getConnInfo, who, type ConnInfo } from '../net/conn-info.js';
import { SandgateError } from '../errors.js';
import { forwardHeaders, hostFromHeader, pathOnly } from './headers.js';
import type { Runtime } from '../runtime.js';

/**
 * The HTTP/1.1 front: requests a sandbox sends in plain HTTP (and, with interception, inside
 * TLS that sandgate terminated) are parsed by Node's own llhttp parser, checked request by request,
 * and forwarded as new requests to the upstream sandgate resolved itself. Because every request is
 * re-issued to the upstream named by its own Host, a keep-alive connection cannot carry a second
 * request to a host the policy does not allow (no fronting through a shared upstream).
 *
 * Why llhttp (node:http) and not http-parser-js: llhttp is strict where smuggling lives (it rejects
 * Content-Length together with Transfer-Encoding, bad chunk sizes, obs-fold, bare LF), is Node's
 * maintained parser, and is several times faster; http-parser-js lets chunked silently win over a
 * Content-Length and parses chunk sizes with parseInt. See docs/architecture.md.
 */
export function createHttpFront(): http.Server {
  const server = http.createServer({
    maxHeaderSize: 16 * 1024,
    requireHostHeader: false, // checked below, with an agent-readable reason
    keepAliveTimeout: 60_000,
    headersTimeout: 30_000,
    requestTimeout: 0,        // bodies may stream for as long as they need (uploads, SSE)
    noDelay: true,
  }, (req, res) => { void onRequest(req, res); });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const info = getConnInfo(socket);
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    if (info) info.rt.audit.write({ event: 'http', decision: 'deny', ...who(info), proto: 'http', status: code, reason: `malformed request (${err.code ?? 'parse error'})` });
    if (socket.writable) {
      const body = JSON.stringify({ error: code === 431 ? 'request header fields too large' : 'malformed request' });
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

function countRaw(raw: string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]?.toLowerCase() === name) n++;
  return n;
}

async function onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const info = getConnInfo(req.socket);
  if (!info) { req.socket.destroy(); return; }
  const { rt } = info;
  const started = performance.now();
  const method = req.method ?? 'GET';
  const path = pathOnly(req.url ?? '/');
  const base = { event: 'http' as const, ...who(info), proto: 'http' as const, method, path };

  const refuse = (status: number, error: string, reason: string, decision: 'deny' | 'would-deny' = 'deny', host?: string): void => {
    rt.audit.write({ ...base, ...(host ? { host } : {}), decision, status, reason, ms: Math.round(performance.now() - started) });
    deny(res, status, error, reason);
  };

  const hostCount = countRaw(req.rawHeaders, 'host');
  const host = hostFromHeader(req.headers.host);
  if (hostCount !== 1 || !host) return refuse(400, 'bad request', hostCount > 1 ? 'more than one Host header' : 'missing or invalid Host header');
  // origin-form only (RFC 9112 §3.2.1): an absolute-form target would let the request name a
  // second host that the upstream might honour over Host.
  if (!(req.url ?? '').startsWith('/') && !(method === 'OPTIONS' && req.url === '*')) {
    return refuse(400, 'bad request', 'only origin-form request targets ("/path") are accepted', 'deny', host);
  }
  if (method === 'CONNECT') return refuse(405, 'method not allowed', 'CONNECT is not supported', 'deny', host);

  const policy = info.sandbox.policy;
  const verdict = policy.decide(host, info.dstPort, 'http');
  if (verdict.decision === 'deny') return refuse(403, 'denied', `host ${host} on port ${info.dstPort} is not allowed by policy`, 'deny', host);
  if (verdict.decision === 'allow' && verdict.rule.intercept) {
    // Intercepted hosts carry credentials: never over plain HTTP to the upstream.
    return refuse(403, 'denied', `host ${host} requires TLS`, 'deny', host);
  }

  let bytesOut = 0;
  let bytesIn = 0;
  req.on('data', (c: Buffer) => { bytesOut += c.length; });
  const upstreamReq = http.request({
    host,
    port: info.dstPort,
    method,
    path: req.url,
    headers: forwardHeaders(req.headers),
    agent: plainAgent,
    lookup: guardedLookup(rt),
    setHost: false,
    timeout: rt.config.upstream.connectTimeoutMs,
  });
  upstreamReq.setHeader('host', req.headers.host ?? host);
  upstreamReq.once('timeout', () => upstreamReq.destroy(new SandgateError('upstream timed out', 'UPSTREAM_CONNECT')));
  upstreamReq.once('response', (up) => {
    upstreamReq.setTimeout(0);
    res.writeHead(up.statusCode ?? 502, up.statusMessage, forwardHeaders(up.headers));
    up.on('data', (c: Buffer) => { bytesIn += c.length; });
    up.pipe(res);
    up.once('end', () => {
      rt.audit.write({
        ...base, host, decision: verdict.decision, rule: verdict.decision === 'allow' ? verdict.rule.id : undefined,
        ...(verdict.decision !== 'allow' ? { reason: verdict.reason } : {}),
        status: up.statusCode, bytesIn, bytesOut, ms: Math.round(performance.now() - started),
      });
    });
  });
  upstreamReq.once('error', (err) => {
    const reason = err instanceof SandgateError ? err.message : `upstream error (${(err as NodeJS.ErrnoException).code ?? err.message})`;
    if (!res.headersSent) return refuse(502, 'bad gateway', 'upstream unreachable', 'deny', host);
    rt.audit.write({ ...base, host, decision: 'allow', status: res.statusCode, reason, ms: Math.round(performance.now() - started) });
    res.destroy();
  });
  req.pipe(upstreamReq);
}

const plainAgent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo' });

/**
 * DNS for upstream connections: sandgate's own resolver, then the SSRF guard. Node calls lookup
 * with {all: true} when autoSelectFamily is on (Node 20 default).
 */
export function guardedLookup(rt: Runtime): LookupFunction {
  return (hostname, options, cb) => {
    rt.resolver.resolve(hostname).then((addrs) => {
      const ok = addrs.filter((a) => rt.guard.check(a) === undefined);
      if (ok.length === 0) {
        const why = addrs[0] !== undefined ? rt.guard.check(addrs[0]) : `no address for ${hostname}`;
        throw new SandgateError(why ?? 'no usable address', 'UPSTREAM_FORBIDDEN');
      }
      if ((options as { all?: boolean }).all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, ok.map((address) => ({ address, family: 4 })));
      else cb(null, ok[0] as string, 4);
    }).catch((err: Error) => cb(err as NodeJS.ErrnoException, '', 4));
  };
}

export type { ConnInfo };
