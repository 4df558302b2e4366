/**
 * The TPROXY policy routing both backends share (kernel Documentation/networking/tproxy.rst):
 * `ip rule fwmark M lookup T` plus `local 0.0.0.0/0 dev lo table T`, so marked packets are
 * delivered to the transparent socket instead of being forwarded. Idempotent: one rule and one
 * route however often `up` runs; `down` on a clean system is a no-op.
 */
import { FirewallError, type FirewallPlan } from './plan.js';
import { IP, must, parseJsonArray, type ApplyOptions } from './exec.js';
import { formatMark } from './render-nft.js';

/**
 * Bound on delete passes over duplicate ip rules. Each pass deletes every rule it saw, so
 * more than one pass only happens if something re-adds rules concurrently.
 */
const MAX_RULE_PASSES = 8;

interface OurRule {
  priority: number;
}

/**
 * Keys `ip -j rule show` prints for a plain `fwmark M lookup T` rule. A rule with any
 * other key (a source prefix, iif, "not", a mask, ...) belongs to someone else and is
 * neither counted nor deleted.
 */
const PLAIN_RULE_KEYS = new Set(['priority', 'src', 'fwmark', 'table', 'protocol']);

async function listOurRules(plan: FirewallPlan, options: ApplyOptions): Promise<OurRule[]> {
  // -N: numeric table ids even if /etc/iproute2/rt_tables names ours.
  const out = await must('could not list ip rules', IP, ['-4', '-j', '-N', 'rule', 'show'], options);
  const rules: OurRule[] = [];
  for (const entry of parseJsonArray(out, 'ip rule show')) {
    if (Object.keys(entry).some((key) => !PLAIN_RULE_KEYS.has(key))) continue;
    if (entry['src'] !== 'all') continue;
    if (typeof entry['fwmark'] !== 'string' || Number(entry['fwmark']) !== plan.mark) continue;
    if (entry['table'] !== String(plan.routeTable)) continue;
    if (typeof entry['priority'] !== 'number') continue;
    rules.push({ priority: entry['priority'] });
  }
  return rules;
}

function ruleArgs(plan: FirewallPlan): string[] {
  return ['fwmark', formatMark(plan.mark), 'lookup', String(plan.routeTable)];
}

async function deleteRule(plan: FirewallPlan, rule: OurRule, options: ApplyOptions): Promise<void> {
  // Naming the priority deletes exactly the rule that was listed, not whichever matching
  // rule the kernel finds first.
  await must(
    `could not delete ip rule fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable}`,
    IP,
    ['-4', 'rule', 'del', 'priority', String(rule.priority), ...ruleArgs(plan)],
    options,
  );
}

/** Exactly one `fwmark M lookup T` rule: add it if missing, delete duplicates. */
async function ensureRule(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  const rules = await listOurRules(plan, options);
  if (rules.length === 0) {
    await must(`could not add ip rule fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable}`, IP, ['-4', 'rule', 'add', ...ruleArgs(plan)], options);
    return;
  }
  for (const extra of rules.slice(1)) await deleteRule(plan, extra, options);
}

/** Deletes every `fwmark M lookup T` rule, re-listing until none is left. */
async function removeRules(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  for (let pass = 0; pass < MAX_RULE_PASSES; pass++) {
    const rules = await listOurRules(plan, options);
    if (rules.length === 0) return;
    for (const rule of rules) await deleteRule(plan, rule, options);
  }
  throw new FirewallError(`ip rules fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable} keep reappearing after ${MAX_RULE_PASSES} delete passes.`);
}

/** Routes in the plan's table; `table all` because `show table T` fails when T is empty. */
async function listTableRoutes(plan: FirewallPlan, options: ApplyOptions): Promise<Record<string, unknown>[]> {
  const out = await must('could not list routes', IP, ['-4', '-j', '-N', 'route', 'show', 'table', 'all'], options);
  return parseJsonArray(out, 'ip route show').filter((route) => route['table'] === String(plan.routeTable));
}

/** With -N, `type` is RTN_LOCAL's number (2) rather than "local". */
function isOurRoute(route: Record<string, unknown>): boolean {
  return (route['type'] === '2' || route['type'] === 'local') && route['dst'] === 'default' && route['dev'] === 'lo';
}

function routeArgs(plan: FirewallPlan): string[] {
  return ['local', '0.0.0.0/0', 'dev', 'lo', 'table', String(plan.routeTable)];
}

/** The route before the rule, so the rule never points at an empty table. */
export async function routingUp(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  await must(`could not add route local 0.0.0.0/0 dev lo table ${plan.routeTable}`, IP, ['-4', 'route', 'replace', ...routeArgs(plan)], options);
  await ensureRule(plan, options);
}

/** Reverse order of routingUp; absent pieces are skipped. */
export async function routingDown(plan: FirewallPlan, options: ApplyOptions): Promise<void> {
  await removeRules(plan, options);
  if ((await listTableRoutes(plan, options)).some(isOurRoute)) {
    await must(`could not delete route local 0.0.0.0/0 dev lo table ${plan.routeTable}`, IP, ['-4', 'route', 'del', ...routeArgs(plan)], options);
  }
}

/** What of the policy routing TPROXY needs is absent: the fwmark rule, the local route. */
export async function routingMissing(plan: FirewallPlan, options: ApplyOptions): Promise<string[]> {
  const out: string[] = [];
  if ((await listOurRules(plan, options)).length === 0) out.push(`ip rule fwmark ${formatMark(plan.mark)} lookup ${plan.routeTable} is missing`);
  if (!(await listTableRoutes(plan, options)).some(isOurRoute)) out.push(`route local 0.0.0.0/0 dev lo table ${plan.routeTable} is missing`);
  return out;
}

/** `# ip rule` and `# ip route` sections of `firewall show`. */
export async function routingShow(plan: FirewallPlan, options: ApplyOptions): Promise<string[]> {
  const lines: string[] = [];
  const mark = formatMark(plan.mark);
  lines.push(`# ip rule: fwmark ${mark} lookup ${plan.routeTable}`);
  const rules = await listOurRules(plan, options);
  if (rules.length === 0) lines.push('# (none)');
  for (const rule of rules) lines.push(`${rule.priority}:\tfrom all fwmark ${mark} lookup ${plan.routeTable}`);

  lines.push(`# ip route: table ${plan.routeTable}`);
  if ((await listTableRoutes(plan, options)).length === 0) {
    lines.push('# (none)');
  } else {
    const routes = await must(`could not list routes in table ${plan.routeTable}`, IP, ['-4', 'route', 'show', 'table', String(plan.routeTable)], options);
    lines.push(routes.trimEnd());
  }
  return lines;
}
