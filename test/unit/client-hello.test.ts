import test from 'ava';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { parseClientHello, looksLikeTls, DEFAULT_MAX_HELLO_BYTES, type HelloResult } from '../../src/net/client-hello.js';

// ---------------------------------------------------------------------------------------------
// A small ClientHello builder (RFC 8446 §4.1.2 wire format), so each test states only what it
// varies.

type Ext = readonly [type: number, data: Buffer];

const u8 = (n: number): Buffer => Buffer.from([n & 0xff]);
const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

interface HelloSpec {
  legacyVersion?: number;
  sessionId?: Buffer;
  cipherSuites?: Buffer;
  compression?: Buffer;
  /** null: no extensions block at all (a TLS 1.0-style hello). */
  extensions?: Ext[] | null;
}

function helloBody(spec: HelloSpec = {}): Buffer {
  const parts = [
    u16(spec.legacyVersion ?? 0x0303),
    Buffer.alloc(32, 0xab),
    vec8(spec.sessionId ?? Buffer.alloc(32, 0x11)),
    vec16(spec.cipherSuites ?? Buffer.from([0x13, 0x01, 0x13, 0x02])),
    vec8(spec.compression ?? Buffer.from([0])),
  ];
  const exts = spec.extensions === undefined ? [sniExt('api.example.test')] : spec.extensions;
  if (exts !== null) parts.push(vec16(Buffer.concat(exts.map(([type, data]) => Buffer.concat([u16(type), vec16(data)])))));
  return Buffer.concat(parts);
}

function handshake(body: Buffer, type = 1): Buffer {
  return Buffer.concat([u8(type), u24(body.length), body]);
}

/** Wraps handshake bytes in records; `sizes` are the payload sizes of all but the last record. */
function records(hs: Buffer, sizes: number[] = [], version = 0x0301): Buffer {
  const out: Buffer[] = [];
  let pos = 0;
  for (const size of [...sizes, hs.length]) {
    const fragment = hs.subarray(pos, Math.min(hs.length, pos + size));
    out.push(Buffer.concat([u8(22), u16(version), u16(fragment.length), fragment]));
    pos += fragment.length;
    if (pos >= hs.length) break;
  }
  return Buffer.concat(out);
}

const hello = (spec: HelloSpec = {}, sizes: number[] = []): Buffer => records(handshake(helloBody(spec)), sizes);

function sniRawExt(entries: ReadonlyArray<readonly [nameType: number, name: Buffer]>): Ext {
  return [0, vec16(Buffer.concat(entries.map(([t, n]) => Buffer.concat([u8(t), vec16(n)]))))];
}
const sniExt = (...names: string[]): Ext => sniRawExt(names.map((n) => [0, Buffer.from(n, 'latin1')] as const));
const alpnExt = (...protos: string[]): Ext => [16, vec16(Buffer.concat(protos.map((p) => vec8(Buffer.from(p, 'latin1')))))];
const versionsExt = (...versions: number[]): Ext => [43, vec8(Buffer.concat(versions.map(u16)))];

function mustHello(t: { fail(msg: string): void }, r: HelloResult): Extract<HelloResult, { kind: 'hello' }> {
  if (r.kind !== 'hello') {
    t.fail(`expected hello, got ${JSON.stringify(r)}`);
    throw new Error('unreachable');
  }
  return r;
}

const reasonOf = (r: HelloResult): string | undefined => (r.kind === 'invalid' ? r.reason : undefined);

/** mulberry32: tiny seeded PRNG so fuzz failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// One real ClientHello from Node's own TLS stack (OpenSSL), captured on a loopback server.

async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  let client: tls.TLSSocket | undefined;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no ClientHello within 2 s')), 2000);
      server.once('connection', (sock) => {
        sock.on('error', () => {});
        let got = Buffer.alloc(0);
        sock.on('data', (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          // Framed independently of the parser under test: OpenSSL sends the hello in one record.
          if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
            clearTimeout(timer);
            sock.destroy();
            resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
          }
        });
      });
      client = tls.connect({ host: '127.0.0.1', port, servername: 'api.example.test', ALPNProtocols: ['h2', 'http/1.1'] });
      client.on('error', () => {}); // the server hangs up on it
    });
  } finally {
    client?.destroy();
    server.close();
  }
}

let real: Buffer = Buffer.alloc(0);
test.before(async () => {
  real = await captureClientHello();
});

// ---------------------------------------------------------------------------------------------

test('looksLikeTls checks for a handshake record type', (t) => {
  t.true(looksLikeTls(0x16));
  t.false(looksLikeTls(0x47)); // 'G'
  t.false(looksLikeTls(0x80)); // SSLv2-style hello
});

test('a real Node/OpenSSL ClientHello parses', (t) => {
  const r = mustHello(t, parseClientHello(real));
  t.is(r.sni, 'api.example.test');
  t.deepEqual(r.alpn, ['h2', 'http/1.1']);
  t.false(r.ech);
  t.is(r.legacyVersion, 0x0303);
  t.true(r.supportedVersions.includes(0x0304));
  t.true(r.supportedVersions.includes(0x0303));
  t.is(r.length, real.length);
});

test('every prefix of the real hello is incomplete', (t) => {
  for (let i = 0; i < real.length; i++) {
    const r = parseClientHello(real.subarray(0, i));
    if (r.kind !== 'incomplete') t.fail(`prefix ${i}: ${JSON.stringify(r)}`);
  }
  t.pass();
});

test('bytes after the hello (e.g. a ChangeCipherSpec record) are not counted', (t) => {
  const ccs = Buffer.from([20, 3, 3, 0, 1, 1]);
  t.is(mustHello(t, parseClientHello(Buffer.concat([real, ccs]))).length, real.length);
});

test('the real hello fragmented over 2 and 3 records reassembles', (t) => {
  const hs = real.subarray(5);
  const whole = mustHello(t, parseClientHello(real));
  const two = records(hs, [100]);
  // 1 + 2: the 4-byte handshake header itself is split across records.
  const three = records(hs, [1, 2]);
  for (const buf of [two, three]) {
    t.deepEqual(parseClientHello(buf), { ...whole, length: buf.length });
    for (let i = 0; i < buf.length; i++) {
      const r = parseClientHello(buf.subarray(0, i));
      if (r.kind !== 'incomplete') t.fail(`prefix ${i}: ${JSON.stringify(r)}`);
    }
  }
  t.is(two.length, real.length + 5);
  t.is(three.length, real.length + 10);
});

test('a non-handshake record before the hello completes is invalid', (t) => {
  const [first, second] = [hello({}, [50]).subarray(0, 55), hello({}, [50]).subarray(55)];
  const alert = Buffer.from([21, 3, 3, 0, 2, 2, 40]);
  t.is(reasonOf(parseClientHello(Buffer.concat([first, alert, second]))), 'non-handshake record inside client hello');
  // Rejected from its first byte.
  t.is(parseClientHello(Buffer.concat([first, alert.subarray(0, 1)])).kind, 'invalid');
});

test('IP literals as SNI are invalid', (t) => {
  for (const ip of ['192.0.2.1', '192.0.2.1.', '::1', '2001:db8::1', '[2001:db8::1]', '127.1', '2130706433', '0x7f.0.0.1', 'a.0x1f']) {
    t.is(reasonOf(parseClientHello(hello({ extensions: [sniExt(ip)] }))), 'sni is an IP literal', ip);
  }
  // Digits are fine where they cannot be read as an address.
  t.is(mustHello(t, parseClientHello(hello({ extensions: [sniExt('1.2.3.example')] }))).sni, '1.2.3.example');
});

test('server_name must hold exactly one host_name', (t) => {
  t.is(reasonOf(parseClientHello(hello({ extensions: [sniExt('a.example', 'b.example')] }))), 'server_name lists more than one name');
  const otherType = sniRawExt([[1, Buffer.from('a.example')]]);
  t.is(reasonOf(parseClientHello(hello({ extensions: [otherType] }))), 'server_name type is not host_name');
  const hostThenOther = sniRawExt([
    [0, Buffer.from('a.example')],
    [1, Buffer.from('x')],
  ]);
  t.is(parseClientHello(hello({ extensions: [hostThenOther] })).kind, 'invalid');
  t.is(reasonOf(parseClientHello(hello({ extensions: [[0, vec16(Buffer.alloc(0))]] }))), 'malformed server_name');
  t.is(reasonOf(parseClientHello(hello({ extensions: [[0, Buffer.alloc(0)]] }))), 'malformed server_name');
});

test('duplicate extensions are invalid', (t) => {
  t.is(reasonOf(parseClientHello(hello({ extensions: [alpnExt('h2'), sniExt('a.example'), alpnExt('h2')] }))), 'duplicate extension');
  t.is(
    reasonOf(
      parseClientHello(
        hello({
          extensions: [
            [0x1234, Buffer.alloc(0)],
            [0x1234, Buffer.alloc(1)],
          ],
        }),
      ),
    ),
    'duplicate extension',
  );
});

test('ECH (0xfe0d) and the old ESNI (0xffce) are flagged apart; an ECH hello keeps its outer SNI', (t) => {
  const ech = mustHello(t, parseClientHello(hello({ extensions: [sniExt('public.example'), [0xfe0d, Buffer.alloc(40, 7)]] })));
  t.true(ech.ech);
  t.false(ech.esni);
  t.is(ech.sni, 'public.example', 'the outer SNI is what the policy decides on');
  const esni = mustHello(t, parseClientHello(hello({ extensions: [[0xffce, Buffer.alloc(40, 7)]] })));
  t.true(esni.esni);
  t.false(esni.ech);
  const plain = mustHello(t, parseClientHello(hello()));
  t.false(plain.ech);
  t.false(plain.esni);
});

test('an ECH extension is still subject to the duplicate rule', (t) => {
  t.is(reasonOf(parseClientHello(hello({ extensions: [sniExt('a.example'), [0xfe0d, Buffer.alloc(8)], [0xfe0d, Buffer.alloc(8)]] }))), 'duplicate extension');
});

test('SNI is lowercased and a trailing dot removed', (t) => {
  t.is(mustHello(t, parseClientHello(hello({ extensions: [sniExt('API.Example.TEST.')] }))).sni, 'api.example.test');
  t.is(mustHello(t, parseClientHello(hello({ extensions: [sniExt('_acme-challenge.Example.test')] }))).sni, '_acme-challenge.example.test');
});

test('SNI length and character rules', (t) => {
  const label63 = 'a'.repeat(63);
  const name253 = [label63, label63, label63, 'a'.repeat(61)].join('.');
  t.is(name253.length, 253);
  t.is(mustHello(t, parseClientHello(hello({ extensions: [sniExt(name253)] }))).sni, name253);
  t.is(mustHello(t, parseClientHello(hello({ extensions: [sniExt(`${name253}.`)] }))).sni, name253);
  const bad: Array<[string, string]> = [
    ['', 'bad sni length'],
    ['.', 'bad sni length'],
    [`${name253}a`, 'bad sni length'],
    [`${'a'.repeat(64)}.example`, 'sni label longer than 63 bytes'],
    ['a..example', 'sni has an empty label'],
    ['.example', 'sni has an empty label'],
    ['example..', 'sni has an empty label'],
    ['exa mple.test', 'sni has a forbidden character'],
    ['exa/mple.test', 'sni has a forbidden character'],
    ['bücher.example', 'sni has a forbidden character'],
    ['example.test\0', 'sni has a forbidden character'],
  ];
  for (const [name, reason] of bad) {
    t.is(reasonOf(parseClientHello(hello({ extensions: [sniExt(name)] }))), reason, JSON.stringify(name));
  }
});

test('no server_name extension, or no extensions at all, gives sni undefined', (t) => {
  const noSni = mustHello(t, parseClientHello(hello({ extensions: [alpnExt('http/1.1'), versionsExt(0x0304, 0x0303)] })));
  t.is(noSni.sni, undefined);
  t.deepEqual(noSni.alpn, ['http/1.1']);
  t.deepEqual(noSni.supportedVersions, [0x0304, 0x0303]);
  const old = mustHello(t, parseClientHello(hello({ legacyVersion: 0x0301, extensions: null })));
  t.deepEqual(old, { kind: 'hello', sni: undefined, alpn: [], ech: false, esni: false, legacyVersion: 0x0301, supportedVersions: [], length: old.length });
  t.is(mustHello(t, parseClientHello(hello({ extensions: [] }))).sni, undefined);
});

test('a hello needing more than maxBytes is invalid as soon as that is known', (t) => {
  // Padding (RFC 7685) pushes the handshake past one full record.
  const big = hello({ extensions: [sniExt('a.example'), [21, Buffer.alloc(17_000)]] }, [16_384]);
  t.true(big.length > DEFAULT_MAX_HELLO_BYTES);
  t.is(reasonOf(parseClientHello(big)), 'client hello exceeds size cap');
  // Record header + handshake header are enough to know.
  t.is(reasonOf(parseClientHello(big.subarray(0, 9))), 'client hello exceeds size cap');
  // The cap counts record headers too.
  t.is(mustHello(t, parseClientHello(real, real.length)).length, real.length);
  t.is(reasonOf(parseClientHello(real, real.length - 1)), 'client hello exceeds size cap');
  t.is(reasonOf(parseClientHello(real.subarray(0, 5), real.length - 1)), 'client hello exceeds size cap');
  const split = records(real.subarray(5), [200]);
  t.is(reasonOf(parseClientHello(split.subarray(0, 9), real.length)), 'client hello exceeds size cap');
  t.is(mustHello(t, parseClientHello(split, split.length)).length, split.length);
});

test('non-TLS input is invalid from the first byte', (t) => {
  t.is(reasonOf(parseClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))), 'not a TLS handshake record');
  t.is(reasonOf(parseClientHello(Buffer.from('G'))), 'not a TLS handshake record');
  t.is(reasonOf(parseClientHello(Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'))), 'not a TLS handshake record');
  t.is(parseClientHello(Buffer.from([0x80, 0x2e, 0x01])).kind, 'invalid'); // SSLv2 framing
  t.is(parseClientHello(Buffer.alloc(0)).kind, 'incomplete');
});

test('record layer checks', (t) => {
  const hs = handshake(helloBody());
  for (const v of [0x0300, 0x0301, 0x0303, 0x0304]) t.is(parseClientHello(records(hs, [], v)).kind, 'hello', v.toString(16));
  for (const v of [0x0200, 0x0305, 0x0403]) {
    t.is(reasonOf(parseClientHello(records(hs, [], v))), 'unsupported record version', v.toString(16));
    t.is(reasonOf(parseClientHello(records(hs, [], v).subarray(0, 3))), 'unsupported record version');
  }
  t.is(reasonOf(parseClientHello(Buffer.from([22, 3, 1, 0, 0]))), 'bad record length');
  t.is(reasonOf(parseClientHello(Buffer.from([22, 3, 1, 0x40, 0x01]))), 'bad record length');
  t.is(reasonOf(parseClientHello(Buffer.from([22, 3, 1, 0x41]))), 'bad record length');
  t.is(reasonOf(parseClientHello(Buffer.from([22, 3, 1, 0x00, 0x05, 2]))), 'first handshake message is not a client hello');
  t.is(reasonOf(parseClientHello(records(handshake(helloBody(), 2)))), 'first handshake message is not a client hello');
  t.is(reasonOf(parseClientHello(records(handshake(Buffer.alloc(20))))), 'client hello too short');
  // A record that carries more than the hello: another message coalesced after it.
  const coalesced = records(Buffer.concat([hs, handshake(Buffer.alloc(4), 20)]));
  t.is(reasonOf(parseClientHello(coalesced)), 'trailing data after client hello');
  t.is(reasonOf(parseClientHello(coalesced.subarray(0, 9))), 'trailing data after client hello');
});

test('ClientHello body checks', (t) => {
  const cases: Array<[HelloSpec, string]> = [
    [{ legacyVersion: 0x0203 }, 'unsupported client hello version'],
    [{ sessionId: Buffer.alloc(33) }, 'session_id longer than 32 bytes'],
    [{ cipherSuites: Buffer.from([0x13, 0x01, 0x13]) }, 'bad cipher_suites length'],
    [{ cipherSuites: Buffer.alloc(0) }, 'bad cipher_suites length'],
    [{ compression: Buffer.alloc(0) }, 'empty compression_methods'],
    [{ extensions: [[0, Buffer.alloc(0)]] }, 'malformed server_name'],
    [{ extensions: [alpnExt('h2', '')] }, 'malformed alpn'],
    [{ extensions: [[16, vec16(Buffer.alloc(0))]] }, 'malformed alpn'],
    [{ extensions: [[43, vec8(Buffer.from([3, 4, 3]))]] }, 'malformed supported_versions'],
    [{ extensions: [[43, vec8(Buffer.alloc(0))]] }, 'malformed supported_versions'],
    [{ extensions: [[41, Buffer.alloc(8)], sniExt('a.example')] }, 'pre_shared_key is not the last extension'],
  ];
  for (const [spec, reason] of cases) t.is(reasonOf(parseClientHello(hello(spec))), reason, reason);
  t.is(parseClientHello(hello({ extensions: [sniExt('a.example'), [41, Buffer.alloc(8)]] })).kind, 'hello');

  // Extension block lengths that do not add up with the handshake length.
  const body = helloBody({ extensions: [sniExt('a.example')] });
  const extStart = 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1;
  const extLen = body.readUInt16BE(extStart);
  const tooLong = Buffer.from(body);
  tooLong.writeUInt16BE(extLen + 1, extStart);
  t.is(reasonOf(parseClientHello(records(handshake(tooLong)))), 'truncated extensions');
  const tooShort = Buffer.from(body);
  tooShort.writeUInt16BE(extLen - 1, extStart);
  t.is(parseClientHello(records(handshake(tooShort))).kind, 'invalid');
  t.is(reasonOf(parseClientHello(records(handshake(Buffer.concat([body, Buffer.from([0])]))))), 'trailing bytes after extensions');
  const innerTooLong = Buffer.from(body);
  innerTooLong.writeUInt16BE(body.readUInt16BE(extStart + 4) + 1, extStart + 4); // the SNI extension's own length
  t.is(reasonOf(parseClientHello(records(handshake(innerTooLong)))), 'truncated extension');
});

const KINDS = new Set(['incomplete', 'hello', 'invalid']);

/** Shape checks plus consistency with prefixes: a verdict never changes as bytes are added. */
function checkInvariants(t: { fail(msg: string): void }, buf: Buffer, label: string, rnd: () => number): void {
  let r: HelloResult;
  try {
    r = parseClientHello(buf);
  } catch (err) {
    t.fail(`${label}: threw ${String(err)}`);
    return;
  }
  if (!KINDS.has(r.kind)) t.fail(`${label}: unknown kind ${JSON.stringify(r)}`);
  if (r.kind === 'invalid' && (typeof r.reason !== 'string' || r.reason.length === 0)) t.fail(`${label}: empty reason`);
  if (r.kind === 'hello') {
    if (r.length > buf.length || r.length < 5) t.fail(`${label}: bad length ${r.length}`);
    if (JSON.stringify(parseClientHello(buf.subarray(0, r.length))) !== JSON.stringify(r)) t.fail(`${label}: hello differs when cut at length`);
  }
  const cut = Math.floor(rnd() * (buf.length + 1));
  const p = parseClientHello(buf.subarray(0, cut));
  if (p.kind === 'hello' && JSON.stringify(p) !== JSON.stringify(r)) t.fail(`${label}: prefix ${cut} gave another hello`);
  if (p.kind === 'invalid' && r.kind !== 'invalid') t.fail(`${label}: prefix ${cut} invalid but whole is ${r.kind}`);
}

test('random buffers never throw (seeded)', (t) => {
  const rnd = prng(0x5eed1);
  for (let i = 0; i < 400; i++) {
    const buf = Buffer.alloc(Math.floor(rnd() * 600));
    for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(rnd() * 256);
    // Most runs start like a record holding a ClientHello header, so that the fuzzing reaches
    // the reassembly and body parsers instead of stopping at the first byte.
    if (buf.length >= 9 && i % 4 !== 0) {
      const recordLength = Math.min(16_384, i % 2 === 0 ? buf.length - 5 : 1 + Math.floor(rnd() * (buf.length - 5)));
      buf[0] = 22;
      buf[1] = 3;
      buf[2] = Math.floor(rnd() * 5);
      buf.writeUInt16BE(recordLength, 3);
      buf[5] = 1;
      if (i % 2 === 0 && recordLength >= 4) {
        // A hello that is complete in this one record, with a plausible version and session_id.
        buf.writeUIntBE(recordLength - 4, 6, 3);
        if (buf.length > 45) {
          buf[9] = 3;
          buf[43] = Math.floor(rnd() * 33);
        }
      }
    }
    checkInvariants(t, buf, `random #${i}`, rnd);
  }
  t.pass();
});

test('random mutations and truncations of real hellos never throw (seeded)', (t) => {
  const rnd = prng(0xc0ffee);
  const seeds = [real, records(real.subarray(5), [1, 2]), hello({ extensions: [sniExt('a.example'), alpnExt('h2'), versionsExt(0x0304)] })];
  for (let i = 0; i < 400; i++) {
    const base = seeds[i % seeds.length] ?? real;
    let buf = Buffer.from(base);
    const edits = 1 + Math.floor(rnd() * 4);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(rnd() * buf.length);
      switch (Math.floor(rnd() * 4)) {
        case 0: // overwrite a byte
          buf[at] = Math.floor(rnd() * 256);
          break;
        case 1: // truncate
          buf = buf.subarray(0, at);
          break;
        case 2: // insert a byte
          buf = Buffer.concat([buf.subarray(0, at), u8(Math.floor(rnd() * 256)), buf.subarray(at)]);
          break;
        default: // delete a byte
          buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1)]);
      }
    }
    checkInvariants(t, buf, `mutation #${i}`, rnd);
  }
  t.pass();
});
