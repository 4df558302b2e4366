/**
 * Cloud SDKs in a sandbox with no keys in it (docs/credentials-google.md, docs/metadata.md):
 * - googleServiceAccount: sandgate mints access tokens from a service-account key file against a
 *   fake token endpoint that verifies the JWT with the public key, and injects them into requests
 *   to a fake Google API that accepts only tokens it minted;
 * - instance metadata: sandbox "sbx" (policy `cloud`, metadata aws + gce) gets sandgate's
 *   in-memory answers on 169.254.169.254:80 and for metadata.google.internal; sandbox "plain"
 *   (policy `plain`, no metadata) gets the usual denials. Real clients: google-auth-library's
 *   default chain and the AWS SDK's default credential chain.
 * Nothing here reaches beyond the namespaces the test built: the Google names are .test names
 * pinned by upstream.hosts to upstream namespace "a", and 169.254.169.254 is answered by sandgate.
 */
import test from 'ava';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, ROOT, startFake, startGate, TEST_BACKEND, type Fake, type Gate, type Line, type World } from '../helpers/gate.js';

const API = 'storage.googleapis.test';
const TOKEN_HOST = 'oauth2.googleapis.test';
const TOKEN_URI = `https://${TOKEN_HOST}/token`;
const EMAIL = 'agent@sg-test.iam.gserviceaccount.com';
const GCE_PLACEHOLDER = 'ya29.sandgate-placeholder-gce';
const AWS_KEY_ID = 'ASIASANDGATEPLACEHLD';

const { privateKey, publicKey } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
/** A piece of the private key's base64 body: must never appear in anything sandgate printed or a sandbox saw. */
const KEY_PIECE = (privateKey.split('\n')[5] ?? '').slice(0, 40);

let w: World;
let g: Gate;
let goog: Fake;
let config: Record<string, unknown>;
/** What each sandbox saw (stdout + stderr of every client run there), checked for leaks at the end. */
const seen: string[] = [];

test.before(async () => {
  w = await createWorld(
    {
      sandboxes: [
        { name: 'sbx', subnet: 1 },
        { name: 'plain', subnet: 8 },
      ],
      upstreams: [
        { name: 'a', subnet: 2 },
        { name: 'b', subnet: 3 },
      ],
    },
    { https: false },
  );
  const cert = w.pki.issue([API, TOKEN_HOST], { tag: 'google' });
  const pubFile = join(w.dir, 'sa-public.pem');
  writeFileSync(pubFile, publicKey);
  const keyFile = join(w.dir, 'sa.json');
  writeFileSync(
    keyFile,
    JSON.stringify({
      type: 'service_account',
      project_id: 'sg-test',
      private_key_id: 'k1',
      private_key: privateKey,
      client_email: EMAIL,
      token_uri: TOKEN_URI,
    }),
    { mode: 0o600 },
  );
  goog = await startFake(w, 'a', 'fake-google.mjs', [
    '--port',
    '443',
    '--tls',
    cert.cert,
    cert.key,
    '--public-key',
    pubFile,
    '--email',
    EMAIL,
    '--token-uri',
    TOKEN_URI,
  ]);
  const goo = w.topo.addr('a');
  const allow = [{ host: API, inject: 'gcp' }];
  config = {
    listen: { port: 15001, dnsPort: 15053, control: join(w.dir, 'control.sock') },
    tls: { caDir: join(w.dir, 'ca') },
    upstream: { hosts: { [API]: [goo], [TOKEN_HOST]: [goo] }, allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    sandboxes: [
      { name: 'agent', interface: w.topo.hostIface('sbx'), cidr: '10.77.1.0/24', policy: 'cloud' },
      { name: 'other', interface: w.topo.hostIface('plain'), cidr: '10.77.8.0/24', policy: 'plain' },
    ],
    policies: {
      cloud: {
        allow,
        metadata: { gce: { projectId: 'sg-test', email: EMAIL, accessToken: GCE_PLACEHOLDER }, aws: { accessKeyId: AWS_KEY_ID, role: 'agent-role' } },
      },
      plain: { allow },
    },
    credentials: {
      gcp: { googleServiceAccount: { keyFile, scopes: ['https://www.googleapis.com/auth/cloud-platform'] }, placeholder: GCE_PLACEHOLDER },
    },
    ...(TEST_BACKEND !== undefined ? { firewall: { backend: TEST_BACKEND } } : {}),
  };
  g = await startGate(w.topo, w.dir, config);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

const ns = (which: 'sbx' | 'plain'): string => w.topo.ns(which);

async function curl(which: 'sbx' | 'plain', args: string[]): Promise<{ code: number; out: string }> {
  const r = await w.topo.exec(ns(which), 'curl', ['-sS', '--max-time', '5', '-w', '\n%{http_code}', ...args], { timeoutMs: 8000 });
  seen.push(r.stdout, r.stderr);
  const i = r.stdout.lastIndexOf('\n');
  return { code: Number(r.stdout.slice(i + 1)) || 0, out: r.stdout.slice(0, Math.max(0, i)) };
}

/** A cloud SDK's default chain in a sandbox: a fresh HOME (no ~/.aws, no gcloud ADC file), no cloud variables. */
async function sdk(which: 'sbx' | 'plain', args: string[]): Promise<Line> {
  const home = join(w.dir, `home-${which}-${seen.length}`);
  mkdirSync(home, { recursive: true });
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, NODE_EXTRA_CA_CERTS: join(w.dir, 'ca', 'ca.pem') };
  const r = await w.topo.exec(ns(which), process.execPath, [join(ROOT, 'test/helpers/cloud-sdk-client.mjs'), ...args], { env, timeoutMs: 30_000 });
  seen.push(r.stdout, r.stderr);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Line;
  } catch {
    throw new Error(`client failed (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

const metadataLines = (sandbox: string): Line[] => g.log.lines.filter((l) => l.event === 'metadata' && l.sandbox === sandbox);

test.serial('googleServiceAccount: a request from the sandbox without credentials gets the minted token injected; the endpoint verified the JWT', async (t) => {
  const r = await curl('sbx', ['--cacert', join(w.dir, 'ca', 'ca.pem'), `https://${API}/storage/v1/b?project=sg-test`]);
  t.is(r.code, 200, r.out);
  const body = JSON.parse(r.out) as { ok: boolean; authorization: string };
  t.true(body.ok);
  // The API echoed the real token; sandgate scrubbed it on the way back.
  t.false(body.authorization.includes('ya29.real-'), body.authorization);
  const calls = goog.log.lines.map((l) => l.call as Line | undefined).filter((c): c is Line => c !== undefined);
  t.true(calls.length >= 1);
  t.like(calls[0], { ok: true, iss: EMAIL, aud: TOKEN_URI, scope: 'https://www.googleapis.com/auth/cloud-platform' });
  t.like(await g.log.waitFor((l) => l.event === 'http' && l.host === API), { decision: 'allow', credential: 'gcp', status: 200 });
});

test.serial('googleServiceAccount: a token the API refuses (401) is dropped, a new one is minted and the request retried', async (t) => {
  const callsBefore = goog.log.lines.filter((l) => l.call !== undefined).length;
  goog.proc.stdin?.write(`${JSON.stringify({ revokeAll: true })}\n`);
  await goog.log.waitFor((l) => l.ack !== undefined);
  const r = await curl('sbx', ['--cacert', join(w.dir, 'ca', 'ca.pem'), `https://${API}/storage/v1/b/after-revoke`]);
  t.is(r.code, 200, r.out);
  t.like(await g.log.waitFor((l) => l.event === 'http' && l.path === '/storage/v1/b/after-revoke'), {
    status: 200,
    tokenRejected: 'retried',
    credential: 'gcp',
  });
  const calls = goog.log.lines.filter((l) => l.call !== undefined).slice(callsBefore);
  t.is(calls.length, 1, 'one new token');
  t.like(calls[0]?.call, { ok: true });
});

test.serial(
  "google-auth-library's default chain: the metadata server is found, the placeholder token and project come from sandgate, the API call carries the real token",
  async (t) => {
    const r = await sdk('sbx', ['gcp', `https://${API}/storage/v1/b/bucket`]);
    t.is(r.error, undefined, JSON.stringify(r));
    t.is(r.token, GCE_PLACEHOLDER);
    t.is(r.projectId, 'sg-test');
    t.is(r.email, EMAIL);
    t.like(r.api, { status: 200, body: { ok: true, path: '/storage/v1/b/bucket' } });
    await g.log.waitFor((l) => l.event === 'http' && l.path === '/storage/v1/b/bucket');
    const answers = metadataLines('agent').map((l) => l.answer);
    t.true(answers.includes('placeholder token'), JSON.stringify(answers));
    t.true(answers.includes('project id'));
    // The gcp-metadata ping raced both addresses: the name resolved through sandgate's DNS to 169.254.169.254.
    t.truthy(g.log.lines.find((l) => l.event === 'dns' && l.host === 'metadata.google.internal' && l.sandbox === 'agent' && l.decision === 'allow'));
  },
);

test.serial("the AWS SDK's default credential chain resolves the placeholder credentials over IMDSv2", async (t) => {
  const r = await sdk('sbx', ['aws']);
  t.is(r.error, undefined, JSON.stringify(r));
  t.is(r.accessKeyId, AWS_KEY_ID);
  t.is(r.secretAccessKey, 'sandgate/placeholder/secret/not/a/real/k');
  t.is(r.sessionToken, 'sandgate-placeholder-session-token');
  t.true(typeof r.expiration === 'string' && Date.parse(r.expiration) > Date.now());
  // Audit lines are written asynchronously: wait for the last one the chain caused.
  await g.log.waitFor((l) => l.event === 'metadata' && l.answer === 'placeholder credentials');
  const lines = metadataLines('agent').filter((l) => l.service === 'aws');
  t.true(lines.some((l) => l.method === 'PUT' && l.path === '/latest/api/token' && l.status === 200));
  t.true(lines.some((l) => l.answer === 'placeholder credentials' && l.path === '/latest/meta-data/iam/security-credentials/agent-role'));
});

test.serial('refusals at the metadata address: IMDSv1 401, no Metadata-Flavor 403, unknown paths 404, each with an audit line', async (t) => {
  const base = 'http://169.254.169.254';
  t.is((await curl('sbx', [`${base}/latest/meta-data/iam/security-credentials/`])).code, 401);
  t.is((await curl('sbx', [`${base}/computeMetadata/v1/instance/service-accounts/default/token`])).code, 403);
  t.is((await curl('sbx', ['-H', 'Metadata-Flavor: Google', `${base}/computeMetadata/v1/instance/attributes/`])).code, 404);
  t.is((await curl('sbx', [`${base}/openstack/latest/meta_data.json`])).code, 404);
  await g.log.waitFor((l) => l.event === 'metadata' && l.path === '/openstack/latest/meta_data.json');
  const denied = metadataLines('agent').filter((l) => l.decision === 'deny');
  t.deepEqual(
    denied.slice(-4).map((l) => [l.status, l.path]),
    [
      [401, '/latest/meta-data/iam/security-credentials/'],
      [403, '/computeMetadata/v1/instance/service-accounts/default/token'],
      [404, '/computeMetadata/v1/instance/attributes/'],
      [404, '/openstack/latest/meta_data.json'],
    ],
  );
  // Other ports of the metadata address are not the responder's: the policy and the SSRF guard decide, as before.
  const r = await curl('sbx', ['-k', 'https://169.254.169.254/']);
  t.is(r.code, 0);
  t.like(await g.log.waitFor((l) => l.event === 'conn' && l.sandbox === 'agent' && l.dst === '169.254.169.254:443'), { decision: 'deny' });
});

test.serial('a malformed percent escape in a GCE service account name gets 404; sandgate stays up and answers the next request', async (t) => {
  const base = 'http://169.254.169.254/computeMetadata/v1';
  // Before: the responder's decodeURIComponent threw out of node:http's request handler and took the daemon down.
  const bad = await curl('sbx', ['-g', '-H', 'Metadata-Flavor: Google', `${base}/instance/service-accounts/%E0%A4%A/token`]);
  t.is(bad.code, 404, bad.out);
  const next = await curl('sbx', ['-H', 'Metadata-Flavor: Google', `${base}/project/project-id`]);
  t.is(next.code, 200, next.out);
  t.is(g.proc.exitCode, null);
});

test.serial(
  'a sandbox whose policy has no metadata gets nothing: the address is refused, the name is NXDOMAIN, the SDK chains find no credentials',
  async (t) => {
    const r = await curl('plain', ['-H', 'Metadata-Flavor: Google', 'http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token']);
    t.is(r.code, 0, 'the connection is refused, no answer');
    t.like(await g.log.waitFor((l) => l.event === 'conn' && l.sandbox === 'other' && l.dst === '169.254.169.254:80'), { decision: 'deny' });
    const dig = await w.topo.exec(ns('plain'), 'dig', ['+tries=1', '+time=3', 'metadata.google.internal'], { timeoutMs: 8000 });
    t.regex(dig.stdout, /status: NXDOMAIN/);
    const aws = await sdk('plain', ['aws']);
    t.is(aws.accessKeyId, undefined);
    t.truthy(aws.error);
    const gcp = await sdk('plain', ['gcp', `https://${API}/storage/v1/b/bucket`]);
    t.is(gcp.token, undefined);
    t.truthy(gcp.error);
    t.is(metadataLines('other').length, 0);
  },
);

test.serial('a reload that gives the other policy GCE metadata: its sandbox now resolves the name and gets GCE answers', async (t) => {
  const policies = config.policies as Record<string, Record<string, unknown>>;
  const next = { ...config, policies: { ...policies, plain: { ...policies.plain, metadata: { gce: { projectId: 'sg-other' } } } } };
  const before = await curl('sbx', ['-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 60', 'http://169.254.169.254/latest/api/token']);
  t.is(before.code, 200);
  t.like(await g.reload(next), { action: 'reloaded' });
  // A session token from before the reload still works (one key for the process's life).
  const role = await curl('sbx', ['-H', `X-aws-ec2-metadata-token: ${before.out}`, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/']);
  t.deepEqual(role, { code: 200, out: 'agent-role' });
  const dig = await w.topo.exec(ns('plain'), 'dig', ['+short', '+tries=1', '+time=3', 'metadata.google.internal'], { timeoutMs: 8000 });
  t.is(dig.stdout.trim(), '169.254.169.254');
  const r = await curl('plain', ['-H', 'Metadata-Flavor: Google', 'http://metadata.google.internal/computeMetadata/v1/project/project-id']);
  t.deepEqual(r, { code: 200, out: 'sg-other' });
  // AWS is still not enabled for it.
  t.is((await curl('plain', ['-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 60', 'http://169.254.169.254/latest/api/token'])).code, 404);
});

test.serial('neither the private key nor a minted token reaches a sandbox or the audit log', (t) => {
  const printed = [...g.log.lines.map((l) => JSON.stringify(l)), g.stderr()].join('\n');
  const sandboxes = seen.join('\n');
  t.true(KEY_PIECE.length === 40);
  for (const [where, text] of [
    ['audit log', printed],
    ['sandbox', sandboxes],
  ] as const) {
    t.false(text.includes(KEY_PIECE), `${where}: private key`);
    t.false(text.includes('PRIVATE KEY'), `${where}: private key`);
    t.false(text.includes('ya29.real-'), `${where}: a minted token`);
  }
});
