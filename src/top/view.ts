/**
 * `sandgate top`'s drawing: the view model (model.ts) as ink elements. No state and no I/O here;
 * run.ts owns both. Written with createElement (no JSX: the build is plain tsc on .ts files).
 */
import { createElement as h, type ReactElement } from 'react';
import { Box, Text, useInput } from 'ink';
import { keysOf, type DecisionRow, type Key, type Pending, type ViewModel } from './model.js';

function cell(text: string, width: number): string {
  if (text.length > width) return `${text.slice(0, Math.max(0, width - 1))}…`;
  return text.padEnd(width);
}

const num = (n: number, width: number, digits = 0): string => n.toFixed(digits).padStart(width);

function until(iso: string, nowMs: number): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((t - nowMs) / 1000));
  return `${s}s`;
}

function approvals(vm: ViewModel, nowMs: number, width: number): ReactElement {
  const lines =
    vm.pending.length === 0
      ? [h(Text, { key: 'none', dimColor: true }, 'no requests waiting')]
      : vm.pending.map((p: Pending, j: number) => {
          const i = vm.pendingFrom + j;
          return h(
            Text,
            { key: p.id, inverse: i === vm.selected, color: 'yellow', wrap: 'truncate' },
            `${i === vm.selected ? '>' : ' '} ${cell(`${p.host}:${p.port}`, 36)} ${cell(p.sandbox, 14)} ${cell(p.user, 12)} ${cell(p.via, 5)} expires in ${until(p.expires, nowMs)}`,
          );
        });
  return h(
    Box,
    { borderStyle: 'round', borderColor: vm.pendingTotal > 0 ? 'yellow' : 'gray', flexDirection: 'column', width },
    h(Text, { bold: true, wrap: 'truncate' }, `PENDING APPROVALS (${vm.pendingTotal})   a allow once  s allow for sandbox  P add to policy  x deny  ↑↓ select`),
    ...lines,
  );
}

function sandboxes(vm: ViewModel): ReactElement {
  return h(
    Box,
    { flexDirection: 'column', marginBottom: 1 },
    h(Text, { bold: true }, `${cell('SANDBOX', 20)} ${'REQ/S'.padStart(7)} ${'DENY/S'.padStart(7)} ${'TOTAL'.padStart(8)} ${'DENIED'.padStart(8)}`),
    ...vm.sandboxes.map((s) =>
      h(
        Text,
        { key: s.name, color: s.denied > 0 ? 'red' : undefined },
        `${cell(s.name, 20)} ${num(s.requestRate, 7, 1)} ${num(s.denialRate, 7, 1)} ${num(s.total, 8)} ${num(s.denied, 8)}`,
      ),
    ),
    vm.moreSandboxes > 0 ? h(Text, { dimColor: true }, `(${vm.moreSandboxes} quieter sandboxes not shown)`) : null,
  );
}

function row(r: DecisionRow): ReactElement {
  const color = r.decision === 'deny' ? 'red' : r.decision === 'would-deny' ? 'yellow' : undefined;
  return h(
    Text,
    { key: r.seq, color, bold: r.decision === 'deny', wrap: 'truncate' },
    `${r.time.padEnd(8)} ${cell(r.sandbox, 12)} ${cell(r.kind, 8)} ${cell(r.host, 28)} ${cell(r.request, 24)} ${cell(r.decision.toUpperCase(), 10)} ${r.reason}`,
  );
}

function status(vm: ViewModel, socket: string): string {
  const bits = [`sandgate top  ${socket}`];
  if (vm.paused) bits.push(`PAUSED (${vm.held} held)`);
  if (vm.denialsOnly) bits.push('DENIALS ONLY');
  if (vm.filter !== '') bits.push(`filter: ${vm.filter}`);
  if (vm.dropped > 0) bits.push(`${vm.dropped} lines dropped (slow terminal)`);
  return bits.join('  |  ');
}

export interface AppProps {
  readonly vm: ViewModel;
  readonly socket: string;
  readonly nowMs: number;
  readonly width: number;
  readonly onKey: (k: Key) => void;
}

export function App(props: AppProps): ReactElement {
  const { vm, width } = props;
  useInput((input, key) => {
    if (key.ctrl && input === 'c') props.onKey({ ch: 'q' });
    else if (key.upArrow) props.onKey({ name: 'up' });
    else if (key.downArrow) props.onKey({ name: 'down' });
    else if (key.return) props.onKey({ name: 'return' });
    else if (key.escape) props.onKey({ name: 'escape' });
    else if (key.backspace || key.delete) props.onKey({ name: 'backspace' });
    else if (input !== '' && !key.ctrl && !key.meta) for (const k of keysOf(input)) props.onKey(k);
  });
  return h(
    Box,
    { flexDirection: 'column', width },
    h(Text, { inverse: true }, cell(status(vm, props.socket), width)),
    vm.showApprovals ? approvals(vm, props.nowMs, width) : null,
    sandboxes(vm),
    h(
      Text,
      { bold: true },
      `${'TIME'.padEnd(8)} ${cell('SANDBOX', 12)} ${cell('KIND', 8)} ${cell('HOST', 28)} ${cell('REQUEST', 24)} ${cell('DECISION', 10)} REASON`,
    ),
    ...vm.rows.map(row),
    h(
      Text,
      { dimColor: vm.input === undefined },
      vm.input !== undefined
        ? `filter (sandbox or host, Enter applies, Esc cancels): ${vm.input}_`
        : vm.message !== ''
          ? vm.message
          : '/ filter  p pause  d denials only  Esc clear filter  q quit',
    ),
  );
}
