/**
 * Credentials that rewrite more than a header, with real clients in the sandbox namespace:
 * - awsSigV4: the AWS SDK v3 (@aws-sdk/client-s3: PutObject, a streamed PutObject, a multipart
 *   upload, GetObject; @aws-sdk/client-bedrock-runtime: InvokeModel, InvokeModelWithResponseStream,
 *   Converse) signing with the placeholder keys, through sandgate, to fake AWS upstreams that verify
 *   SigV4 with the real keys (test/helpers/fake-aws-server.mjs). A control host with no credential
 *   rule shows the same clients fail there.
 * - placeholderIn: python3 urllib and curl posting a placeholder in a JSON body and a query to an
 *   upstream that echoes what it got.
 * After each exchange the test greps every byte the sandbox received, and sandgate's audit log and
 * stderr, for the real secrets.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, startFake, baseConfig, ROOT, type Fake, type World, type Gate } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';
import { AWS_PLACEHOLDER_KEY_ID, AWS_PLACEHOLDER_SECRET_KEY } from '../../src/creds/aws-placeholder.js';

const HELPERS = join(ROOT, 'test/helpers');
const CURL = '/usr/bin/curl';

// Per-run secrets: random, so a hit in captured bytes can only come from sandgate's injection.
const AWS_KEY_ID = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
const AWS_SECRET = `real/${randomBytes(18).toString('base64url')}`;
const AWS_TOKEN = `FwoGZXIvYXdzE${randomBytes(24).toString('hex')}`;
const API_KEY = `sk-real-body-${randomBytes(16).toString('hex')}`;
const PLACEHOLDER = 'sk-sandgate-body-placeholder';

const BEDROCK = 'bedrock-runtime.us-east-1.amazonaws.com';
const BEDROCK_CONTROL = 'bedrock-runtime.us-west-2.amazonaws.com';
const S3_NAMES = ['sgtest-bucket.s3.us-east-1.amazonaws.com', 'sgtest-bucket.s3.amazonaws.com'];
const S3_CONTROL = 'sgtest-bucket.s3.us-west-2.amazonaws.com';
const API = 'api.example.test';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const FORBIDDEN: { what: string; text: string }[] = [
  { what: 'AWS secret access key', text: AWS_SECRET },
  { what: 'AWS secret access key (base64)', text: b64(AWS_SECRET) },
  { what: 'AWS access key id', text: AWS_KEY_ID },
  { what: 'AWS session token', text: AWS_TOKEN },
  { what: 'API key', text: API_KEY },
  { what: 'API key (base64)', text: b64(API_KEY) },
];

function assertNoSecret(t: ExecutionContext, captured: string, where: string): void {
  for (const f of FORBIDDEN) t.false(captured.includes(f.text), `the ${f.what} appears in ${where}`);
}

function addHosts(ns: string, entries: [string, string][]): void {
  appendFileSync(`/etc/netns/${ns}/hosts`, entries.map(([ip, name]) => `${ip}\t${name}\n`).join(''));
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...extra };
}

let w: World;
let fakes: { s3: Fake; bedrock: Fake; echo: Fake };
let gateP: Promise<Gate> | undefined;

test.before(async () => {
  w = await createWorld(
    {
      upstreams: [
        { name: 'a', subnet: 2 },
        { name: 'b', subnet: 3 },
        { name: 's3', subnet: 4 },
        { name: 'bedrock', subnet: 5 },
        { name: 'echo', subnet: 6 },
      ],
    },
    { https: false },
  );
  const s3Cert = w.pki.issue([...S3_NAMES, S3_CONTROL], { tag: 's3' });
  const brCert = w.pki.issue([BEDROCK, BEDROCK_CONTROL], { tag: 'bedrock' });
  const echoCert = w.pki.issue([API], { tag: 'echo' });
  const awsArgs = ['--port', '443', '--key-id', AWS_KEY_ID, '--secret', AWS_SECRET, '--token', AWS_TOKEN];
  const [s3, bedrock, echo] = await Promise.all([
    startFake(w, 's3', 'fake-aws-server.mjs', ['--tls', s3Cert.cert, s3Cert.key, ...awsArgs]),
    startFake(w, 'bedrock', 'fake-aws-server.mjs', ['--tls', brCert.cert, brCert.key, ...awsArgs]),
    startFake(w, 'echo', 'fake-body-echo.mjs', ['--port', '443', '--tls', echoCert.cert, echoCert.key, '--key', API_KEY, '--placeholder', PLACEHOLDER]),
  ]);
  fakes = { s3, bedrock, echo };
  addHosts(w.sandbox, [
    ...[...S3_NAMES, S3_CONTROL].map((n): [string, string] => [w.topo.addr('s3'), n]),
    [w.topo.addr('bedrock'), BEDROCK],
    [w.topo.addr('bedrock'), BEDROCK_CONTROL],
    [w.topo.addr('echo'), API],
  ]);
});

test.after.always(async () => {
  if (gateP)
    await gateP.then(
      (g) => g.proc.kill('SIGKILL'),
      () => undefined,
    );
  await w?.cleanup();
});

function gate(): Promise<Gate> {
  gateP ??= (async () => {
    const base = baseConfig(w, {
      allow: [
        ...S3_NAMES.map((host) => ({ host, inject: 'aws' })),
        { host: BEDROCK, inject: 'aws' },
        { host: API, inject: 'api' },
        // The controls: the same upstreams with no credential rule (passthrough).
        { host: S3_CONTROL },
        { host: BEDROCK_CONTROL },
      ],
      upstream: {
        hosts: {
          ...Object.fromEntries([...S3_NAMES, S3_CONTROL].map((n) => [n, w.topo.addr('s3')])),
          [BEDROCK]: w.topo.addr('bedrock'),
          [BEDROCK_CONTROL]: w.topo.addr('bedrock'),
          [API]: w.topo.addr('echo'),
        },
        caFile: w.pki.caFile,
      },
    });
    const config = {
      ...base,
      credentials: {
        aws: {
          awsSigV4: {
            accessKeyId: { env: 'AWS_KEY_ID' },
            secretAccessKey: { file: join(w.dir, 'aws-secret') },
            sessionToken: { env: 'AWS_TOKEN' },
          },
        },
        api: { secret: { env: 'API_KEY' }, placeholder: PLACEHOLDER, placeholderIn: ['header', 'query', 'body'] },
      },
    };
    writeFileSync(join(w.dir, 'aws-secret'), `${AWS_SECRET}\n`, { mode: 0o600 });
    return startGate(w.topo, w.dir, config, 'sandgate.json', { env: { AWS_KEY_ID, AWS_TOKEN, API_KEY } });
  })();
  return gateP;
}

const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

function assertGateClean(t: ExecutionContext, g: Gate): void {
  assertNoSecret(t, g.log.raw.join('\n'), "sandgate's audit log");
  assertNoSecret(t, g.stderr(), "sandgate's stderr");
}

function parseOut(r: ExecResult): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`client printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

/** The AWS SDK client in the sandbox, with the placeholder keys; `ca` is what it trusts. */
async function awsClient(mode: 's3' | 'bedrock' | 'presign', region: string, ca: string, extra: string[] = []): Promise<Record<string, unknown>> {
  const home = join(w.dir, `home-${mode}-${region}`);
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [join(HELPERS, 'aws-client.mjs'), '--mode', mode, '--region', region, '--key-id', AWS_PLACEHOLDER_KEY_ID, '--secret', AWS_PLACEHOLDER_SECRET_KEY, ...extra],
    { env: cleanEnv({ NODE_EXTRA_CA_CERTS: ca, HOME: home, AWS_EC2_METADATA_DISABLED: 'true' }), timeoutMs: 60000 },
  );
  return { ...parseOut(r), stderr: r.stderr };
}

const requests = (f: Fake): Record<string, unknown>[] => f.log.raw.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.request !== undefined);

test.serial('Bedrock Runtime SDK (InvokeModel, InvokeModelWithResponseStream, Converse) with placeholder keys: re-signed with the real ones', async (t) => {
  const g = await gate();
  const out = await awsClient('bedrock', 'us-east-1', caPem());
  t.true(out.ok, `client failed: ${String(out.error)} ${String(out.stderr)}`);
  t.like(out.results, { invoke: 'echo: ping', stream: ['alpha', 'beta', 'gamma'], converse: 'converse reply' });
  const seen = requests(fakes.bedrock).filter((l) => (l.request as { host: string }).host === BEDROCK);
  t.is(seen.length, 3);
  for (const l of seen) t.like(l, { request: { auth: 'ok' }, status: 200 });
  assertNoSecret(t, String(out.seen), 'what the SDK received');
  // The audit line is written once the response is relayed: it may follow the client's exit.
  await g.log.waitFor((l) => l.event === 'http' && l.host === BEDROCK && String(l.path).endsWith('/converse'), 5000, 'the Converse audit line');
  assertGateClean(t, g);
  const lines = g.log.lines.filter((l) => l.event === 'http' && l.host === BEDROCK);
  t.true(lines.length >= 3 && lines.every((l) => l.credential === 'aws' && l.status === 200));
});

test.serial(
  'S3 SDK (PutObject, streamed PutObject, multipart upload, GetObject) with placeholder keys: re-signed; an echoed Authorization comes back scrubbed',
  async (t) => {
    const g = await gate();
    const out = await awsClient('s3', 'us-east-1', caPem());
    t.true(out.ok, `client failed: ${String(out.error)} ${String(out.stderr)}`);
    const res = out.results as Record<string, unknown>;
    t.like(res, { small: 'hello from the sandbox', streamedOk: true, multiOk: true });
    t.regex(String(res.echo), /^authorization=AWS4-HMAC-SHA256 Credential=\[redacted\]/);
    const seen = requests(fakes.s3).filter((l) => S3_NAMES.includes((l.request as { host: string }).host));
    t.true(seen.length >= 9);
    for (const l of seen) t.like(l, { request: { auth: 'ok' } });
    t.log(
      'payload modes the SDK used:',
      [...new Set(seen.map((l) => `${(l.request as { method: string }).method} ${String((l.request as { sha: string }).sha)}`))].join(', '),
    );
    assertNoSecret(t, String(out.seen), 'what the SDK received');
    await g.log.waitFor((l) => l.event === 'http' && l.path === '/echo-auth', 5000, 'the last GetObject audit line');
    assertGateClean(t, g);
  },
);

test.serial(
  'presigned URLs made in the sandbox with the placeholder (@aws-sdk/s3-request-presigner) work through sandgate with curl: PUT then GET',
  async (t) => {
    const g = await gate();
    const urls = (await awsClient('presign', 'us-east-1', caPem())).results as { put: string; get: string };
    t.true(urls.put.includes(AWS_PLACEHOLDER_KEY_ID));
    const curl = (args: string[]) =>
      w.topo.exec(w.sandbox, CURL, ['-sS', '--fail-with-body', '--max-time', '8', '--cacert', caPem(), ...args], { env: cleanEnv({}), timeoutMs: 10000 });
    const put = await curl(['-X', 'PUT', '--data-binary', 'presigned body', urls.put]);
    t.is(put.code, 0, put.stdout + put.stderr);
    const get = await curl([urls.get]);
    t.is(get.code, 0, get.stderr);
    t.is(get.stdout, 'presigned body');
    const seen = requests(fakes.s3).filter((l) => (l.request as { path: string }).path === '/presigned.txt');
    t.is(seen.length, 2);
    for (const l of seen) t.like(l, { request: { auth: 'ok' }, status: 200 });
    assertNoSecret(t, put.stdout + put.stderr + get.stdout + get.stderr, 'what curl received');
    await g.log.waitFor((l) => l.event === 'http' && l.path === '/presigned.txt' && l.method === 'GET', 5000, 'the presigned GET audit line');
    assertGateClean(t, g);
  },
);

test.serial('the Bedrock Runtime client on its default HTTP/2 handler: h2 streams from the sandbox, re-signed, to the upstream over HTTP/1.1', async (t) => {
  const g = await gate();
  const before = requests(fakes.bedrock).length;
  const out = await awsClient('bedrock', 'us-east-1', caPem(), ['--http2']);
  t.true(out.ok, `client failed: ${String(out.error)} ${String(out.stderr)}`);
  t.like(out.results, { invoke: 'echo: ping', stream: ['alpha', 'beta', 'gamma'], converse: 'converse reply' });
  const seen = requests(fakes.bedrock)
    .slice(before)
    .filter((l) => (l.request as { host: string }).host === BEDROCK);
  t.is(seen.length, 3);
  // The upstream offers h2 too; a re-signed request is built as an HTTP/1.1 head with its body.
  for (const l of seen) t.like(l, { request: { auth: 'ok', proto: '1.1' }, status: 200 });
  assertNoSecret(t, String(out.seen), 'what the SDK received');
  await g.log.waitFor((l) => l.event === 'http' && l.host === BEDROCK && String(l.path).endsWith('/converse') && l.alpn === 'h2', 5000, 'the h2 Converse line');
  assertGateClean(t, g);
});

test.serial('control: the same SDK calls to hosts without the credential rule fail with AWS auth errors (the fakes refuse the placeholder key)', async (t) => {
  await gate();
  const br = await awsClient('bedrock', 'us-west-2', `${w.pki.caFile}`);
  t.false(br.ok);
  t.is(br.status, 403);
  const s3 = await awsClient('s3', 'us-west-2', `${w.pki.caFile}`);
  t.false(s3.ok);
  t.is(s3.status, 403);
  t.like(
    requests(fakes.bedrock).find((l) => (l.request as { host: string }).host === BEDROCK_CONTROL),
    { request: { auth: 'unknown access key id' }, status: 403 },
  );
});

test.serial(
  'placeholderIn: python3 urllib posts a JSON body and curl a query with the placeholder; the upstream gets the real key, the sandbox never sees it',
  async (t) => {
    const g = await gate();
    const py = [
      'import json, ssl, sys, urllib.request',
      `body = json.dumps({"api_key": "${PLACEHOLDER}", "q": "hello"}).encode()`,
      `r = urllib.request.urlopen(urllib.request.Request("https://${API}/v1/data", data=body, headers={"Content-Type": "application/json"}), timeout=10)`,
      'sys.stdout.write(r.read().decode())',
    ].join('\n');
    const r = await w.topo.exec(w.sandbox, '/usr/bin/python3', ['-c', py], { env: cleanEnv({ SSL_CERT_FILE: caPem() }), timeoutMs: 15000 });
    t.is(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { real: boolean; placeholder: boolean; body: string; length: number };
    t.true(got.real, 'the upstream received the real key in the body');
    t.false(got.placeholder);
    t.true(got.body.includes('[redacted]'), 'the echoed body reached the sandbox scrubbed');
    assertNoSecret(t, r.stdout + r.stderr, 'what python received');

    const c = await w.topo.exec(
      w.sandbox,
      CURL,
      [
        '-sS',
        '-i',
        '--max-time',
        '8',
        '--cacert',
        caPem(),
        '-H',
        'Transfer-Encoding: chunked',
        '-H',
        'Content-Type: text/plain',
        '--data-binary',
        `key=${PLACEHOLDER}`,
        `https://${API}/v1/q?key=${PLACEHOLDER}`,
      ],
      { env: cleanEnv({}), timeoutMs: 10000 },
    );
    t.is(c.code, 0, c.stderr);
    const last = requests(fakes.echo).at(-1)?.request as Record<string, unknown>;
    t.like(last, { real: true, placeholder: false, te: null });
    t.is(Number(last.contentLength), Number(last.length), 'a chunked body arrives length-framed, with its new length');
    assertNoSecret(t, c.stdout + c.stderr, 'what curl received');
    await g.log.waitFor((l) => l.event === 'http' && l.path === '/v1/q', 5000, "curl's audit line");
    assertGateClean(t, g);
  },
);
