/**
 * Just enough of IPv4 (RFC 791 §3.1) and IPv6 (RFC 8200 §3-4) to decide a queued packet:
 * addresses, the transport protocol, and ports or ICMP type. Never throws; a packet too short
 * or malformed to read returns undefined (and is dropped).
 */
export type ProtoName = 'udp' | 'tcp' | 'icmp' | 'icmpv6' | 'sctp' | 'ip';

export interface PacketHeader {
  readonly family: 4 | 6;
  /** IP protocol number (IPv6: the upper-layer header after extension headers). */
  readonly protocol: number;
  readonly proto: ProtoName;
  readonly src: string;
  readonly dst: string;
  /** UDP, TCP, SCTP (and UDP-Lite) ports, when the first fragment carries them. */
  readonly srcPort?: number;
  readonly dstPort?: number;
  readonly icmpType?: number;
  readonly icmpCode?: number;
}

const PROTO: Record<number, ProtoName> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp', 136: 'udp' };
/** IPv6 extension headers with the generic "next header, length in 8-octet units" layout. */
const EXT_GENERIC = new Set([0, 43, 60]);
const EXT_FRAGMENT = 44;
const EXT_AH = 51;
/** Bound on extension headers walked: RFC 8200 §4.1 expects at most about one of each. */
const MAX_EXTENSIONS = 8;

function ipv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

function ipv6(buf: Buffer, off: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(off + i * 2).toString(16));
  // RFC 5952 §4.2: compress the longest run (2 or more) of zero groups.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function transport(buf: Buffer, off: number, protocol: number, firstFragment: boolean): Partial<PacketHeader> {
  if (!firstFragment) return {};
  const proto = PROTO[protocol];
  if ((proto === 'udp' || proto === 'tcp' || proto === 'sctp') && buf.length >= off + 4) {
    return { srcPort: buf.readUInt16BE(off), dstPort: buf.readUInt16BE(off + 2) };
  }
  if ((proto === 'icmp' || proto === 'icmpv6') && buf.length >= off + 2) {
    return { icmpType: buf[off] as number, icmpCode: buf[off + 1] as number };
  }
  return {};
}

export function parsePacket(buf: Buffer): PacketHeader | undefined {
  if (buf.length < 1) return undefined;
  const version = (buf[0] as number) >> 4;
  if (version === 4) {
    const ihl = ((buf[0] as number) & 0x0f) * 4;
    if (ihl < 20 || buf.length < ihl) return undefined;
    const protocol = buf[9] as number;
    const fragOffset = buf.readUInt16BE(6) & 0x1fff;
    return {
      family: 4,
      protocol,
      proto: PROTO[protocol] ?? 'ip',
      src: ipv4(buf, 12),
      dst: ipv4(buf, 16),
      ...transport(buf, ihl, protocol, fragOffset === 0),
    };
  }
  if (version === 6) {
    if (buf.length < 40) return undefined;
    let next = buf[6] as number;
    let off = 40;
    let firstFragment = true;
    for (let i = 0; i < MAX_EXTENSIONS; i++) {
      if (EXT_GENERIC.has(next)) {
        if (buf.length < off + 2) return undefined;
        const len = ((buf[off + 1] as number) + 1) * 8;
        next = buf[off] as number;
        off += len;
      } else if (next === EXT_FRAGMENT) {
        if (buf.length < off + 8) return undefined;
        firstFragment = (buf.readUInt16BE(off + 2) & 0xfff8) === 0;
        next = buf[off] as number;
        off += 8;
      } else if (next === EXT_AH) {
        if (buf.length < off + 2) return undefined;
        const len = ((buf[off + 1] as number) + 2) * 4;
        next = buf[off] as number;
        off += len;
      } else break;
    }
    return {
      family: 6,
      protocol: next,
      proto: PROTO[next] ?? 'ip',
      src: ipv6(buf, 8),
      dst: ipv6(buf, 24),
      ...transport(buf, off, next, firstFragment),
    };
  }
  return undefined;
}
