import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseState, readState, renderState, writeState } from '../../src/control/state-file.js';
import { validateConfig } from '../../src/config/validate.js';
import type { Config } from '../../src/config/types.js';
import type { SandboxSpec } from '../../src/policy/sandboxes.js';

function config(extra: Record<string, unknown> = {}): Config {
  const r = validateConfig({
    sandboxes: [{ name: 'agent', interface: 'sbx-agent', policy: 'p' }],
    policies: { p: { allow: [{ host: 'a.example' }] }, q: { allow: [{ host: 'b.example' }] } },
    ...extra,
  });
  if (!r.config) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

const TWO: SandboxSpec = { name: 'two', interface: 'sbx-two', policy: 'q', user: 'bob', labels: { team: 'x' } };
const THREE: SandboxSpec = { name: 'three', cidr: '10.9.0.0/24', policy: 'p' };

test('stateDir defaults to tls.caDir and can be set', (t) => {
  t.is(config({ tls: { caDir: '/x/ca' } }).stateDir, '/x/ca');
  t.is(config({ stateDir: '/x/state' }).stateDir, '/x/state');
});

test('render then parse gives the same registry back', (t) => {
  const r = parseState(renderState([TWO, THREE]), config());
  t.deepEqual(r.skipped, []);
  t.deepEqual(
    r.specs.map((s) => ({ ...s })),
    [{ ...TWO }, { ...THREE }],
  );
});

test('entries the config no longer allows are left out and named; the rest is restored', (t) => {
  const text = JSON.stringify({
    version: 1,
    sandboxes: [
      { name: 'gone', interface: 'sbx-gone', policy: 'deleted' },
      { name: 'agent', interface: 'sbx-x', policy: 'p' },
      { name: 'clash', interface: 'sbx-agent', policy: 'p' },
      'junk',
      { name: 'two', interface: 'sbx-two', policy: 'q' },
    ],
  });
  const r = parseState(text, config());
  t.deepEqual(
    r.specs.map((s) => s.name),
    ['two'],
  );
  t.is(r.skipped.length, 4);
  t.regex(r.skipped[0] ?? '', /"gone" not restored: policy: unknown policy "deleted"/);
  t.regex(r.skipped[1] ?? '', /"agent" not restored: a sandbox named "agent" already exists \(from the config\)/);
  t.regex(r.skipped[2] ?? '', /"clash" not restored: .*overlaps interface "sbx-agent"/);
});

test('a file that is not JSON or not version 1 restores nothing, and says so', (t) => {
  t.regex(parseState('{', config()).skipped[0] ?? '', /not valid JSON/);
  t.regex(parseState('{"version": 2, "sandboxes": []}', config()).skipped[0] ?? '', /not a version 1 list/);
});

test('writeState replaces the file atomically (no temporary left) with mode 0600; an absent file is an empty registry', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-state-'));
  try {
    const cfg = config({ stateDir: dir });
    t.deepEqual(readState(cfg), { specs: [], skipped: [] });
    writeState(cfg, [TWO]);
    writeState(cfg, [TWO, THREE]);
    t.deepEqual(readdirSync(dir), ['registered.json']);
    t.is(statSync(join(dir, 'registered.json')).mode & 0o777, 0o600);
    t.is(readFileSync(join(dir, 'registered.json'), 'utf8'), renderState([TWO, THREE]));
    t.deepEqual(
      readState(cfg).specs.map((s) => s.name),
      ['two', 'three'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
