/**
 * `sandgate top`: a live terminal view of the running daemon's decisions, per-sandbox rates and,
 * when the daemon holds names for approval, the pending requests (src/top/). Reads the control
 * socket only; ink and react are loaded only for this command.
 */
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { DEFAULT_CONTROL_SOCKET } from '../config/validate.js';
import { controlSocketPath } from './sandbox.js';

export const TOP_USAGE = `usage: sandgate top [--socket PATH | -c FILE]

  A live view of the running daemon's decisions (GET /events on its control socket): each
  decision as it happens, denials in red, requests and denials per second per sandbox (last 10 s),
  and the requests waiting for an operator's approval when the daemon has any.
  Keys: / filter by sandbox or host (Enter applies, Esc clears), p pause/resume, d denials only,
  q quit; approvals: up/down (or j/k) select, a allow once, s allow for the sandbox,
  P add to the policy, x deny. Default socket ${DEFAULT_CONTROL_SOCKET}.
`;

function usage(message: string): never {
  throw new SandgateError(`${message}\n${TOP_USAGE}`, 'USAGE');
}

export async function cmdTop(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { socket: { type: 'string' }, config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
  } catch (err) {
    return usage(`top: ${(err as Error).message}`);
  }
  const { values } = parsed;
  if (values.help === true) {
    process.stdout.write(TOP_USAGE);
    return 0;
  }
  const socket = controlSocketPath('top', values, usage);
  // ink draws only the last frame when it believes it runs in CI (is-in-ci: CI, CI_*,
  // CONTINUOUS_INTEGRATION set), and chalk then drops colours: right for logs, wrong for a live
  // view, and top always has a terminal (run.ts checks). Both decide when first imported, below.
  for (const k of Object.keys(process.env)) if (k === 'CI' || k === 'CONTINUOUS_INTEGRATION' || k.startsWith('CI_')) delete process.env[k];
  const { runTop } = await import('../top/run.js');
  return await runTop(socket);
}
