/** `approvals:`: who else may decide `unlisted: ask` names, and the bound on pending ones (docs/approvals.md). */
import type { ApprovalsConfig } from '../types.js';
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
