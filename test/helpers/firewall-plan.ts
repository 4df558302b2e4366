import { DEFAULT_PACKET_PLAN, type FirewallPlan } from '../../src/firewall/plan.js';

/**
 * The plan both backends' apply tests install: an interface-only, a CIDR-only and an
 * interface+CIDR sandbox, so every match shape reaches the kernel.
 */
export function testPlan(overrides: Partial<FirewallPlan> = {}): FirewallPlan {
  return {
    table: 'sandgate',
    tproxyPort: 15001,
    dnsPort: 15053,
    mark: 0x5347,
    routeTable: 5347,
    ...DEFAULT_PACKET_PLAN,
    sandboxes: [
      { name: 'agent', interface: 'sbx-*' },
      { name: 'net', cidr: '10.77.1.0/24' },
      { name: 'both', interface: 'veth-b0', cidr: '10.77.2.0/28' },
    ],
    ...overrides,
  };
}
