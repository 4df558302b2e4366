import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { OutBuffer } from '../../src/http/out-buffer.js';

/** A connected pair over loopback: `a` is written through an OutBuffer, `b` collects what arrives. */
async function pair(): Promise<{ a: net.Socket; b: net.Socket; received: () => Buffer; close: () => void }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const a = net.connect(port, '127.0.0.1');
  const [b] = (await once(server, 'connection')) as [net.Socket];
  await once(a, 'connect');
  const chunks: Buffer[] = [];
  b.on('data', (c: Buffer) => chunks.push(c));
  return {
    a,
    b,
    received: () => Buffer.concat(chunks),
    close: () => {
      a.destroy();
      b.destroy();
      server.close();
    },
  };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}

test('pieces written in one turn arrive in order, byte for byte, as one write; latin1 strings keep every byte', async (t) => {
  const p = await pair();
  const writes: number[] = [];
  const orig = p.a.write.bind(p.a);
  (p.a as unknown as { write: (...a: unknown[]) => boolean }).write = (...args: unknown[]) => {
    writes.push((args[0] as Buffer).length);
    return (orig as (...a: unknown[]) => boolean)(...args);
  };
  const out = new OutBuffer(p.a);
  const obsText = String.fromCharCode(0xe9, 0xff, 0x80);
  out.write(`HTTP/1.1 200 OK\r\nX: ${obsText}\r\n\r\n`);
  out.write(Buffer.from('body-1;'));
  out.write('{"é":1}', 'utf8');
  out.flush();
  const expected = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nX: ${obsText}\r\n\r\n`, 'latin1'), Buffer.from('body-1;'), Buffer.from('{"é":1}', 'utf8')]);
  await until(() => p.received().length >= expected.length);
  t.deepEqual(p.received(), expected);
  t.deepEqual(writes, [expected.length]);
  p.close();
});

test('a chunk is copied at write(): the caller may overwrite its buffer at once (the shared read buffer is)', async (t) => {
  const p = await pair();
  const out = new OutBuffer(p.a);
  const reused = Buffer.alloc(16);
  const sent: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    reused.fill(65 + (i % 26));
    sent.push(Buffer.from(reused));
    out.write(reused);
  }
  out.flush();
  const expected = Buffer.concat(sent);
  await until(() => p.received().length >= expected.length);
  t.deepEqual(p.received(), expected);
  p.close();
});

test('more than a slab, and writes while the peer does not read: every byte arrives, in order', async (t) => {
  const p = await pair();
  p.b.pause();
  const out = new OutBuffer(p.a);
  const sent: Buffer[] = [];
  for (let i = 0; i < 400; i++) {
    const c = Buffer.alloc(7000, i % 251);
    sent.push(c);
    out.write(c);
    if (i % 9 === 0) out.flush();
  }
  out.write(Buffer.alloc(200_000, 7)); // larger than a slab
  sent.push(Buffer.alloc(200_000, 7));
  out.flush();
  const expected = Buffer.concat(sent);
  p.b.resume();
  await until(() => p.received().length >= expected.length);
  t.is(p.received().length, expected.length);
  t.true(p.received().equals(expected));
  p.close();
});
