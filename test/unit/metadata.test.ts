/**
 * The instance-metadata responder's answers (src/metadata/answer.ts): AWS IMDSv2 and GCE, from
 * the policy's `metadata` section, and everything it refuses; the session tokens; the config keys.
 */
import test from 'ava';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import type { MetadataConfig } from '../../src/config/types.js';
import { answerMetadata, type MetadataRequest } from '../../src/metadata/answer.js';
import { issueSessionToken, validSessionToken } from '../../src/metadata/session-token.js';

const KEY = Buffer.alloc(32, 7);
const NOW = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
const ctx = { sandbox: 'agent', nowMs: NOW, key: KEY };

function cfgOf(yaml: string): MetadataConfig | undefined {
  const c = parseConfig(`sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]\npolicies:\n  p:\n    allow: []\n    metadata: ${yaml}\n`, 'sg.yaml');
  return c.policies.p?.metadata;
}
const problems = (yaml: string): string[] => {
  try {
    cfgOf(yaml);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
};

const BOTH = cfgOf('{ aws: { accessKeyId: AKIDSANDGATEPLACEHOLDER, role: agent-role }, gce: { projectId: my-proj } }') as MetadataConfig;
const ask = (method: string, target: string, headers: Record<string, string> = {}, cfg: MetadataConfig = BOTH) =>
  answerMetadata(cfg, { method, target, headers } satisfies MetadataRequest, ctx);

test('config: defaults, placeholders configurable, refused shapes', (t) => {
  t.deepEqual(BOTH.aws, {
    role: 'agent-role',
    accessKeyId: 'AKIDSANDGATEPLACEHOLDER',
    secretAccessKey: 'sandgate/placeholder/secret/not/a/real/k',
    sessionToken: 'sandgate-placeholder-session-token',
    credentialLifetimeS: 3600,
    region: 'us-east-1',
    availabilityZone: 'us-east-1a',
    instanceId: 'i-00000000000000000',
    instanceType: 't3.micro',
    accountId: '000000000000',
  });
  t.deepEqual(BOTH.gce, {
    projectId: 'my-proj',
    numericProjectId: '0',
    email: 'sandgate@my-proj.iam.gserviceaccount.com',
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
    accessToken: 'ya29.sandgate-placeholder',
    expiresInS: 3599,
    zone: 'us-central1-a',
    instanceId: '0',
  });
  t.deepEqual(cfgOf('{ aws: {} }')?.aws?.role, 'sandgate');
  t.deepEqual(problems('{}'), ['policies.p.metadata: needs "aws" or "gce" (or both): which metadata service to answer']);
  t.deepEqual(problems('{ gce: {} }'), ['policies.p.metadata.gce: missing required key "projectId"']);
  t.true(problems('{ azure: {} }').includes('policies.p.metadata.azure: unknown key "azure" (expected one of: aws, gce)'));
  t.deepEqual(problems('{ aws: { role: "a/b" } }'), ['policies.p.metadata.aws.role: "a/b" is not a role name ([A-Za-z0-9_.+=@-], up to 128)']);
  t.deepEqual(problems('{ gce: { projectId: p, accessToken: short } }'), [
    'policies.p.metadata.gce.accessToken: "short" is not a placeholder of 8 to 256 visible ASCII characters',
  ]);
});

test('AWS IMDSv2: a session token from PUT, then the role and a placeholder credentials document with an Expiration', (t) => {
  const put = ask('PUT', '/latest/api/token', { 'x-aws-ec2-metadata-token-ttl-seconds': '21600' });
  t.is(put.status, 200);
  t.is(put.headers['x-aws-ec2-metadata-token-ttl-seconds'], '21600');
  const tok = { 'x-aws-ec2-metadata-token': put.body };
  const role = ask('GET', '/latest/meta-data/iam/security-credentials/', tok);
  t.like(role, { status: 200, body: 'agent-role', service: 'aws', denied: false });
  const doc = ask('GET', '/latest/meta-data/iam/security-credentials/agent-role', tok);
  t.is(doc.status, 200);
  t.deepEqual(JSON.parse(doc.body), {
    Code: 'Success',
    LastUpdated: '2026-01-02T03:04:05Z',
    Type: 'AWS-HMAC',
    AccessKeyId: 'AKIDSANDGATEPLACEHOLDER',
    SecretAccessKey: 'sandgate/placeholder/secret/not/a/real/k',
    Token: 'sandgate-placeholder-session-token',
    Expiration: '2026-01-02T04:04:05Z',
  });
  t.is(ask('GET', '/latest/meta-data/placement/region', tok).body, 'us-east-1');
  t.is(ask('GET', '/latest/meta-data/placement/availability-zone', tok).body, 'us-east-1a');
  t.like(JSON.parse(ask('GET', '/latest/dynamic/instance-identity/document', tok).body), { region: 'us-east-1', accountId: '000000000000' });
});

test('AWS: IMDSv1 (no token), a forged, expired or other-sandbox token get 401; a proxied or bad token request is refused; other paths 404', (t) => {
  const doc = '/latest/meta-data/iam/security-credentials/agent-role';
  t.like(ask('GET', doc), { status: 401, denied: true, what: 'no IMDSv2 session token (IMDSv1 is not answered)' });
  t.like(ask('GET', doc, { 'x-aws-ec2-metadata-token': 'SG9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }), { status: 401 });
  const nowS = Math.floor(NOW / 1000);
  const expired = issueSessionToken(KEY, 'agent', nowS - 100, 10);
  t.like(ask('GET', doc, { 'x-aws-ec2-metadata-token': expired }), { status: 401, what: 'an invalid or expired IMDSv2 session token' });
  const others = issueSessionToken(KEY, 'other', nowS, 100);
  t.like(ask('GET', doc, { 'x-aws-ec2-metadata-token': others }), { status: 401 });
  const put = (h: Record<string, string>) => ask('PUT', '/latest/api/token', h);
  t.like(put({ 'x-aws-ec2-metadata-token-ttl-seconds': '60', 'x-forwarded-for': '1.2.3.4' }), { status: 403, denied: true });
  t.like(put({}), { status: 400 });
  t.like(put({ 'x-aws-ec2-metadata-token-ttl-seconds': '21601' }), { status: 400 });
  t.like(ask('GET', '/latest/api/token'), { status: 405 });
  const tok = { 'x-aws-ec2-metadata-token': put({ 'x-aws-ec2-metadata-token-ttl-seconds': '60' }).body };
  t.like(ask('GET', '/latest/meta-data/iam/security-credentials/another-role', tok), { status: 404, denied: true });
  t.like(ask('GET', '/latest/user-data', tok), { status: 404, denied: true });
  t.like(ask('POST', doc, tok), { status: 405 });
  // Not enabled for this policy: 404 for everything under /latest/.
  t.like(ask('PUT', '/latest/api/token', { 'x-aws-ec2-metadata-token-ttl-seconds': '60' }, { gce: BOTH.gce }), {
    status: 404,
    service: undefined,
    denied: true,
  });
});

test('session tokens: valid for the sandbox until expiry, not after, not for another', (t) => {
  const tok = issueSessionToken(KEY, 'a', 1000, 60);
  t.true(validSessionToken(KEY, 'a', tok, 1059));
  t.false(validSessionToken(KEY, 'a', tok, 1060));
  t.false(validSessionToken(KEY, 'b', tok, 1000));
  t.false(validSessionToken(Buffer.alloc(32, 8), 'a', tok, 1000));
  t.false(validSessionToken(KEY, 'a', tok.replace(/^SG\d+/, 'SG99999'), 1000), 'a later expiry does not carry the MAC');
});

test('GCE: Metadata-Flavor required (403 without); token, email, scopes, project id, the ping and the listings; Metadata-Flavor on every answer', (t) => {
  const g = { 'metadata-flavor': 'Google' };
  const tokenPath = '/computeMetadata/v1/instance/service-accounts/default/token';
  const missing = ask('GET', tokenPath);
  t.like(missing, { status: 403, denied: true, service: 'gce' });
  t.is(missing.headers['metadata-flavor'], 'Google');
  t.like(ask('GET', tokenPath, { 'metadata-flavor': 'google' }), { status: 403 });
  t.like(ask('GET', tokenPath, { ...g, 'x-forwarded-for': '1.2.3.4' }), { status: 403 });
  const tok = ask('GET', `${tokenPath}?scopes=https://www.googleapis.com/auth/cloud-platform`, g);
  t.is(tok.status, 200);
  t.is(tok.headers['metadata-flavor'], 'Google');
  t.deepEqual(JSON.parse(tok.body), { access_token: 'ya29.sandgate-placeholder', expires_in: 3599, token_type: 'Bearer' });
  const email = 'sandgate@my-proj.iam.gserviceaccount.com';
  t.is(ask('GET', `/computeMetadata/v1/instance/service-accounts/${email}/token`, g).status, 200, 'by email as well as "default"');
  t.is(ask('GET', '/computeMetadata/v1/instance/service-accounts/default/email', g).body, email);
  t.is(ask('GET', '/computeMetadata/v1/instance/service-accounts/default/scopes', g).body, 'https://www.googleapis.com/auth/cloud-platform\n');
  t.is(ask('GET', '/computeMetadata/v1/project/project-id', g).body, 'my-proj');
  t.is(ask('GET', '/computeMetadata/v1/universe/universe-domain', g).body, 'googleapis.com');
  t.like(ask('GET', '/computeMetadata/v1/instance', g), { status: 200, service: 'gce' });
  t.deepEqual(JSON.parse(ask('GET', '/computeMetadata/v1/instance/service-accounts/default/?recursive=true', g).body), {
    aliases: ['default'],
    email,
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
  });
  t.like(ask('GET', '/computeMetadata/v1/instance/service-accounts/someone@else.com/token', g), { status: 404 });
  t.like(ask('GET', '/computeMetadata/v1/instance/service-accounts/default/identity?audience=x', g), { status: 404 });
  t.like(ask('GET', '/computeMetadata/v1/instance/attributes/ssh-keys', g), { status: 404, denied: true });
  t.like(ask('PUT', tokenPath, g), { status: 405 });
  t.like(ask('GET', tokenPath, g, { aws: BOTH.aws }), { status: 404, service: undefined });
  t.like(ask('GET', '/', g), { status: 404, service: undefined });
});

test('the session key is put in the environment, and a process started with that environment (a forked worker) uses the same key', async (t) => {
  const { sessionKey } = await import('../../src/metadata/session-token.js');
  const { execFileSync } = await import('node:child_process');
  const { join } = await import('node:path');
  const k = sessionKey();
  t.is(process.env.SANDGATE_METADATA_KEY, k.toString('hex'));
  const mod = join(import.meta.dirname, '../../src/metadata/session-token.ts');
  const child = execFileSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', `const m = await import(${JSON.stringify(mod)}); process.stdout.write(m.sessionKey().toString('hex'));`],
    { env: process.env, encoding: 'utf8' },
  );
  t.is(child, k.toString('hex'));
});

test('GCE: a service account name with a malformed percent escape is an unknown account (404), not a thrown URIError', (t) => {
  const a = ask('GET', '/computeMetadata/v1/instance/service-accounts/%E0%A4%A/token', { 'metadata-flavor': 'Google' });
  t.like(a, { status: 404, denied: true, service: 'gce', what: 'an unknown service account' });
});
