import test from 'ava';
import { Readable } from 'node:stream';
import { Scrubber, maskFor, scrubStream, scrubString } from '../../src/http/scrub.js';

const SECRET = 'sk-real-0123456789abcdef';
const BASIC = Buffer.from(`user:${SECRET}`).toString('base64');
const NEEDLES = [`Bearer ${SECRET}`, SECRET, BASIC];

/** Feed `parts` through a Scrubber; returns each push's output and the final flush. */
function run(needles: readonly string[], parts: readonly Buffer[]): { outs: Buffer[]; all: Buffer } {
  const s = new Scrubber(needles);
  const outs = parts.map((p) => Buffer.from(s.push(p)));
  outs.push(Buffer.from(s.end()));
  return { outs, all: Buffer.concat(outs) };
}

const expected = (text: string): string => {
  let out = text;
  for (const n of [...NEEDLES].sort((a, b) => b.length - a.length)) out = out.split(n).join(maskFor(n.length));
  return out;
};

test("the mask has the needle's length", (t) => {
  for (const n of [1, 5, 9, 10, 11, 40]) t.is(maskFor(n).length, n);
  t.is(maskFor(12), '[redacted]**');
  t.is(maskFor(4), '****');
});

test('every split of a text into two chunks gives the same scrubbed bytes, with nothing leaking', (t) => {
  const text = `{"h":"Bearer ${SECRET}","x":"${SECRET}${SECRET}","b":"Basic ${BASIC}","tail":"sk-real-012"}`;
  const want = expected(text);
  t.false(want.includes(SECRET));
  t.false(want.includes(BASIC));
  t.is(want.length, text.length, 'same length: Content-Length stays valid');
  const buf = Buffer.from(text);
  for (let i = 0; i <= buf.length; i++) {
    const { all } = run(NEEDLES, [buf.subarray(0, i), buf.subarray(i)]);
    t.is(all.toString(), want, `split at ${i}`);
  }
});

test('every split into three chunks, including one-byte chunks', (t) => {
  const text = `a${SECRET}b${BASIC}c`;
  const want = expected(text);
  const buf = Buffer.from(text);
  let checked = 0;
  for (let i = 0; i <= buf.length; i++) {
    for (let j = i; j <= buf.length; j++) {
      const { outs, all } = run(NEEDLES, [buf.subarray(0, i), buf.subarray(i, j), buf.subarray(j)]);
      t.is(all.toString(), want);
      // No intermediate output ever contains a prefix of the secret long enough to matter: the
      // concatenation of what was emitted so far never holds the whole secret.
      let sofar = '';
      for (const o of outs) {
        sofar += o.toString();
        if (sofar.includes(SECRET)) t.fail(`leaked at ${i},${j}`);
      }
      checked++;
    }
  }
  t.true(checked > 1000);
});

test('byte-at-a-time input is scrubbed too', (t) => {
  const text = `xx${SECRET}yy Bearer ${SECRET} zz`;
  const { all } = run(
    NEEDLES,
    [...Buffer.from(text)].map((b) => Buffer.from([b])),
  );
  t.is(all.toString(), expected(text));
});

test('nothing is held back unless the tail could still become a needle (SSE events flow at once)', (t) => {
  const s = new Scrubber(NEEDLES);
  const ev = Buffer.from('data: {"delta":"hello"}\n\n');
  t.is(s.push(ev).length, ev.length);
  // A tail that is a prefix of the secret waits for the next chunk...
  const partial = Buffer.from('data: sk-real-01');
  t.is(s.push(partial).toString(), 'data: ');
  // ...and is released once it can no longer match.
  t.is(s.push(Buffer.from('X\n\n')).toString(), 'sk-real-01X\n\n');
  t.is(s.end().length, 0);
});

test('a held tail is flushed at the end of the stream', (t) => {
  const s = new Scrubber([SECRET]);
  t.is(s.push(Buffer.from('abc sk-real')).toString(), 'abc ');
  t.is(s.end().toString(), 'sk-real');
});

test("the caller's buffer is not modified", (t) => {
  const s = new Scrubber([SECRET]);
  const input = Buffer.from(`x${SECRET}y`);
  const copy = Buffer.from(input);
  const out = s.push(input);
  t.deepEqual(input, copy);
  t.not(out.toString(), copy.toString());
});

test('no needles: chunks pass through untouched and unheld', (t) => {
  const s = new Scrubber([]);
  const b = Buffer.from('anything');
  t.is(s.push(b), b);
});

test('scrubString masks every occurrence', (t) => {
  t.is(scrubString(`a ${SECRET} b ${SECRET}`, [SECRET]), `a ${maskFor(SECRET.length)} b ${maskFor(SECRET.length)}`);
  t.is(scrubString('clean', [SECRET]), 'clean');
});

test('scrubStream as a Transform', async (t) => {
  const parts = [`{"a":"${SECRET.slice(0, 7)}`, `${SECRET.slice(7)}"}`].map((x) => Buffer.from(x));
  const chunks: Buffer[] = [];
  for await (const c of Readable.from(parts).pipe(scrubStream([SECRET]))) chunks.push(c as Buffer);
  t.is(Buffer.concat(chunks).toString(), `{"a":"${maskFor(SECRET.length)}"}`);
});

test('only needles that contain no other are searched for: whole texts get the longest-first masking; any split leaks nothing and keeps every other byte (3,000 random texts)', (t) => {
  // Longer needles that contain a shorter one once, twice, and at the end; plus an independent one.
  const s = 'tok-A1b2C3d4';
  const needles = [s, `Bearer ${s}`, `${s}:${s}`, `key=${s}`, 'ZXhhbXBsZS1iYXNlNjQ='];
  const reference = (text: string): string => {
    let out = text;
    for (const n of [...needles].sort((a, b) => b.length - a.length)) out = out.split(n).join(maskFor(n.length));
    return out;
  };
  /** Positions of `text` inside some needle occurrence (the only bytes a scrubber may change). */
  const secretAt = (text: string): boolean[] => {
    const covered = new Array<boolean>(text.length).fill(false);
    for (const n of needles) for (let at = text.indexOf(n); at >= 0; at = text.indexOf(n, at + 1)) covered.fill(true, at, at + n.length);
    return covered;
  };
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const pieces = [...needles, 'Bearer ', 'tok-', 'tok-A1b2', ':', 'key=', 'ZXhh', 'x', ' ', '\n', '"'];
  for (let i = 0; i < 3000; i++) {
    let text = '';
    for (let k = rnd(12); k >= 0; k--) text += pieces[rnd(pieces.length)];
    const buf = Buffer.from(text);
    const whole = run(needles, [buf]).all.toString();
    if (whole !== reference(text)) {
      t.fail(`whole ${JSON.stringify(text)}: got ${JSON.stringify(whole)}`);
      return;
    }
    const parts: Buffer[] = [];
    let at = 0;
    while (at < buf.length) {
      const n = 1 + rnd(9);
      parts.push(buf.subarray(at, at + n));
      at += n;
    }
    const got = run(needles, parts).all.toString();
    const covered = secretAt(text);
    const leak = needles.find((n) => got.includes(n));
    const changed = [...text].findIndex((ch, j) => !covered[j] && got[j] !== ch);
    if (got.length !== text.length || leak !== undefined || changed >= 0) {
      t.fail(`text ${JSON.stringify(text)} split ${parts.map((p) => p.length).join(',')}: got ${JSON.stringify(got)}`);
      return;
    }
  }
  t.pass();
});

test('a longer needle split by a chunk boundary around a shorter one it contains is masked whole once the rest arrives, or at the end', (t) => {
  const long = 'c2stbGl2ZS0wMTIzNDU2Nzg5YQ==';
  const short = long.slice(0, 25);
  for (const cut of [25, 26, 27]) {
    const s = new Scrubber([long, short]);
    const text = `x ${long} y`;
    const out = Buffer.concat([s.push(Buffer.from(text.slice(0, cut + 2))), s.push(Buffer.from(text.slice(cut + 2))), s.end()]).toString();
    t.is(out, `x ${maskFor(long.length)} y`, `cut at ${cut}`);
  }
  const s = new Scrubber([long, short]);
  const out = Buffer.concat([s.push(Buffer.from(`x ${long.slice(0, 26)}`)), s.end()]).toString();
  t.is(out, `x ${maskFor(25)}${long.slice(25, 26)}`, 'the stream ends before the longer one completes: the shorter one is masked');
});
