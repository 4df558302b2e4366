/**
 * How the data path asks (src/net/connection.ts, src/dns/responder.ts): one function, and what an
 * approval means for the connection or query that waited for it.
 */
import type { Sandbox } from '../policy/sandboxes.js';
import type { Outcome, Via } from './broker.js';
import { approvedRuleId } from './grants.js';

export type AskApproval = (sandbox: Sandbox, host: string, port: number, via: Via) => Promise<Outcome>;

/**
 * The sandbox as the approved connection (or query) goes on under: its policy plus a passthrough
 * rule for exactly this name and port. For `once` this copy is all there is (nothing else ever
 * sees it); `sandbox` and `policy` approvals are also in the runtime for everything after.
 */
export function approvedSandbox(sandbox: Sandbox, host: string, port: number, o: Extract<Outcome, { allow: true }>): Sandbox {
  return { ...sandbox, policy: sandbox.policy.withApproved([{ id: approvedRuleId(o.action, o.id), host, port }]) };
}

/** What the sandbox is told when a denial comes from an approval (never the approver's text). */
export function sandboxReason(o: Extract<Outcome, { allow: false }>): string {
  return o.reason === 'ask-timeout' ? 'ask-timeout' : 'not approved';
}
