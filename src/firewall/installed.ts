/**
 * What other sandgate rulesets are installed in this network namespace, read back from the
 * kernel: for each, its name, the port its TPROXY rule sends to, and the interfaces and source
 * ranges it claims. `sandgate run` reads this before it installs anything (src/preflight.ts), so
 * a second sandgate cannot replace or shadow a live one.
 *
 * The parsers are pure (text in, description out); `installedRulesets` only runs `nft list` and
 * `iptables-save` (and `ipset save`: the iptables backend's registered sandboxes). A ruleset counts as sandgate's when it has both a TPROXY rule and rules
 * commented "sandbox NAME" (render-nft.ts / render-iptables.ts write both).
 */
import { existsSync } from 'node:fs';
import { IPSET, IPTABLES_SAVE, NFT, run, type ApplyOptions } from './exec.js';

export interface InstalledRuleset {
  /** `table inet NAME` (nft backend) or `iptables chains PREFIX-*` (iptables backend). */
  readonly what: string;
  /** The nft table name, or the iptables chain prefix. */
  readonly name: string;
  readonly backend: 'nft' | 'iptables';
  /** The TPROXY target port, when the ruleset has one. */
  readonly tproxyPort?: number;
  /** Interface patterns (nft syntax: a trailing '*') and IPv4 source ranges it claims. */
  readonly interfaces: readonly string[];
  readonly cidrs: readonly string[];
}

const SANDBOX_COMMENT = /comment "sandbox [A-Za-z0-9_.-]+/;

function uniq(xs: string[]): string[] {
  return [...new Set(xs)].sort();
}

/** One `nft list table inet NAME` listing -> its description, or undefined when it is not sandgate's. */
export function parseNftTable(name: string, text: string): InstalledRuleset | undefined {
  const port = /\btproxy ip to :(\d+)/.exec(text);
  if (!port || !SANDBOX_COMMENT.test(text)) return undefined;
  const interfaces: string[] = [];
  const cidrs: string[] = [];
  for (const line of text.split('\n')) {
    if (SANDBOX_COMMENT.test(line)) {
      const i = /\biifname "([^"]+)"/.exec(line);
      if (i?.[1] !== undefined) interfaces.push(i[1].replace(/\\\*/g, '*'));
      const c = /\bip saddr (\d+\.\d+\.\d+\.\d+(?:\/\d+)?)/.exec(line);
      if (c?.[1] !== undefined) cidrs.push(c[1]);
    }
  }
  // Registered sandboxes are set elements: quoted strings are interfaces, the rest addresses.
  for (const m of text.matchAll(/set dyn_\w+ \{[^}]*?elements = \{([^}]*)\}/g)) {
    for (const q of (m[1] ?? '').matchAll(/"([^"]+)"/g)) if (q[1] !== undefined) interfaces.push(q[1].replace(/\\\*/g, '*'));
    for (const a of (m[1] ?? '').matchAll(/(\d+\.\d+\.\d+\.\d+(?:\/\d+|-\d+\.\d+\.\d+\.\d+)?)/g))
      if (a[1] !== undefined && !a[1].includes('-')) cidrs.push(a[1]);
  }
  return { what: `table inet ${name}`, name, backend: 'nft', tproxyPort: Number(port[1]), interfaces: uniq(interfaces), cidrs: uniq(cidrs) };
}

/** Registered sandboxes' elements in `ipset save` output: "add PREFIX-KIND ELEMENT [wildcard]" (render-ipset.ts). */
const IPSET_ADD = /^add ([A-Za-z][A-Za-z0-9_-]*)-(?:PAIR4|PAIRIF4|IF4|ADDR4|PAIRIF6|IF6) (\S+)( wildcard)?$/;

/**
 * `iptables-save -t mangle` -> one description per sandgate chain prefix (PREFIX-PRE, PREFIX-SBX),
 * with the registered sandboxes of `ipsetSave` (`ipset save` output) added to their prefix's.
 */
export function parseIptablesMangle(text: string, ipsetSave = ''): InstalledRuleset[] {
  const byPrefix = new Map<string, { port?: number; interfaces: string[]; cidrs: string[]; sandboxes: boolean }>();
  const entry = (p: string) => {
    let e = byPrefix.get(p);
    if (!e) {
      e = { interfaces: [], cidrs: [], sandboxes: false };
      byPrefix.set(p, e);
    }
    return e;
  };
  for (const line of text.split('\n')) {
    const m = /^-A ([A-Za-z][A-Za-z0-9_-]*)-(PRE|SBX) (.*)$/.exec(line);
    if (!m || m[1] === undefined) continue;
    const e = entry(m[1]);
    const rest = m[3] ?? '';
    const port = /-j TPROXY --on-port (\d+)/.exec(rest);
    if (port) e.port = Number(port[1]);
    if (m[2] === 'PRE' && /--comment "?sandbox [A-Za-z0-9_.-]+"? -g /.test(rest)) {
      e.sandboxes = true;
      const i = /(?:^| )-i (\S+)/.exec(rest);
      if (i?.[1] !== undefined) e.interfaces.push(i[1].replace(/\+$/, '*'));
      const s = /(?:^| )-s (\S+)/.exec(rest);
      if (s?.[1] !== undefined) e.cidrs.push(s[1].replace(/\/32$/, ''));
    }
  }
  for (const line of ipsetSave.split('\n')) {
    const m = IPSET_ADD.exec(line.trim());
    if (!m || m[1] === undefined || m[2] === undefined) continue;
    const e = entry(m[1]);
    const [net, iface] = m[2].split(',');
    if (iface !== undefined) e.interfaces.push(m[3] !== undefined ? `${iface}*` : iface);
    if (net !== undefined && net !== '0.0.0.0/0' && net !== '::/0') e.cidrs.push(net.replace(/\/32$/, ''));
  }
  const out: InstalledRuleset[] = [];
  for (const [p, e] of byPrefix) {
    if (e.port === undefined || !e.sandboxes) continue;
    out.push({ what: `iptables chains ${p}-*`, name: p, backend: 'iptables', tproxyPort: e.port, interfaces: uniq(e.interfaces), cidrs: uniq(e.cidrs) });
  }
  return out;
}

/**
 * Every sandgate ruleset installed here. A tool that is missing or fails (no nft, no iptables)
 * contributes nothing: there is then nothing of that kind to collide with.
 */
export async function installedRulesets(options: ApplyOptions = {}): Promise<InstalledRuleset[]> {
  const out: InstalledRuleset[] = [];
  const tables = await run(NFT, ['list', 'tables', 'inet'], options);
  if (tables.ok) {
    for (const line of tables.stdout.split('\n')) {
      const m = /^table inet (\S+)$/.exec(line.trim());
      if (!m?.[1]) continue;
      const listing = await run(NFT, ['list', 'table', 'inet', m[1]], options);
      const parsed = listing.ok ? parseNftTable(m[1], listing.stdout) : undefined;
      if (parsed) out.push(parsed);
    }
  }
  const mangle = await run(IPTABLES_SAVE, ['-t', 'mangle'], options);
  const sets = existsSync(IPSET) ? await run(IPSET, ['save'], options) : undefined;
  if (mangle.ok) out.push(...parseIptablesMangle(mangle.stdout, sets?.ok === true ? sets.stdout : ''));
  return out;
}
