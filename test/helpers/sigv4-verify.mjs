// Verifies an AWS Signature V4 request the way AWS does, with @smithy/signature-v4 (the AWS SDK's
// own signer, not sandgate's): recompute the signature over what the request says it signed, with
// the REAL key, and compare. Used by the fake AWS upstreams and by unit tests.
//
// verifySigV4({method, path, query, headers, body}, {accessKeyId, secretAccessKey, sessionToken?})
//   path: the wire path (percent-encoded, no query); query: the raw query string (no "?");
//   headers: lower-case name -> value (string or string[]); body: Buffer | undefined.
// Returns {ok: true, mode, service, region} or {ok: false, why} (`why` names no key or signature).
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { createHash } from 'node:crypto';

const decode = (s) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

function queryObject(q, skip = () => false) {
  const out = {};
  if (q === '') return out;
  for (const part of q.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decode(eq < 0 ? part : part.slice(0, eq));
    const v = eq < 0 ? '' : decode(part.slice(eq + 1));
    if (skip(k)) continue;
    if (k in out) out[k] = [].concat(out[k], v);
    else out[k] = v;
  }
  return out;
}

function amzToDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s ?? '');
  if (!m) return undefined;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

const one = (v) => (Array.isArray(v) ? v.join(',') : v);

export async function verifySigV4(req, keys) {
  const { method, path, headers } = req;
  const q = req.query ?? '';
  const presigned = /(^|&)X-Amz-Signature=/i.test(q);
  let keyId, region, service, signedNames, signature, date, expires, token;
  if (presigned) {
    const o = queryObject(q);
    [keyId, , region, service] = String(o['X-Amz-Credential'] ?? '').split('/');
    signedNames = String(o['X-Amz-SignedHeaders'] ?? '').split(';');
    signature = o['X-Amz-Signature'];
    date = amzToDate(o['X-Amz-Date']);
    expires = Number(o['X-Amz-Expires'] ?? 3600);
    token = o['X-Amz-Security-Token'];
  } else {
    const auth = one(headers.authorization);
    if (auth === undefined) return { ok: false, why: 'no Authorization' };
    const m = /^AWS4-HMAC-SHA256 Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return { ok: false, why: 'Authorization is not SigV4' };
    [keyId, , region, service] = m[1].split('/');
    signedNames = m[2].split(';');
    signature = m[3];
    date = amzToDate(one(headers['x-amz-date']));
    token = one(headers['x-amz-security-token']);
  }
  if (keyId !== keys.accessKeyId) return { ok: false, why: 'unknown access key id' };
  if (keys.sessionToken !== undefined && token !== keys.sessionToken) return { ok: false, why: 'security token missing or wrong' };
  if (date === undefined) return { ok: false, why: 'no or malformed date' };
  if (!signedNames.includes('host')) return { ok: false, why: 'host is not signed' };
  const signed = {};
  for (const n of signedNames) {
    if (headers[n] === undefined) return { ok: false, why: `signed header ${n} missing` };
    signed[n] = one(headers[n]);
  }
  const sha = one(headers['x-amz-content-sha256']);
  if (!presigned && sha !== undefined && /^[0-9a-f]{64}$/.test(sha)) {
    const actual = createHash('sha256')
      .update(req.body ?? Buffer.alloc(0))
      .digest('hex');
    if (actual !== sha) return { ok: false, why: 'x-amz-content-sha256 does not match the body' };
  }
  const signer = new SignatureV4({
    credentials: { accessKeyId: keys.accessKeyId, secretAccessKey: keys.secretAccessKey, sessionToken: keys.sessionToken },
    region,
    service,
    sha256: Sha256,
    uriEscapePath: service !== 's3',
    applyChecksum: false,
  });
  const signable = new Set(signedNames);
  let expected;
  if (presigned) {
    const base = {
      method,
      protocol: 'https:',
      hostname: signed.host,
      path,
      headers: signed,
      query: queryObject(q, (k) => /^X-Amz-(Algorithm|Credential|Date|SignedHeaders|Signature|Security-Token|Expires)$/i.test(k)),
    };
    // S3 presigned URLs sign UNSIGNED-PAYLOAD (what @aws-sdk/s3-request-presigner does); others the empty body's hash.
    if (service === 's3') base.headers = { ...signed, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
    const hidden = new Set(['x-amz-content-sha256']);
    const out = await signer.presign(base, {
      signingDate: date,
      expiresIn: expires,
      signableHeaders: signable,
      unhoistableHeaders: hidden,
      unsignableHeaders: hidden,
    });
    expected = out.query['X-Amz-Signature'];
  } else {
    const body = sha === undefined ? (req.body ?? undefined) : undefined;
    const base = { method, protocol: 'https:', hostname: signed.host, path, headers: { ...signed }, query: queryObject(q), body };
    const out = await signer.sign(base, { signingDate: date, signableHeaders: signable });
    expected = /Signature=([0-9a-f]{64})$/.exec(out.headers.authorization)?.[1];
  }
  if (expected !== signature) return { ok: false, why: 'signature mismatch' };
  return { ok: true, mode: presigned ? 'presigned' : (sha ?? 'body'), service, region };
}
