/**
 * Running the firewall's system tools: execFile with argument arrays and absolute paths (npm
 * puts an unrelated `nft` on PATH), optionally inside a network namespace via
 * `/usr/sbin/ip netns exec NS <tool> ...` (how the tests keep the machine's own namespace
 * untouched). Failures become FirewallError with the tool's own first stderr line.
 */
import { execFile } from 'node:child_process';
import { FirewallError } from './plan.js';

export const NFT = '/usr/sbin/nft';
export const IP = '/usr/sbin/ip';
/**
 * The Debian alternatives names, not iptables-nft/-legacy explicitly: sandgate's chains must live
 * in whichever flavour the host's other iptables users (Docker, libvirt, ufw) write to, or the
 * two would be evaluated independently in an order nobody chose. On Debian 12 these point at the
 * nf_tables flavour; both flavours were checked to work inside a network namespace.
 */
export const IPTABLES = '/usr/sbin/iptables';
export const IPTABLES_RESTORE = '/usr/sbin/iptables-restore';
export const IPTABLES_SAVE = '/usr/sbin/iptables-save';
export const IP6TABLES_RESTORE = '/usr/sbin/ip6tables-restore';
export const IP6TABLES_SAVE = '/usr/sbin/ip6tables-save';
/** The iptables backend's sets of registered sandboxes (Debian package ipset). */
export const IPSET = '/usr/sbin/ipset';

export type Tool =
  | typeof NFT
  | typeof IP
  | typeof IPTABLES
  | typeof IPTABLES_RESTORE
  | typeof IPTABLES_SAVE
  | typeof IP6TABLES_RESTORE
  | typeof IP6TABLES_SAVE
  | typeof IPSET;

const DEFAULT_TIMEOUT_MS = 15_000;
/** `ip netns` names are file names under /run/netns: no '/', and not "." or "..". */
const NETNS_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

export interface ApplyOptions {
  /** Run every command inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Per-command timeout; default 15 s. */
  timeoutMs?: number;
}

export interface CommandResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  /** Why it failed when stderr says nothing: exit code, signal or spawn error. */
  failure: string;
}

export function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line !== '' && !line.startsWith('# Warning:')) ?? ''
  );
}

export function run(tool: Tool, args: string[], options: ApplyOptions, input?: string): Promise<CommandResult> {
  let file: string = tool;
  let argv = args;
  if (options.netns !== undefined) {
    if (!NETNS_RE.test(options.netns)) {
      throw new FirewallError(`invalid network namespace name ${JSON.stringify(options.netns)}.`);
    }
    file = IP;
    argv = ['netns', 'exec', options.netns, tool, ...args];
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve) => {
    const child = execFile(file, argv, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) {
        resolve({ ok: true, stdout, stderr, failure: '' });
        return;
      }
      const err = error as NodeJS.ErrnoException & { code?: string | number; signal?: string | null; killed?: boolean };
      let failure: string;
      if (err.code === 'ENOENT') failure = `${file} not found`;
      else if (err.killed === true) failure = `timed out after ${timeoutMs} ms`;
      else if (typeof err.signal === 'string') failure = `killed by ${err.signal}`;
      else if (typeof err.code === 'number') failure = `exit code ${err.code}`;
      else failure = err.message;
      resolve({ ok: false, stdout, stderr, failure });
    });
    // If the tool exits before reading all of stdin, the write fails with EPIPE; the exit
    // status reports the real problem, so the stream error itself is only swallowed.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

/** Runs a command, throwing FirewallError("<what>: <tool's first stderr line>.") on failure. */
export async function must(what: string, tool: Tool, args: string[], options: ApplyOptions, input?: string): Promise<string> {
  const result = await run(tool, args, options, input);
  if (!result.ok) {
    const detail = firstLine(result.stderr) || result.failure;
    throw new FirewallError(`${what}: ${detail.replace(/\.$/, '')}.`);
  }
  return result.stdout;
}

export function parseJsonArray(text: string, what: string): Record<string, unknown>[] {
  if (text.trim() === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new FirewallError(`could not parse the output of ${what} as JSON.`, { cause });
  }
  if (!Array.isArray(parsed)) throw new FirewallError(`${what} did not print a JSON array.`);
  return parsed as Record<string, unknown>[];
}
