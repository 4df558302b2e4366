/**
 * The control API's decisions, without sockets or firewall (pure): is this request valid, and
 * what is the list of registered sandboxes after it? The daemon (src/control/service.ts) then
 * changes the firewall and swaps the runtime, or, on any failure, neither.
 *
 * A sandbox is checked by the config's own rules (src/config/validate.ts validateSandboxEntry:
 * name, interface glob, IPv4 cidr, policy among the config's, user), plus what only makes sense
 * here: `address` (one IPv4 host, stored as its /32), labels, unique names across the config
 * and the registry, and no overlap with another sandbox (overlap.ts).
 */
import net from 'node:net';
import type { Config } from '../config/types.js';
import { validateSandboxEntry } from '../config/validate.js';
import { pathText } from '../config/load.js';
import type { SandboxSpec } from '../policy/sandboxes.js';
import { findConflict } from './overlap.js';

export type Outcome<T> = { ok: true; value: T } | { ok: false; status: number; error: string };

/** At most this many registered sandboxes (each is a few set elements and a table entry). */
export const MAX_REGISTERED = 16_384;
const MAX_LABELS = 64;
/** Kubernetes-like label keys; values are printable ASCII. Neither can break an audit line. */
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/;
const LABEL_VALUE = /^[\x20-\x7e]{0,256}$/;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

const CREATE_KEYS = ['name', 'interface', 'address', 'cidr', 'policy', 'user', 'labels'] as const;
const UPDATE_KEYS = ['name', 'interface', 'address', 'cidr', 'policy', 'user', 'labels'] as const;

function fail<T>(status: number, error: string): Outcome<T> {
  return { ok: false, status, error };
}

export function isSandboxName(name: string): boolean {
  return NAME.test(name);
}

/** Parses a request body: JSON, an object at the top. */
export function parseBody(text: string): Outcome<Record<string, unknown>> {
  if (text.trim() === '') return fail(400, 'the request body is empty; send a JSON object');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return fail(400, `the request body is not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return fail(400, 'the request body must be a JSON object');
  return { ok: true, value: raw as Record<string, unknown> };
}

function checkKeys(body: Record<string, unknown>, keys: readonly string[]): string | undefined {
  for (const k of Object.keys(body)) {
    if (!keys.includes(k)) return `unknown key "${k}" (expected one of: ${keys.join(', ')})`;
  }
  return undefined;
}

function labelsOf(v: unknown): Outcome<Readonly<Record<string, string>> | undefined> {
  if (v === undefined || v === null) return { ok: true, value: undefined };
  if (typeof v !== 'object' || Array.isArray(v)) return fail(400, 'labels: must be an object of string values, such as {"team": "research"}');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_LABELS) return fail(400, `labels: at most ${MAX_LABELS} labels`);
  const out: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (!LABEL_KEY.test(k)) return fail(400, `labels: key "${k}" must be 1-63 characters [A-Za-z0-9_./-], starting with a letter or digit`);
    if (typeof val !== 'string' || !LABEL_VALUE.test(val)) return fail(400, `labels.${k}: must be a string of at most 256 printable ASCII characters`);
    out[k] = val;
  }
  return { ok: true, value: entries.length === 0 ? undefined : Object.freeze(out) };
}

/**
 * The match part of a body: `interface` and/or one of `address` (a host) and `cidr`. The
 * address becomes cidr "A/32", which is how it is stored and listed.
 */
function matchOf(body: Record<string, unknown>): Outcome<{ interface?: unknown; cidr?: unknown }> {
  if (body.address !== undefined && body.cidr !== undefined) return fail(400, 'give "address" or "cidr", not both');
  const out: { interface?: unknown; cidr?: unknown } = {};
  if (body.interface !== undefined && body.interface !== null) out.interface = body.interface;
  if (body.cidr !== undefined && body.cidr !== null) out.cidr = body.cidr;
  if (body.address !== undefined && body.address !== null) {
    if (typeof body.address !== 'string' || !net.isIPv4(body.address))
      return fail(400, `address: must be an IPv4 address such as 10.77.4.2 (got ${JSON.stringify(body.address)})`);
    out.cidr = `${body.address}/32`;
  }
  return { ok: true, value: out };
}

/** Config-rule validation of the fields the config knows; problems become one sentence. */
function validated(fields: Record<string, unknown>, labels: Readonly<Record<string, string>> | undefined, config: Config): Outcome<SandboxSpec> {
  const { sandbox, problems } = validateSandboxEntry(fields, config.policies);
  if (!sandbox) {
    const p = problems[0];
    const where = p ? pathText(p.path) : '';
    const text = p ? `${where === '' ? '' : `${where}: `}${p.message}` : 'invalid sandbox';
    // A policy the config does not have is 400 like any invalid field: the request is wrong.
    return fail(400, text);
  }
  return { ok: true, value: Object.freeze({ ...sandbox, ...(labels !== undefined ? { labels } : {}) }) };
}

export interface RegistryState {
  readonly config: Config;
  /** Registered sandboxes, in registration order. */
  readonly dynamic: readonly SandboxSpec[];
}

function taken(state: RegistryState, name: string, except?: string): string | undefined {
  if (state.config.sandboxes.some((s) => s.name === name)) return `a sandbox named "${name}" already exists (from the config)`;
  if (name !== except && state.dynamic.some((s) => s.name === name)) return `a sandbox named "${name}" is already registered`;
  return undefined;
}

/** POST /sandboxes: the new list, or why not (400 invalid, 409 name taken / overlap / full). */
export function planAdd(state: RegistryState, body: Record<string, unknown>): Outcome<{ spec: SandboxSpec; next: readonly SandboxSpec[] }> {
  const bad = checkKeys(body, CREATE_KEYS);
  if (bad) return fail(400, bad);
  const match = matchOf(body);
  if (!match.ok) return match;
  const labels = labelsOf(body.labels);
  if (!labels.ok) return labels;
  const fields: Record<string, unknown> = { name: body.name, policy: body.policy, ...match.value };
  if (body.user !== undefined && body.user !== null) fields.user = body.user;
  const spec = validated(fields, labels.value, state.config);
  if (!spec.ok) return spec;
  const name = spec.value.name;
  const dup = taken(state, name);
  if (dup) return fail(409, dup);
  if (state.dynamic.length >= MAX_REGISTERED) return fail(409, `the registry is full (${MAX_REGISTERED} registered sandboxes); remove some first`);
  const overlap = findConflict(spec.value, state.dynamic, state.config.sandboxes);
  if (overlap) return fail(409, `sandbox "${name}": ${overlap}`);
  return { ok: true, value: { spec: spec.value, next: [...state.dynamic, spec.value] } };
}

/**
 * PUT /sandboxes/NAME: fields present replace the registered ones (`user`/`labels`: null
 * removes); any of interface/address/cidr replaces the whole match. The sandbox keeps its place.
 */
export function planUpdate(
  state: RegistryState,
  name: string,
  body: Record<string, unknown>,
): Outcome<{ before: SandboxSpec; spec: SandboxSpec; next: readonly SandboxSpec[] }> {
  const found = lookup(state, name);
  if (!found.ok) return found;
  const before = found.value;
  const bad = checkKeys(body, UPDATE_KEYS);
  if (bad) return fail(400, bad);
  if (body.name !== undefined && body.name !== name)
    return fail(400, `name: a sandbox cannot be renamed (the URL names "${name}"); remove it and register the new name`);
  const newMatch = body.interface !== undefined || body.address !== undefined || body.cidr !== undefined;
  const match = newMatch
    ? matchOf(body)
    : {
        ok: true as const,
        value: { ...(before.interface !== undefined ? { interface: before.interface } : {}), ...(before.cidr !== undefined ? { cidr: before.cidr } : {}) },
      };
  if (!match.ok) return match;
  const labels = body.labels === undefined ? { ok: true as const, value: before.labels } : labelsOf(body.labels);
  if (!labels.ok) return labels;
  const fields: Record<string, unknown> = { name, policy: body.policy ?? before.policy, ...match.value };
  const user = body.user === undefined ? before.user : body.user;
  if (user !== undefined && user !== null) fields.user = user;
  const spec = validated(fields, labels.value, state.config);
  if (!spec.ok) return spec;
  const others = state.dynamic.filter((s) => s.name !== name);
  const overlap = findConflict(spec.value, others, state.config.sandboxes);
  if (overlap) return fail(409, `sandbox "${name}": ${overlap}`);
  return { ok: true, value: { before, spec: spec.value, next: state.dynamic.map((s) => (s.name === name ? spec.value : s)) } };
}

/** DELETE /sandboxes/NAME. */
export function planRemove(state: RegistryState, name: string): Outcome<{ removed: SandboxSpec; next: readonly SandboxSpec[] }> {
  const found = lookup(state, name);
  if (!found.ok) return found;
  return { ok: true, value: { removed: found.value, next: state.dynamic.filter((s) => s.name !== name) } };
}

/** A registered sandbox by name: 404 if there is none, 409 if the name is the config's. */
export function lookup(state: RegistryState, name: string): Outcome<SandboxSpec> {
  const spec = state.dynamic.find((s) => s.name === name);
  if (spec) return { ok: true, value: spec };
  if (state.config.sandboxes.some((s) => s.name === name)) {
    return fail(409, `sandbox "${name}" comes from the config file; change the config and reload sandgate (SIGHUP) to change or remove it`);
  }
  return fail(404, `no sandbox named "${name}"`);
}

/**
 * Can the registered sandboxes stay beside a new config (SIGHUP)? Undefined when they can; else
 * why not, and the reload is rejected (the registry is kept, the old config stays).
 */
export function reloadConflict(config: Config, dynamic: readonly SandboxSpec[]): string | undefined {
  for (const s of dynamic) {
    if (!Object.hasOwn(config.policies, s.policy)) return `registered sandbox "${s.name}" uses policy "${s.policy}", which the new config does not have`;
    if (config.sandboxes.some((c) => c.name === s.name))
      return `the new config names a sandbox "${s.name}", which is already registered through the control API`;
    const why = findConflict(s, [], config.sandboxes);
    if (why) return `registered sandbox "${s.name}": ${why}`;
  }
  return undefined;
}
