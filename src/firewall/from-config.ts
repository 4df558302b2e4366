import type { Config } from '../config/types.js';
import type { FirewallPlan, SandboxMatch } from './plan.js';

/** A sandbox's match fields only (config entries and registered sandboxes carry more). */
export function matchOf(s: SandboxMatch): SandboxMatch {
  return { name: s.name, ...(s.interface !== undefined ? { interface: s.interface } : {}), ...(s.cidr !== undefined ? { cidr: s.cidr } : {}) };
}

/**
 * The firewall plan a config implies (pure). With the control API on (listen.control), the
 * plan has a dynamic part: the sets for registered sandboxes, holding `registered`.
 */
export function planFromConfig(config: Config, registered: readonly SandboxMatch[] = []): FirewallPlan {
  return {
    table: config.firewall.table,
    tproxyPort: config.listen.port,
    dnsPort: config.listen.dnsPort,
    mark: config.firewall.mark,
    routeTable: config.firewall.routeTable,
    queueNum: config.firewall.queue,
    queueMark: config.firewall.queueMark,
    flowMark: config.firewall.flowMark,
    packetRate: { pps: config.packets.rateLimit.pps, burst: config.packets.rateLimit.burst },
    dnsRate: { pps: config.dns.sourceRateLimit.pps, burst: config.dns.sourceRateLimit.burst },
    sandboxes: config.sandboxes.map(matchOf),
    ...(config.listen.control !== false ? { dynamic: registered.map(matchOf) } : {}),
  };
}
