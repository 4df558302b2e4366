/**
 * `sandgate sandbox add|set|rm|ls|quarantined|release`: the control API from the command line (docs/control-api.md).
 * Exit codes (docs/control-api.md): 0 ok; 1 the daemon could not be reached or failed (5xx); 2 bad usage,
 * or the daemon refused the request (4xx: invalid, unknown, conflicting). `rm` of an unknown
 * name is 0 (the sandbox is not there, as asked) unless --strict.
 */
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { loadConfigFile } from '../config/load.js';
import { DEFAULT_CONTROL_SOCKET } from '../config/validate.js';
import { controlRequest, type ControlResponse } from '../control/client.js';

export const SANDBOX_USAGE = `usage: sandgate sandbox <action> [options]

  sandbox add NAME --policy P [--interface IF] [--cidr C | --address A] [--user U] [--label k=v]...
                                 register a sandbox with the running daemon
  sandbox set NAME [--policy P] [--interface IF] [--cidr C | --address A] [--user U] [--label k=v]...
                                 change a registered sandbox (a new match replaces the old one)
  sandbox rm NAME [--strict]     remove a registered sandbox; its open connections are reset. An
                                 unknown NAME is not an error (exit 0) unless --strict (exit 2)
  sandbox ls [--json]            list every sandbox (from the config and registered)
  sandbox quarantined [--json]   list the sandboxes a tripwire quarantined
  sandbox release NAME           lift a quarantine: the sandbox may connect again (exit 2 if it
                                 is not quarantined)

  Each takes --socket PATH (the control socket) or -c FILE (read listen.control from the config);
  default ${DEFAULT_CONTROL_SOCKET}.
`;

function usage(message: string): never {
  throw new SandgateError(`${message}\n${SANDBOX_USAGE}`, 'USAGE');
}

const COMMON = {
  socket: { type: 'string' },
  config: { type: 'string', short: 'c' },
} as const;

const MATCH = {
  policy: { type: 'string' },
  interface: { type: 'string' },
  cidr: { type: 'string' },
  address: { type: 'string' },
  user: { type: 'string' },
  label: { type: 'string', multiple: true },
} as const;

function parse<O extends Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>>(action: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    return usage(`sandbox ${action}: ${(err as Error).message}`);
  }
}

/** `command`: how usage errors name the command (`reload`, `wait-ready` use this too). */
export function socketPath(action: string, values: { socket?: string; config?: string }, command = `sandbox ${action}`): string {
  const bad = (m: string): never => {
    if (command === `sandbox ${action}`) usage(m);
    throw new SandgateError(m, 'USAGE');
  };
  return controlSocketPath(command, values, bad);
}

/** The control socket from --socket PATH, or -c FILE's listen.control, or the default. `what` prefixes usage errors. */
export function controlSocketPath(what: string, values: { socket?: string; config?: string }, bad: (message: string) => never): string {
  if (values.socket !== undefined && values.config !== undefined) bad(`${what}: give --socket or -c, not both`);
  if (values.socket !== undefined) {
    if (values.socket === '') bad(`${what}: --socket needs a path`);
    return values.socket;
  }
  if (values.config !== undefined) {
    const control = loadConfigFile(values.config).listen.control;
    if (control === false) throw new SandgateError(`${values.config}: listen.control is false, so sandgate serves no control API`, 'CONFIG');
    return control;
  }
  return DEFAULT_CONTROL_SOCKET;
}

function oneName(action: string, positionals: string[]): string {
  if (positionals.length !== 1 || positionals[0] === undefined || positionals[0] === '') usage(`sandbox ${action}: expected exactly one sandbox NAME`);
  return positionals[0];
}

function labelsOf(action: string, list: string[] | undefined): Record<string, string> | undefined {
  if (list === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) usage(`sandbox ${action}: --label needs KEY=VALUE, got ${JSON.stringify(kv)}`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

/** 2xx: the body; 4xx: REJECTED (exit 2); anything else: RUNTIME (exit 1). The daemon's sentence either way. */
export function expectOk(r: ControlResponse): Record<string, unknown> {
  if (r.status >= 200 && r.status < 300) return r.body;
  const error = typeof r.body.error === 'string' ? r.body.error : `HTTP ${r.status}`;
  throw new SandgateError(error, r.status >= 400 && r.status < 500 ? 'REJECTED' : 'RUNTIME');
}

interface View {
  name: string;
  source: string;
  policy: string;
  user?: string;
  interface?: string;
  cidr?: string;
  labels?: Record<string, string>;
  connections: number;
}

function describe(v: View): string {
  const parts = [`policy ${v.policy}`];
  if (v.interface !== undefined) parts.push(`interface ${v.interface}`);
  if (v.cidr !== undefined) parts.push(`cidr ${v.cidr}`);
  if (v.user !== undefined) parts.push(`user ${v.user}`);
  return parts.join(', ');
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export async function cmdSandbox(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  switch (action) {
    case 'add':
    case 'set': {
      const { values, positionals } = parse(action, rest, { ...COMMON, ...MATCH });
      const name = oneName(action, positionals);
      if (action === 'add' && values.policy === undefined) usage('sandbox add: missing --policy P');
      if (values.cidr !== undefined && values.address !== undefined) usage(`sandbox ${action}: give --cidr or --address, not both`);
      if (action === 'add' && values.interface === undefined && values.cidr === undefined && values.address === undefined) {
        usage('sandbox add: needs --interface, --cidr or --address (or --interface with one of the others) to say whose traffic this is');
      }
      const labels = labelsOf(action, values.label);
      const body: Record<string, unknown> = {
        ...(action === 'add' ? { name } : {}),
        ...(values.policy !== undefined ? { policy: values.policy } : {}),
        ...(values.interface !== undefined ? { interface: values.interface } : {}),
        ...(values.cidr !== undefined ? { cidr: values.cidr } : {}),
        ...(values.address !== undefined ? { address: values.address } : {}),
        ...(values.user !== undefined ? { user: values.user } : {}),
        ...(labels !== undefined ? { labels } : {}),
      };
      const path = socketPath(action, values);
      const r =
        action === 'add'
          ? await controlRequest(path, 'POST', '/sandboxes', body)
          : await controlRequest(path, 'PUT', `/sandboxes/${encodeURIComponent(name)}`, body);
      const out = expectOk(r);
      const v = out.sandbox as View;
      const closed = typeof out.closed === 'number' && out.closed > 0 ? ` (${out.closed} open connections reset)` : '';
      process.stdout.write(`${action === 'add' ? 'registered' : 'updated'} sandbox ${v.name}: ${describe(v)}${closed}\n`);
      return 0;
    }
    case 'rm': {
      const { values, positionals } = parse(action, rest, { ...COMMON, strict: { type: 'boolean' } });
      const name = oneName(action, positionals);
      const r = await controlRequest(socketPath(action, values), 'DELETE', `/sandboxes/${encodeURIComponent(name)}`);
      // Removing what is not there leaves the wanted state: success, so orchestrators can retry.
      if (r.status === 404 && values.strict !== true) {
        process.stdout.write(`no sandbox named ${name} is registered; nothing to remove\n`);
        return 0;
      }
      const out = expectOk(r);
      process.stdout.write(`removed sandbox ${name} (${String(out.closed ?? 0)} open connections reset)\n`);
      return 0;
    }
    case 'ls': {
      const { values, positionals } = parse(action, rest, { ...COMMON, json: { type: 'boolean' } });
      if (positionals.length > 0) usage('sandbox ls: takes no NAME');
      const out = expectOk(await controlRequest(socketPath(action, values), 'GET', '/sandboxes'));
      const list = (out.sandboxes ?? []) as View[];
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return 0;
      }
      const rows = [['NAME', 'SOURCE', 'POLICY', 'USER', 'INTERFACE', 'CIDR', 'CONNS', 'LABELS']];
      for (const v of list) {
        const labels = Object.entries(v.labels ?? {})
          .map(([k, val]) => `${k}=${val}`)
          .join(',');
        rows.push([v.name, v.source, v.policy, v.user ?? '-', v.interface ?? '-', v.cidr ?? '-', String(v.connections), labels || '-']);
      }
      process.stdout.write(table(rows));
      return 0;
    }
    case 'quarantined': {
      const { values, positionals } = parse(action, rest, { ...COMMON, json: { type: 'boolean' } });
      if (positionals.length > 0) usage('sandbox quarantined: takes no NAME');
      const out = expectOk(await controlRequest(socketPath(action, values), 'GET', '/quarantine'));
      const list = (out.quarantined ?? []) as { sandbox: string; since: string; credential: string; reason: string }[];
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return 0;
      }
      const rows = [['SANDBOX', 'SINCE', 'CREDENTIAL', 'REASON']];
      for (const q of list) rows.push([q.sandbox, q.since, q.credential, q.reason]);
      process.stdout.write(table(rows));
      return 0;
    }
    case 'release': {
      const { values, positionals } = parse(action, rest, COMMON);
      const name = oneName(action, positionals);
      const out = expectOk(await controlRequest(socketPath(action, values), 'DELETE', `/quarantine/${encodeURIComponent(name)}`));
      const e = out.released as { since?: string } | undefined;
      process.stdout.write(`released sandbox ${name} (quarantined since ${e?.since ?? '?'})\n`);
      return 0;
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(SANDBOX_USAGE);
      return action === undefined ? 2 : 0;
    default:
      return usage(`sandbox: unknown action "${action}" (expected add, set, rm, ls, quarantined or release)`);
  }
}
