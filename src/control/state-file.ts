/**
 * Registered sandboxes survive a restart: after every change the control API applied, the list
 * is written to `<stateDir>/registered.json` (a temporary file, fsync, rename, fsync of the
 * directory: a crash leaves the old list or the new one, never half of one). At start-up the
 * daemon reads it back before it installs the firewall, so the sets hold them from the first
 * packet (src/daemon.ts).
 *
 * Restoring re-checks every entry with the control API's own rules against the config being
 * started (registry.ts planAdd): an entry the config no longer allows (its policy is gone, its
 * name or match now belongs to the config) is left out and named, never forced in.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/types.js';
import type { SandboxSpec } from '../policy/sandboxes.js';
import { planAdd } from './registry.js';

export const STATE_FILE = 'registered.json';

export function stateFilePath(config: Config): string {
  return join(config.stateDir, STATE_FILE);
}

/** The file's text for `specs` (pure): the fields a POST /sandboxes takes. */
export function renderState(specs: readonly SandboxSpec[]): string {
  const sandboxes = specs.map((s) => ({
    name: s.name,
    policy: s.policy,
    ...(s.interface !== undefined ? { interface: s.interface } : {}),
    ...(s.cidr !== undefined ? { cidr: s.cidr } : {}),
    ...(s.user !== undefined ? { user: s.user } : {}),
    ...(s.labels !== undefined ? { labels: s.labels } : {}),
  }));
  return `${JSON.stringify({ version: 1, sandboxes }, null, 2)}\n`;
}

export interface Restored {
  readonly specs: readonly SandboxSpec[];
  /** One sentence per entry left out (or for a file that could not be read at all). */
  readonly skipped: readonly string[];
}

/** The registry a state file's text restores under `config` (pure). */
export function parseState(text: string, config: Config): Restored {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { specs: [], skipped: [`the file is not valid JSON (${(err as Error).message.split('\n')[0]}); no registration restored`] };
  }
  const list = (raw as { sandboxes?: unknown } | null)?.sandboxes;
  if (typeof raw !== 'object' || raw === null || (raw as { version?: unknown }).version !== 1 || !Array.isArray(list)) {
    return { specs: [], skipped: ['the file is not a version 1 list of sandboxes; no registration restored'] };
  }
  let dynamic: readonly SandboxSpec[] = [];
  const skipped: string[] = [];
  for (const entry of list) {
    const o =
      typeof entry === 'object' && entry !== null && !Array.isArray(entry)
        ? planAdd({ config, dynamic }, entry as Record<string, unknown>)
        : { ok: false as const, status: 400, error: 'not an object' };
    if (o.ok) dynamic = o.value.next;
    else skipped.push(`registered sandbox ${JSON.stringify((entry as { name?: unknown } | null)?.name ?? null)} not restored: ${o.error}`);
  }
  return { specs: dynamic, skipped };
}

/** Reads and parses the state file; an absent file is an empty registry. */
export function readState(config: Config): Restored {
  const path = stateFilePath(config);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { specs: [], skipped: [] };
    return { specs: [], skipped: [`cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); no registration restored`] };
  }
  const r = parseState(text, config);
  return { specs: r.specs, skipped: r.skipped.map((s) => `${path}: ${s}`) };
}

/** Atomically replaces the state file with `specs` (mode 0600: labels and users are the operator's). */
export function writeState(config: Config, specs: readonly SandboxSpec[]): void {
  const path = stateFilePath(config);
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, renderState(specs));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  // The rename itself is durable once the directory is synced.
  const dir = openSync(config.stateDir, 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
