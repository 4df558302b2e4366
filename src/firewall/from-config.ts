import type { Config } from '../config/types.js';
import type { FirewallPlan } from './plan.js';

/** The firewall plan a config implies (pure). */
export function planFromConfig(config: Config): FirewallPlan {
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
    sandboxes: config.sandboxes.map((s) => ({
      name: s.name,
      ...(s.interface !== undefined ? { interface: s.interface } : {}),
      ...(s.cidr !== undefined ? { cidr: s.cidr } : {}),
    })),
  };
}
