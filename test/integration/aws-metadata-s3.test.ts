/**
 * End to end, no AWS key anywhere in the sandbox (docs/metadata.md, docs/credentials-aws.md):
 * `@aws-sdk/client-s3` in sandbox "sbx" runs with its DEFAULT credential chain (no keys in env or
 * files, AWS_EC2_METADATA_DISABLED unset, only AWS_REGION set). The chain finds sandgate's IMDSv2 on
 * 169.254.169.254 (policy `cloud`: `metadata.aws` with its defaults, so the placeholder key id is the
 * `awsSigV4` one), signs PutObject and GetObject with the placeholder keys, and sandgate re-signs them
 * with the real keys toward a fake S3 that verifies SigV4 with those real keys
 * (test/helpers/fake-aws-server.mjs). Sandbox "plain" (policy `plain`: the same credential rule, no
 * `metadata`) is the control: its SDK finds no credentials at all.
 * Every byte the sandboxes received, and sandgate's audit log and stderr, are grepped for the real keys.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, ROOT, startFake, startGate, TEST_BACKEND, type Fake, type Gate, type Line, type World } from '../helpers/gate.js';
import { AWS_PLACEHOLDER_KEY_ID } from '../../src/creds/aws-placeholder.js';

const BUCKET = 'sgtest-bucket';
const S3 = `${BUCKET}.s3.us-east-1.amazonaws.com`;
// Per-run secrets: random, so a hit in captured bytes can only come from sandgate.
const AWS_KEY_ID = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
const AWS_SECRET = `real/${randomBytes(18).toString('base64url')}`;
const AWS_TOKEN = `FwoGZXIvYXdzE${randomBytes(24).toString('hex')}`;

let w: World;
let g: Gate;
let s3: Fake;
/** What each sandbox received (the SDK's socket bytes, stdout, stderr). */
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
        { name: 's3', subnet: 4 },
      ],
    },
    { https: false },
  );
  const cert = w.pki.issue([S3], { tag: 's3' });
  s3 = await startFake(w, 's3', 'fake-aws-server.mjs', [
    '--port',
    '443',
    '--tls',
    cert.cert,
    cert.key,
    '--key-id',
    AWS_KEY_ID,
    '--secret',
    AWS_SECRET,
    '--token',
    AWS_TOKEN,
  ]);
  writeFileSync(join(w.dir, 'aws-secret'), `${AWS_SECRET}\n`, { mode: 0o600 });
  const allow = [{ host: S3, inject: 'aws' }];
  const config = {
    listen: { port: 15001, dnsPort: 15053, control: join(w.dir, 'control.sock') },
    tls: { caDir: join(w.dir, 'ca') },
    upstream: { hosts: { [S3]: [w.topo.addr('s3')] }, allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    sandboxes: [
      { name: 'agent', interface: w.topo.hostIface('sbx'), cidr: '10.77.1.0/24', policy: 'cloud' },
      { name: 'other', interface: w.topo.hostIface('plain'), cidr: '10.77.8.0/24', policy: 'plain' },
    ],
    policies: {
      // `aws: {}`: every default, so the key id handed out is the awsSigV4 placeholder key id.
      cloud: { allow, metadata: { aws: {} } },
      plain: { allow },
    },
    credentials: {
      aws: { awsSigV4: { accessKeyId: { env: 'AWS_KEY_ID' }, secretAccessKey: { file: join(w.dir, 'aws-secret') }, sessionToken: { env: 'AWS_TOKEN' } } },
    },
    ...(TEST_BACKEND !== undefined ? { firewall: { backend: TEST_BACKEND } } : {}),
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { AWS_KEY_ID, AWS_TOKEN } });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** The S3 client's default chain in a sandbox: a fresh HOME (no ~/.aws), no AWS variable but the region. */
async function s3Client(which: 'sbx' | 'plain'): Promise<Line> {
  const home = join(w.dir, `home-${which}`);
  mkdirSync(home, { recursive: true });
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, NODE_EXTRA_CA_CERTS: join(w.dir, 'ca', 'ca.pem'), AWS_REGION: 'us-east-1' };
  const r = await w.topo.exec(w.topo.ns(which), process.execPath, [join(ROOT, 'test/helpers/cloud-sdk-client.mjs'), 's3', BUCKET], { env, timeoutMs: 60_000 });
  seen.push(r.stdout, r.stderr);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Line;
  } catch {
    throw new Error(`client failed (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

const requests = (): Line[] => s3.log.lines.filter((l) => l.request !== undefined);

function assertNoSecret(t: ExecutionContext, text: string, where: string): void {
  for (const [what, s] of [
    ['secret access key', AWS_SECRET],
    ['access key id', AWS_KEY_ID],
    ['session token', AWS_TOKEN],
  ] as const)
    t.false(text.includes(s), `the real ${what} appears in ${where}`);
}

test.serial(
  "S3 PutObject and GetObject with the SDK's default chain: placeholder credentials from sandgate's IMDSv2, re-signed with the real keys",
  async (t) => {
    const r = await s3Client('sbx');
    t.is(r.error, undefined, JSON.stringify({ ...r, seen: undefined }));
    t.is(r.got, 'put by the default chain');
    // The chain found the metadata address: the placeholder credentials came from sandgate.
    const seenBySdk = String(r.seen);
    t.true(seenBySdk.includes(AWS_PLACEHOLDER_KEY_ID), 'the SDK received the placeholder key id from the metadata endpoint');
    await g.log.waitFor((l) => l.event === 'http' && l.host === S3 && l.method === 'GET', 5000, 'the GetObject audit line');
    const meta = g.log.lines.filter((l) => l.event === 'metadata' && l.sandbox === 'agent');
    t.true(meta.some((l) => l.method === 'PUT' && l.path === '/latest/api/token' && l.status === 200));
    t.true(meta.some((l) => l.answer === 'placeholder credentials'));
    // The upstream verified both requests with the REAL keys.
    const got = requests().filter((l) => (l.request as Line).path === '/e2e.txt');
    t.deepEqual(
      got.map((l) => [(l.request as Line).method, (l.request as Line).auth, l.status]),
      [
        ['PUT', 'ok', 200],
        ['GET', 'ok', 200],
      ],
    );
    const http = g.log.lines.filter((l) => l.event === 'http' && l.host === S3 && l.sandbox === 'agent');
    t.true(http.length === 2 && http.every((l) => l.credential === 'aws' && l.status === 200), JSON.stringify(http));
    seen.push(seenBySdk);
  },
);

test.serial('control: a sandbox whose policy has no metadata gets no credentials; the S3 client fails with a credentials error', async (t) => {
  const before = requests().length;
  const r = await s3Client('plain');
  t.is(r.got, undefined);
  t.is(r.name, 'CredentialsProviderError', JSON.stringify({ ...r, seen: undefined }));
  t.is(requests().length, before, 'nothing reached S3');
  t.is(g.log.lines.filter((l) => l.event === 'metadata' && l.sandbox === 'other').length, 0);
  seen.push(String(r.seen));
});

test.serial('no real key reaches a sandbox, the audit log or sandgate stderr', (t) => {
  t.true(seen.length >= 4);
  assertNoSecret(t, seen.join('\n'), 'what a sandbox received');
  assertNoSecret(t, g.log.raw.join('\n'), "sandgate's audit log");
  assertNoSecret(t, g.stderr(), "sandgate's stderr");
});
