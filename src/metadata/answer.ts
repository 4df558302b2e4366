/**
 * The instance-metadata responder's decisions (docs/metadata.md): one request in, one answer out,
 * from the policy's `metadata` section and memory alone. Nothing here (or in serve.ts) ever
 * connects anywhere: the answers are placeholders and facts the operator configured.
 *
 * - AWS (paths under /latest/): IMDSv2 only. `PUT /latest/api/token` with
 *   X-aws-ec2-metadata-token-ttl-seconds (1..21600) gives a session token; every other request
 *   needs it in X-aws-ec2-metadata-token, else 401 (what an instance with "HttpTokens: required"
 *   answers). A PUT carrying X-Forwarded-For is refused (403), as AWS refuses it: a token must
 *   not be obtainable through a proxy.
 * - GCE (paths under /computeMetadata/v1/): every request needs `Metadata-Flavor: Google`, else
 *   403, and one with X-Forwarded-For is refused (403), as the GCE metadata server does; every
 *   answer carries `Metadata-Flavor: Google` (google-auth-library's gcp-metadata checks it).
 * - Anything else: 404 (a service the policy does not enable, a path not answered here).
 */
import type { AwsMetadataConfig, GceMetadataConfig, MetadataConfig } from '../config/types.js';
import { issueSessionToken, MAX_TTL_S, validSessionToken } from './session-token.js';

/** The link-local address both clouds serve instance metadata on. */
export const METADATA_IP = '169.254.169.254';
/** The name GCE clients use; sandgate's DNS answers it with METADATA_IP where GCE metadata is enabled. */
export const GCE_METADATA_NAME = 'metadata.google.internal';

export interface MetadataRequest {
  readonly method: string;
  /** The request target as sent (origin-form). */
  readonly target: string;
  /** Lower-case names (node:http's req.headers). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

export interface MetadataContext {
  readonly sandbox: string;
  /** Wall-clock milliseconds (Expiration and LastUpdated are calendar times). */
  readonly nowMs: number;
  readonly key: Buffer;
}

export interface MetadataAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** For the audit line: which service answered (undefined: neither), and what was given or why not. */
  readonly service: 'aws' | 'gce' | undefined;
  readonly what: string;
  readonly denied: boolean;
}

const TEXT = 'text/plain';
const JSON_TYPE = 'application/json';

function give(service: 'aws' | 'gce', what: string, body: string, type = TEXT, extra: Record<string, string> = {}): MetadataAnswer {
  const flavor: Record<string, string> = service === 'gce' ? { 'metadata-flavor': 'Google' } : {};
  return { status: 200, headers: { 'content-type': type, ...flavor, ...extra }, body, service, what, denied: false };
}

function refuse(service: 'aws' | 'gce' | undefined, status: number, what: string, body = ''): MetadataAnswer {
  const flavor: Record<string, string> = service === 'gce' ? { 'metadata-flavor': 'Google' } : {};
  return { status, headers: { 'content-type': TEXT, ...flavor }, body, service, what, denied: true };
}

function header(req: MetadataRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The path without the query, and the query's parameters. */
function split(target: string): { path: string; query: URLSearchParams } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: new URLSearchParams() } : { path: target.slice(0, q), query: new URLSearchParams(target.slice(q + 1)) };
}

export function answerMetadata(cfg: MetadataConfig, req: MetadataRequest, ctx: MetadataContext): MetadataAnswer {
  const { path, query } = split(req.target);
  if (path === '/latest' || path.startsWith('/latest/')) {
    if (cfg.aws === undefined) return refuse(undefined, 404, 'aws metadata is not enabled for this policy', 'Not Found');
    return answerAws(cfg.aws, req, path, ctx);
  }
  if (path === '/computeMetadata/v1' || path.startsWith('/computeMetadata/v1/')) {
    if (cfg.gce === undefined) return refuse(undefined, 404, 'gce metadata is not enabled for this policy', 'Not Found');
    return answerGce(cfg.gce, req, path.slice('/computeMetadata/v1'.length), query);
  }
  return refuse(undefined, 404, 'not a metadata path answered here', 'Not Found');
}

/** ISO 8601 without milliseconds, as IMDS writes its times. */
const iso = (ms: number): string => `${new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19)}Z`;

function answerAws(a: AwsMetadataConfig, req: MetadataRequest, path: string, ctx: MetadataContext): MetadataAnswer {
  const nowS = Math.floor(ctx.nowMs / 1000);
  if (path === '/latest/api/token') {
    if (req.method !== 'PUT') return refuse('aws', 405, `${req.method} of a session token (IMDSv2 takes PUT)`);
    if (header(req, 'x-forwarded-for') !== undefined) return refuse('aws', 403, 'a session token request through a proxy (X-Forwarded-For)', 'Forbidden');
    const ttl = header(req, 'x-aws-ec2-metadata-token-ttl-seconds');
    const n = ttl !== undefined && /^\d{1,6}$/.test(ttl) ? Number(ttl) : 0;
    if (n < 1 || n > MAX_TTL_S)
      return refuse('aws', 400, 'session token request without a valid X-aws-ec2-metadata-token-ttl-seconds (1 to 21600)', 'Bad Request');
    return give('aws', 'session token', issueSessionToken(ctx.key, ctx.sandbox, nowS, n), TEXT, { 'x-aws-ec2-metadata-token-ttl-seconds': String(n) });
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return refuse('aws', 405, `${req.method} of a metadata path`);
  const token = header(req, 'x-aws-ec2-metadata-token');
  if (token === undefined || !validSessionToken(ctx.key, ctx.sandbox, token, nowS))
    return refuse(
      'aws',
      401,
      token === undefined ? 'no IMDSv2 session token (IMDSv1 is not answered)' : 'an invalid or expired IMDSv2 session token',
      'Unauthorized',
    );
  const creds = '/latest/meta-data/iam/security-credentials/';
  const doc = (): string =>
    JSON.stringify(
      {
        Code: 'Success',
        LastUpdated: iso(ctx.nowMs),
        Type: 'AWS-HMAC',
        AccessKeyId: a.accessKeyId,
        SecretAccessKey: a.secretAccessKey,
        Token: a.sessionToken,
        Expiration: iso(ctx.nowMs + a.credentialLifetimeS * 1000),
      },
      null,
      2,
    );
  const identity = (): string =>
    JSON.stringify(
      {
        accountId: a.accountId,
        architecture: 'x86_64',
        availabilityZone: a.availabilityZone,
        instanceId: a.instanceId,
        instanceType: a.instanceType,
        region: a.region,
        version: '2017-09-30',
      },
      null,
      2,
    );
  switch (path) {
    case '/latest/meta-data':
    case '/latest/meta-data/':
      return give('aws', 'listing', 'iam/\ninstance-id\ninstance-type\nplacement/');
    case '/latest/meta-data/iam/security-credentials':
    case creds:
      return give('aws', 'role name', a.role);
    case creds + a.role:
      return give('aws', 'placeholder credentials', doc(), TEXT);
    case '/latest/meta-data/iam/info':
      return give(
        'aws',
        'instance profile',
        JSON.stringify({ Code: 'Success', LastUpdated: iso(ctx.nowMs), InstanceProfileArn: `arn:aws:iam::${a.accountId}:instance-profile/${a.role}` }, null, 2),
      );
    case '/latest/meta-data/instance-id':
      return give('aws', 'instance id', a.instanceId);
    case '/latest/meta-data/instance-type':
      return give('aws', 'instance type', a.instanceType);
    case '/latest/meta-data/placement/region':
      return give('aws', 'region', a.region);
    case '/latest/meta-data/placement/availability-zone':
      return give('aws', 'availability zone', a.availabilityZone);
    case '/latest/dynamic/instance-identity/document':
      return give('aws', 'instance identity document', identity(), JSON_TYPE);
    default:
      return refuse('aws', 404, 'a metadata path not answered here', 'Not Found');
  }
}

function decodedOrUndefined(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

function answerGce(g: GceMetadataConfig, req: MetadataRequest, rel: string, query: URLSearchParams): MetadataAnswer {
  if (header(req, 'x-forwarded-for') !== undefined) return refuse('gce', 403, 'a metadata request through a proxy (X-Forwarded-For)', 'Forbidden');
  if (header(req, 'metadata-flavor') !== 'Google') return refuse('gce', 403, 'no Metadata-Flavor: Google header', 'Missing required header: Metadata-Flavor\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return refuse('gce', 405, `${req.method} of a metadata path`);
  const sa = /^\/instance\/service-accounts\/([^/]+)(\/.*)?$/.exec(rel);
  if (sa) {
    // A malformed escape (%E0%A4%A) names no account; decodeURIComponent would throw it at the
    // request handler, and from there out of the process.
    const who = decodedOrUndefined(sa[1] as string);
    // The service account is "default" or its email; there is no other on this instance.
    if (who !== 'default' && who !== g.email) return refuse('gce', 404, 'an unknown service account', 'Not Found');
    switch (sa[2] ?? '') {
      case '':
      case '/':
        if (query.get('recursive') === 'true')
          return give('gce', 'service account', JSON.stringify({ aliases: ['default'], email: g.email, scopes: g.scopes }), JSON_TYPE);
        return give('gce', 'listing', 'aliases\nemail\nidentity\nscopes\ntoken\n');
      case '/aliases':
        return give('gce', 'aliases', 'default\n');
      case '/email':
        return give('gce', 'email', g.email);
      case '/scopes':
        return give('gce', 'scopes', `${g.scopes.join('\n')}\n`);
      case '/token':
        return give('gce', 'placeholder token', JSON.stringify({ access_token: g.accessToken, expires_in: g.expiresInS, token_type: 'Bearer' }), JSON_TYPE);
      default:
        // `identity` (ID tokens) included: a signed ID token cannot be a placeholder.
        return refuse('gce', 404, 'a metadata path not answered here', 'Not Found');
    }
  }
  switch (rel) {
    case '':
    case '/':
      return give('gce', 'listing', 'instance/\nproject/\nuniverse/\n');
    case '/instance':
    case '/instance/':
      // gcp-metadata's isAvailable() pings this (google-auth-library's default chain).
      return give('gce', 'listing', 'id\nservice-accounts/\nzone\n');
    case '/instance/id':
      return give('gce', 'instance id', g.instanceId);
    case '/instance/zone':
      return give('gce', 'zone', `projects/${g.numericProjectId}/zones/${g.zone}`);
    case '/instance/service-accounts':
    case '/instance/service-accounts/':
      return give('gce', 'listing', `default/\n${g.email}/\n`);
    case '/project':
    case '/project/':
      return give('gce', 'listing', 'numeric-project-id\nproject-id\n');
    case '/project/project-id':
      return give('gce', 'project id', g.projectId);
    case '/project/numeric-project-id':
      return give('gce', 'numeric project id', g.numericProjectId);
    case '/universe/universe-domain':
      return give('gce', 'universe domain', 'googleapis.com');
    default:
      return refuse('gce', 404, 'a metadata path not answered here', 'Not Found');
  }
}
