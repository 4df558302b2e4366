/**
 * `sandgate top`: the I/O shell around model.ts. Opens GET /events (and GET /approvals?watch=1,
 * when the daemon has approvals) on the control socket, feeds every line to the model, draws the
 * view with ink, and sends the operator's answers (POST /approvals/ID).
 */
import { createElement as h } from 'react';
import { render } from 'ink';
import { controlRequest, controlStream, type ControlStream } from '../control/client.js';
import { SandgateError } from '../errors.js';
import {
  INITIAL,
  onApprovalLine,
  onApprovalsAbsent,
  onApprovalsPresent,
  onAuditLine,
  onKey,
  viewModel,
  withMessage,
  type Effect,
  type Key,
  type TopState,
} from './model.js';
import { App } from './view.js';

/** Redraws at most this often: a busy gate writes thousands of lines a second. */
const FRAME_MS = 100;

export async function runTop(socket: string): Promise<number> {
  if (!process.stdin.isTTY || !process.stdout.isTTY) throw new SandgateError('top needs a terminal (stdin and stdout are not a TTY)', 'USAGE');
  let state: TopState = INITIAL;
  const streams: ControlStream[] = [];
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });

  let dirty = true;
  const update = (next: TopState): void => {
    if (next !== state) {
      state = next;
      dirty = true;
    }
  };

  const answer = (e: Extract<Effect, { t: 'answer' }>): void => {
    controlRequest(socket, 'POST', `/approvals/${encodeURIComponent(e.id)}`, { action: e.action, approver: 'top' }).then(
      (r) => {
        if (r.status === 200) update(withMessage(state, `${e.label}: ${e.action} sent`));
        else if (r.status === 404) update(withMessage(onApprovalLine(state, { event: 'decided', id: e.id, action: 'gone' }), `${e.label}: no longer pending`));
        else update(withMessage(state, `${e.label}: ${String(r.body.error ?? `HTTP ${r.status}`)}`));
      },
      (err: Error) => update(withMessage(state, `${e.label}: ${err.message}`)),
    );
  };

  const key = (k: Key): void => {
    const { state: next, effect } = onKey(state, k);
    update(next);
    if (effect?.t === 'quit') finish(0);
    else if (effect?.t === 'answer') answer(effect);
    // Keys redraw at once: the operator sees the effect of a key without waiting for a frame.
    draw();
  };

  let quitting = false;
  /**
   * Opens the decision stream and the approvals watch. The first failure is the command's error;
   * once the view runs, a stream that ends (the daemon restarted) is re-opened every second, and
   * the approvals list starts over from what the new watch reports.
   */
  const connect = async (): Promise<void> => {
    const events = await controlStream(socket, '/events', (line) => update(onAuditLine(state, line, Date.now())));
    if (!events.ok) throw new SandgateError(`the daemon refused the decision stream (HTTP ${events.status}): ${String(events.body.error ?? '')}`, 'RUNTIME');
    streams.push(events.stream);
    // A reconnect that completes after q: nothing may keep the process open.
    if (quitting) events.stream.close();
    events.stream.ended.then(() => {
      if (quitting) return;
      update(withMessage(state, 'the daemon closed the decision stream (restarting?): reconnecting'));
      setTimeout(retry, 1000).unref();
    });
    const approvals = await controlStream(socket, '/approvals?watch=1', (line) => update(onApprovalLine(state, line))).catch(() => undefined);
    update(onApprovalsAbsent(state));
    if (approvals?.ok) {
      streams.push(approvals.stream);
      if (quitting) approvals.stream.close();
      update(onApprovalsPresent(state));
    }
  };
  const retry = (): void => {
    if (quitting) return;
    for (const s of streams.splice(0)) s.close();
    connect().then(
      () => update(withMessage(state, 'reconnected')),
      () => setTimeout(retry, 1000).unref(),
    );
  };
  await connect();

  const props = () => {
    const width = process.stdout.columns || 120;
    const height = process.stdout.rows || 40;
    const vm0 = viewModel(state, Date.now(), 0);
    // Status, sandbox panel and its header and gap, table header, message; the approvals box.
    const fixed = 5 + vm0.sandboxes.length + (vm0.moreSandboxes > 0 ? 1 : 0) + (vm0.showApprovals ? 3 + Math.max(1, vm0.pending.length) : 0);
    return { vm: viewModel(state, Date.now(), Math.max(1, height - fixed - 1)), socket, nowMs: Date.now(), width, onKey: key };
  };
  const ink = render(h(App, props()), { exitOnCtrlC: false, patchConsole: false });
  function draw(): void {
    dirty = false;
    ink.rerender(h(App, props()));
  }
  // Rates move with time even without new lines: redraw once a second regardless.
  let ticks = 0;
  const timer = setInterval(() => {
    if (dirty || ++ticks % (1000 / FRAME_MS) === 0) draw();
  }, FRAME_MS);
  const onSignal = (): void => finish(0);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const code = await finished;
  quitting = true;
  clearInterval(timer);
  for (const s of streams) s.close();
  ink.unmount();
  await ink.waitUntilExit();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}
