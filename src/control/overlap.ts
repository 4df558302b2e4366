/**
 * May a sandbox be registered beside the ones already there? (pure; docs/control-api.md)
 *
 * Registered sandboxes take precedence over the config's (the firewall evaluates their sets
 * first, and SandboxTable.identify does the same), so two matches that could both claim a packet
 * are refused unless the outcome is the one an operator means:
 *
 *   - cidrs: two sandboxes that both name a cidr overlap when the cidrs intersect and their
 *     interfaces (where both name one) intersect too. Refused, with config sandboxes as well.
 *   - interfaces: two sandboxes that both name an interface and are not told apart by disjoint
 *     cidrs overlap when the interface patterns intersect. Refused, except for a registered
 *     sandbox strictly narrower than a config glob ("sbx-two" under "sbx-*"): that is a carve-out,
 *     and the config glob stays the fallback for every interface nobody registered.
 *   - two registered sandboxes on intersecting interface patterns must use the very same pattern
 *     (with disjoint cidrs): the firewall keeps their interfaces in one interval set, where
 *     "sbx-a*" and "sbx-ab" would be overlapping elements.
 *   - an interface-only sandbox and a cidr-only one are not compared: which addresses live behind
 *     an interface is the routing table's business. The precedence decides (interface first).
 */
import { parseCidr, type Cidr } from '../util/ip.js';

export interface MatchLike {
  readonly name: string;
  readonly interface?: string;
  readonly cidr?: string;
}

function prefix(glob: string): { prefix: string; wild: boolean } {
  return glob.endsWith('*') ? { prefix: glob.slice(0, -1), wild: true } : { prefix: glob, wild: false };
}

/** Whether some interface name matches both patterns (nft iifname semantics: a trailing '*' is a prefix). */
export function ifacesIntersect(a: string, b: string): boolean {
  const A = prefix(a);
  const B = prefix(b);
  if (A.wild && B.wild) return A.prefix.startsWith(B.prefix) || B.prefix.startsWith(A.prefix);
  if (A.wild) return b.startsWith(A.prefix);
  if (B.wild) return a.startsWith(B.prefix);
  return a === b;
}

/** Whether every name `inner` matches is matched by `outer`, and `outer` matches more. */
export function strictlyNarrower(inner: string, outer: string): boolean {
  const O = prefix(outer);
  if (!O.wild) return false;
  const I = prefix(inner);
  if (!I.wild) return inner.startsWith(O.prefix);
  return I.prefix.startsWith(O.prefix) && I.prefix.length > O.prefix.length;
}

/**
 * Parsed cidrs by text: a registration is compared with every registered sandbox, so without
 * this a thousand registrations would parse a million cidrs. Bounded; cleared when full.
 */
const parsed = new Map<string, Cidr | undefined>();
const MAX_PARSED = 65_536;

function cidrOf(text: string): Cidr | undefined {
  let c = parsed.get(text);
  if (c === undefined && !parsed.has(text)) {
    const r = parseCidr(text);
    c = 'error' in r ? undefined : r;
    if (parsed.size >= MAX_PARSED) parsed.clear();
    parsed.set(text, c);
  }
  return c;
}

export function cidrsIntersect(a: string, b: string): boolean {
  const A = cidrOf(a);
  const B = cidrOf(b);
  if (!A || !B || A.family !== B.family) return false;
  const width = A.family === 4 ? 32 : 128;
  const bits = BigInt(width - Math.min(A.bits, B.bits));
  return A.base >> bits === B.base >> bits;
}

/**
 * Why `candidate` (to be registered) may not sit beside `other`, or undefined. `otherRegistered`:
 * the other one came through the control API too (else: from the config).
 */
export function conflict(candidate: MatchLike, other: MatchLike, otherRegistered: boolean): string | undefined {
  const ci = candidate.interface;
  const oi = other.interface;
  const who = `sandbox "${other.name}"${otherRegistered ? '' : ' (from the config)'}`;
  if (otherRegistered && ci !== undefined && oi !== undefined && ci !== oi && ifacesIntersect(ci, oi)) {
    return `interface "${ci}" overlaps interface "${oi}" of ${who}`;
  }
  if (candidate.cidr !== undefined && other.cidr !== undefined) {
    if (!cidrsIntersect(candidate.cidr, other.cidr)) return undefined;
    if (ci !== undefined && oi !== undefined && !ifacesIntersect(ci, oi)) return undefined;
    return `cidr ${candidate.cidr} overlaps cidr ${other.cidr} of ${who}`;
  }
  if (ci !== undefined && oi !== undefined && ifacesIntersect(ci, oi)) {
    if (!otherRegistered && strictlyNarrower(ci, oi)) return undefined;
    return `interface "${ci}" overlaps interface "${oi}" of ${who}`;
  }
  return undefined;
}

/** The first conflict with any of the others (registered ones first), or undefined. */
export function findConflict(candidate: MatchLike, registered: readonly MatchLike[], fromConfig: readonly MatchLike[]): string | undefined {
  for (const o of registered) {
    if (o.name === candidate.name) continue;
    const why = conflict(candidate, o, true);
    if (why) return why;
  }
  for (const o of fromConfig) {
    const why = conflict(candidate, o, false);
    if (why) return why;
  }
  return undefined;
}
