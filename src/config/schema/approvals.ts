/** `approvals:`: who else may decide `unlisted: ask` names, and the bound on pending ones (docs/approvals.md). */
import type { ApprovalsConfig, PolicyConfig } from '../types.js';
import { DEFAULTS } from '../defaults.js';
import type { Reader } from './reader.js';

export function approvals(v: Reader, raw: unknown): ApprovalsConfig {
  const p = ['approvals'];
  const o = v.optObj(raw, p, ['webhook', 'webhookTimeoutMs', 'maxPendingPerSandbox']);
  let webhook: string | undefined;
  if (o.webhook !== undefined) {
    const s = v.str(o.webhook, [...p, 'webhook']);
    if (s !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(s);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) v.fail([...p, 'webhook'], 'must be an http:// or https:// URL');
      else webhook = s;
    }
  }
  return {
    ...(webhook !== undefined ? { webhook } : {}),
    webhookTimeoutMs: v.int(o.webhookTimeoutMs, [...p, 'webhookTimeoutMs'], 100, 60_000, DEFAULTS.approvals.webhookTimeoutMs),
    maxPendingPerSandbox: v.int(o.maxPendingPerSandbox, [...p, 'maxPendingPerSandbox'], 1, 1024, DEFAULTS.approvals.maxPendingPerSandbox),
  };
}

/**
 * Pending decisions live beside the control API in the primary, and a held connection in the
 * worker that accepted it; the worker side of that is not built, so the combination is refused.
 */
export function askWithWorkers(v: Reader, workers: number, policies: Readonly<Record<string, PolicyConfig>>): void {
  if (workers <= 1) return;
  const asking = Object.entries(policies).find(([, pol]) => pol.unlisted === 'ask');
  if (asking)
    v.fail(
      ['workers'],
      `policy "${asking[0]}" has unlisted: ask, which needs workers: 1 (held connections in worker processes are not supported; docs/approvals.md)`,
    );
}
