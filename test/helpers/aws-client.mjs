// A sandbox-side client for integration tests: the official AWS SDK v3 (@aws-sdk/client-s3 and
// @aws-sdk/client-bedrock-runtime, from the repo's node_modules), run with plain `node` inside a
// sandbox namespace, configured with sandgate's placeholder keys (never real ones). It trusts
// whatever CA NODE_EXTRA_CA_CERTS names.
//
// argv: --mode s3|bedrock|presign --region R --key-id ID --secret S [--http2]
//   presign: prints presigned PutObject and GetObject URLs for sgtest-bucket/presigned.txt in
//   `results` (made with the placeholder keys; nothing is sent).
//   The Bedrock Runtime client defaults to HTTP/2, which sandgate's interception does not speak
//   (ALPN offers http/1.1 only): it is given the SDK's HTTP/1.1 handler unless --http2.
// Prints one JSON line: {ok, results, error?, seen}
//   seen: every byte the SDK's sockets received (decrypted), so a test can check that nothing the
//         sandbox received contains a secret.
import https from 'node:https';
import { Readable } from 'node:stream';
import {
  S3Client,
  PutObjectCommand,
  GetObjectCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  CompleteMultipartUploadCommand,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { BedrockRuntimeClient, InvokeModelCommand, InvokeModelWithResponseStreamCommand, ConverseCommand } from '@aws-sdk/client-bedrock-runtime';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const mode = opt('--mode');
const region = opt('--region') ?? 'us-east-1';
const credentials = { accessKeyId: opt('--key-id'), secretAccessKey: opt('--secret') };

// A tap on every socket the SDK's https requests use: the decrypted bytes it received.
const seen = [];
const tapped = new WeakSet();
const request = https.request;
https.request = (...a) => {
  const req = request(...a);
  req.on('socket', (s) => {
    if (tapped.has(s)) return;
    tapped.add(s);
    s.on('data', (d) => seen.push(Buffer.from(d).toString('latin1')));
  });
  return req;
};

const results = {};
async function s3() {
  const c = new S3Client({ region, credentials, maxAttempts: 1 });
  const Bucket = 'sgtest-bucket';
  await c.send(new PutObjectCommand({ Bucket, Key: 'small.txt', Body: 'hello from the sandbox' }));
  // A stream of known length: the SDK sends it aws-chunked with a trailing checksum.
  const streamed = Buffer.alloc(100_000, 'x');
  await c.send(
    new PutObjectCommand({
      Bucket,
      Key: 'streamed.bin',
      Body: Readable.from([streamed.subarray(0, 60_000), streamed.subarray(60_000)]),
      ContentLength: streamed.length,
    }),
  );
  const up = await c.send(new CreateMultipartUploadCommand({ Bucket, Key: 'multi.bin' }));
  const p1 = Buffer.alloc(5 * 1024 * 1024, 'a');
  const p2 = Buffer.from('tail part');
  const e1 = await c.send(new UploadPartCommand({ Bucket, Key: 'multi.bin', UploadId: up.UploadId, PartNumber: 1, Body: p1 }));
  const e2 = await c.send(new UploadPartCommand({ Bucket, Key: 'multi.bin', UploadId: up.UploadId, PartNumber: 2, Body: p2 }));
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket,
      Key: 'multi.bin',
      UploadId: up.UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: e1.ETag },
          { PartNumber: 2, ETag: e2.ETag },
        ],
      },
    }),
  );
  const get = async (Key) => Buffer.from(await (await c.send(new GetObjectCommand({ Bucket, Key }))).Body.transformToByteArray());
  results.small = (await get('small.txt')).toString();
  results.streamedOk = (await get('streamed.bin')).equals(streamed);
  const multi = await get('multi.bin');
  results.multiOk = multi.length === p1.length + p2.length && multi.subarray(p1.length).equals(p2);
  results.echo = (await get('echo-auth')).toString();
}

async function presign() {
  const c = new S3Client({ region, credentials });
  const Bucket = 'sgtest-bucket';
  results.put = await getSignedUrl(c, new PutObjectCommand({ Bucket, Key: 'presigned.txt' }), { expiresIn: 600 });
  results.get = await getSignedUrl(c, new GetObjectCommand({ Bucket, Key: 'presigned.txt' }), { expiresIn: 600 });
}

async function bedrock() {
  const c = new BedrockRuntimeClient({ region, credentials, maxAttempts: 1, ...(args.includes('--http2') ? {} : { requestHandler: new NodeHttpHandler() }) });
  const modelId = 'anthropic.claude-3-haiku-20240307-v1:0';
  const inv = await c.send(new InvokeModelCommand({ modelId, contentType: 'application/json', body: JSON.stringify({ prompt: 'ping' }) }));
  results.invoke = JSON.parse(Buffer.from(inv.body).toString()).completion;
  const st = await c.send(new InvokeModelWithResponseStreamCommand({ modelId, contentType: 'application/json', body: JSON.stringify({ prompt: 'stream' }) }));
  results.stream = [];
  for await (const ev of st.body) if (ev.chunk?.bytes) results.stream.push(JSON.parse(Buffer.from(ev.chunk.bytes).toString()).text);
  const conv = await c.send(new ConverseCommand({ modelId, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }));
  results.converse = conv.output?.message?.content?.[0]?.text;
}

try {
  if (mode === 's3') await s3();
  else if (mode === 'bedrock') await bedrock();
  else if (mode === 'presign') await presign();
  else throw new Error(`unknown --mode ${mode}`);
  console.log(JSON.stringify({ ok: true, results, seen: seen.join('') }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, results, error: `${err?.name}: ${err?.message}`, status: err?.$metadata?.httpStatusCode, seen: seen.join('') }));
}
