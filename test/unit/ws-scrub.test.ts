import test from 'ava';
import { maskFor } from '../../src/http/scrub.js';
import { WsFrameScrubber } from '../../src/http/ws-scrub.js';

const SECRET = 'sk-real-0123456789abcdef';
const MASK = maskFor(SECRET.length);

/** An unmasked server frame (RFC 6455 §5.2). */
function frame(payload: string | Buffer, opts: { fin?: boolean; opcode?: number; masked?: boolean } = {}): Buffer {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'latin1');
  const b0 = ((opts.fin ?? true) ? 0x80 : 0) | (opts.opcode ?? 1);
  const m = opts.masked ? 0x80 : 0;
  let head: Buffer;
  if (p.length < 126) head = Buffer.from([b0, m | p.length]);
  else if (p.length < 65536) {
    head = Buffer.alloc(4);
    head[0] = b0;
    head[1] = m | 126;
    head.writeUInt16BE(p.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = b0;
    head[1] = m | 127;
    head.writeBigUInt64BE(BigInt(p.length), 2);
  }
  return Buffer.concat([head, opts.masked ? Buffer.alloc(4) : Buffer.alloc(0), p]);
}

function run(input: Buffer, pieces: number[] = [input.length]): Buffer {
  const s = new WsFrameScrubber([SECRET, `Bearer ${SECRET}`]);
  const out: Buffer[] = [];
  let at = 0;
  for (const n of pieces) {
    out.push(s.push(input.subarray(at, at + n)));
    at += n;
  }
  if (at < input.length) out.push(s.push(input.subarray(at)));
  out.push(s.end());
  return Buffer.concat(out);
}

const half = SECRET.length / 2;
const split = Buffer.concat([
  frame(`{"authorization":"Bearer ${SECRET.slice(0, half)}`, { fin: false }),
  frame(`${SECRET.slice(half)}"}`, { fin: true, opcode: 0 }),
]);

test('a secret split across two fragments of one message is masked; frame headers and lengths unchanged', (t) => {
  const p1 = `{"authorization":"Bearer ${SECRET.slice(0, half)}`;
  const p2 = `${SECRET.slice(half)}"}`;
  const masked = (p1 + p2).replace(`Bearer ${SECRET}`, maskFor(`Bearer ${SECRET}`.length));
  const expected = Buffer.concat([frame(masked.slice(0, p1.length), { fin: false }), frame(masked.slice(p1.length), { opcode: 0 })]);
  t.is(run(split).toString('latin1'), expected.toString('latin1'));
});

test('the same result fed one byte at a time', (t) => {
  t.deepEqual(run(split, Array(split.length).fill(1)), run(split));
});

test('a ping between the fragments does not hide the split secret', (t) => {
  const input = Buffer.concat([
    frame(`x ${SECRET.slice(0, 5)}`, { fin: false }),
    frame('between', { opcode: 9 }),
    frame(`${SECRET.slice(5)} y`, { opcode: 0 }),
  ]);
  const out = run(input).toString('latin1');
  t.is(out.length, input.length);
  t.false(out.includes(SECRET.slice(0, 5)), 'first half masked');
  t.false(out.includes(SECRET.slice(5)), 'second half masked');
  t.true(out.includes(frame('between', { opcode: 9 }).toString('latin1')), 'the ping is relayed whole, in its place');
  t.deepEqual(run(input, Array(input.length).fill(1)), run(input), 'byte by byte alike');
});

test('a whole secret in one frame, and in a 16-bit and a 64-bit length frame', (t) => {
  for (const pad of [10, 300, 70000]) {
    const input = frame(Buffer.from(`${'a'.repeat(pad)}${SECRET}b`, 'latin1'), { opcode: 2 });
    const out = run(input, [7, 100, 5000]);
    t.is(out.length, input.length);
    t.true(out.toString('latin1').includes(`${'a'.repeat(pad)}${MASK}b`), `pad ${pad}`);
  }
});

test('a message ending in the first letters of the secret is released at its end, not held for the next', (t) => {
  const s = new WsFrameScrubber([SECRET]);
  const msg = frame(`yes ${SECRET.slice(0, 4)}`);
  t.deepEqual(s.push(msg), msg, 'all of it, now');
});

test('a fragment ending in the first letters of the secret is held until the message goes on', (t) => {
  const s = new WsFrameScrubber([SECRET]);
  const first = frame(`a ${SECRET.slice(0, 4)}`, { fin: false });
  const got = s.push(first);
  t.is(got.length, first.length - 4, 'the possible start of the secret waits');
  const rest = s.push(frame(`${SECRET.slice(4)}`, { opcode: 0 }));
  t.false(
    Buffer.concat([got, rest])
      .toString('latin1')
      .includes(SECRET.slice(0, 4) + SECRET.slice(4, 6)),
  );
  t.is(got.length + rest.length, first.length + 2 + SECRET.length - 4);
});

test('a ping carrying the secret is masked on its own', (t) => {
  const input = frame(`p ${SECRET}`, { opcode: 9 });
  t.is(run(input).toString('latin1'), frame(`p ${MASK}`, { opcode: 9 }).toString('latin1'));
});

test('a control frame longer than 125 bytes fails the stream', (t) => {
  const s = new WsFrameScrubber([SECRET]);
  t.throws(() => s.push(frame('x'.repeat(126), { opcode: 9 })), { message: /125/ });
});

test('a masked frame from the server fails the stream', (t) => {
  const s = new WsFrameScrubber([SECRET]);
  t.throws(() => s.push(frame(SECRET, { masked: true })), { message: /masked/ });
});
