/**
 * A policy's `metadata` section: the cloud instance-metadata answers sandgate gives that policy's
 * sandboxes from memory (docs/metadata.md). Every value is a placeholder or a fact the operator
 * chooses to show; none is a secret, so they live in the config itself.
 */
import { AWS_PLACEHOLDER_KEY_ID, AWS_PLACEHOLDER_SECRET_KEY } from '../../creds/aws-placeholder.js';
import type { AwsMetadataConfig, GceMetadataConfig, MetadataConfig } from '../types.js';
import type { PathPart, Reader } from './reader.js';

/** Defaults of the answers (docs/metadata.md lists them). */
export const METADATA_DEFAULTS = {
  aws: {
    role: 'sandgate',
    // The awsSigV4 credential's placeholder key id by default, so an SDK that takes these from
    // the metadata endpoint signs with the one key id sandgate re-signs (docs/credentials-aws.md).
    accessKeyId: AWS_PLACEHOLDER_KEY_ID,
    secretAccessKey: AWS_PLACEHOLDER_SECRET_KEY,
    sessionToken: 'sandgate-placeholder-session-token',
    credentialLifetimeS: 3600,
    region: 'us-east-1',
    instanceId: 'i-00000000000000000',
    instanceType: 't3.micro',
    accountId: '000000000000',
  },
  gce: {
    numericProjectId: '0',
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
    accessToken: 'ya29.sandgate-placeholder',
    expiresInS: 3599,
    zone: 'us-central1-a',
    instanceId: '0',
  },
} as const;

/** Values go into HTTP bodies and headers: one line of visible ASCII, no quotes or backslashes. */
const VALUE = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/;
const ID = /^[A-Za-z0-9_.+=@-]{1,128}$/;

export function readMetadata(v: Reader, raw: unknown, p: PathPart[]): MetadataConfig | undefined {
  const o = v.obj(raw, p, ['aws', 'gce']);
  if (!o) return undefined;
  if (o.aws === undefined && o.gce === undefined) return v.fail(p, 'needs "aws" or "gce" (or both): which metadata service to answer');
  const aws = o.aws !== undefined ? readAws(v, o.aws ?? {}, [...p, 'aws']) : undefined;
  const gce = o.gce !== undefined ? readGce(v, o.gce, [...p, 'gce']) : undefined;
  return { ...(aws ? { aws } : {}), ...(gce ? { gce } : {}) };
}

function strOr(v: Reader, raw: unknown, p: PathPart[], dflt: string, re: RegExp, what: string): string {
  if (raw === undefined || raw === null) return dflt;
  return v.str(raw, p, re, what) ?? dflt;
}

function readAws(v: Reader, raw: unknown, p: PathPart[]): AwsMetadataConfig | undefined {
  const keys = [
    'role',
    'accessKeyId',
    'secretAccessKey',
    'sessionToken',
    'credentialLifetimeS',
    'region',
    'availabilityZone',
    'instanceId',
    'instanceType',
    'accountId',
  ];
  const o = v.obj(raw, p, keys);
  if (!o) return undefined;
  const d = METADATA_DEFAULTS.aws;
  const region = strOr(v, o.region, [...p, 'region'], d.region, /^[a-z0-9-]{1,32}$/, 'a region name such as us-east-1');
  return {
    // The role name is a path segment of the credentials URL.
    role: strOr(v, o.role, [...p, 'role'], d.role, ID, 'a role name ([A-Za-z0-9_.+=@-], up to 128)'),
    accessKeyId: strOr(v, o.accessKeyId, [...p, 'accessKeyId'], d.accessKeyId, /^[A-Z0-9]{16,128}$/, 'an access key id (upper-case letters and digits)'),
    secretAccessKey: strOr(v, o.secretAccessKey, [...p, 'secretAccessKey'], d.secretAccessKey, VALUE, 'one line of visible ASCII'),
    sessionToken: strOr(v, o.sessionToken, [...p, 'sessionToken'], d.sessionToken, VALUE, 'one line of visible ASCII'),
    credentialLifetimeS: v.int(o.credentialLifetimeS, [...p, 'credentialLifetimeS'], 300, 43_200, d.credentialLifetimeS),
    region,
    availabilityZone: strOr(v, o.availabilityZone, [...p, 'availabilityZone'], `${region}a`, /^[a-z0-9-]{1,32}$/, 'a zone name such as us-east-1a'),
    instanceId: strOr(v, o.instanceId, [...p, 'instanceId'], d.instanceId, /^i-[0-9a-f]{8,32}$/, 'an instance id such as i-0123456789abcdef0'),
    instanceType: strOr(v, o.instanceType, [...p, 'instanceType'], d.instanceType, /^[a-z0-9.-]{1,32}$/, 'an instance type such as t3.micro'),
    accountId: strOr(v, o.accountId, [...p, 'accountId'], d.accountId, /^\d{12}$/, 'a 12-digit account id'),
  };
}

function readGce(v: Reader, raw: unknown, p: PathPart[]): GceMetadataConfig | undefined {
  const o = v.obj(raw, p, ['projectId', 'numericProjectId', 'email', 'scopes', 'accessToken', 'expiresInS', 'zone', 'instanceId'], ['projectId']);
  if (!o) return undefined;
  const d = METADATA_DEFAULTS.gce;
  // RFC 1035-ish project ids: 6 to 30 lower-case letters, digits, hyphens (also "domain:id").
  const projectId = o.projectId !== undefined ? v.str(o.projectId, [...p, 'projectId'], /^[a-z0-9.:-]{1,63}$/, 'a project id such as my-project') : undefined;
  let scopes: readonly string[] = d.scopes;
  if (o.scopes !== undefined && o.scopes !== null) {
    const list = v.list(o.scopes, [...p, 'scopes']);
    if (list && list.length === 0) v.fail([...p, 'scopes'], 'must list at least one scope');
    else if (list) {
      const got = list.map((s, i) => v.str(s, [...p, 'scopes', i], VALUE, 'a scope URL'));
      if (got.every((s): s is string => s !== undefined)) scopes = got;
    }
  }
  if (projectId === undefined) return undefined;
  return {
    projectId,
    numericProjectId: strOr(v, o.numericProjectId, [...p, 'numericProjectId'], d.numericProjectId, /^\d{1,20}$/, 'a number'),
    email: strOr(v, o.email, [...p, 'email'], `sandgate@${projectId}.iam.gserviceaccount.com`, /^[^\s@"\\]+@[^\s@"\\]+$/, 'an email address'),
    scopes,
    // The placeholder a credential rule swaps: at least 8 characters, as credential placeholders.
    accessToken: strOr(
      v,
      o.accessToken,
      [...p, 'accessToken'],
      d.accessToken,
      /^[\x21\x23-\x5b\x5d-\x7e]{8,256}$/,
      'a placeholder of 8 to 256 visible ASCII characters',
    ),
    expiresInS: v.int(o.expiresInS, [...p, 'expiresInS'], 60, 43_200, d.expiresInS),
    zone: strOr(v, o.zone, [...p, 'zone'], d.zone, /^[a-z0-9-]{1,32}$/, 'a zone name such as us-central1-a'),
    instanceId: strOr(v, o.instanceId, [...p, 'instanceId'], d.instanceId, /^\d{1,20}$/, 'a number'),
  };
}
