/**
 * What `sandbox` and `policy` approvals added (docs/approvals.md), held in memory by the daemon
 * and applied to a Runtime as compiled rules: a `policy` grant joins the policy every sandbox on
 * it shares, a `sandbox` grant only that sandbox's own copy of its policy. Pure: the daemon swaps
 * the Runtime apply() returns.
 *
 * Lifetime: `sandbox` grants end with a reload, a restart, or the sandbox's removal (a later
 * sandbox of the same name must not inherit them); `policy` grants survive reloads while the
 * policy exists, and end with a restart unless the operator writes them into the config
 * (GET /approvals/added gives them in config form).
 */
import type { AllowRule, Config, PolicyConfig } from '../config/types.js';
import { compilePolicies, type ApprovedRule, type Policy } from '../policy/policy.js';
import { SandboxTable } from '../policy/sandboxes.js';
import type { Runtime } from '../runtime.js';
import type { PendingItem } from './broker.js';

/** The `rule` audit lines name for an approved name: the approval's scope and id. */
export function approvedRuleId(scope: 'once' | 'sandbox' | 'policy', id: string): string {
  return `approvals.${scope}.${id}`;
}

export interface Grant {
  readonly scope: 'sandbox' | 'policy';
  readonly policy: string;
  /** The sandbox a `sandbox` grant is for (and the one whose request a `policy` grant answered). */
  readonly sandbox: string;
  readonly host: string;
  readonly port: number;
  /** The approval's id, the approver's free text, when (ISO 8601). */
  readonly id: string;
  readonly approver: string;
  readonly at: string;
}

export class Grants {
  private list: Grant[] = [];

  /** The grants as another process holds them (a worker takes the primary's list, src/cluster/). */
  static of(list: readonly Grant[]): Grants {
    const g = new Grants();
    g.list = [...list];
    return g;
  }

  add(item: PendingItem, policy: string, scope: Grant['scope'], approver: string, now: number): Grant {
    const g: Grant = { scope, policy, sandbox: item.sandbox, host: item.host, port: item.port, id: item.id, approver, at: new Date(now).toISOString() };
    this.list.push(g);
    return g;
  }

  all(): readonly Grant[] {
    return this.list;
  }

  /** A reload: `sandbox` grants end; `policy` grants stay for the policies the new config has. */
  reloaded(config: Config): void {
    this.list = this.list.filter((g) => g.scope === 'policy' && Object.hasOwn(config.policies, g.policy));
  }

  /** Drops `sandbox` grants of sandboxes `rt` no longer has; true if any went. */
  prune(rt: Runtime): boolean {
    const before = this.list.length;
    this.list = this.list.filter((g) => g.scope === 'policy' || rt.sandboxes.byName(g.sandbox) !== undefined);
    return this.list.length !== before;
  }

  /** `rt` with every grant compiled in: new policies and sandbox table, everything else shared. */
  apply(rt: Runtime): Runtime {
    const base = compilePolicies(rt.config);
    const byPolicy = new Map<string, ApprovedRule[]>();
    const bySandbox = new Map<string, { policy: string; rules: ApprovedRule[] }>();
    for (const g of this.list) {
      if (g.scope === 'policy') {
        const rules = byPolicy.get(g.policy) ?? [];
        rules.push({ id: approvedRuleId('policy', g.id), host: g.host, port: g.port });
        byPolicy.set(g.policy, rules);
      } else {
        const own = bySandbox.get(g.sandbox) ?? { policy: g.policy, rules: [] };
        own.rules.push({ id: approvedRuleId('sandbox', g.id), host: g.host, port: g.port });
        bySandbox.set(g.sandbox, own);
      }
    }
    const byName = new Map<string, Policy>();
    for (const [name, p] of base.byName) byName.set(name, p.withApproved(byPolicy.get(name) ?? []));
    const overrides = new Map<string, Policy>();
    for (const [sandbox, own] of bySandbox) {
      const shared = byName.get(own.policy);
      // A grant is for the policy the sandbox had when it was given; policyOf() ignores an
      // override whose policy the sandbox no longer uses.
      if (shared) overrides.set(sandbox, shared.withApproved(own.rules));
    }
    const policies = { byName, anyIntercept: base.anyIntercept };
    return {
      ...rt,
      policies,
      sandboxPolicies: overrides,
      sandboxes: new SandboxTable(rt.config.sandboxes, byName, rt.dynamic, overrides),
    };
  }
}

/** A rule as the config file writes it (docs/policy.md): what the validator reads back unchanged. */
function ruleConfig(r: AllowRule): Record<string, unknown> {
  return {
    host: r.host,
    ports: [...r.ports],
    ...(r.protocol !== 'tls' ? { protocol: r.protocol } : {}),
    ...(r.inject !== undefined ? { inject: r.inject } : {}),
    ...(r.methods !== undefined ? { methods: [...r.methods] } : {}),
    ...(r.paths !== undefined ? { paths: [...r.paths] } : {}),
    ...(r.plainHttp !== undefined ? { plainHttp: r.plainHttp } : {}),
    ...(r.ech !== undefined ? { ech: r.ech } : {}),
  };
}

function policyConfig(p: PolicyConfig, added: readonly Grant[]): Record<string, unknown> {
  return {
    mode: p.mode,
    unlisted: p.unlisted,
    ...(p.unlisted === 'ask' ? { askTimeoutMs: p.askTimeoutMs } : {}),
    allow: [
      ...p.allow.map(ruleConfig),
      ...(p.udp ?? []).map((u) => ({
        protocol: 'udp',
        ...(u.host !== undefined ? { host: u.host } : {}),
        ...(u.cidr !== undefined ? { cidr: u.cidr } : {}),
        ports: [...u.ports],
      })),
      ...added.map((g) => ({ host: g.host, ports: [g.port] })),
    ],
  };
}

/**
 * GET /approvals/added: every grant, and each policy that `policy` grants changed, whole, in
 * config form: the operator replaces that policy's entry under `policies:` with it (JSON is YAML).
 */
export function addedView(config: Config, grants: readonly Grant[]): { policies: Record<string, unknown>; added: readonly Grant[] } {
  const policies: Record<string, unknown> = {};
  for (const name of new Set(grants.filter((g) => g.scope === 'policy').map((g) => g.policy))) {
    const p = config.policies[name];
    if (p)
      policies[name] = policyConfig(
        p,
        grants.filter((g) => g.scope === 'policy' && g.policy === name),
      );
  }
  return { policies, added: grants };
}
