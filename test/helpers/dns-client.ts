/**
 * The client half of the DNS codec, for tests only: decoding whole responses and encoding queries.
 * sandgate itself only parses queries and builds answers (src/dns/wire.ts); these build on the
 * same name reader and encoder, so a test speaks exactly the wire rules the responder enforces.
 */
import {
  encodeName,
  readName,
  FLAG_AA,
  FLAG_QR,
  FLAG_RA,
  FLAG_RD,
  FLAG_TC,
  HEADER_LEN,
  OPT_RR_LEN,
  QCLASS_IN,
  QTYPE,
  type Question,
} from '../../src/dns/wire.js';

export interface ResourceRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  /** Dotted IPv4 for A records (class IN, 4-byte rdata); undefined otherwise. */
  address?: string;
  rdata: Buffer;
}

export interface ParsedResponse {
  id: number;
  flags: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  /** Full rcode: header bits, plus the OPT RR's extended bits when present (RFC 6891 §6.1.3). */
  rcode: number;
  questions: Question[];
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  additional: ResourceRecord[];
  edns?: { udpSize: number; version: number; flags: number };
}

/**
 * Decodes a whole message (any section counts). Throws RangeError on malformed input: it is meant
 * for tests and diagnostics on messages we built, not for input from the sandbox.
 * Names are read with parseQuery's rules (backward pointers, [A-Za-z0-9_-] labels).
 */
export function parseResponse(msg: Buffer): ParsedResponse {
  if (msg.length < HEADER_LEN) throw new RangeError('truncated header');
  const flags = msg.readUInt16BE(2);
  const counts = [4, 6, 8, 10].map((o) => msg.readUInt16BE(o)) as [number, number, number, number];
  let pos = HEADER_LEN;
  const name = (): string => {
    const nm = readName(msg, pos);
    if (!nm.ok) throw new RangeError(`${nm.reason} at offset ${pos}`);
    pos = nm.next;
    return nm.name;
  };
  const questions: Question[] = [];
  for (let i = 0; i < counts[0]; i++) {
    const n = name();
    if (pos + 4 > msg.length) throw new RangeError('truncated question');
    questions.push({ name: n.toLowerCase(), type: msg.readUInt16BE(pos), class: msg.readUInt16BE(pos + 2), nameAsSent: n });
    pos += 4;
  }
  const records = (count: number): ResourceRecord[] => {
    const rrs: ResourceRecord[] = [];
    for (let i = 0; i < count; i++) {
      const n = name();
      if (pos + 10 > msg.length) throw new RangeError('truncated record');
      const type = msg.readUInt16BE(pos);
      const klass = msg.readUInt16BE(pos + 2);
      const ttl = msg.readUInt32BE(pos + 4);
      const rdlen = msg.readUInt16BE(pos + 8);
      if (pos + 10 + rdlen > msg.length) throw new RangeError('truncated rdata');
      const rdata = msg.subarray(pos + 10, pos + 10 + rdlen);
      const rr: ResourceRecord = { name: n.toLowerCase(), type, class: klass, ttl, rdata };
      if (type === QTYPE.A && klass === QCLASS_IN && rdlen === 4) rr.address = Array.from(rdata).join('.');
      rrs.push(rr);
      pos += 10 + rdlen;
    }
    return rrs;
  };
  const answers = records(counts[1]);
  const authority = records(counts[2]);
  const additional = records(counts[3]);
  if (pos !== msg.length) throw new RangeError('trailing bytes');
  let rcode = flags & 0xf;
  const res: ParsedResponse = {
    id: msg.readUInt16BE(0),
    flags,
    qr: (flags & FLAG_QR) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & FLAG_AA) !== 0,
    tc: (flags & FLAG_TC) !== 0,
    rd: (flags & FLAG_RD) !== 0,
    ra: (flags & FLAG_RA) !== 0,
    rcode,
    questions,
    answers,
    authority,
    additional,
  };
  const opt = additional.find((rr) => rr.type === QTYPE.OPT);
  if (opt) {
    rcode |= (opt.ttl >>> 24) << 4;
    res.rcode = rcode;
    res.edns = { udpSize: opt.class, version: (opt.ttl >>> 16) & 0xff, flags: opt.ttl & 0xffff };
  }
  return res;
}

/**
 * Encodes a standard query (RD set unless told otherwise; an OPT RR when `edns` is given).
 * Throws RangeError for a name parseQuery would reject.
 */
export function buildQuery(id: number, name: string, type: number, opts: { rd?: boolean; edns?: { udpSize: number }; class?: number } = {}): Buffer {
  const qname = encodeName(name.endsWith('.') ? name.slice(0, -1) : name);
  const out = Buffer.alloc(HEADER_LEN + qname.length + 4 + (opts.edns ? OPT_RR_LEN : 0));
  out.writeUInt16BE(id & 0xffff, 0);
  out.writeUInt16BE((opts.rd ?? true) ? FLAG_RD : 0, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(opts.edns ? 1 : 0, 10);
  let pos = HEADER_LEN + qname.copy(out, HEADER_LEN);
  pos = out.writeUInt16BE(type & 0xffff, pos);
  pos = out.writeUInt16BE((opts.class ?? QCLASS_IN) & 0xffff, pos);
  if (opts.edns) {
    out[pos++] = 0;
    pos = out.writeUInt16BE(QTYPE.OPT, pos);
    pos = out.writeUInt16BE(opts.edns.udpSize & 0xffff, pos);
    pos = out.writeUInt32BE(0, pos);
    out.writeUInt16BE(0, pos);
  }
  return out;
}
