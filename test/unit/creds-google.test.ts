/**
 * googleServiceAccount credentials: the key file's checks, the RS256 assertion (RFC 7523) verified
 * with the public key, the config keys, and the source against a token endpoint on loopback.
 */
import test from 'ava';
import http from 'node:http';
import https from 'node:https';
import { createPublicKey, createVerify, generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { isTokenSource, type Credential, type TokenNet } from '../../src/creds/credential.js';
import {
  GoogleServiceAccountSource,
  JWT_BEARER_GRANT,
  parseServiceAccountKey,
  signAssertion,
  type ServiceAccountKey,
} from '../../src/creds/google-service-account.js';
import { loadCredentialSources } from '../../src/creds/secrets.js';

const { privateKey: PEM, publicKey: PUB } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
const EMAIL = 'agent@proj.iam.gserviceaccount.com';
const keyJson = (extra: Record<string, unknown> = {}): string =>
  JSON.stringify({
    type: 'service_account',
    client_email: EMAIL,
    private_key: PEM,
    private_key_id: 'kid0123',
    token_uri: 'https://oauth2.googleapis.com/token',
    ...extra,
  });
const parse = (text: string, allowPrivate: string[] = []): ServiceAccountKey =>
  parseServiceAccountKey(text, 'credentials.g.googleServiceAccount.keyFile', allowPrivate);

const message = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  return '(no error)';
};

function decode(jwt: string): { header: Record<string, unknown>; claims: Record<string, unknown>; valid: boolean } {
  const [h, c, s] = jwt.split('.') as [string, string, string];
  const valid = createVerify('RSA-SHA256').update(`${h}.${c}`).verify(createPublicKey(PUB), Buffer.from(s, 'base64url'));
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(c, 'base64url').toString()) as Record<string, unknown>,
    valid,
  };
}

test('the assertion is an RS256 JWT signed with the key: iss, scope, aud = token_uri, iat, exp one hour on, sub only when set', (t) => {
  const key = parse(keyJson());
  const a = decode(signAssertion(key, ['s1', 's2'], undefined, 1_700_000_000));
  t.true(a.valid, 'verifies with the public key');
  t.deepEqual(a.header, { alg: 'RS256', typ: 'JWT', kid: 'kid0123' });
  t.deepEqual(a.claims, { iss: EMAIL, scope: 's1 s2', aud: 'https://oauth2.googleapis.com/token', iat: 1_700_000_000, exp: 1_700_003_600 });
  const d = decode(signAssertion(key, ['s1'], 'user@example.com', 5));
  t.is(d.claims.sub, 'user@example.com');
  // Another key's public half does not verify it.
  const other = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const jwt = signAssertion(parse(keyJson({ private_key: other.privateKey })), ['s'], undefined, 5);
  t.false(decode(jwt).valid);
});

test('key files that are refused, and no message quotes the private key', (t) => {
  const ec = generateKeyPairSync('ec', {
    namedCurve: 'P-256',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const cases: [string, RegExp][] = [
    ['not json', /not a JSON object/],
    [keyJson({ type: 'authorized_user' }), /"type" must be "service_account"/],
    [keyJson({ client_email: 'nobody' }), /"client_email"/],
    [keyJson({ private_key: 'garbage' }), /not a PEM private key/],
    [keyJson({ private_key: ec.privateKey }), /RSA key of at least 2048 bits/],
    [keyJson({ token_uri: 'http://oauth2.example.test/token' }), /"token_uri" in the key file http:\/\/ is only allowed to an IP address/],
    [keyJson({ token_uri: 'http://10.1.2.3/token' }), /tokens would cross the network in clear/],
  ];
  for (const [text, re] of cases) {
    const m = message(() => parse(text));
    t.regex(m, re);
    t.true(m.startsWith('credentials.g.googleServiceAccount.keyFile: '));
    t.false(m.includes('PRIVATE KEY') || m.includes(PEM.slice(40, 80)), m);
  }
  // http:// to an allowPrivate literal is accepted (a private link), as for oauth2's tokenUrl.
  t.is(parse(keyJson({ token_uri: 'http://10.1.2.3/token' }), ['10.0.0.0/8']).tokenUri, 'http://10.1.2.3/token');
  // token_uri defaults to Google's.
  const { token_uri: _, ...noUri } = JSON.parse(keyJson()) as Record<string, unknown>;
  t.is(parse(JSON.stringify(noUri)).tokenUri, 'https://oauth2.googleapis.com/token');
});

const BASE = `sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies: { p: { allow: [{ host: storage.googleapis.com, inject: g }] } }
credentials:
  g:
`;
const cfg = (body: string): ReturnType<typeof parseConfig> => parseConfig(`${BASE}${body.replace(/^/gm, '    ')}\n`, 'sg.yaml');
const problems = (body: string): string[] => {
  try {
    cfg(body);
  } catch (err) {
    // An invalid credential also makes the rule's `inject` unknown: that echo is dropped.
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`).filter((m) => !m.startsWith('policies.'));
    throw err;
  }
  return [];
};

test('config: googleServiceAccount with keyFile and scopes; defaults; refused shapes', (t) => {
  const c = cfg(
    'googleServiceAccount: { keyFile: /etc/sandgate/sa.json, scopes: [https://www.googleapis.com/auth/cloud-platform] }\nplaceholder: ya29.sandgate-placeholder',
  );
  t.deepEqual(c.credentials.g, {
    googleServiceAccount: { keyFile: '/etc/sandgate/sa.json', scopes: ['https://www.googleapis.com/auth/cloud-platform'], timeoutMs: 2000 },
    header: 'Authorization',
    format: 'Bearer {secret}',
    placeholder: 'ya29.sandgate-placeholder',
  });
  t.deepEqual(problems('googleServiceAccount: { keyFile: sa.json, scopes: [a] }'), [
    'credentials.g.googleServiceAccount.keyFile: "sa.json" is not an absolute path',
  ]);
  t.deepEqual(problems('googleServiceAccount: { keyFile: /sa.json, scopes: [] }').slice(0, 1), [
    'credentials.g.googleServiceAccount.scopes: must list at least one scope (such as https://www.googleapis.com/auth/cloud-platform)',
  ]);
  t.deepEqual(problems('googleServiceAccount: { keyFile: /sa.json }').slice(0, 1), ['credentials.g.googleServiceAccount: missing required key "scopes"']);
  t.regex(problems('googleServiceAccount: { keyFile: /sa.json, scopes: [a], subject: nobody }')[0] ?? '', /subject: "nobody" is not an email address/);
  t.regex(problems('googleServiceAccount: { keyFile: /sa.json, scopes: [a] }\nsecret: { env: X }')[0] ?? '', /exactly one source is allowed/);
});

test('load: the key file is read once at load; a missing or bad one is a config error naming the key, never its content', (t) => {
  const c = cfg('googleServiceAccount: { keyFile: /etc/sandgate/sa.json, scopes: [s] }');
  const files: Record<string, string> = { '/etc/sandgate/sa.json': keyJson() };
  const readers = {
    env: {},
    readFile: (f: string): string => {
      const v = files[f];
      if (v === undefined) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
      return v;
    },
  };
  const src = loadCredentialSources(c, readers).get('g');
  t.true(src !== undefined && isTokenSource(src) && src.kind === 'googleServiceAccount');
  // Kept across a reload when nothing changed; a new key file makes a new source.
  const again = loadCredentialSources(c, readers, new Map([['g', src as NonNullable<typeof src>]])).get('g');
  t.is(again, src);
  files['/etc/sandgate/sa.json'] = keyJson({ private_key_id: 'kid-rotated' });
  t.not(loadCredentialSources(c, readers, new Map([['g', src as NonNullable<typeof src>]])).get('g'), src);
  files['/etc/sandgate/sa.json'] = keyJson({ private_key: 'x' });
  t.is(
    message(() => loadCredentialSources(c, readers)),
    'credentials.g.googleServiceAccount.keyFile: "private_key" in the key file is not a PEM private key',
  );
  delete files['/etc/sandgate/sa.json'];
  t.is(
    message(() => loadCredentialSources(c, readers)),
    'credentials.g.googleServiceAccount.keyFile: cannot read /etc/sandgate/sa.json (ENOENT)',
  );
});

const NET: TokenNet = {
  lookup: (_h, _o, cb) => {
    (cb as (e: Error) => void)(new Error('no lookups in this test'));
  },
  guard: { check: () => undefined },
  httpsAgent: new https.Agent(),
};

test('the source: POSTs the jwt-bearer grant to token_uri, verifies, caches (single-flight), and forgets a token the API refused', async (t) => {
  const bodies: URLSearchParams[] = [];
  let n = 0;
  const s = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      bodies.push(form);
      const ok = form.get('grant_type') === JWT_BEARER_GRANT && decode(form.get('assertion') ?? '..').valid;
      const text = ok ? JSON.stringify({ access_token: `ya29.minted-${++n}`, expires_in: 3599, token_type: 'Bearer' }) : '{"error":"invalid_grant"}';
      res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' }).end(text);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    s.closeAllConnections();
    s.close();
  });
  const uri = `http://127.0.0.1:${(s.address() as AddressInfo).port}/token`;
  const key = parse(keyJson({ token_uri: uri }));
  const cfgG = { header: 'Authorization', format: 'Bearer {secret}', googleServiceAccount: { keyFile: '/k', scopes: ['a', 'b'], timeoutMs: 2000 } };
  const src = new GoogleServiceAccountSource('g', cfgG, key, 'fp', { wallS: () => 1000 });
  const r = { sandbox: 'agent', user: undefined, host: 'storage.googleapis.com', port: 443, method: 'GET', path: '/' };
  const [c1, c2] = (await Promise.all([src.acquire(r, NET), src.acquire(r, NET)])) as Credential[];
  t.is(bodies.length, 1, 'one call for two concurrent requests');
  t.is(c1?.value, 'Bearer ya29.minted-1');
  t.is(c2, c1);
  t.true((c1?.needles ?? []).includes('ya29.minted-1'), 'the token is scrubbed from responses');
  t.like(decode(bodies[0]?.get('assertion') ?? '..').claims, { iss: EMAIL, aud: uri, scope: 'a b', iat: 1000 });
  t.is(src.acquire(r, NET), c1 as Credential, 'a cache hit is synchronous');
  src.reject(r, c1 as Credential);
  const c3 = (await src.acquire(r, NET)) as Credential;
  t.is(c3.value, 'Bearer ya29.minted-2');
  // A key the endpoint does not know: the TokenError names the endpoint and the error code only.
  const wrong = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const bad = new GoogleServiceAccountSource('g', cfgG, parse(keyJson({ token_uri: uri, private_key: wrong.privateKey })), 'fp2');
  const err = await t.throwsAsync(async () => bad.acquire(r, NET));
  t.is(err?.message, `token endpoint ${new URL(uri).origin} answered 400 (invalid_grant)`);
});
