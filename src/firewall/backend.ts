/**
 * Which firewall backend installs the plan: `nft` (one nftables table, plus one iptables rule
 * for the packet queue), `iptables` (iptables-restore into sandgate's own chains), or `auto`:
 * nft when `nft list tables` works, else iptables. Both implement the same FirewallPlan with
 * the same behaviour (docs/packets.md, docs/operations.md); `down` of either removes what
 * either could have left, so switching backends never leaves two rulesets running.
 */
import type { FirewallPlan } from './plan.js';
import { NFT, run, type ApplyOptions } from './exec.js';
import { firewallDown as nftDown, firewallShow as nftShow, firewallUp as nftUp, type UpResult } from './apply-nft.js';
import { iptablesBackendShow, iptablesDown, iptablesUp } from './apply-iptables.js';

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
