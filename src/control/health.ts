/**
 * Readiness and health (`GET /health` on the control socket, `sandgate health`): the daemon is
 * healthy when its firewall is in place (the ruleset and the policy routing TPROXY needs) and
 * every listener accepts. Pure: the daemon passes probes that read the live state.
 */

export interface HealthCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface HealthReport {
  readonly status: 'ok' | 'failing';
  readonly checks: readonly HealthCheck[];
}

export interface ListenerState {
  readonly name: string;
  readonly address: string;
  readonly up: boolean;
}

export interface HealthProbes {
  /** The firewall backend in use. */
  readonly backend: string;
  /** What of the firewall is missing (empty: in place); throws when the state cannot be read. */
  firewallMissing(): Promise<string[]>;
  listeners(): readonly ListenerState[];
  /** With `workers: N`: worker processes ready, of how many. */
  workers?(): { ready: number; expected: number };
}

export async function checkHealth(p: HealthProbes): Promise<HealthReport> {
  const checks: HealthCheck[] = [];
  try {
    const missing = await p.firewallMissing();
    checks.push({
      name: 'firewall',
      ok: missing.length === 0,
      detail: missing.length === 0 ? `${p.backend} ruleset and policy routing in place` : missing.join('; '),
    });
  } catch (err) {
    checks.push({ name: 'firewall', ok: false, detail: `cannot read the ${p.backend} ruleset: ${(err as Error).message}` });
  }
  for (const l of p.listeners()) {
    checks.push({ name: `listener ${l.name}`, ok: l.up, detail: `${l.address} ${l.up ? 'accepting' : 'not listening'}` });
  }
  if (p.workers) {
    const w = p.workers();
    // Connections go to the ready workers; a dead one is being replaced. None: nothing serves TCP.
    checks.push({ name: 'workers', ok: w.ready > 0, detail: `${w.ready} of ${w.expected} ready` });
  }
  return { status: checks.every((c) => c.ok) ? 'ok' : 'failing', checks };
}
