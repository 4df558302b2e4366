import net from 'node:net';

/**
 * IPv4/IPv6 address and CIDR helpers. Addresses are compared as BigInt so one code path serves
 * both families; IPv4-mapped IPv6 (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) is folded to IPv4 first so
 * it cannot be used to dodge an IPv4 rule.
 */
export interface Cidr {
  readonly family: 4 | 6;
  readonly base: bigint;
  readonly bits: number;
  readonly text: string;
}

export function parseIp(text: string): { family: 4 | 6; value: bigint } | undefined {
  const kind = net.isIP(text);
  if (kind === 4) return { family: 4, value: v4ToBig(text) };
  if (kind === 6) {
    const value = v6ToBig(text);
    // ::ffff:0:0/96 -> treat as the IPv4 address it carries.
    if (value >> 32n === 0xffffn) return { family: 4, value: value & 0xffffffffn };
    return { family: 6, value };
  }
  return undefined;
}

function v4ToBig(text: string): bigint {
  let v = 0n;
  for (const part of text.split('.')) v = (v << 8n) | BigInt(Number(part));
  return v;
}

function v6ToBig(text: string): bigint {
  let s = text;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // An embedded dotted quad in the last 32 bits (e.g. ::ffff:1.2.3.4).
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  let tailWords: string[] = [];
  if (tail.includes('.')) {
    const v4 = v4ToBig(tail);
    tailWords = [((v4 >> 16n) & 0xffffn).toString(16), (v4 & 0xffffn).toString(16)];
    s = s.slice(0, lastColon + 1); // keep the ':' so "::" detection below still works
  }
  const [head = '', rest] = s.split('::');
  const headWords = head === '' ? [] : head.split(':').filter((w) => w !== '');
  const restWords = rest === undefined ? [] : rest.split(':').filter((w) => w !== '');
  const fill = 8 - headWords.length - restWords.length - tailWords.length;
  const words = rest === undefined ? [...headWords, ...tailWords] : [...headWords, ...Array(fill).fill('0'), ...restWords, ...tailWords];
  let v = 0n;
  for (const w of words) v = (v << 16n) | BigInt(parseInt(w, 16));
  return v;
}

export function parseCidr(text: string): Cidr | { error: string } {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (!ip || net.isIP(addrText) === 0) return { error: `"${text}" is not an IP address or CIDR` };
  const family = net.isIP(addrText) as 4 | 6;
  const width = family === 4 ? 32 : 128;
  let bits = width;
  if (slash >= 0) {
    const b = text.slice(slash + 1);
    // No leading zeros ("/024"): nft refuses them, so `check` must too.
    if (!/^(?:0|[1-9]\d{0,2})$/.test(b) || Number(b) > width) return { error: `"${text}" has an invalid prefix length` };
    bits = Number(b);
  }
  const value = family === 4 ? v4ToBig(addrText) : v6ToBig(addrText);
  const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(width - bits);
  if ((value & ~mask & ((1n << BigInt(width)) - 1n)) !== 0n) return { error: `"${text}" has host bits set` };
  return { family, base: value, bits, text };
}

export function cidrContains(c: Cidr, ip: { family: 4 | 6; value: bigint }): boolean {
  if (c.family !== ip.family) return false;
  const width = c.family === 4 ? 32 : 128;
  const shift = BigInt(width - c.bits);
  return ip.value >> shift === c.base >> shift;
}

function must(text: string): Cidr {
  const c = parseCidr(text);
  if ('error' in c) throw new Error(c.error);
  return c;
}

/**
 * Ranges an upstream connection must never reach unless `upstream.allowPrivate` lists them:
 * the host itself, private networks, cloud metadata, multicast... (RFC 6890 special-purpose
 * registries). This is the SSRF guard: a sandbox must not use sandgate to reach the host's or
 * the provider's internal services through a name that resolves there.
 */
export const FORBIDDEN_UPSTREAM: readonly Cidr[] = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '255.255.255.255/32',
  // ::/96 after ::/128 and ::1/128 so those keep their own names in the reason: IPv4-compatible
  // addresses (deprecated, RFC 4291 §2.5.5.1) that a loaded sit driver tunnels to the IPv4 address.
  '::/128',
  '::1/128',
  '::/96',
  '64:ff9b::/96',
  '64:ff9b:1::/48',
  '100::/64',
  '2001::/23',
  '2001:db8::/32',
  '2002::/16',
  'fc00::/7',
  'fe80::/10',
  'ff00::/8',
].map(must);

export function inAny(list: readonly Cidr[], ip: { family: 4 | 6; value: bigint }): Cidr | undefined {
  for (const c of list) if (cidrContains(c, ip)) return c;
  return undefined;
}

/** Split "ip:port" / "[v6]:port" / "ip" (port defaulting). */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } | undefined {
  let host = text;
  let port = defaultPort;
  const m6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (m6) {
    host = m6[1] ?? '';
    if (m6[2] !== undefined) port = Number(m6[2]);
  } else if (net.isIP(text) === 0) {
    const i = text.lastIndexOf(':');
    if (i < 0) return undefined;
    host = text.slice(0, i);
    port = Number(text.slice(i + 1));
  }
  if (net.isIP(host) === 0 || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host, port };
}
