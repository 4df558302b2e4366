/**
 * Thin I/O shell around render-nft.ts: installs, removes and shows sandgate's nftables table,
 * the one iptables rule that queues packets for verdicts (render-iptables.ts
 * queueCompanionSpec: this kernel has no nft `queue`), and the policy routing that delivers
 * TPROXY'd packets locally (routing.ts).
 *
 * Everything here is idempotent: up twice leaves the same state as up once (one table,
 * one queue rule, one ip rule, one route); down on a clean system is a no-op.
 */
import type { FirewallPlan } from './plan.js';
import { NFT, must, type ApplyOptions } from './exec.js';
import type { SandboxMatch } from './plan.js';
import { renderApplyScript, renderDeleteScript, renderSetChanges, validatePlan } from './render-nft.js';
import { queueCompanionSpec } from './render-iptables.js';
import { iptablesInstall, iptablesRemove, iptablesShow } from './apply-iptables.js';
import { routingDown, routingMissing, routingShow, routingUp } from './routing.js';

export { FirewallError } from './plan.js';
export type { ApplyOptions } from './exec.js';

export interface UpResult {
  /** Things that did not stop the install but limit it (e.g. no iptables for the queue rule). */
  warnings: string[];
}

/**
 * Installs (or atomically replaces) the table, then the queue rule, then the local route and
 * the ip rule. The ruleset goes first: it alone cuts sandboxes off, so a failure later still
 * leaves them contained (marked packets without the route are forwarded, and forward drops
 * them; packets marked for the queue without the queue rule are dropped by pre_verdict).
 */
export async function firewallUp(plan: FirewallPlan, options: ApplyOptions = {}): Promise<UpResult> {
  const script = renderApplyScript(plan); // throws on an invalid plan before any I/O
  const warnings: string[] = [];
  await must(`nft could not install table inet ${plan.table}`, NFT, ['-f', '-'], options, script);
  try {
    await iptablesInstall(queueCompanionSpec(plan), options);
  } catch (err) {
    warnings.push(
      `the NFQUEUE rule could not be installed (${(err as Error).message.replace(/\.$/, '')}); ` +
        'packets that are neither TCP nor DNS are dropped without a verdict or an audit line',
    );
  }
  await routingUp(plan, options);
  // Switching from the iptables backend: its chains would otherwise keep running beside ours.
  await iptablesRemove(plan, options, { keepQueueCompanion: true }).catch(() => {});
  return { warnings };
}

/**
 * Removes the ip rule(s), the route, the queue rule and the table, in reverse order of
 * firewallUp; absent pieces are skipped. Until the table goes, sandboxes stay cut off.
 */
export async function firewallDown(plan: FirewallPlan, options: ApplyOptions = {}): Promise<void> {
  validatePlan(plan);
  await routingDown(plan, options);
  await iptablesRemove(plan, options, { missingToolIsOk: true });
  await must(`nft could not delete table inet ${plan.table}`, NFT, ['-f', '-'], options, renderDeleteScript(plan));
}

/** True when the table is installed; a failing `nft list tables` throws. */
export async function nftTableExists(plan: Pick<FirewallPlan, 'table'>, options: ApplyOptions): Promise<boolean> {
  // Listing the family's tables first tells "absent" apart from a real failure without
  // matching on nft's error wording.
  const tables = await must('nft could not list tables', NFT, ['list', 'tables', 'inet'], options);
  return tables.split('\n').some((line) => line.trim() === `table inet ${plan.table}`);
}

/** What of the plan's nft table and policy routing is not installed (empty: all of it is). */
export async function nftMissing(plan: FirewallPlan, options: ApplyOptions = {}): Promise<string[]> {
  const out: string[] = [];
  if (!(await nftTableExists(plan, options))) out.push(`nft table inet ${plan.table} is not installed`);
  out.push(...(await routingMissing(plan, options)));
  return out;
}

/**
 * The live state, for `sandgate firewall show`: the table as nft lists it (or a line saying
 * it is not installed; its counters include the IPv6 and queue drops), the queue rule, then
 * the ip rules and the routes that serve it.
 */
export async function firewallShow(plan: FirewallPlan, options: ApplyOptions = {}): Promise<string> {
  validatePlan(plan);
  const lines: string[] = [];
  if (await nftTableExists(plan, options)) {
    const table = await must(`nft could not list table inet ${plan.table}`, NFT, ['list', 'table', 'inet', plan.table], options);
    lines.push(table.trimEnd());
  } else {
    lines.push(`# nftables: table inet ${plan.table} is not installed`);
  }
  lines.push(...(await iptablesShow(plan, options, 'the NFQUEUE rule')));
  lines.push(...(await routingShow(plan, options)));
  return `${lines.join('\n')}\n`;
}

/**
 * Registers / removes sandboxes in the installed table: one `nft -f` transaction of element
 * changes (render-nft.ts renderSetChanges), so the kernel applies all of it or none, and no
 * other sandbox's packets or connections are touched. Nothing to change: no nft call.
 */
export async function nftUpdateSets(
  plan: Pick<FirewallPlan, 'table'>,
  before: readonly SandboxMatch[],
  after: readonly SandboxMatch[],
  options: ApplyOptions = {},
): Promise<void> {
  const script = renderSetChanges(plan.table, before, after);
  if (script === '') return;
  await must(`nft could not update the registered sandboxes in table inet ${plan.table}`, NFT, ['-f', '-'], options, script);
}
