/**
 * Ending the packet path's accepted flows of a sandbox (docs/packets.md): sandgate's verdict marks
 * a UDP (or other non-TCP) flow's conntrack entry with flowMark, and later packets of the flow
 * pass on that mark without asking again. When a sandbox is removed (or re-termed), those entries
 * are deleted, so the flow's next packet is a new flow and gets a new verdict under whatever
 * matches it now (the catch-all, or nothing).
 *
 * conntrack filters by source address and mask, not by interface, so an interface sandbox's
 * networks are the IPv4 routes the host has on its interface(s) (`scope link`: the connected
 * networks; the firewall's reverse-path check admits no other source on that interface).
 */
import { execFile } from 'node:child_process';
import { tool } from '../util/tools.js';
import { cidrContains, parseCidr, parseIp } from '../util/ip.js';
import { globPredicate, type SandboxSpec } from '../policy/sandboxes.js';

const TIMEOUT_MS = 5000;

function run(file: string, args: string[]): Promise<{ ok: boolean; stdout: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: TIMEOUT_MS, encoding: 'utf8' }, (err, stdout) => resolve({ ok: err === null, stdout }));
  });
}

/** The IPv4 networks a sandbox's sources come from: its cidr, else its interface's connected routes. */
export async function sandboxNetworks(spec: SandboxSpec): Promise<string[]> {
  if (spec.cidr !== undefined) return [spec.cidr];
  if (spec.interface === undefined) return [];
  const r = await run(tool('ip'), ['-4', '-j', 'route', 'show', 'scope', 'link']);
  if (!r.ok) return [];
  let routes: { dst?: string; dev?: string }[];
  try {
    routes = JSON.parse(r.stdout) as { dst?: string; dev?: string }[];
  } catch {
    return [];
  }
  const matches = globPredicate(spec.interface);
  return routes.filter((x) => x.dev !== undefined && matches(x.dev) && typeof x.dst === 'string' && x.dst !== 'default').map((x) => x.dst as string);
}

function mask(bits: number): string {
  const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return [24, 16, 8, 0].map((s) => (m >>> s) & 0xff).join('.');
}

/** Original-direction source addresses of the conntrack entries marked `flowMark` (conntrack -L). */
async function markedSources(flowMark: number): Promise<string[]> {
  const r = await run(tool('conntrack'), ['-L', '-f', 'ipv4', '-m', `0x${flowMark.toString(16)}`]);
  if (!r.ok) return [];
  // "udp 17 29 src=10.77.4.2 dst=10.77.2.2 sport=4000 dport=5301 src=... mark=21320 use=1":
  // the first src= is the original direction's.
  return r.stdout.split('\n').flatMap((line) => {
    const m = /\bsrc=(\d+\.\d+\.\d+\.\d+)/.exec(line);
    return m?.[1] !== undefined ? [m[1]] : [];
  });
}

/**
 * Deletes the conntrack entries marked `flowMark` (flows the packet path accepted) whose
 * original source is one of these sandboxes'. One `conntrack -L` first: most sandboxes never had
 * an accepted flow, and a removal then costs no more than that one listing. A missing conntrack
 * tool or "0 flow entries have been deleted" (exit 1) is not an error: there was nothing to end.
 */
export async function endAcceptedFlows(specs: readonly SandboxSpec[], flowMark: number): Promise<void> {
  const sources = (await markedSources(flowMark)).map((s) => parseIp(s)).filter((ip) => ip !== undefined);
  if (sources.length === 0) return;
  const networks = (await Promise.all(specs.map(sandboxNetworks))).flat();
  await Promise.all(
    networks.map(async (text) => {
      const c = parseCidr(text.includes('/') ? text : `${text}/32`);
      if ('error' in c || c.family !== 4) return;
      if (!sources.some((ip) => cidrContains(c, ip))) return;
      const base = text.split('/')[0] ?? text;
      await run(tool('conntrack'), ['-D', '-f', 'ipv4', '-s', base, '--mask-src', mask(c.bits), '-m', `0x${flowMark.toString(16)}`]);
    }),
  );
}
