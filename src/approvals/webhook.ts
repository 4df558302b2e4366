/**
 * The webhook approver (`approvals.webhook`, docs/approvals.md): each pending item is POSTed as
 * JSON from the host (sandgate's own network, never a sandbox's path), and a 2xx answer
 * `{"action": "once"|"sandbox"|"policy"|"deny"}` decides it. Anything else (no answer within
 * approvals.webhookTimeoutMs, another status, another body) leaves it pending for the other
 * approvers until its timeout, with an `error` line saying why.
 */
import { ACTIONS, type Action, type PendingItem } from './broker.js';

/** The webhook's answer is small JSON; a larger one is not read. */
const MAX_ANSWER = 16 * 1024;

export type WebhookResult = { readonly ok: true; readonly action: Action } | { readonly ok: false; readonly reason: string };

/** One question to the webhook. Never throws. */
export async function askWebhook(url: string, item: PendingItem, timeoutMs: number): Promise<WebhookResult> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(item),
      signal: AbortSignal.timeout(timeoutMs),
      redirect: 'error',
    });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    return { ok: false, reason: e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.message) };
  }
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    return { ok: false, reason: `the answer could not be read (${(err as Error).message})` };
  }
  if (res.status < 200 || res.status > 299) return { ok: false, reason: `HTTP ${res.status}` };
  if (text.length > MAX_ANSWER) return { ok: false, reason: 'the answer is too large' };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'the answer is not JSON' };
  }
  const action = (body as { action?: unknown } | null)?.action;
  if (typeof action !== 'string' || !ACTIONS.includes(action as Action)) return { ok: false, reason: `the answer has no action among ${ACTIONS.join(', ')}` };
  return { ok: true, action: action as Action };
}
