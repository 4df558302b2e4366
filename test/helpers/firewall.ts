import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
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

export const IP = '/usr/sbin/ip';
export const NFT = '/usr/sbin/nft';
const run = promisify(execFile);

/** Runs a tool inside NS, optionally feeding stdin; resolves stdout, rejects on failure. */
export function inNs(ns: string, tool: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(IP, ['netns', 'exec', ns, tool, ...args], { encoding: 'utf8', timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${tool} ${args.join(' ')} in ${ns}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
    child.stdin?.on('error', () => {}); // EPIPE when the tool never reads stdin
    child.stdin?.end(input ?? '');
  });
}

/**
 * Throwaway namespaces `sg-<pid>-<tag>-<n>` for one test file: `namespace(t)` makes a fresh one
 * and deletes it when the test ends (pass or fail). The root namespace is never touched.
 */
export function throwawayNamespaces(tag: string): { prefix: string; namespace(t: ExecutionContext): Promise<string> } {
  const prefix = `sg-${process.pid}-${tag}-`;
  let counter = 0;
  return {
    prefix,
    async namespace(t) {
      const ns = `${prefix}${++counter}`;
      await run(IP, ['netns', 'add', ns]);
      t.teardown(async () => {
        await run(IP, ['netns', 'del', ns]).catch(() => {});
      });
      return ns;
    },
  };
}

/** The body lines of one chain in a rendered nft ruleset, trimmed, without `#` comments. */
export function chainLines(text: string, name: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((line) => line.trim() === `chain ${name} {`);
  if (start === -1) throw new Error(`chain ${name} not rendered`);
  const body: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '}') break;
    if (!line.trim().startsWith('#')) body.push(line.trim());
  }
  return body;
}
