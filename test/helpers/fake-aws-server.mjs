// A fake AWS upstream (S3 and Bedrock Runtime) for integration tests, run inside an upstream
// namespace with plain `node`. Like AWS, it checks every request's Signature V4 against the REAL
// keys (test/helpers/sigv4-verify.mjs, built on @smithy/signature-v4), so a request still signed
// with the sandbox's placeholder key fails with the error shape the SDKs know.
//
// argv: --port N --tls CERT KEY --key-id ID --secret SECRET [--token SESSION_TOKEN]
//   It offers h2 and http/1.1 in ALPN, as AWS endpoints do; each request line's `proto` says which.
// S3 (any host containing ".s3"; virtual-hosted, the bucket is the first label):
//   PUT /KEY (plain, or aws-chunked with a trailing checksum), GET /KEY, and multipart:
//   POST /KEY?uploads, PUT /KEY?partNumber=N&uploadId=U, POST /KEY?uploadId=U.
//   GET /echo-auth answers with the Authorization and X-Amz-Security-Token it received: an
//   upstream that reflects the credential, so tests can check the sandbox never sees it.
// Bedrock Runtime (other hosts): POST /model/ID/invoke, /model/ID/invoke-with-response-stream
//   (application/vnd.amazon.eventstream, 3 chunk events), /model/ID/converse.
// Prints {"listening":PORT}, then one JSON line per request:
//   {"request":{"method","path","host","proto","sha","encoding","auth":"ok"|WHY},"status":N}
// The keys themselves are never printed.
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { verifySigV4 } from './sigv4-verify.mjs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const tlsIdx = args.indexOf('--tls');
if (tlsIdx < 0) throw new Error('fake-aws-server: --tls CERT KEY is required');
const keys = { accessKeyId: opt('--key-id'), secretAccessKey: opt('--secret'), ...(opt('--token') ? { sessionToken: opt('--token') } : {}) };
if (!keys.accessKeyId || !keys.secretAccessKey) throw new Error('fake-aws-server: --key-id and --secret are required');
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const objects = new Map();
const uploads = new Map();
let nextUpload = 0;

/** aws-chunked (S3 "multiple chunks"): the payload without its framing, and the trailing fields. */
function unchunk(buf) {
  const parts = [];
  const trailer = {};
  let at = 0;
  for (;;) {
    const nl = buf.indexOf('\r\n', at);
    if (nl < 0) throw new Error('aws-chunked: no chunk header');
    const size = Number.parseInt(buf.toString('latin1', at, nl).split(';')[0], 16);
    at = nl + 2;
    if (size === 0) break;
    parts.push(buf.subarray(at, at + size));
    at += size + 2;
  }
  for (;;) {
    const nl = buf.indexOf('\r\n', at);
    if (nl < 0 || nl === at) break;
    const line = buf.toString('latin1', at, nl);
    const c = line.indexOf(':');
    trailer[line.slice(0, c).toLowerCase()] = line.slice(c + 1);
    at = nl + 2;
  }
  return { data: Buffer.concat(parts), trailer };
}

function xml(res, status, body, extra = {}) {
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function json(res, status, obj, extra = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** One application/vnd.amazon.eventstream message: prelude, its CRC, string headers, payload, message CRC. */
function eventMessage(headers, payload) {
  const hs = [];
  for (const [k, v] of Object.entries(headers)) {
    const name = Buffer.from(k);
    const value = Buffer.from(v);
    const h = Buffer.alloc(1 + name.length + 1 + 2 + value.length);
    h.writeUInt8(name.length, 0);
    name.copy(h, 1);
    h.writeUInt8(7, 1 + name.length);
    h.writeUInt16BE(value.length, 2 + name.length);
    value.copy(h, 4 + name.length);
    hs.push(h);
  }
  const hb = Buffer.concat(hs);
  const total = 12 + hb.length + payload.length + 4;
  const prelude = Buffer.alloc(8);
  prelude.writeUInt32BE(total, 0);
  prelude.writeUInt32BE(hb.length, 4);
  const pc = Buffer.alloc(4);
  pc.writeUInt32BE(crc32(prelude), 0);
  const body = Buffer.concat([prelude, pc, hb, payload]);
  const mc = Buffer.alloc(4);
  mc.writeUInt32BE(crc32(body), 0);
  return Buffer.concat([body, mc]);
}

async function handler(req, res) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = Buffer.concat(chunks);
  const url = new URL(req.url ?? '/', 'https://fake');
  const q = (req.url ?? '').includes('?') ? (req.url ?? '').slice((req.url ?? '').indexOf('?') + 1) : '';
  const host = req.headers.host ?? req.headers[':authority'] ?? '';
  const s3 = host.includes('.s3');
  const wirePath = (req.url ?? '/').split('?')[0];
  const v = await verifySigV4({ method: req.method, path: wirePath, query: q, headers: req.headers, body }, keys);
  const entry = {
    method: req.method,
    path: url.pathname,
    host,
    proto: req.httpVersion,
    sha: req.headers['x-amz-content-sha256'],
    encoding: req.headers['content-encoding'],
    auth: v.ok ? 'ok' : v.why,
  };
  const log = (status) => say({ request: entry, status });
  if (!v.ok) {
    if (s3)
      xml(
        res,
        403,
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error>',
      );
    else json(res, 403, { message: 'The security token included in the request is invalid.' }, { 'x-amzn-errortype': 'UnrecognizedClientException:' });
    log(403);
    return;
  }
  if (s3) {
    const key = url.pathname;
    let data = body;
    if (String(req.headers['content-encoding'] ?? '').includes('aws-chunked')) {
      const u = unchunk(body);
      data = u.data;
      if (Number(req.headers['x-amz-decoded-content-length']) !== data.length) {
        xml(res, 400, '<Error><Code>IncompleteBody</Code></Error>');
        log(400);
        return;
      }
      entry.trailer = Object.keys(u.trailer);
    }
    if (req.method === 'GET' && key === '/echo-auth') {
      const text = `authorization=${req.headers.authorization}\ntoken=${req.headers['x-amz-security-token'] ?? ''}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      log(200);
      return;
    }
    if (req.method === 'POST' && url.searchParams.has('uploads')) {
      const id = `upload-${++nextUpload}`;
      uploads.set(id, new Map());
      xml(
        res,
        200,
        `<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>${key.slice(1)}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`,
      );
      log(200);
      return;
    }
    if (req.method === 'PUT' && url.searchParams.has('uploadId')) {
      const parts = uploads.get(url.searchParams.get('uploadId'));
      parts?.set(Number(url.searchParams.get('partNumber')), data);
      res.writeHead(200, { etag: `"part-${url.searchParams.get('partNumber')}"`, 'content-length': 0 });
      res.end();
      log(200);
      return;
    }
    if (req.method === 'POST' && url.searchParams.has('uploadId')) {
      const parts = uploads.get(url.searchParams.get('uploadId')) ?? new Map();
      objects.set(key, Buffer.concat([...parts.entries()].sort((a, b) => a[0] - b[0]).map(([, d]) => d)));
      xml(
        res,
        200,
        `<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>${key.slice(1)}</Key><ETag>"done"</ETag></CompleteMultipartUploadResult>`,
      );
      log(200);
      return;
    }
    if (req.method === 'PUT') {
      objects.set(key, data);
      res.writeHead(200, { etag: '"obj"', 'content-length': 0 });
      res.end();
      log(200);
      return;
    }
    if (req.method === 'GET' && objects.has(key)) {
      const d = objects.get(key);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': d.length, etag: '"obj"' });
      res.end(d);
      log(200);
      return;
    }
    xml(res, 404, '<Error><Code>NoSuchKey</Code></Error>');
    log(404);
    return;
  }
  const m = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream|converse)$/.exec(url.pathname);
  if (req.method !== 'POST' || !m) {
    json(res, 404, { message: 'not found' });
    log(404);
    return;
  }
  if (m[2] === 'invoke') {
    const prompt = JSON.parse(body.toString('utf8') || '{}').prompt ?? '';
    json(res, 200, { completion: `echo: ${prompt}` });
  } else if (m[2] === 'converse') {
    json(res, 200, {
      output: { message: { role: 'assistant', content: [{ text: 'converse reply' }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 3, outputTokens: 2, totalTokens: 5 },
      metrics: { latencyMs: 7 },
    });
  } else {
    res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-bedrock-content-type': 'application/json' });
    for (const word of ['alpha', 'beta', 'gamma']) {
      const inner = Buffer.from(JSON.stringify({ text: word })).toString('base64');
      res.write(
        eventMessage({ ':event-type': 'chunk', ':content-type': 'application/json', ':message-type': 'event' }, Buffer.from(JSON.stringify({ bytes: inner }))),
      );
    }
    res.end();
  }
  log(200);
}

const server = http2.createSecureServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), allowHTTP1: true }, (req, res) => {
  handler(req, res).catch((err) => {
    say({ error: String(err?.message ?? err) });
    res.destroy();
  });
});
server.listen(Number(opt('--port') ?? 0), '0.0.0.0', () => say({ listening: server.address().port }));
