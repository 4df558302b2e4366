/**
 * `sandgate approvals list|watch|allow|deny`: the control API's /approvals from the command line
 * (docs/approvals.md). Exit codes as `sandgate sandbox`: 0 ok; 1 the daemon could not be reached;
 * 2 bad usage, or the daemon refused (an unknown or already decided ID).
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { controlRequest } from '../control/client.js';
import { controlSocketPath, expectOk } from './sandbox.js';

export const APPROVALS_USAGE = `usage: sandgate approvals <action> [options]

  approvals [list] [--json]      the pending decisions
  approvals watch [--json]       pending decisions and decisions as they happen (until Ctrl-C)
  approvals allow ID [--for once|sandbox|policy] [--approver TEXT]
                                 approve: this decision only (once, the default), this name for
                                 this sandbox until reload/restart, or for its whole policy
  approvals deny ID [--approver TEXT]
                                 deny it
  approvals added [--json]       what sandbox/policy approvals added

  Each takes --socket PATH (the control socket) or -c FILE (read listen.control from the config).
`;

function usage(message: string): never {
  throw new SandgateError(`${message}\n${APPROVALS_USAGE}`, 'USAGE');
}

interface Item {
  id: string;
  sandbox: string;
  user?: string;
  host: string;
  port: number;
  via: string;
  since: string;
  expires: string;
}

function describe(i: Item): string {
  return `${i.id}  ${i.sandbox}${i.user !== undefined ? ` (${i.user})` : ''}  ${i.host}:${i.port}  via ${i.via}  until ${i.expires}`;
}

/** GET /approvals?watch=1, line by line, until the daemon closes the stream. */
function stream(socketPath: string, onLine: (line: string) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'GET', path: '/approvals?watch=1' }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new SandgateError(`the control socket answered HTTP ${res.statusCode ?? 0}`, 'RUNTIME'));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          onLine(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
        }
      });
      res.on('end', () => resolve(0));
      res.on('error', () => resolve(1));
    });
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new SandgateError(`cannot reach sandgate's control socket ${socketPath} (${err.code ?? err.message})`, 'RUNTIME', { cause: err })),
    );
    req.end();
  });
}

export async function cmdApprovals(args: string[]): Promise<number> {
  // No action, or only options: list (the common case, as `sandgate approvals`).
  const first = args[0];
  const [action, ...rest] = first === undefined || (first.startsWith('-') && first !== '-h' && first !== '--help') ? ['list', ...args] : args;
  let parsed: ReturnType<
    typeof parseArgs<{
      options: {
        socket: { type: 'string' };
        config: { type: 'string'; short: 'c' };
        json: { type: 'boolean' };
        for: { type: 'string' };
        approver: { type: 'string' };
      };
      allowPositionals: true;
    }>
  >;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        socket: { type: 'string' },
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean' },
        for: { type: 'string' },
        approver: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    return usage(`approvals ${action ?? ''}: ${(err as Error).message}`);
  }
  const { values, positionals } = parsed;
  const path = (): string => controlSocketPath(`approvals ${action ?? ''}`, values, usage);
  const oneId = (): string => {
    if (positionals.length !== 1 || !positionals[0]) usage(`approvals ${action ?? ''}: expected exactly one ID`);
    return positionals[0];
  };
  const decide = async (id: string, act: string): Promise<number> => {
    const body = { action: act, ...(values.approver !== undefined ? { approver: values.approver } : {}) };
    const out = expectOk(await controlRequest(path(), 'POST', `/approvals/${encodeURIComponent(id)}`, body));
    process.stdout.write(`${String(out.id)}: ${String(out.action)}\n`);
    return 0;
  };
  switch (action) {
    case 'list': {
      if (positionals.length > 0) usage('approvals list: takes no ID');
      const out = expectOk(await controlRequest(path(), 'GET', '/approvals'));
      const items = (out.pending ?? []) as Item[];
      if (values.json === true) process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
      else if (items.length === 0) process.stdout.write('no pending approvals\n');
      else for (const i of items) process.stdout.write(`${describe(i)}\n`);
      return 0;
    }
    case 'watch':
      if (positionals.length > 0) usage('approvals watch: takes no ID');
      return await stream(path(), (line) => {
        if (values.json === true) {
          process.stdout.write(`${line}\n`);
          return;
        }
        const e = JSON.parse(line) as { event: string; id: string; action?: string; approver?: string } & Item;
        process.stdout.write(e.event === 'pending' ? `pending  ${describe(e)}\n` : `decided  ${e.id}  ${e.action ?? ''} by ${e.approver ?? ''}\n`);
      });
    case 'allow': {
      const scope = values.for ?? 'once';
      if (scope !== 'once' && scope !== 'sandbox' && scope !== 'policy') usage('approvals allow: --for must be once, sandbox or policy');
      return await decide(oneId(), scope);
    }
    case 'deny':
      if (values.for !== undefined) usage('approvals deny: takes no --for');
      return await decide(oneId(), 'deny');
    case 'added': {
      const out = expectOk(await controlRequest(path(), 'GET', '/approvals/added'));
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    }
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(APPROVALS_USAGE);
      return 0;
    default:
      return usage(`approvals: unknown action "${action}" (expected list, watch, allow, deny or added)`);
  }
}
