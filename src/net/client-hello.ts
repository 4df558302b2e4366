/**
 * Sans-io TLS ClientHello reader for the transparent listener.
 *
 * The listener feeds it every byte received so far on an intercepted connection; it answers
 * 'incomplete' (read more), 'hello' (decide by SNI, then unshift the bytes and hand the socket
 * on unchanged) or 'invalid' (reset). It never throws and never allocates per byte: untrusted
 * input only ever moves bounds-checked cursors.
 *
 * Strictness is deliberate: the policy decision rests on the SNI, so anything a real TLS stack
 * would reject (or could read differently from us) is 'invalid' rather than best-effort parsed.
 */
import { isIP } from 'node:net';

export type HelloResult =
  | { kind: 'incomplete' } // a valid prefix; more bytes needed
  | {
      kind: 'hello';
      sni: string | undefined;
      alpn: string[];
      /** An encrypted_client_hello extension (0xfe0d) is present: real ECH or GREASE, indistinguishable by design. */
      ech: boolean;
      /** The old encrypted SNI extension (0xffce) is present. */
      esni: boolean;
      legacyVersion: number;
      supportedVersions: number[];
      length: number;
    }
  | { kind: 'invalid'; reason: string };

type Invalid = Extract<HelloResult, { kind: 'invalid' }>;
type Hello = Extract<HelloResult, { kind: 'hello' }>;

/** RFC 8446 §5.1: TLSPlaintext.length MUST NOT exceed 2^14. */
export const MAX_RECORD_PAYLOAD = 16 * 1024;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
/** One full record plus the headers of up to three more fragments. */
export const DEFAULT_MAX_HELLO_BYTES = MAX_RECORD_PAYLOAD + RECORD_HEADER * 4;

const CONTENT_TYPE_HANDSHAKE = 22; // RFC 8446 §5.1 ContentType.handshake
const HANDSHAKE_CLIENT_HELLO = 1; // RFC 8446 §4 HandshakeType.client_hello
/**
 * Smallest possible ClientHello body: legacy_version(2) random(32) session_id<0>(1)
 * cipher_suites<2>(2+2) compression_methods<1>(1+1), no extensions.
 */
const MIN_HELLO_BODY = 2 + 32 + 1 + 2 + 2 + 1 + 1;

export const ExtensionType = {
  serverName: 0, // RFC 6066 §3
  alpn: 16, // RFC 7301 §3.1
  preSharedKey: 41, // RFC 8446 §4.2.11
  supportedVersions: 43, // RFC 8446 §4.2.1
  encryptedClientHello: 0xfe0d, // draft-ietf-tls-esni (ECH)
  esni: 0xffce, // draft-ietf-tls-esni-02..06 (the old encrypted SNI)
} as const;

/** Cheap first-byte check: 0x16 is a TLS handshake record (RFC 8446 §5.1). */
export function looksLikeTls(firstByte: number): boolean {
  return firstByte === CONTENT_TYPE_HANDSHAKE;
}

function invalid(reason: string): Invalid {
  return { kind: 'invalid', reason };
}

const INCOMPLETE: HelloResult = Object.freeze({ kind: 'incomplete' });

/**
 * @param buf all bytes received so far on the connection, starting at byte 0.
 * @param maxBytes cap on how many bytes the ClientHello (its records, headers included) may
 *   need; if it provably needs more, the answer is 'invalid' as soon as that is known.
 */
export function parseClientHello(buf: Buffer, maxBytes: number = DEFAULT_MAX_HELLO_BYTES): HelloResult {
  // The handshake message may be fragmented over several consecutive handshake records
  // (RFC 8446 §5.1: "Handshake messages MAY be coalesced ... or fragmented across several
  // records"). Walk the records, collecting their payloads, until the message is whole.
  const fragments: Buffer[] = [];
  const hsHeader: number[] = []; // first 4 handshake bytes, which may themselves be fragmented
  let covered = 0; // handshake bytes announced by the record headers read so far
  let needed = -1; // total handshake bytes (header + body) once the header is known
  let pos = 0;

  for (;;) {
    const header = checkRecordHeader(buf, pos, pos === 0);
    if (header !== undefined) return header;
    // checkRecordHeader returned undefined, so all 5 header bytes are present.
    const recordLength = buf.readUInt16BE(pos + 3);
    const payloadStart = pos + RECORD_HEADER;
    const recordEnd = payloadStart + recordLength;
    if (recordEnd > maxBytes) return invalid('client hello exceeds size cap');

    const payload = buf.subarray(payloadStart, Math.min(buf.length, recordEnd));
    fragments.push(payload);
    covered += recordLength;

    for (let i = 0; hsHeader.length < HANDSHAKE_HEADER && i < payload.length; i++) {
      hsHeader.push(payload[i] ?? 0);
    }
    if (hsHeader.length >= 1 && hsHeader[0] !== HANDSHAKE_CLIENT_HELLO) {
      return invalid('first handshake message is not a client hello');
    }
    if (needed < 0 && hsHeader.length === HANDSHAKE_HEADER) {
      const bodyLength = ((hsHeader[1] ?? 0) << 16) | ((hsHeader[2] ?? 0) << 8) | (hsHeader[3] ?? 0);
      if (bodyLength < MIN_HELLO_BODY) return invalid('client hello too short');
      needed = HANDSHAKE_HEADER + bodyLength;
    }

    if (needed >= 0) {
      // Nothing may share a record with the ClientHello: the client sends nothing else before
      // the server's flight, and RFC 8446 §5.1 requires a message that precedes a key change
      // (0-RTT keys follow the ClientHello) to end on a record boundary.
      if (covered > needed) return invalid('trailing data after client hello');
      if (covered === needed) {
        if (buf.length < recordEnd) return INCOMPLETE;
        return parseHandshake(fragments, needed, recordEnd);
      }
      // At least one more record header plus the missing handshake bytes.
      if (recordEnd + RECORD_HEADER + (needed - covered) > maxBytes) {
        return invalid('client hello exceeds size cap');
      }
    }
    if (buf.length < recordEnd) return INCOMPLETE;
    pos = recordEnd;
  }
}

/**
 * Validates the (possibly partial) record header at `pos`, byte by byte as far as it has
 * arrived, so that garbage is rejected early and every valid prefix stays 'incomplete'.
 * Returns undefined when the full 5-byte header is present and acceptable.
 */
function checkRecordHeader(buf: Buffer, pos: number, first: boolean): HelloResult | undefined {
  const type = buf[pos];
  if (type === undefined) return INCOMPLETE;
  if (type !== CONTENT_TYPE_HANDSHAKE) {
    // RFC 8446 §5.1: handshake fragments MUST NOT be interleaved with other record types.
    return invalid(first ? 'not a TLS handshake record' : 'non-handshake record inside client hello');
  }
  const major = buf[pos + 1];
  if (major === undefined) return INCOMPLETE;
  // legacy_record_version: 0x0301 from most clients, 0x0300..0x0303 seen in the wild;
  // RFC 8446 §5.1 says it MUST be ignored, but a non-3 major is not TLS at all.
  if (major !== 3) return invalid('unsupported record version');
  const minor = buf[pos + 2];
  if (minor === undefined) return INCOMPLETE;
  if (minor > 4) return invalid('unsupported record version');
  if (buf.length < pos + RECORD_HEADER) {
    // A high length byte above 0x40 already means > 2^14.
    const high = buf[pos + 3];
    if (high !== undefined && high > MAX_RECORD_PAYLOAD >> 8) return invalid('bad record length');
    return INCOMPLETE;
  }
  const length = buf.readUInt16BE(pos + 3);
  // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent; 2^14 is the ceiling.
  if (length === 0 || length > MAX_RECORD_PAYLOAD) return invalid('bad record length');
  return undefined;
}

function parseHandshake(fragments: Buffer[], needed: number, recordsLength: number): HelloResult {
  // The common case is one record: no copy.
  const handshake = fragments.length === 1 && fragments[0] !== undefined ? fragments[0] : Buffer.concat(fragments, needed);
  return parseBody(new Reader(handshake, HANDSHAKE_HEADER, needed), recordsLength);
}

/** Bounds-checked cursor over [pos, end) of a buffer; reads past the end return undefined. */
class Reader {
  constructor(
    private readonly buf: Buffer,
    private pos: number,
    private readonly end: number,
  ) {}

  get left(): number {
    return this.end - this.pos;
  }

  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.buf[this.pos++];
  }

  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  skip(n: number): boolean {
    if (this.left < n) return false;
    this.pos += n;
    return true;
  }

  /** A sub-reader over the next n bytes. */
  take(n: number): Reader | undefined {
    if (this.left < n) return undefined;
    const sub = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return sub;
  }

  /** TLS vector with a 1-byte length prefix (RFC 8446 §3.4). */
  vec8(): Reader | undefined {
    const n = this.u8();
    return n === undefined ? undefined : this.take(n);
  }

  /** TLS vector with a 2-byte length prefix. */
  vec16(): Reader | undefined {
    const n = this.u16();
    return n === undefined ? undefined : this.take(n);
  }

  rest(): Buffer {
    const out = this.buf.subarray(this.pos, this.end);
    this.pos = this.end;
    return out;
  }
}

/** RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2 ClientHello body. */
function parseBody(r: Reader, length: number): HelloResult {
  const legacyVersion = r.u16();
  if (legacyVersion === undefined || !r.skip(32)) return invalid('truncated client hello');
  if (legacyVersion >> 8 !== 3) return invalid('unsupported client hello version');

  const sessionId = r.vec8();
  if (sessionId === undefined) return invalid('truncated session_id');
  if (sessionId.left > 32) return invalid('session_id longer than 32 bytes');

  const suites = r.vec16();
  if (suites === undefined) return invalid('truncated cipher_suites');
  if (suites.left < 2 || suites.left % 2 !== 0) return invalid('bad cipher_suites length');

  const compression = r.vec8();
  if (compression === undefined) return invalid('truncated compression_methods');
  if (compression.left < 1) return invalid('empty compression_methods');

  const hello: Hello = {
    kind: 'hello',
    sni: undefined,
    alpn: [],
    ech: false,
    esni: false,
    legacyVersion,
    supportedVersions: [],
    length,
  };
  // RFC 5246 §7.4.1.2: the extensions block may be absent entirely (pre-TLS 1.2 clients).
  if (r.left === 0) return hello;

  const extensions = r.vec16();
  if (extensions === undefined) return invalid('truncated extensions');
  if (r.left !== 0) return invalid('trailing bytes after extensions');

  const seen = new Set<number>();
  while (extensions.left > 0) {
    const type = extensions.u16();
    const data = extensions.vec16();
    if (type === undefined || data === undefined) return invalid('truncated extension');
    // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type".
    if (seen.has(type)) return invalid('duplicate extension');
    // RFC 8446 §4.2.11: pre_shared_key MUST be the last extension in the ClientHello.
    if (seen.has(ExtensionType.preSharedKey)) return invalid('pre_shared_key is not the last extension');
    seen.add(type);

    switch (type) {
      case ExtensionType.serverName: {
        const sni = parseServerName(data);
        if (typeof sni !== 'string') return sni;
        hello.sni = sni;
        break;
      }
      case ExtensionType.alpn: {
        const alpn = parseAlpn(data);
        if (!Array.isArray(alpn)) return alpn;
        hello.alpn = alpn;
        break;
      }
      case ExtensionType.supportedVersions: {
        const versions = parseSupportedVersions(data);
        if (!Array.isArray(versions)) return versions;
        hello.supportedVersions = versions;
        break;
      }
      case ExtensionType.encryptedClientHello:
        // Reported, not judged: clients without an ECH config send a GREASE extension of this
        // type (draft-ietf-tls-esni §6.2, "GREASE ECH"), built to look like real ECH on the wire.
        hello.ech = true;
        break;
      case ExtensionType.esni:
        // The outer SNI is then a cover name, not the real target; the caller denies.
        hello.esni = true;
        break;
      default:
        break;
    }
  }
  return hello;
}

/** RFC 6066 §3: ServerNameList server_name_list<1..2^16-1>; exactly one host_name accepted. */
function parseServerName(data: Reader): string | Invalid {
  const list = data.vec16();
  if (list === undefined || data.left !== 0) return invalid('malformed server_name');
  const nameType = list.u8();
  const name = list.vec16();
  if (nameType === undefined || name === undefined) return invalid('malformed server_name');
  if (nameType !== 0) return invalid('server_name type is not host_name');
  // RFC 6066 §3 forbids two names of the same type; a second type is undefined behaviour in
  // practice. Either way the target would be ambiguous.
  if (list.left !== 0) return invalid('server_name lists more than one name');
  return normaliseHostName(name.rest());
}

const MAX_NAME = 253; // RFC 1035 §2.3.4 (255 octets wire form = 253 in presentation form)
const MAX_LABEL = 63; // RFC 1035 §2.3.4

/**
 * The HostName as policy will see it: lowercased, trailing dot removed. Only LDH plus '_' is
 * accepted (RFC 6066 §3: IDNs travel as A-labels, so anything non-ASCII is malformed).
 */
function normaliseHostName(raw: Buffer): string | Invalid {
  const text = raw.toString('latin1');
  const name = text.endsWith('.') ? text.slice(0, -1) : text;
  if (name.length < 1 || name.length > MAX_NAME) return invalid('bad sni length');
  // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
  if (isIpLiteral(name)) return invalid('sni is an IP literal');

  let labelLength = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e) {
      if (labelLength === 0) return invalid('sni has an empty label');
      labelLength = 0;
      continue;
    }
    const ok =
      (c >= 0x61 && c <= 0x7a) || // a-z
      (c >= 0x41 && c <= 0x5a) || // A-Z
      (c >= 0x30 && c <= 0x39) || // 0-9
      c === 0x2d || // -
      c === 0x5f; // _
    if (!ok) return invalid('sni has a forbidden character');
    if (++labelLength > MAX_LABEL) return invalid('sni label longer than 63 bytes');
  }
  if (labelLength === 0) return invalid('sni has an empty label');
  // A name whose last label is numeric is parsed as an IPv4 address by URL parsers (WHATWG URL
  // "ends in a number": 127.1, 2130706433, 0x7f.1) and by inet_aton; no real TLD is numeric
  // (RFC 3696 §2). Treat it like the literal it would become.
  const last = name.slice(name.lastIndexOf('.') + 1);
  if (/^(?:[0-9]+|0x[0-9a-f]*)$/i.test(last)) return invalid('sni is an IP literal');
  return name.toLowerCase();
}

function isIpLiteral(name: string): boolean {
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  return isIP(bare) !== 0;
}

/** RFC 7301 §3.1: ProtocolName protocol_name_list<2..2^16-1>, each ProtocolName<1..2^8-1>. */
function parseAlpn(data: Reader): string[] | Invalid {
  const list = data.vec16();
  if (list === undefined || data.left !== 0 || list.left === 0) return invalid('malformed alpn');
  const out: string[] = [];
  while (list.left > 0) {
    const proto = list.vec8();
    if (proto === undefined || proto.left === 0) return invalid('malformed alpn');
    out.push(proto.rest().toString('latin1'));
  }
  return out;
}

/** RFC 8446 §4.2.1: ProtocolVersion versions<2..254> in a ClientHello. */
function parseSupportedVersions(data: Reader): number[] | Invalid {
  const list = data.vec8();
  if (list === undefined || data.left !== 0 || list.left < 2 || list.left % 2 !== 0) {
    return invalid('malformed supported_versions');
  }
  const out: number[] = [];
  for (let v = list.u16(); v !== undefined; v = list.u16()) out.push(v);
  return out;
}
