/**
 * Thin I/O shell around render-iptables.ts: reads the current state with iptables-save /
 * ip6tables-save, renders, and applies with `iptables-restore --noflush` (one transaction
 * per restore run), never touching chains sandgate did not create.
 *
 * Used two ways: as the whole firewall (the iptables backend: iptablesUp/Down/BackendShow)
 * and by the nft backend for its single NFQUEUE rule (iptablesInstall/Remove/Show).
 *
 * The iptables backend's registered sandboxes live in ipsets (render-ipset.ts), applied with
 * `ipset -exist restore` (input on stdin). Sets come before the rules that name them
 * (iptables-restore refuses a rule naming a set that does not exist) and go after them
 * (`ipset destroy` fails while a rule references the set).
 */
import { existsSync } from 'node:fs';
import type { FirewallPlan, SandboxMatch } from './plan.js';
import { FirewallError } from './plan.js';
import { IP6TABLES_RESTORE, IP6TABLES_SAVE, IPSET, IPTABLES_RESTORE, IPTABLES_SAVE, NFT, firstLine, must, run, type ApplyOptions } from './exec.js';
import { renderDeleteScript, validatePlan } from './render-nft.js';
import {
  BUILTINS,
  allChains,
  chainPrefix,
  iptablesSpec,
  missingFrom,
  parseIptablesSave,
  renderRestoreDown,
  renderRestoreUp,
  type IptSpec,
  type IptState,
  type IptTable,
} from './render-iptables.js';
import { allIpsets, ipsetNames, parseIpsetNames, renderIpsetChanges, renderIpsetDestroy, renderIpsetUp } from './render-ipset.js';
import { routingDown, routingMissing, routingShow, routingUp } from './routing.js';

type Family = 'v4' | 'v6';
const SAVE = { v4: IPTABLES_SAVE, v6: IP6TABLES_SAVE } as const;
const RESTORE = { v4: IPTABLES_RESTORE, v6: IP6TABLES_RESTORE } as const;
const NAME = { v4: 'iptables', v6: 'ip6tables' } as const;

async function state(family: Family, options: ApplyOptions): Promise<IptState> {
  return parseIptablesSave(await must(`${NAME[family]}-save failed`, SAVE[family], [], options));
}

/** Installs (or replaces) the spec's chains and adds missing jumps: IPv4 first, then IPv6. */
export async function iptablesInstall(spec: IptSpec, options: ApplyOptions): Promise<void> {
  for (const family of ['v4', 'v6'] as const) {
    const script = renderRestoreUp(spec[family], await state(family, options));
    await must(`${NAME[family]}-restore could not install sandgate's chains`, RESTORE[family], ['--noflush'], options, script);
  }
}

export interface RemoveOptions {
  /** Chains (by name) to leave in place, e.g. the nft backend's queue chain. */
  keep?: (chain: string) => boolean;
  /** No iptables installed at all: nothing of ours can be there either. */
  missingToolIsOk?: boolean;
  /** Leave the nft backend's NFQUEUE chain alone. */
  keepQueueCompanion?: boolean;
  /** Leave the registered sandboxes' ipsets alone (the iptables backend's own `up`). */
  keepSets?: boolean;
}

/** Removes jumps to, and then, every chain of ours (both families). */
export async function iptablesRemove(plan: Pick<FirewallPlan, 'table'>, options: ApplyOptions, opts: RemoveOptions = {}): Promise<void> {
  const names = allChains(plan);
  const queueChain = `${chainPrefix(plan)}-Q`;
  const keep = (c: string): boolean => (opts.keep?.(c) ?? false) || (opts.keepQueueCompanion === true && c === queueChain);
  for (const family of ['v4', 'v6'] as const) {
    // A namespace shares the file system, so the check holds inside `ip netns exec` too.
    if (opts.missingToolIsOk === true && !existsSync(SAVE[family])) continue;
    const st = await state(family, options);
    const byTable: Partial<Record<IptTable, string[]>> = {};
    for (const [table, list] of Object.entries(names[family]) as [IptTable, string[]][]) {
      byTable[table] = list.filter((c) => !keep(c));
    }
    const script = renderRestoreDown(byTable, BUILTINS, st);
    if (script !== '') {
      await must(`${NAME[family]}-restore could not remove sandgate's chains`, RESTORE[family], ['--noflush'], options, script);
      await dropEmptyNftTables(family, Object.keys(byTable) as IptTable[], options);
    }
  }
  // Only now: while a rule of ours names a set, `ipset destroy` fails.
  if (opts.keepSets !== true) await ipsetRemove(chainPrefix(plan), options);
}

/** Our sets that exist here (the ipset tool absent: none can). */
async function ipsetsPresent(prefix: string, options: ApplyOptions): Promise<string[]> {
  if (!existsSync(IPSET)) return [];
  const listed = parseIpsetNames(await must('ipset could not list sets', IPSET, ['list', '-n'], options));
  const ours = new Set(allIpsets(prefix));
  return listed.filter((n) => ours.has(n));
}

/** Destroys every set of ours, a crashed run's temporaries included; the rules naming them must be gone. */
async function ipsetRemove(prefix: string, options: ApplyOptions): Promise<void> {
  const script = renderIpsetDestroy(await ipsetsPresent(prefix, options));
  if (script !== '') await must("ipset could not destroy sandgate's sets", IPSET, ['restore'], options, script);
}

/**
 * Registers / removes sandboxes in the installed sets (render-ipset.ts renderIpsetChanges: adds,
 * then deletes). ipset restore stops at the first failing line and keeps what came before, so
 * on failure the lines already applied are undone (best effort) before the error is thrown:
 * the caller then keeps its runtime, and the sets match it again.
 */
export async function iptablesUpdateSets(
  plan: Pick<FirewallPlan, 'table'>,
  before: readonly SandboxMatch[],
  after: readonly SandboxMatch[],
  options: ApplyOptions = {},
): Promise<void> {
  const prefix = chainPrefix(plan);
  const script = renderIpsetChanges(prefix, before, after);
  if (script === '') return;
  const result = await run(IPSET, ['-exist', 'restore'], options, script);
  if (result.ok) return;
  await run(IPSET, ['-exist', 'restore'], options, renderIpsetChanges(prefix, after, before));
  const detail = firstLine(result.stderr) || result.failure;
  throw new FirewallError(`ipset could not update the registered sandboxes in sets ${prefix}-*: ${detail.replace(/\.$/, '')}.`);
}

/**
 * With the nf_tables flavour, installing our chains created the `ip mangle` (etc.) tables if
 * they did not exist; an emptied one would stay registered on its hooks. A table left with
 * nothing but built-in chains on policy ACCEPT holds nothing of anyone's, so it is deleted.
 * (The legacy flavour cannot delete tables, and an empty legacy table costs nothing.)
 */
async function dropEmptyNftTables(family: Family, tables: IptTable[], options: ApplyOptions): Promise<void> {
  const saved = await run(SAVE[family], [], options);
  if (!saved.ok || !/nf_tables/.test(saved.stdout)) return;
  const nftFamily = family === 'v4' ? 'ip' : 'ip6';
  for (const table of tables) {
    const section = sectionOf(saved.stdout, table);
    if (section === undefined) continue;
    const builtins = new Set(BUILTINS[table]);
    const empty = section.every((line) => {
      if (line.startsWith('-A ')) return false;
      if (line.startsWith(':')) {
        const [name, policy] = line.slice(1).split(' ');
        return builtins.has(name ?? '') && policy === 'ACCEPT';
      }
      return true;
    });
    if (empty) await run(NFT, ['delete', 'table', nftFamily, table], options);
  }
}

/** The lines of one `*table` ... `COMMIT` section of iptables-save output. */
function sectionOf(text: string, table: string): string[] | undefined {
  const lines = text.split('\n').map((l) => l.trim());
  const start = lines.indexOf(`*${table}`);
  if (start === -1) return undefined;
  const end = lines.indexOf('COMMIT', start);
  return lines.slice(start + 1, end === -1 ? undefined : end);
}

/** `# iptables` sections of `firewall show`: our chains with their counters, and the jumps. */
export async function iptablesShow(plan: Pick<FirewallPlan, 'table'>, options: ApplyOptions, what: string): Promise<string[]> {
  const prefix = `${chainPrefix(plan)}-`;
  const lines: string[] = [];
  for (const family of ['v4', 'v6'] as const) {
    lines.push(`# ${NAME[family]}: ${what} (chains ${prefix}*)`);
    const saved = await run(SAVE[family], ['-c'], options);
    if (!saved.ok) {
      lines.push(`# (${NAME[family]}-save unavailable: ${saved.failure})`);
      continue;
    }
    const ours: string[] = [];
    let table = '';
    let tableShown = false;
    for (const raw of saved.stdout.split('\n')) {
      const line = raw.trim();
      if (line.startsWith('*')) {
        table = line;
        tableShown = false;
        continue;
      }
      // "[pkts:bytes] -A CHAIN ..." with -c; our chains' rules, and built-ins' jumps to them.
      const rule = line.replace(/^\[\d+:\d+\] /, '');
      const isOurs = line.startsWith(`:${prefix}`) || rule.startsWith(`-A ${prefix}`) || new RegExp(`^-A \\S+ -j ${prefix.replace(/[-]/g, '\\-')}`).test(rule);
      if (!isOurs) continue;
      if (!tableShown) {
        ours.push(table);
        tableShown = true;
      }
      ours.push(line);
    }
    lines.push(...(ours.length === 0 ? ['# (none)'] : ours));
  }
  return lines;
}

/** Deletes the nft table if nft is there at all (switching from the nft backend, or `down`). */
export async function nftRemoveIfPresent(plan: Pick<FirewallPlan, 'table'>, options: ApplyOptions): Promise<void> {
  const listed = await run(NFT, ['list', 'tables', 'inet'], options);
  if (!listed.ok) return;
  if (!listed.stdout.split('\n').some((line) => line.trim() === `table inet ${plan.table}`)) return;
  await must(`nft could not delete table inet ${plan.table}`, NFT, ['-f', '-'], options, renderDeleteScript(plan));
}

/**
 * The iptables backend's `up`: chains first (they alone cut sandboxes off), then the policy
 * routing, then whatever the nft backend left (its table and its queue chain).
 */
export async function iptablesUp(plan: FirewallPlan, options: ApplyOptions = {}): Promise<{ warnings: string[] }> {
  const spec = iptablesSpec(plan); // throws on an invalid plan before any I/O
  const prefix = chainPrefix(plan);
  const sets = renderIpsetUp(prefix, plan);
  // The sets first: the rules name them. Each is filled aside and swapped in whole.
  if (sets !== '') await must("ipset could not create the registered sandboxes' sets", IPSET, ['-exist', 'restore'], options, sets);
  await iptablesInstall(spec, options);
  await routingUp(plan, options);
  await nftRemoveIfPresent(plan, options);
  const queueChain = `${prefix}-Q`;
  await iptablesRemove(plan, options, { keep: (c) => c !== queueChain, keepSets: true });
  // No dynamic part now (control API off): an earlier run's sets, which no rule names any more.
  if (plan.dynamic === undefined) await ipsetRemove(prefix, options);
  return { warnings: [] };
}

/** Removes routing, chains and (if present) an nft table of the same name: nothing of sandgate's stays. */
export async function iptablesDown(plan: FirewallPlan, options: ApplyOptions = {}): Promise<void> {
  validatePlan(plan);
  await routingDown(plan, options);
  await iptablesRemove(plan, options);
  await nftRemoveIfPresent(plan, options);
}

export async function iptablesBackendShow(plan: FirewallPlan, options: ApplyOptions = {}): Promise<string> {
  validatePlan(plan);
  const lines = await iptablesShow(plan, options, 'the iptables backend');
  lines.push(...(await ipsetShow(chainPrefix(plan), options)));
  lines.push(...(await routingShow(plan, options)));
  return `${lines.join('\n')}\n`;
}

/** What of the plan's iptables ruleset and policy routing is not installed (empty: all of it is). */
export async function iptablesMissing(plan: FirewallPlan, options: ApplyOptions = {}): Promise<string[]> {
  const spec = iptablesSpec(plan);
  const out: string[] = [];
  for (const family of ['v4', 'v6'] as const) out.push(...missingFrom(spec[family], await state(family, options), NAME[family]));
  if (plan.dynamic !== undefined) {
    const present = new Set(await ipsetsPresent(chainPrefix(plan), options));
    for (const name of Object.values(ipsetNames(chainPrefix(plan)))) if (!present.has(name)) out.push(`ipset ${name} is missing`);
  }
  out.push(...(await routingMissing(plan, options)));
  return out;
}

/** `# ipset` section of `firewall show`: the registered sandboxes' sets as `ipset save` prints them. */
async function ipsetShow(prefix: string, options: ApplyOptions): Promise<string[]> {
  const lines = [`# ipset: registered sandboxes (sets ${prefix}-*)`];
  const present = existsSync(IPSET) ? await run(IPSET, ['list', '-n'], options) : undefined;
  if (present === undefined || !present.ok) return [...lines, `# (ipset unavailable${present ? `: ${present.failure}` : ''})`];
  const ours = new Set(allIpsets(prefix));
  const names = parseIpsetNames(present.stdout).filter((n) => ours.has(n));
  if (names.length === 0) return [...lines, '# (none)'];
  for (const name of names) lines.push(...(await must(`ipset could not list set ${name}`, IPSET, ['save', name], options)).trimEnd().split('\n'));
  return lines;
}
