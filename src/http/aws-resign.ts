/**
 * An AWS request re-signed with the real keys (docs/credentials-aws.md). The sandbox signs with
 * the placeholder key id; here its signature is checked to be that (any other key id is refused:
 * a real key the agent found must not ride through), dropped with X-Amz-Date and
 * X-Amz-Security-Token, and the request signed again (AWS SigV4, src/creds/sigv4.ts):
 *
 * - x-amz-content-sha256 absent or a hex hash: the body is buffered (bounded), hashed and signed;
 * - UNSIGNED-PAYLOAD and STREAMING-UNSIGNED-PAYLOAD-TRAILER: the body streams as is;
 * - STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER): the body streams, each chunk re-signed
 *   (src/http/aws-chunked.ts);
 * - a presigned request (X-Amz-Credential in the query): the query is signed again, the body streams.
 */
import type { AwsKeys } from '../creds/aws.js';
import { scopeFromHost } from '../creds/aws.js';
import type { Credential } from '../creds/credential.js';
import {
  ALGORITHM,
  amzDate,
  credentialScope,
  EMPTY_SHA256,
  parseAuthorization,
  parseCredential,
  parseQuery,
  sha256Hex,
  sign,
  signable,
  signingKey,
  STREAMING_SIGNED,
  STREAMING_SIGNED_TRAILER,
  STREAMING_UNSIGNED_TRAILER,
  UNSIGNED_PAYLOAD,
  uriEncode,
} from '../creds/sigv4.js';
import { AwsChunkedResigner } from './aws-chunked.js';
import { renderHead, upstreamFields, type RequestFields } from './request-head.js';
import type { Built, Planned, Rewrite } from './rewrite.js';

const HEX64 = /^[0-9a-fA-F]{64}$/;
const PRESIGN_PARAMS = new Set(['x-amz-algorithm', 'x-amz-credential', 'x-amz-date', 'x-amz-signedheaders', 'x-amz-signature', 'x-amz-security-token']);
const DROP_LENGTH: ReadonlySet<string> = new Set(['content-length']);
const DROP_NONE: ReadonlySet<string> = new Set();

type Payload = 'buffer' | 'unsigned' | 'streaming-unsigned-trailer' | 'resign' | 'resign-trailer';

function first(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === name) return raw[i + 1];
  return undefined;
}

/** What the exchange knows of the request besides its fields. */
export interface AwsRequest extends RequestFields {
  readonly chunked: boolean;
  readonly hasBody: boolean;
  readonly length: number;
}

/**
 * Decide how the request is re-signed, or why it is refused. Nothing is signed yet: the date is
 * taken when the head is built.
 */
export function planAws(req: AwsRequest, host: string, hostHeader: string, cred: Credential, aws: AwsKeys): Planned {
  const refuse = (status: number, error: string, reason: string): Planned => ({ ok: false, status, error, reason });
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const params = parseQuery(q < 0 ? '' : req.url.slice(q + 1));
  const presigned = params.some(([k]) => PRESIGN_PARAMS.has(k.toLowerCase()));
  const auth = first(req.rawHeaders, 'authorization');
  if (presigned && auth !== undefined) return refuse(400, 'bad request', 'an AWS request is signed both in its query and in Authorization');
  if (auth !== undefined) {
    const a = parseAuthorization(auth);
    if (a.algorithm !== ALGORITHM) return refuse(403, 'denied', `only ${ALGORITHM} (Signature V4) requests are re-signed toward this host`);
    if (a.credential?.keyId !== aws.placeholderKeyId) return refuse(403, 'denied', 'the request is signed with an access key id other than the placeholder');
  }
  if (presigned) {
    const alg = params.find(([k]) => k.toLowerCase() === 'x-amz-algorithm')?.[1];
    const c = params.find(([k]) => k.toLowerCase() === 'x-amz-credential')?.[1];
    if (alg !== ALGORITHM) return refuse(403, 'denied', `only ${ALGORITHM} (Signature V4) requests are re-signed toward this host`);
    if (c === undefined || parseCredential(c).keyId !== aws.placeholderKeyId)
      return refuse(403, 'denied', 'the request is signed with an access key id other than the placeholder');
  }
  const derived = aws.region === undefined || aws.service === undefined ? scopeFromHost(host) : undefined;
  const region = aws.region ?? derived?.region;
  const service = aws.service ?? derived?.service;
  if (region === undefined || service === undefined)
    return refuse(502, 'bad gateway', `cannot tell the AWS region and service of ${host}: set awsSigV4.region and awsSigV4.service`);

  const s3 = service === 's3';
  if (presigned && !s3 && req.hasBody) return refuse(400, 'bad request', 'a presigned request with a body is re-signed only toward S3');
  const sha = first(req.rawHeaders, 'x-amz-content-sha256')?.trim();
  let payload: Payload;
  if (presigned) payload = 'unsigned';
  else if (sha === undefined || HEX64.test(sha)) payload = 'buffer';
  else if (sha === UNSIGNED_PAYLOAD) payload = 'unsigned';
  else if (sha === STREAMING_UNSIGNED_TRAILER) payload = 'streaming-unsigned-trailer';
  else if (sha === STREAMING_SIGNED) payload = 'resign';
  else if (sha === STREAMING_SIGNED_TRAILER) payload = 'resign-trailer';
  else return refuse(400, 'bad request', 'x-amz-content-sha256 has a value sandgate cannot re-sign (SigV4a and event-signed payloads are not supported)');
  if (payload === 'buffer' && req.length > aws.maxBodyBytes)
    return refuse(413, 'content too large', `a signed AWS payload is hashed whole; this one is larger than ${aws.maxBodyBytes} bytes`);

  const keepTe = payload !== 'buffer';

  const rewrite: Rewrite = {
    bufferLimit: payload === 'buffer' && req.hasBody ? aws.maxBodyBytes : undefined,
    build(body: Buffer | undefined, nowMs: number): Built {
      const { long, short } = amzDate(nowMs);
      const scope = credentialScope(short, region, service);
      const key = signingKey(aws.secretAccessKey, short, region, service);
      const fields = upstreamFields(req, hostHeader, cred, keepTe, payload === 'buffer' ? DROP_LENGTH : DROP_NONE);
      if (presigned) {
        // The sandbox's presigned query, re-signed: its auth parameters replaced, the rest (and
        // X-Amz-Expires) kept. Signed headers: host, and those it signed that are still sent.
        const wanted = new Set(['host']);
        const listed = params.find(([k]) => k.toLowerCase() === 'x-amz-signedheaders')?.[1];
        if (listed !== undefined) for (const n of listed.split(';')) if (n !== '' && signable(n)) wanted.add(n.toLowerCase());
        const sent = new Set(fields.map(([k]) => k.toLowerCase()));
        const names = new Set([...wanted].filter((n) => sent.has(n)));
        const kept = params.filter(([k]) => !PRESIGN_PARAMS.has(k.toLowerCase()));
        const query: [string, string][] = [
          ...kept,
          ['X-Amz-Algorithm', ALGORITHM],
          ['X-Amz-Credential', `${aws.accessKeyId}/${scope}`],
          ['X-Amz-Date', long],
          ['X-Amz-SignedHeaders', [...names].sort().join(';')],
        ];
        if (aws.sessionToken !== undefined) query.push(['X-Amz-Security-Token', aws.sessionToken]);
        // S3 presigned URLs sign UNSIGNED-PAYLOAD; other services the (empty) body's hash.
        const s = sign(
          { method: req.method, path, query, fields, signedNames: names, payloadHash: s3 ? UNSIGNED_PAYLOAD : EMPTY_SHA256 },
          key,
          long,
          scope,
          s3,
        );
        const all: [string, string][] = [...query, ['X-Amz-Signature', s.signature]];
        const target = `${path}?${all.map(([k, v]) => `${uriEncode(k)}=${uriEncode(v)}`).join('&')}`;
        return { head: renderHead(req.method, target, fields), body, needles: [s.signature] };
      }
      let payloadHash: string;
      let sendBody = body;
      switch (payload) {
        case 'buffer':
          sendBody = body ?? Buffer.alloc(0);
          payloadHash = sha256Hex(sendBody);
          // Length-framed now: a chunked upload is sent with its length.
          if (req.hasBody || req.length === 0) fields.push(['Content-Length', String(sendBody.length)]);
          break;
        case 'unsigned':
          payloadHash = UNSIGNED_PAYLOAD;
          break;
        case 'streaming-unsigned-trailer':
          payloadHash = STREAMING_UNSIGNED_TRAILER;
          break;
        case 'resign':
          payloadHash = STREAMING_SIGNED;
          break;
        case 'resign-trailer':
          payloadHash = STREAMING_SIGNED_TRAILER;
          break;
        default: {
          const never: never = payload;
          throw new Error(`unhandled payload ${String(never)}`);
        }
      }
      fields.push(['X-Amz-Date', long], ['X-Amz-Content-Sha256', payloadHash]);
      if (aws.sessionToken !== undefined) fields.push(['X-Amz-Security-Token', aws.sessionToken]);
      const names = new Set(fields.map(([k]) => k.toLowerCase()).filter(signable));
      const s = sign({ method: req.method, path, query: params, fields, signedNames: names, payloadHash }, key, long, scope, s3);
      fields.push(['Authorization', `${ALGORITHM} Credential=${aws.accessKeyId}/${scope}, SignedHeaders=${s.signedHeaders}, Signature=${s.signature}`]);
      const transform =
        payload === 'resign' || payload === 'resign-trailer'
          ? new AwsChunkedResigner({ key, long, scope, seed: s.signature, trailer: payload === 'resign-trailer', maxChunk: aws.maxBodyBytes })
          : undefined;
      return { head: renderHead(req.method, req.url, fields), body: sendBody, needles: [s.signature], transform };
    },
  };
  return { ok: true, rewrite };
}
