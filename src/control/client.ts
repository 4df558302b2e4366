/**
 * A client for the control API's unix socket (the `sandgate sandbox` commands use it).
 * Failures to reach the daemon are SandgateError RUNTIME (exit 1), one sentence each.
 */
import http from 'node:http';
import { SandgateError } from '../errors.js';

export interface ControlResponse {
  status: number;
  body: Record<string, unknown>;
}

const TIMEOUT_MS = 30_000;

function unreachable(socketPath: string, err: NodeJS.ErrnoException): SandgateError {
  const why =
    err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
      ? `cannot reach sandgate's control socket ${socketPath} (${err.code}): is sandgate running with this listen.control?`
      : err.code === 'EACCES'
        ? `permission denied on sandgate's control socket ${socketPath} (it is mode 0600: run as the user sandgate runs as)`
        : `the control socket ${socketPath} failed: ${err.message}`;
  return new SandgateError(why, 'RUNTIME', { cause: err });
}

export function controlRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: TIMEOUT_MS,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            reject(new SandgateError(`the control socket ${socketPath} answered something other than JSON (HTTP ${res.statusCode ?? 0})`, 'RUNTIME'));
            return;
          }
          resolve({ status: res.statusCode ?? 0, body: (parsed ?? {}) as Record<string, unknown> });
        });
        res.on('error', (err) => reject(new SandgateError(`the control socket ${socketPath} closed mid-answer (${err.message})`, 'RUNTIME')));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(unreachable(socketPath, err)));
    req.end(payload);
  });
}

export interface ControlStream {
  /** Ends the stream (the request is aborted; no further onLine). */
  close(): void;
  /** Resolves when the stream ends, for whatever reason (daemon stopped, close()). */
  readonly ended: Promise<void>;
}

export type StreamOpen =
  | { readonly ok: true; readonly stream: ControlStream }
  | { readonly ok: false; readonly status: number; readonly body: Record<string, unknown> };

/**
 * Opens an NDJSON stream of the control API (`GET /events`, `GET /approvals?watch=1`): each
 * complete line parsed goes to `onLine` (lines that are not JSON objects are skipped). A non-200
 * answer resolves `{ok: false}` with its JSON body; an unreachable socket rejects as controlRequest.
 */
export function controlStream(socketPath: string, path: string, onLine: (line: Record<string, unknown>) => void): Promise<StreamOpen> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'GET', path }, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: Record<string, unknown> = {};
          try {
            body = (JSON.parse(Buffer.concat(chunks).toString('utf8')) ?? {}) as Record<string, unknown>;
          } catch {
            /* not JSON: the status says enough */
          }
          resolve({ ok: false, status: res.statusCode ?? 0, body });
        });
        res.on('error', () => resolve({ ok: false, status: res.statusCode ?? 0, body: {} }));
        return;
      }
      let buf = '';
      let closed = false;
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let nl: number;
        while (!closed && (nl = buf.indexOf('\n')) >= 0) {
          const text = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          let v: unknown;
          try {
            v = JSON.parse(text);
          } catch {
            continue;
          }
          if (typeof v === 'object' && v !== null && !Array.isArray(v)) onLine(v as Record<string, unknown>);
        }
      });
      const ended = new Promise<void>((done) => {
        res.once('close', () => done());
        res.once('error', () => done());
      });
      resolve({
        ok: true,
        stream: {
          ended,
          close() {
            closed = true;
            req.destroy();
          },
        },
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => reject(unreachable(socketPath, err)));
    req.end();
  });
}
