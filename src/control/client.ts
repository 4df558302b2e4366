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
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? `cannot reach sandgate's control socket ${socketPath} (${err.code}): is sandgate running with this listen.control?`
          : err.code === 'EACCES'
            ? `permission denied on sandgate's control socket ${socketPath} (it is mode 0600: run as the user sandgate runs as)`
            : `the control socket ${socketPath} failed: ${err.message}`;
      reject(new SandgateError(why, 'RUNTIME', { cause: err }));
    });
    req.end(payload);
  });
}
