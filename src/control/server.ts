/**
 * The control API: JSON over HTTP/1.1 on a unix socket (listen.control; docs/control-api.md).
 *
 *   GET    /sandboxes         every sandbox, the config's and the registered ones
 *   GET    /sandboxes/NAME    one
 *   POST   /sandboxes         register {name, interface?, address?|cidr?, policy, user?, labels?}
 *   PUT    /sandboxes/NAME    change policy, user, labels or match of a registered one
 *   DELETE /sandboxes/NAME    remove a registered one; its open connections are reset
 *   GET    /health            readiness: 200 when the firewall is in place and the listeners
 *                             accept, 503 otherwise (health.ts)
 *   POST   /reload            re-read the config file (as SIGHUP): 200 with what it loaded, or
 *                             400 with why it was rejected (the old config stays)
 *   /approvals...              pending `unlisted: ask` decisions (src/approvals/api.ts)
 *   GET    /events            the audit lines as they are written, NDJSON, optionally filtered
 *                             (?sandbox=NAME&host=GLOB&decision=deny; events.ts)
 *   GET    /quarantine        sandboxes a tripwire quarantined (src/control/quarantine.ts)
 *   DELETE /quarantine/NAME   release one: it may connect again (404 if it is not quarantined)
 *
 * Errors are `{"error": "<one sentence>"}` with 400 (bad JSON or field), 404 (no such sandbox
 * or path), 405, 409 (name taken, overlap, a config sandbox), 413, 500 (firewall failed; nothing
 * changed). Access control is the socket file itself: mode 0600 in a directory sandgate
 * creates 0700, so only root (sandgate's user) can connect; it is a path in the host's file
 * system, never an address a sandbox's network can reach.
 */
import http from 'node:http';
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { SandgateError } from '../errors.js';
import { socketAnswers } from '../preflight.js';
import { isSandboxName, parseBody, type Outcome } from './registry.js';
import type { ControlService } from './service.js';
import type { HealthReport } from './health.js';
import { parseDecision, watch, type ApprovalsApi } from '../approvals/api.js';
import type { EventHub } from './events.js';
import { serveEvents } from './events-http.js';

const MAX_BODY = 64 * 1024;

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendOutcome<T>(res: http.ServerResponse, o: Outcome<T>, ok: (v: T) => [number, unknown]): void {
  if (!o.ok) {
    send(res, o.status, { error: o.error });
    return;
  }
  const [status, body] = ok(o.value);
  send(res, status, body);
}

function readBody(req: http.IncomingMessage): Promise<Outcome<Record<string, unknown>>> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        over = true;
        return;
      }
      if (!over) chunks.push(c);
    });
    req.on('end', () => {
      if (over) resolve({ ok: false, status: 413, error: `the request body is larger than ${MAX_BODY} bytes` });
      else resolve(parseBody(Buffer.concat(chunks).toString('utf8')));
    });
    req.on('error', () => resolve({ ok: false, status: 400, error: 'the request body could not be read' }));
  });
}

/** /approvals, /approvals/added, /approvals/ID (src/approvals/api.ts). */
async function routeApprovals(api: ApprovalsApi | undefined, parts: string[], url: URL, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const method = req.method ?? 'GET';
  if (!api) {
    send(res, 404, { error: 'approvals are not enabled (no policy has unlisted: ask)' });
    return;
  }
  if (parts.length === 1) {
    if (method !== 'GET') {
      send(res, 405, { error: `${method} is not allowed on /approvals (GET)` }, { allow: 'GET' });
      return;
    }
    if (url.searchParams.get('watch') === '1') watch(api, req, res);
    else send(res, 200, { pending: api.list() });
    return;
  }
  if (parts.length === 2 && parts[1] === 'added') {
    if (method !== 'GET') {
      send(res, 405, { error: `${method} is not allowed on /approvals/added (GET)` }, { allow: 'GET' });
      return;
    }
    send(res, 200, api.added());
    return;
  }
  if (parts.length !== 2) {
    send(res, 404, { error: `no such path ${url.pathname}` });
    return;
  }
  if (method !== 'POST') {
    send(res, 405, { error: `${method} is not allowed on /approvals/ID (POST)` }, { allow: 'POST' });
    return;
  }
  const body = await readBody(req);
  if (!body.ok) {
    send(res, body.status, { error: body.error });
    return;
  }
  const d = parseDecision(body.value);
  if (!d.ok) {
    send(res, d.status, { error: d.error });
    return;
  }
  const id = parts[1] ?? '';
  const item = api.decide(id, d.value.action, d.value.approver);
  if (!item) {
    send(res, 404, { error: `no pending approval ${JSON.stringify(id)} (unknown, or already decided)` });
    return;
  }
  send(res, 200, { id: item.id, action: d.value.action });
}

async function route(
  svc: ControlService,
  health: (() => Promise<HealthReport>) | undefined,
  approvals: ApprovalsApi | undefined,
  events: EventHub | undefined,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const parts = url.pathname.split('/').filter((p) => p !== '');
  const method = req.method ?? 'GET';
  if (events && parts.length === 1 && parts[0] === 'events') {
    if (method !== 'GET') {
      send(res, 405, { error: `${method} is not allowed on /events (GET)` }, { allow: 'GET' });
      return;
    }
    serveEvents(events, url, req, res);
    return;
  }
  if (parts[0] === 'approvals') {
    await routeApprovals(approvals, parts, url, req, res);
    return;
  }
  if (health && parts.length === 1 && parts[0] === 'health') {
    if (method !== 'GET') {
      send(res, 405, { error: `${method} is not allowed on /health (GET)` }, { allow: 'GET' });
      return;
    }
    const report = await health();
    send(res, report.status === 'ok' ? 200 : 503, report);
    return;
  }
  if (parts.length === 1 && parts[0] === 'reload') {
    if (method !== 'POST') {
      send(res, 405, { error: `${method} is not allowed on /reload (POST)` }, { allow: 'POST' });
      return;
    }
    sendOutcome(res, await svc.reload(), (v) => [200, { reloaded: v }]);
    return;
  }
  if (parts[0] === 'quarantine' && parts.length <= 2) {
    quarantineRoute(svc, method, parts[1], res);
    return;
  }
  if (parts[0] !== 'sandboxes' || parts.length > 2) {
    send(res, 404, {
      error: `no such path ${url.pathname} (the API serves /sandboxes, /sandboxes/NAME, /quarantine, /quarantine/NAME, /health, /reload, /approvals and /events)`,
    });
    return;
  }
  if (parts.length === 1) {
    if (method === 'GET') {
      send(res, 200, { sandboxes: svc.list() });
      return;
    }
    if (method === 'POST') {
      const body = await readBody(req);
      if (!body.ok) {
        send(res, body.status, { error: body.error });
        return;
      }
      const o = await svc.add(body.value);
      if (o.ok) {
        send(res, 201, { sandbox: o.value }, { location: `/sandboxes/${encodeURIComponent(o.value.name)}` });
        return;
      }
      send(res, o.status, { error: o.error });
      return;
    }
    send(res, 405, { error: `${method} is not allowed on /sandboxes (GET, POST)` }, { allow: 'GET, POST' });
    return;
  }
  let name: string;
  try {
    name = decodeURIComponent(parts[1] ?? '');
  } catch {
    name = '';
  }
  if (!isSandboxName(name)) {
    send(res, 404, { error: `no sandbox named ${JSON.stringify(name)} (names match [A-Za-z0-9_.-]{1,64})` });
    return;
  }
  switch (method) {
    case 'GET':
      sendOutcome(res, svc.get(name), (v) => [200, { sandbox: v }]);
      return;
    case 'PUT':
    case 'PATCH': {
      const body = await readBody(req);
      if (!body.ok) {
        send(res, body.status, { error: body.error });
        return;
      }
      sendOutcome(res, await svc.update(name, body.value), (v) => {
        const { closed, ...sandbox } = v;
        return [200, { sandbox, closed }];
      });
      return;
    }
    case 'DELETE':
      sendOutcome(res, await svc.remove(name), (v) => [200, v]);
      return;
    default:
      send(res, 405, { error: `${method} is not allowed on /sandboxes/NAME (GET, PUT, DELETE)` }, { allow: 'GET, PUT, DELETE' });
  }
}

/** GET /quarantine, DELETE /quarantine/NAME. */
function quarantineRoute(svc: ControlService, method: string, rawName: string | undefined, res: http.ServerResponse): void {
  if (rawName === undefined) {
    if (method !== 'GET') send(res, 405, { error: `${method} is not allowed on /quarantine (GET)` }, { allow: 'GET' });
    else send(res, 200, { quarantined: svc.quarantined() });
    return;
  }
  if (method !== 'DELETE') {
    send(res, 405, { error: `${method} is not allowed on /quarantine/NAME (DELETE)` }, { allow: 'DELETE' });
    return;
  }
  let name: string;
  try {
    name = decodeURIComponent(rawName);
  } catch {
    name = '';
  }
  if (!isSandboxName(name)) {
    send(res, 404, { error: `no sandbox named ${JSON.stringify(name)} (names match [A-Za-z0-9_.-]{1,64})` });
    return;
  }
  sendOutcome(res, svc.release(name), (v) => [200, v]);
}

function listenError(path: string, why: string): SandgateError {
  return new SandgateError(`cannot listen on the control socket ${path} (listen.control): ${why}`, 'LISTEN');
}

/**
 * Binds the control socket: its directory is created 0700 if missing; a socket file left by a
 * sandgate that died is replaced, one something still answers on is not, and nothing that is not
 * a socket is ever deleted. The socket is created 0600 (umask held for the synchronous bind, then
 * chmod as well), so there is no moment when others could connect.
 */
export async function startControlServer(
  path: string,
  svc: ControlService,
  health?: () => Promise<HealthReport>,
  approvals?: ApprovalsApi,
  events?: EventHub,
): Promise<ControlServer> {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw listenError(path, `cannot create its directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let stale = false;
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw listenError(path, 'the path exists and is not a socket (remove it or choose another path)');
    if (await socketAnswers(path)) throw listenError(path, 'another process is serving it (is sandgate already running?)');
    stale = true;
  } catch (err) {
    if (err instanceof SandgateError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw listenError(path, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  if (stale) unlinkSync(path);

  const server = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    route(svc, health, approvals, events, req, res).catch((err: Error) => {
      if (!res.headersSent) send(res, 500, { error: `internal error: ${err.message}` });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(path, err.code ?? err.message)));
    // The bind happens inside listen() (net.Server#listen for a pipe path), so the umask
    // is only needed for this synchronous call.
    const umask = process.umask(0o177);
    try {
      server.listen({ path, exclusive: true }, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  chmodSync(path, 0o600);
  const ino = lstatSync(path).ino;
  server.on('error', () => {
    /* accept errors (EMFILE) are transient */
  });

  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => {
        // Only our own socket file: never one a newer sandgate bound meanwhile.
        try {
          if (lstatSync(path).ino === ino) unlinkSync(path);
        } catch {
          /* already gone */
        }
      });
      return closing;
    },
  };
}
