/**
 * Thin I/O shell around render-nft.ts: installs, removes and shows sandgate's nftables
 * table and the policy routing that delivers TPROXY'd packets locally.
 *
 * Every command is an execFile with an argument array and an absolute path (npm puts an
 * unrelated `nft` on PATH). With `netns`, each command runs as
 * `/usr/sbin/ip netns exec NS <tool> ...`, which is how the tests keep the machine's own
 * namespace untouched.
 *
 * Everything here is idempotent: up twice leaves the same state as up once (one table,
 * one ip rule, one route); down on a clean system is a no-op.
 */
import { execFile } from 'node:child_process';
import { FirewallError, type FirewallPlan } from './plan.js';
import { formatMark, renderApplyScript, renderDeleteScript, validatePlan } from './render-nft.js';

export { FirewallError } from './plan.js';

const NFT = '/usr/sbin/nft';
const IP = '/usr/sbin/ip';
const DEFAULT_TIMEOUT_MS = 15_000;
/** `ip netns` names are file names under /run/netns: no '/', and not "." or "..". */
const NETNS_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
/**
 * Bound on delete passes over duplicate ip rules. Each pass deletes every rule it saw, so
 * more than one pass only happens if something re-adds rules concurrently.
 */
const MAX_RULE_PASSES = 8;

export interface ApplyOptions {
  /** Run every nft/ip command inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Per-command timeout; default 15 s. */
  timeoutMs?: number;
}

interface CommandResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  /** Why it failed when stderr says nothing: exit code, signal or spawn error. */
  failure: string;
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line !== '') ?? ''
  );
}

function run(tool: typeof NFT | typeof IP, args: string[], options: ApplyOptions, input?: string): Promise<CommandResult> {
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
    const child = execFile(
      file,
      argv,
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
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
      },
    );
    // If the tool exits before reading all of stdin, the write fails with EPIPE; the exit
    // status reports the real problem, so the stream error itself is only swallowed.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

/** Runs a command, throwing FirewallError("<what>: <tool's first stderr line>.") on failure. */
async function must(
  what: string,
  tool: typeof NFT | typeof IP,
  args: string[],
  options: ApplyOptions,
  input?: string,
): Promise<string> {
  const result = await run(tool, args, options, input);
  if (!result.ok) {
    const detail = firstLine(result.stderr) || result.failure;
    throw new FirewallError(`${what}: ${detail.replace(/\.$/, '')}.`);
  }
  return result.stdout;
}

function parseJsonArray(text: string, what: string): Record<string, unknown>[] {
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

// ---------------------------------------------------------------------------------------
// ip rule: fwmark <mark> lookup <routeTable>

interface OurRule {
  priority: number;
}

/**
 * Keys `ip -j rule show` prints for a plain `fwmark M lookup T` rule. A rule with any
 * other key (a source prefix, iif, "not", a mask, ...) belongs to someone else and is
 * neither counted nor deleted.
 */
const PLAIN_RULE_KEYS = new Set(['priority', 'src', 'fwmark', 'table', 'protocol']);

async function listOurRules(plan: FirewallPlan, options: ApplyOptions): Promise<OurRule[]> {
  // -N: numeric table ids even if /etc/iproute2/rt_tables names ours.
  const out = await must('could not list ip rules', IP, ['-4', '-j', '-N', 'rule', 'show'], options);
  const rules: OurRule[] = [];
  for (const entry of parseJsonArray(out, 'ip rule show')) {
    if (Object.keys(entry).some((key) => !PLAIN_RULE_KEYS.has(key))) continue;
    if (entry['src'] !== 'all') continue;
    if (typeof entry['fwmark'] !== 'string' || Number(entry['fwmark']) !== plan.mark) continue;
    if (entry['table'] !== String(plan.routeTable)) continue;
    if (typeof entry['priority'] !== 'number') continue;
    rules.push({ priority: entry['priority'] });
  }
  return rules;
}

function ruleArgs(plan: FirewallPlan): string[] {
  return ['fwmark', formatMark(plan.mark), 'lookup', String(plan.routeTable)];
}

async function deleteRule(plan: FirewallPlan, rule: OurRule, options: ApplyOptions): Promise<void> {
  // Naming the priority deletes exactly the rule that was listed, not whichever matching
  // rule the kernel finds first.
  await must(
    `could not delete ip rule fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable}`,
    IP,
    ['-4', 'rule', 'del', 'priority', String(rule.priority), ...ruleArgs(plan)],
    options,
  );
}

/** Exactly one `fwmark M lookup T` rule: add it if missing, delete duplicates. */
async function ensureRule(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  const rules = await listOurRules(plan, options);
  if (rules.length === 0) {
    await must(
      `could not add ip rule fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable}`,
      IP,
      ['-4', 'rule', 'add', ...ruleArgs(plan)],
      options,
    );
    return;
  }
  for (const extra of rules.slice(1)) await deleteRule(plan, extra, options);
}

/** Deletes every `fwmark M lookup T` rule, re-listing until none is left. */
async function removeRules(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  for (let pass = 0; pass < MAX_RULE_PASSES; pass++) {
    const rules = await listOurRules(plan, options);
    if (rules.length === 0) return;
    for (const rule of rules) await deleteRule(plan, rule, options);
  }
  throw new FirewallError(
    `ip rules fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable} keep reappearing after ${MAX_RULE_PASSES} delete passes.`,
  );
}

// ---------------------------------------------------------------------------------------
// ip route: local 0.0.0.0/0 dev lo table <routeTable>

/** Routes in the plan's table; `table all` because `show table T` fails when T is empty. */
async function listTableRoutes(plan: FirewallPlan, options: ApplyOptions): Promise<Record<string, unknown>[]> {
  const out = await must('could not list routes', IP, ['-4', '-j', '-N', 'route', 'show', 'table', 'all'], options);
  return parseJsonArray(out, 'ip route show').filter((route) => route['table'] === String(plan.routeTable));
}

/** With -N, `type` is RTN_LOCAL's number (2) rather than "local". */
function isOurRoute(route: Record<string, unknown>): boolean {
  return (route['type'] === '2' || route['type'] === 'local') && route['dst'] === 'default' && route['dev'] === 'lo';
}

/**
 * The TPROXY routing trick (kernel Documentation/networking/tproxy.rst): marked packets
 * look up a table whose only route says every address is local, so they are delivered to
 * the transparent socket instead of being forwarded.
 */
function routeArgs(plan: FirewallPlan): string[] {
  return ['local', '0.0.0.0/0', 'dev', 'lo', 'table', String(plan.routeTable)];
}

// ---------------------------------------------------------------------------------------

/**
 * Installs (or atomically replaces) the table, then the local route, then the ip rule.
 * The ruleset goes first: it alone cuts sandboxes off, so a failure later still leaves
 * them contained (marked packets without the route are forwarded, and forward drops them).
 */
export async function firewallUp(plan: FirewallPlan, options: ApplyOptions = {}): Promise<void> {
  const script = renderApplyScript(plan); // throws on an invalid plan before any I/O
  await must(`nft could not install table inet ${plan.table}`, NFT, ['-f', '-'], options, script);
  // The route before the rule, so the rule never points at an empty table.
  await must(
    `could not add route local 0.0.0.0/0 dev lo table ${plan.routeTable}`,
    IP,
    ['-4', 'route', 'replace', ...routeArgs(plan)],
    options,
  );
  await ensureRule(plan, options);
}

/**
 * Removes the ip rule(s), the route and the table, in reverse order of firewallUp; absent
 * pieces are skipped. Until the table goes, sandboxes stay cut off (fail closed).
 */
export async function firewallDown(plan: FirewallPlan, options: ApplyOptions = {}): Promise<void> {
  validatePlan(plan);
  await removeRules(plan, options);
  if ((await listTableRoutes(plan, options)).some(isOurRoute)) {
    await must(
      `could not delete route local 0.0.0.0/0 dev lo table ${plan.routeTable}`,
      IP,
      ['-4', 'route', 'del', ...routeArgs(plan)],
      options,
    );
  }
  await must(`nft could not delete table inet ${plan.table}`, NFT, ['-f', '-'], options, renderDeleteScript(plan));
}

/**
 * The live state, for `sandgate firewall show`: the table as nft lists it (or a line
 * saying it is not installed), then the ip rules and the routes that serve it.
 */
export async function firewallShow(plan: FirewallPlan, options: ApplyOptions = {}): Promise<string> {
  validatePlan(plan);
  const lines: string[] = [];
  // Listing the family's tables first tells "absent" apart from a real failure without
  // matching on nft's error wording.
  const tables = await must('nft could not list tables', NFT, ['list', 'tables', 'inet'], options);
  if (tables.split('\n').some((line) => line.trim() === `table inet ${plan.table}`)) {
    const table = await must(`nft could not list table inet ${plan.table}`, NFT, ['list', 'table', 'inet', plan.table], options);
    lines.push(table.trimEnd());
  } else {
    lines.push(`# nftables: table inet ${plan.table} is not installed`);
  }

  const mark = formatMark(plan.mark);
  lines.push(`# ip rule: fwmark ${mark} lookup ${plan.routeTable}`);
  const rules = await listOurRules(plan, options);
  if (rules.length === 0) lines.push('# (none)');
  for (const rule of rules) lines.push(`${rule.priority}:\tfrom all fwmark ${mark} lookup ${plan.routeTable}`);

  lines.push(`# ip route: table ${plan.routeTable}`);
  if ((await listTableRoutes(plan, options)).length === 0) {
    lines.push('# (none)');
  } else {
    const routes = await must(
      `could not list routes in table ${plan.routeTable}`,
      IP,
      ['-4', 'route', 'show', 'table', String(plan.routeTable)],
      options,
    );
    lines.push(routes.trimEnd());
  }
  return `${lines.join('\n')}\n`;
}
