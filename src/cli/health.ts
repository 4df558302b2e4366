/**
 * `sandgate health`: asks the running daemon's control socket for GET /health
 * (docs/control-api.md). Exit 0: the firewall is in place and every listener accepts; 1: the
 * daemon answered that something is failing, or could not be reached at all (not running);
 * 2: bad usage. For systemd's ExecStartPost, container health checks, load balancer probes.
 */
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { controlRequest } from '../control/client.js';
import { DEFAULT_CONTROL_SOCKET } from '../config/validate.js';
import { controlSocketPath } from './sandbox.js';

export const HEALTH_USAGE = `usage: sandgate health [--socket PATH | -c FILE] [--json]

  Asks the running daemon whether its firewall is in place and its listeners accept.
  Exit 0 healthy, 1 failing or not reachable, 2 bad usage. Default socket ${DEFAULT_CONTROL_SOCKET}.
`;

function usage(message: string): never {
  throw new SandgateError(`${message}\n${HEALTH_USAGE}`, 'USAGE');
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export async function cmdHealth(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { socket: { type: 'string' }, config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
  } catch (err) {
    return usage(`health: ${(err as Error).message}`);
  }
  const { values } = parsed;
  if (values.help === true) {
    process.stdout.write(HEALTH_USAGE);
    return 0;
  }
  const r = await controlRequest(controlSocketPath('health', values, usage), 'GET', '/health');
  if (r.status !== 200 && r.status !== 503) {
    const error = typeof r.body.error === 'string' ? r.body.error : `HTTP ${r.status}`;
    throw new SandgateError(`the daemon did not answer the health request: ${error}`, 'RUNTIME');
  }
  const checks = Array.isArray(r.body.checks) ? (r.body.checks as Check[]) : [];
  if (values.json === true) process.stdout.write(`${JSON.stringify(r.body, null, 2)}\n`);
  else {
    process.stdout.write(`${r.status === 200 ? 'ok' : 'failing'}\n`);
    for (const c of checks) process.stdout.write(`  ${c.ok ? 'ok     ' : 'FAILING'}  ${c.name}: ${c.detail}\n`);
  }
  return r.status === 200 ? 0 : 1;
}
