// A fake upstream DNS resolver for integration tests, run inside an upstream namespace with plain
// `node` (needs `npm run build`: it uses sandgate's own codec from dist/). It RECORDS every query
// it receives, before anything else, as one JSON line {"query": name, "type": "A", "proto": "udp"},
// so a test can prove which names ever left sandgate's host.
// argv: --port N [--ttl S] [--answer NAME=IP[,IP...]]... [--cname ALIAS=TARGET]...
//   A for a listed name: its addresses; a CNAME alias: CNAME + the target's A records (a chain a
//   recursive resolver would return); any other type of a known name: empty NOERROR; else NXDOMAIN.
// Prints {"listening":PORT} once both UDP and TCP are bound.
import dgram from 'node:dgram';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const wire = await import(join(dirname(fileURLToPath(import.meta.url)), '../../dist/dns/wire.js'));
const { parseQuery, buildResponse, buildError, TcpFrameReader, encodeTcpFrame, RCODE, QTYPE } = wire;

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] ?? 53);
const ttl = args.includes('--ttl') ? Number(args[args.indexOf('--ttl') + 1]) : 60;
const answers = new Map();
const cnames = new Map();
args.forEach((a, i) => {
  const v = args[i + 1] ?? '';
  const [k, rest] = v.split('=');
  if (a === '--answer') answers.set(k.toLowerCase(), rest.split(','));
  if (a === '--cname') cnames.set(k.toLowerCase(), rest.toLowerCase());
});
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const typeName = (n) => Object.entries(QTYPE).find(([, v]) => v === n)?.[0] ?? `TYPE${n}`;

function encodeName(name) {
  const parts = [];
  for (const l of name.split('.')) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** CNAME alias -> target, then the target's A records (RFC 1034 §3.6.2), built by hand. */
function cnameResponse(q, target) {
  const addrs = answers.get(target) ?? [];
  const qname = encodeName(q.question.nameAsSent);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  header.writeUInt16BE(0x8000 | 0x0080 | (q.rd ? 0x0100 : 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(1 + addrs.length, 6);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(q.question.type, 0);
  tail.writeUInt16BE(1, 2);
  const question = Buffer.concat([qname, tail]);
  const tname = encodeName(target);
  const cname = Buffer.alloc(12);
  cname.writeUInt16BE(0xc00c, 0);
  cname.writeUInt16BE(QTYPE.CNAME, 2);
  cname.writeUInt16BE(1, 4);
  cname.writeUInt32BE(ttl, 6);
  cname.writeUInt16BE(tname.length, 10);
  const targetOffset = 12 + question.length + 12; // where the target name starts, for pointers
  const records = addrs.map((ip) => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc000 | targetOffset, 0);
    rr.writeUInt16BE(QTYPE.A, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(4, 10);
    ip.split('.').forEach((o, i) => {
      rr[12 + i] = Number(o);
    });
    return rr;
  });
  return Buffer.concat([header, question, cname, tname, ...records]);
}

function answer(msg, proto) {
  const p = parseQuery(msg);
  if (!p.ok) {
    say({ query: null, reason: p.reason, proto });
    return buildError(msg, p.rcode, p.id);
  }
  const q = p.query;
  const name = q.question.name;
  say({ query: name, type: typeName(q.question.type), proto });
  const opts = proto === 'tcp' ? { maxSize: 0xffff } : {};
  if (q.question.type === QTYPE.A && cnames.has(name)) return cnameResponse(q, cnames.get(name));
  if (answers.has(name) || cnames.has(name)) {
    const list = q.question.type === QTYPE.A ? answers.get(name).map((address) => ({ type: QTYPE.A, ttl, address })) : [];
    return buildResponse(q, RCODE.NOERROR, list, opts);
  }
  return buildResponse(q, RCODE.NXDOMAIN, [], opts);
}

const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => {
  const reply = answer(m, 'udp');
  if (reply) udp.send(reply, r.port, r.address);
});
const tcp = net.createServer((c) => {
  const reader = new TcpFrameReader();
  c.on('error', () => {});
  c.on('data', (d) => {
    try {
      for (const f of reader.push(d)) {
        const reply = answer(f, 'tcp');
        if (reply) c.write(encodeTcpFrame(reply));
      }
    } catch {
      c.destroy();
    }
  });
});
udp.bind(port, '0.0.0.0', () => tcp.listen(port, '0.0.0.0', () => say({ listening: port })));
