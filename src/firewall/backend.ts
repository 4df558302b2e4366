/**
 * Which firewall backend installs the plan: `nft` (one nftables table, plus one iptables rule
 * for the packet queue), `iptables` (iptables-restore into sandgate's own chains), or `auto`:
 * nft when `nft list tables` works, else iptables. Both implement the same FirewallPlan with
 * the same behaviour (docs/packets.md, docs/operations.md); `down` of either removes what
 * either could have left, so switching backends never leaves two rulesets running.
 */
import type { FirewallPlan, SandboxMatch } from './plan.js';
import { NFT, run, type ApplyOptions } from './exec.js';
import { firewallDown as nftDown, firewallShow as nftShow, firewallUp as nftUp, nftMissing, nftUpdateSets, type UpResult } from './apply-nft.js';
import { iptablesBackendShow, iptablesDown, iptablesMissing, iptablesUp, iptablesUpdateSets } from './apply-iptables.js';

export type BackendChoice = 'nft' | 'iptables' | 'auto';
export type Backend = 'nft' | 'iptables';

/** `auto` resolves once per call: nft if it can list tables here (in `netns` when given). */
export async function resolveBackend(choice: BackendChoice, options: ApplyOptions = {}): Promise<Backend> {
  if (choice !== 'auto') return choice;
  const probe = await run(NFT, ['list', 'tables'], options);
  return probe.ok ? 'nft' : 'iptables';
}

export async function firewallUp(plan: FirewallPlan, backend: Backend, options: ApplyOptions = {}): Promise<UpResult> {
  return backend === 'nft' ? nftUp(plan, options) : iptablesUp(plan, options);
}

export async function firewallDown(plan: FirewallPlan, backend: Backend, options: ApplyOptions = {}): Promise<void> {
  return backend === 'nft' ? nftDown(plan, options) : iptablesDown(plan, options);
}

export async function firewallShow(plan: FirewallPlan, backend: Backend, options: ApplyOptions = {}): Promise<string> {
  const header = `# backend: ${backend}\n`;
  return header + (backend === 'nft' ? await nftShow(plan, options) : await iptablesBackendShow(plan, options));
}

/** What of the plan's ruleset and policy routing is not in place (empty: all of it is); for health. */
export async function firewallMissing(plan: FirewallPlan, backend: Backend, options: ApplyOptions = {}): Promise<string[]> {
  return backend === 'nft' ? nftMissing(plan, options) : iptablesMissing(plan, options);
}

/**
 * Changes the registered sandboxes in place: nft in one atomic transaction of set elements,
 * iptables as ipset element changes ordered to fail closed (render-ipset.ts).
 */
export async function firewallUpdateDynamic(
  plan: Pick<FirewallPlan, 'table'>,
  backend: Backend,
  before: readonly SandboxMatch[],
  after: readonly SandboxMatch[],
  options: ApplyOptions = {},
): Promise<void> {
  if (backend === 'nft') await nftUpdateSets(plan, before, after, options);
  else await iptablesUpdateSets(plan, before, after, options);
}
