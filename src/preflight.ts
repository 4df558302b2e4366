/**
 * Before `sandgate run` touches the kernel, and before `firewall up|down` changes it: proof that
 * no other sandgate is serving this host's sandboxes. Installing a second ruleset would replace
 * the live one's (same table: its registered sandboxes vanish from the sets and TPROXY points
 * at a port nobody serves) or shadow it (another table over the same interfaces: both apply,
 * and once either stops its table blackholes the sandboxes). So, in this order:
 *
 *   1. the control socket (listen.control) does not answer;
 *   2. an installed sandgate ruleset of the same name is not served: nothing listens on its
 *      TPROXY port (one nobody serves is what a stopped sandgate leaves on purpose, fail closed,
 *      and is replaced);
 *   3. no sandgate ruleset of another name claims one of the config's interfaces or ranges,
 *      served or not (an unserved one cuts those sandboxes off whatever this one installs).
 *
 * The listening ports themselves are bound before the firewall is installed (src/daemon.ts), so
 * a port in use stops `run` there, before any rule changes.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import type { Config } from './config/types.js';
import { SandgateError } from './errors.js';
import { installedRulesets, type InstalledRuleset } from './firewall/installed.js';
import { chainPrefix } from './firewall/render-iptables.js';
import { cidrsIntersect, ifacesIntersect } from './control/overlap.js';

/** Whether something accepts connections on the unix socket at `path` now. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    const done = (v: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    // A live but busy server that does not accept within the timeout is still live.
    const timer = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** TCP ports in LISTEN state in this network namespace, from /proc/net/tcp and tcp6 (pure parse). */
export function parseListening(procNetTcp: string): Set<number> {
  const ports = new Set<number>();
  for (const line of procNetTcp.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl local_address rem_address st ...; st 0A is TCP_LISTEN (include/net/tcp_states.h).
    if (f[3] !== '0A') continue;
    const port = Number.parseInt((f[1] ?? '').split(':')[1] ?? '', 16);
    if (Number.isInteger(port)) ports.add(port);
  }
  return ports;
}

export function listeningPorts(): Set<number> {
  const out = new Set<number>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      for (const p of parseListening(readFileSync(f, 'utf8'))) out.add(p);
    } catch {
      /* no IPv6 here */
    }
  }
  return out;
}

/** Why `ours` may not be installed beside `other` (a ruleset of another name), or undefined. */
export function claimsOverlap(config: Config, other: InstalledRuleset): string | undefined {
  for (const s of config.sandboxes) {
    if (s.interface !== undefined) {
      const i = other.interfaces.find((o) => ifacesIntersect(s.interface ?? '', o));
      if (i !== undefined) return `it claims interface "${i}", which sandbox "${s.name}" (interface "${s.interface}") also matches`;
    }
    if (s.cidr !== undefined) {
      const c = other.cidrs.find((o) => cidrsIntersect(s.cidr ?? '', o.includes('/') ? o : `${o}/32`));
      if (c !== undefined) return `it claims source range ${c}, which overlaps cidr ${s.cidr} of sandbox "${s.name}"`;
    }
  }
  return undefined;
}

export interface AloneInputs {
  /** Whether the control socket answers (listen.control false: not asked). */
  controlAnswers: boolean;
  installed: readonly InstalledRuleset[];
  listening: ReadonlySet<number>;
}

/** Why this config's sandgate is not alone (pure), or undefined. */
export function notAlone(config: Config, file: string, inputs: AloneInputs): string | undefined {
  if (config.listen.control !== false && inputs.controlAnswers) {
    return `another sandgate answers on the control socket ${config.listen.control} (listen.control); stop it first (nothing was changed)`;
  }
  const ownNames = new Set([config.firewall.table, chainPrefix({ table: config.firewall.table })]);
  for (const r of inputs.installed) {
    if (ownNames.has(r.name)) {
      if (r.tproxyPort !== undefined && inputs.listening.has(r.tproxyPort)) {
        return `${r.what} is installed and something listens on its TPROXY port ${r.tproxyPort}: another sandgate is serving it; stop it first (nothing was changed)`;
      }
      continue;
    }
    const why = claimsOverlap(config, r);
    if (why !== undefined) {
      const served =
        r.tproxyPort !== undefined && inputs.listening.has(r.tproxyPort) ? 'served by another sandgate' : 'left installed by a sandgate that stopped';
      return `${r.what} (${served}) overlaps ${file}: ${why}; stop that sandgate and remove its rules with "sandgate firewall down -c ITS_CONFIG" (nothing was changed)`;
    }
  }
  return undefined;
}

/** Throws SandgateError RUNTIME (exit 1) when another sandgate serves or claims these sandboxes. */
export async function proveAlone(config: Config, file: string): Promise<void> {
  const controlAnswers = config.listen.control !== false && (await socketAnswers(config.listen.control));
  const why = notAlone(config, file, { controlAnswers, installed: controlAnswers ? [] : await installedRulesets(), listening: listeningPorts() });
  if (why !== undefined) throw new SandgateError(why, 'RUNTIME');
}
