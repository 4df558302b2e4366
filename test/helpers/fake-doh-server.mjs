// A fake DNS-over-HTTPS resolver (RFC 8484) for the browser test, run inside an upstream namespace
// with plain `node` (needs `npm run build`: it parses queries with sandgate's own codec from dist/).
// It hands out what sandgate's own responder never does: an HTTPS record (RFC 9460) with an "ech"
// parameter, so a browser that asks it offers real ECH (draft-ietf-tls-esni) to the public name.
// argv: --port N --tls CERT KEY [--answer NAME=IP]... [--ech NAME=PUBLIC_NAME]...
//   A for a listed name: its address; HTTPS for an --ech name: priority 1, target ".", ech = an
//   ECHConfigList (version 0xfe0d, X25519/HKDF-SHA256/AES-128-GCM, a fresh key nobody holds the
//   private half of, public_name PUBLIC_NAME); any other question about a known name: empty
//   NOERROR; else NXDOMAIN. GET ?dns=BASE64URL and POST application/dns-message.
// Prints {"listening":PORT}; then one {"query": name, "type": N} line per question.
import https from 'node:https';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const { parseQuery } = await import(join(dirname(fileURLToPath(import.meta.url)), '../../dist/dns/wire.js'));

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const pairs = (k) => new Map(args.flatMap((a, i) => (a === k ? [(args[i + 1] ?? '').toLowerCase().split('=')] : [])));
const answers = pairs('--answer');
const ech = pairs('--ech');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const u8 = (n) => Buffer.from([n]);
const u16 = (n) => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n) => Buffer.from([n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b) => Buffer.concat([u8(b.length), b]);
const vec16 = (b) => Buffer.concat([u16(b.length), b]);

/** ECHConfigList with one ECHConfig (draft-ietf-tls-esni §4). */
function echConfigList(publicName) {
  const pub = Buffer.from(generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }).x, 'base64url');
  const contents = Buffer.concat([
    u8(7),
    u16(0x0020),
    vec16(pub), // HpkeKeyConfig: config_id, kem_id DHKEM(X25519, HKDF-SHA256), public_key
    vec16(Buffer.concat([u16(0x0001), u16(0x0001)])), // cipher_suites: HKDF-SHA256, AES-128-GCM
    u8(0),
    vec8(Buffer.from(publicName)),
    vec16(Buffer.alloc(0)), // maximum_name_length, public_name, extensions
  ]);
  return vec16(Buffer.concat([u16(0xfe0d), vec16(contents)]));
}
const echLists = new Map([...ech].map(([name, pub]) => [name, echConfigList(pub)]));

function encodeName(name) {
  return Buffer.concat([
    ...name
      .split('.')
      .filter((l) => l)
      .map((l) => vec8(Buffer.from(l, 'latin1'))),
    u8(0),
  ]);
}

function respond(msg) {
  const r = parseQuery(msg);
  if (!r.ok) return undefined;
  const q = r.query;
  const name = q.question.name;
  say({ query: name, type: q.question.type });
  const rrs = [];
  if (q.question.type === 1 && answers.has(name)) rrs.push([1, Buffer.from(answers.get(name).split('.').map(Number))]);
  // RFC 9460 §2.2: SvcPriority, TargetName "." (the owner itself), SvcParams (key 5 = ech).
  if (q.question.type === 65 && echLists.has(name)) rrs.push([65, Buffer.concat([u16(1), u8(0), u16(5), vec16(echLists.get(name))])]);
  const known = answers.has(name) || echLists.has(name);
  const header = Buffer.concat([u16(q.id), u16(0x8180 | (known ? 0 : 3)), u16(1), u16(rrs.length), u16(0), u16(0)]);
  const question = Buffer.concat([encodeName(name), u16(q.question.type), u16(1)]);
  const records = rrs.map(([type, rdata]) => Buffer.concat([u16(0xc00c), u16(type), u16(1), u32(60), vec16(rdata)]));
  return Buffer.concat([header, question, ...records]);
}

const server = https.createServer({ cert: readFileSync(args[args.indexOf('--tls') + 1]), key: readFileSync(args[args.indexOf('--tls') + 2]) }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = new URL(req.url ?? '/', 'https://doh');
    const dns = url.searchParams.get('dns');
    const msg = req.method === 'POST' ? Buffer.concat(chunks) : dns ? Buffer.from(dns, 'base64url') : Buffer.alloc(0);
    const out = respond(msg);
    if (!out) {
      res.writeHead(400).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/dns-message', 'content-length': out.length, 'cache-control': 'max-age=60' }).end(out);
  });
});
server.listen(Number(opt('--port') ?? 0), '0.0.0.0', () => say({ listening: server.address().port }));
