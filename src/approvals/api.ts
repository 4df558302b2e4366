/**
 * The control API's /approvals resources (docs/control-api.md, docs/approvals.md), on the same
 * host-only unix socket as /sandboxes:
 *
 *   GET  /approvals            {"pending": [item, ...]}
 *   GET  /approvals?watch=1    NDJSON: one {"event":"pending",...item} per current item, then
 *                              pending and {"event":"decided",id,action,approver} events as they happen
 *   POST /approvals/ID         {"action": "once|sandbox|policy|deny", "approver": "free text"}
 *                              -> 200 {"id","action"}; 404 unknown or already decided; 400 bad body
 *   GET  /approvals/added      the rules `sandbox` and `policy` approvals added (policies in config form)
 */
import type http from 'node:http';
import type { Outcome } from '../control/registry.js';
import { ACTIONS, type Action, type BrokerEvent, type PendingItem } from './broker.js';

export interface ApprovalsApi {
  list(): PendingItem[];
  subscribe(fn: (e: BrokerEvent) => void): () => void;
  decide(id: string, action: Action, approver: string): PendingItem | undefined;
  added(): unknown;
}

/** Approver names are free text for the audit line; bounded and printable so a line stays one line. */
const APPROVER = /^[\x20-\x7e]{1,200}$/;

/** The body of POST /approvals/ID, checked. */
export function parseDecision(body: Record<string, unknown>): Outcome<{ action: Action; approver: string }> {
  for (const k of Object.keys(body))
    if (k !== 'action' && k !== 'approver') return { ok: false, status: 400, error: `unknown key "${k}" (expected action, approver)` };
  if (typeof body.action !== 'string' || !ACTIONS.includes(body.action as Action))
    return { ok: false, status: 400, error: `action: must be one of ${ACTIONS.join(', ')}` };
  let approver = 'control-api';
  if (body.approver !== undefined && body.approver !== null) {
    if (typeof body.approver !== 'string' || !APPROVER.test(body.approver))
      return { ok: false, status: 400, error: 'approver: must be 1-200 printable ASCII characters' };
    approver = body.approver;
  }
  return { ok: true, value: { action: body.action as Action, approver } };
}

/** GET /approvals?watch=1: the stream lives until the client goes away or the server closes. */
export function watch(api: ApprovalsApi, req: http.IncomingMessage, res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  // Headers now, not with the first line: a watcher with nothing pending must know it is connected.
  res.flushHeaders();
  const line = (e: BrokerEvent): void => {
    res.write(`${JSON.stringify(e)}\n`);
  };
  // Subscribed before the snapshot is written, in the same tick: no event falls between the two.
  const stop = api.subscribe(line);
  for (const item of api.list()) line({ event: 'pending', ...item });
  const end = (): void => {
    stop();
  };
  req.socket.setTimeout(0);
  res.once('close', end);
}
