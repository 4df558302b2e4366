// DNS message codec for sandgate's responder (RFC 1035 §4, RFC 6891 EDNS(0)).
//
// Pure: no sockets, no clocks, no logging. The responder feeds it raw datagrams / TCP frames
// from the sandbox, which is hostile (tunnelling attempts, fuzzers), so parseQuery validates
// strictly, never throws, and accepts only the narrow shape a stub resolver sends: one
// question, nothing in answer/authority, at most one OPT RR in additional. buildResponse is
// called with our own decisions; it throws RangeError only on programming errors (bad
// address, bad rcode), never because of what the sandbox sent.

import { isIPv4 } from 'node:net';

export const QTYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  SVCB: 64,
  HTTPS: 65,
  ANY: 255,
  NULL: 10,
} as const;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** Extended RCODEs that need an OPT RR to carry their upper 8 bits (RFC 6891 §6.1.3). */
export const EXTENDED_RCODE = { BADVERS: 16 } as const;

export const QCLASS_IN = 1;

/** Largest message we accept or build over UDP/TCP for our purposes (queries are tiny). */
export const MAX_QUERY_SIZE = 4096;
/** EDNS buffer size we advertise and honour at most: RFC 9715 / DNS flag day 2020. */
export const EDNS_UDP_SIZE = 1232;
/** RFC 1035 §4.2.1: plain UDP messages are limited to 512 bytes. */
export const CLASSIC_UDP_SIZE = 512;

export const HEADER_LEN = 12;
const MAX_NAME_WIRE = 255; // RFC 1035 §3.1, counting length octets and the final zero
const MAX_LABEL = 63; // RFC 1035 §2.3.4
const MAX_POINTER_JUMPS = 16;

// Header flag bits (RFC 1035 §4.1.1).
export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;

// QTYPEs a stub resolver never sends to us: zone transfers are refused outright (RFC 5936 §4.2
// lets a server refuse AXFR); OPT is a pseudo-RR that only lives in the additional section
// (RFC 6891 §6.1.1), so asking for it is malformed.
const QTYPE_IXFR = 251;
const QTYPE_AXFR = 252;

export interface Question {
  /** Lowercased, no trailing dot, '' for the root. */
  name: string;
  type: number;
  class: number;
  /**
   * The name exactly as the client spelt it (case preserved). buildResponse echoes this so that
   * clients using DNS 0x20 case randomisation (draft-vixie-dnsext-dns0x20) accept the answer.
   * Safe to echo: parseQuery only admits [A-Za-z0-9_-] labels.
   */
  nameAsSent?: string;
}

export interface Query {
  id: number;
  /** Raw 16-bit header flags of the query. */
  flags: number;
  opcode: number;
  rd: boolean;
  question: Question;
  /**
   * Present when the query carried an OPT RR. udpSize is the raw advertised value (values below
   * 512 mean 512, RFC 6891 §6.2.5; buildResponse applies that). A version > 0 should be answered
   * with EXTENDED_RCODE.BADVERS (RFC 6891 §6.1.3); the responder decides, so it is reported here.
   */
  edns?: { udpSize: number; version: number };
}

export type ParseResult = { ok: true; query: Query } | { ok: false; id?: number; rcode: number /* FORMERR or NOTIMP or REFUSED */; reason: string };

export interface AnswerRecord {
  type: 1 /* A */;
  ttl: number;
  /** Dotted IPv4. */
  address: string;
}

// ---------------------------------------------------------------------------------------------
// Names

export type NameResult = { ok: true; name: string; next: number } | { ok: false; reason: string };

function isHostnameOctet(b: number): boolean {
  return (
    (b >= 0x61 && b <= 0x7a) || // a-z
    (b >= 0x41 && b <= 0x5a) || // A-Z
    (b >= 0x30 && b <= 0x39) || // 0-9
    b === 0x2d || // -
    b === 0x5f // _ (SRV/_dmarc style labels)
  );
}

/**
 * Reads a (possibly compressed) domain name at `offset` (RFC 1035 §3.1, §4.1.4).
 * Pointers must point strictly before the start of the label run that contains them; every jump
 * therefore lands at a smaller offset, which rules out loops without a visited set, and the jump
 * count is capped as well. `next` is the offset just after the name in the original stream.
 * Label octets outside [A-Za-z0-9_-] fail with 'bad name': such a name can never be an allowed
 * host, and refusing it keeps raw bytes out of the audit log.
 */
export function readName(msg: Buffer, offset: number): NameResult {
  const labels: string[] = [];
  let pos = offset;
  let runStart = offset;
  let next = -1;
  let jumps = 0;
  let wireLen = 0;
  for (;;) {
    if (pos >= msg.length) return { ok: false, reason: 'truncated name' };
    const len = msg[pos] as number;
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= msg.length) return { ok: false, reason: 'truncated name' };
      const target = ((len & 0x3f) << 8) | (msg[pos + 1] as number);
      // A pointer into the header cannot start a name; one at or after its own run would allow a loop.
      if (target < HEADER_LEN || target >= runStart) return { ok: false, reason: 'bad pointer' };
      if (++jumps > MAX_POINTER_JUMPS) return { ok: false, reason: 'too many pointers' };
      if (next < 0) next = pos + 2;
      pos = target;
      runStart = target;
      continue;
    }
    if (kind !== 0) {
      // 0x40 / 0x80: lengths 64..191, i.e. a label over 63 octets or the obsolete extended label
      // types (RFC 6891 §5 deprecates 0x40; 0x80 was never assigned).
      return { ok: false, reason: 'bad label' };
    }
    if (len === 0) {
      if (next < 0) next = pos + 1;
      return { ok: true, name: labels.join('.'), next };
    }
    // len <= 63 holds here because the top two bits are zero.
    wireLen += 1 + len;
    if (wireLen + 1 > MAX_NAME_WIRE) return { ok: false, reason: 'name too long' };
    const end = pos + 1 + len;
    if (end > msg.length) return { ok: false, reason: 'truncated name' };
    for (let i = pos + 1; i < end; i++) {
      if (!isHostnameOctet(msg[i] as number)) return { ok: false, reason: 'bad name' };
    }
    labels.push(msg.toString('latin1', pos + 1, end));
    pos = end;
  }
}

/** Encodes a dot-joined name without compression. Throws RangeError for a name parseQuery would reject. */
export function encodeName(name: string): Buffer {
  if (name === '') return Buffer.from([0]);
  const labels = name.split('.');
  const out = Buffer.allocUnsafe(name.length + 2);
  let pos = 0;
  for (const label of labels) {
    if (label.length === 0 || label.length > MAX_LABEL) throw new RangeError(`bad label in name: ${JSON.stringify(name)}`);
    out[pos++] = label.length;
    for (let i = 0; i < label.length; i++) {
      const c = label.charCodeAt(i);
      if (!isHostnameOctet(c)) throw new RangeError(`bad character in name: ${JSON.stringify(name)}`);
      out[pos++] = c;
    }
  }
  out[pos++] = 0;
  if (pos > MAX_NAME_WIRE) throw new RangeError(`name too long: ${name.length} characters`);
  return out.subarray(0, pos);
}

// ---------------------------------------------------------------------------------------------
// Parsing queries

function fail(rcode: number, reason: string, msg: Buffer): ParseResult {
  // Plain indexing rather than readUInt16BE: this also runs in parseQuery's catch-all path.
  const hi = msg[0];
  const lo = msg[1];
  return hi !== undefined && lo !== undefined ? { ok: false, id: (hi << 8) | lo, rcode, reason } : { ok: false, rcode, reason };
}

interface RawQuestion {
  question: Question;
  next: number;
}

/** Reads the single question at offset 12 (shared by parseQuery and buildError). */
function readQuestion(msg: Buffer): RawQuestion | { reason: string } {
  const nm = readName(msg, HEADER_LEN);
  if (!nm.ok) return { reason: nm.reason };
  if (nm.next + 4 > msg.length) return { reason: 'truncated question' };
  const type = msg.readUInt16BE(nm.next);
  const klass = msg.readUInt16BE(nm.next + 2);
  return {
    question: { name: nm.name.toLowerCase(), type, class: klass, nameAsSent: nm.name },
    next: nm.next + 4,
  };
}

/**
 * Validates one query message. Never throws: every malformed input yields ok:false with the
 * rcode the responder should answer with (or, for 'not a query', drop silently).
 */
export function parseQuery(msg: Buffer): ParseResult {
  try {
    return parseQueryUnsafe(msg);
  } catch {
    // Defence in depth: every read above is bounds-checked, so this is not expected to run.
    return fail(RCODE.FORMERR, 'malformed', msg);
  }
}

function parseQueryUnsafe(msg: Buffer): ParseResult {
  if (msg.length > MAX_QUERY_SIZE) return fail(RCODE.FORMERR, 'oversize', msg);
  if (msg.length < HEADER_LEN) return fail(RCODE.FORMERR, 'truncated header', msg);
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  // A response sent to a responder must never be answered (that is how reflection loops start).
  if (flags & FLAG_QR) return fail(RCODE.FORMERR, 'not a query', msg);
  const opcode = (flags >> 11) & 0x0f;
  // RFC 1035 §4.1.1: only standard QUERY; NOTIFY/UPDATE/IQUERY/STATUS are not implemented.
  if (opcode !== 0) return fail(RCODE.NOTIMP, 'opcode not implemented', msg);
  const qdcount = msg.readUInt16BE(4);
  const ancount = msg.readUInt16BE(6);
  const nscount = msg.readUInt16BE(8);
  const arcount = msg.readUInt16BE(10);
  // RFC 9619: a QUERY carries exactly one question.
  if (qdcount !== 1) return fail(RCODE.FORMERR, 'question count', msg);
  if (ancount !== 0 || nscount !== 0) return fail(RCODE.FORMERR, 'answer or authority records', msg);
  if (arcount > 1) return fail(RCODE.FORMERR, 'additional records', msg);

  const rq = readQuestion(msg);
  if ('reason' in rq) return fail(RCODE.FORMERR, rq.reason, msg);
  const { question } = rq;
  let pos = rq.next;
  if (question.type === QTYPE.OPT) return fail(RCODE.FORMERR, 'meta type in question', msg);

  let edns: Query['edns'];
  if (arcount === 1) {
    const opt = readOpt(msg, pos);
    if ('reason' in opt) return fail(RCODE.FORMERR, opt.reason, msg);
    edns = { udpSize: opt.udpSize, version: opt.version };
    pos = opt.next;
  }
  if (pos !== msg.length) return fail(RCODE.FORMERR, 'trailing bytes', msg);

  // Checked after the structure is known to be sound, so a REFUSED reply can echo the question.
  if (question.class !== QCLASS_IN) return fail(RCODE.REFUSED, 'unsupported class', msg);
  if (question.type === QTYPE_AXFR || question.type === QTYPE_IXFR) return fail(RCODE.REFUSED, 'zone transfer', msg);

  const query: Query = { id, flags, opcode, rd: (flags & FLAG_RD) !== 0, question };
  if (edns) query.edns = edns;
  return { ok: true, query };
}

type OptResult = { udpSize: number; version: number; next: number } | { reason: string };

/** RFC 6891 §6.1.2: OPT RR with root owner name; CLASS is the UDP size, TTL carries ext-rcode/version/flags. */
function readOpt(msg: Buffer, offset: number): OptResult {
  const nm = readName(msg, offset);
  if (!nm.ok) return { reason: nm.reason };
  if (nm.name !== '') return { reason: 'additional record is not OPT' };
  const pos = nm.next;
  if (pos + 10 > msg.length) return { reason: 'truncated additional record' };
  if (msg.readUInt16BE(pos) !== QTYPE.OPT) return { reason: 'additional record is not OPT' };
  const udpSize = msg.readUInt16BE(pos + 2);
  const version = msg[pos + 5] as number;
  const rdlen = msg.readUInt16BE(pos + 8);
  const end = pos + 10 + rdlen;
  if (end > msg.length) return { reason: 'truncated additional record' };
  // Options are {code, length, data} TLVs (RFC 6891 §6.1.2); a malformed list is FORMERR.
  // Their contents (cookies, padding, client subnet) are ignored: we answer from policy alone.
  let o = pos + 10;
  while (o < end) {
    if (o + 4 > end) return { reason: 'bad EDNS option' };
    o += 4 + msg.readUInt16BE(o + 2);
    if (o > end) return { reason: 'bad EDNS option' };
  }
  return { udpSize, version, next: end };
}

// ---------------------------------------------------------------------------------------------
// Building responses

function parseIPv4(address: string): [number, number, number, number] {
  if (!isIPv4(address)) throw new RangeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  const p = address.split('.').map(Number);
  return [p[0] as number, p[1] as number, p[2] as number, p[3] as number];
}

export const OPT_RR_LEN = 11; // root name (1) + type, class (4) + ttl (4) + rdlength (2)
const A_RR_LEN = 16; // pointer (2) + type, class (4) + ttl (4) + rdlength (2) + address (4)

/**
 * Builds the reply to a parsed query. Answers are A records whose owner is a pointer to the
 * question name (0xC00C). If the whole reply would exceed the size limit, the answers are dropped
 * and TC is set (RFC 2181 §9), so the client retries over TCP.
 *
 * opts.maxSize: the transport's limit. Default 512 without EDNS (RFC 1035 §4.2.1), and
 * min(max(udpSize, 512), 1232) with EDNS (RFC 6891 §6.2.5, RFC 9715). TCP callers pass 65535.
 */
export function buildResponse(q: Query, rcode: number, answers: AnswerRecord[], opts: { aa?: boolean; maxSize?: number } = {}): Buffer {
  if (!Number.isInteger(rcode) || rcode < 0 || rcode > 0xfff) throw new RangeError(`bad rcode ${rcode}`);
  if (rcode > 0xf && !q.edns) throw new RangeError(`extended rcode ${rcode} needs an EDNS query`);
  if (rcode !== RCODE.NOERROR && answers.length > 0) throw new RangeError('answers given with a non-NOERROR rcode');
  const rdatas = answers.map((a) => {
    if (a.type !== QTYPE.A) throw new RangeError(`unsupported answer type ${String(a.type)}`);
    if (!Number.isInteger(a.ttl) || a.ttl < 0 || a.ttl > 0x7fffffff) {
      // RFC 2181 §8: TTLs are 0..2^31-1.
      throw new RangeError(`bad ttl ${a.ttl}`);
    }
    return parseIPv4(a.address);
  });

  const qname = encodeName(q.question.nameAsSent ?? q.question.name);
  const udpLimit = q.edns ? Math.min(Math.max(q.edns.udpSize, CLASSIC_UDP_SIZE), EDNS_UDP_SIZE) : CLASSIC_UDP_SIZE;
  const maxSize = Math.min(opts.maxSize ?? udpLimit, 0xffff);
  const baseLen = HEADER_LEN + qname.length + 4 + (q.edns ? OPT_RR_LEN : 0);
  const truncated = baseLen + A_RR_LEN * answers.length > maxSize;
  const ancount = truncated ? 0 : answers.length;

  const out = Buffer.alloc(baseLen + A_RR_LEN * ancount);
  let flags = FLAG_QR | FLAG_RA | (rcode & 0xf); // opcode 0
  if (opts.aa ?? true) flags |= FLAG_AA;
  if (q.rd) flags |= FLAG_RD;
  if (truncated) flags |= FLAG_TC;
  out.writeUInt16BE(q.id & 0xffff, 0);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(ancount, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(q.edns ? 1 : 0, 10);
  let pos = HEADER_LEN;
  pos += qname.copy(out, pos);
  pos = out.writeUInt16BE(q.question.type & 0xffff, pos);
  pos = out.writeUInt16BE(q.question.class & 0xffff, pos);
  for (let i = 0; i < ancount; i++) {
    const a = answers[i] as AnswerRecord;
    const ip = rdatas[i] as [number, number, number, number];
    pos = out.writeUInt16BE(0xc000 | HEADER_LEN, pos); // RFC 1035 §4.1.4 pointer to the question name
    pos = out.writeUInt16BE(QTYPE.A, pos);
    pos = out.writeUInt16BE(QCLASS_IN, pos);
    pos = out.writeUInt32BE(a.ttl, pos);
    pos = out.writeUInt16BE(4, pos);
    for (const octet of ip) out[pos++] = octet;
  }
  if (q.edns) pos = writeOpt(out, pos, rcode);
  return out;
}

/** OPT RR advertising 1232 bytes, version 0, DO clear (we do not sign), no options. */
function writeOpt(out: Buffer, pos: number, rcode: number): number {
  out[pos++] = 0; // root
  pos = out.writeUInt16BE(QTYPE.OPT, pos);
  pos = out.writeUInt16BE(EDNS_UDP_SIZE, pos);
  pos = out.writeUInt32BE(((rcode >> 4) & 0xff) * 0x1000000, pos); // ext-rcode<<24 | version 0 | flags 0
  return out.writeUInt16BE(0, pos);
}

/**
 * Minimal reply for input parseQuery rejected: the id (from `id` or the message), opcode and RD
 * copied, and the question echoed when it can be read under parseQuery's rules; otherwise a bare
 * header with QDCOUNT 0. No OPT RR is added: the additional section of unparseable input is not
 * trusted. (RFC 6891 §7 asks for an OPT in a FORMERR caused by the OPT itself; without one, a
 * client simply falls back to plain DNS, which is harmless here.)
 * Returns undefined when there is nothing to answer to: fewer than 2 bytes of id and no `id`, or a
 * message with QR=1 (answering responses invites reflection loops). Never throws.
 */
export function buildError(msg: Buffer, rcode: number, id?: number): Buffer | undefined {
  try {
    if (id === undefined && msg.length < 2) return undefined;
    const qflags = msg.length >= 4 ? msg.readUInt16BE(2) : 0;
    if (qflags & FLAG_QR) return undefined;
    const replyId = (id ?? msg.readUInt16BE(0)) & 0xffff;
    const opcodeBits = qflags & 0x7800;
    const flags = FLAG_QR | opcodeBits | (qflags & FLAG_RD) | FLAG_RA | (rcode & 0xf);

    let question: Buffer | undefined;
    if (msg.length >= HEADER_LEN && msg.length <= MAX_QUERY_SIZE && msg.readUInt16BE(4) === 1) {
      const rq = readQuestion(msg);
      if (!('reason' in rq)) question = msg.subarray(HEADER_LEN, rq.next);
    }
    const out = Buffer.alloc(HEADER_LEN + (question ? question.length : 0));
    out.writeUInt16BE(replyId, 0);
    out.writeUInt16BE(flags, 2);
    if (question) {
      out.writeUInt16BE(1, 4);
      // The question contains no pointers: readName only accepts pointers to before offset 12's run,
      // and nothing precedes it but the header, so copying the bytes verbatim is safe.
      question.copy(out, HEADER_LEN);
    }
    return out;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// DNS over TCP framing (RFC 1035 §4.2.2, RFC 7766 §8)

/** Prefixes a message with its 2-byte big-endian length. */
export function encodeTcpFrame(msg: Buffer): Buffer {
  if (msg.length > 0xffff) throw new RangeError(`DNS message too long for TCP framing: ${msg.length} bytes`);
  const out = Buffer.allocUnsafe(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

/**
 * Reassembles length-prefixed messages from a TCP byte stream. push() returns every message the
 * chunk completes (several per chunk, or none while a frame is still arriving). A frame that
 * declares more than maxMessage bytes throws a RangeError as soon as its 2-byte length is seen,
 * before any of its body is buffered; the caller then drops the connection (the reader stays
 * failed). Zero-length frames are passed through as empty buffers (parseQuery rejects them).
 */
export class TcpFrameReader {
  private readonly maxMessage: number;
  private chunks: Buffer[] = [];
  private total = 0;
  /** Body length of the frame being assembled, once its prefix has been consumed; -1 before. */
  private need = -1;
  private failed: RangeError | undefined;

  constructor(maxMessage = MAX_QUERY_SIZE) {
    this.maxMessage = maxMessage;
  }

  /** Bytes received but not yet returned as messages (length prefixes already consumed excluded). */
  get buffered(): number {
    return this.total;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.total += chunk.length;
    }
    const out: Buffer[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.total < 2) break;
        const prefix = this.take(2);
        const len = prefix.readUInt16BE(0);
        if (len > this.maxMessage) {
          this.failed = new RangeError(`DNS TCP frame of ${len} bytes exceeds ${this.maxMessage}`);
          this.chunks = [];
          this.total = 0;
          throw this.failed;
        }
        this.need = len;
      }
      if (this.total < this.need) break;
      out.push(this.take(this.need));
      this.need = -1;
    }
    return out;
  }

  /** Removes and returns the first n buffered bytes as a standalone copy (n <= total). */
  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0] as Buffer;
      const used = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, used);
      filled += used;
      if (used === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(used);
    }
    this.total -= n;
    return out;
  }
}
