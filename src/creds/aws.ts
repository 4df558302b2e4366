/**
 * `awsSigV4` credentials compiled for the data path (docs/credentials-aws.md): the real keys, the
 * placeholder key id the sandbox must sign with, and the signing region and service, from the
 * config or from the host name.
 */
import type { AwsSigV4Config } from '../config/types.js';
import { addForms, type Credential } from './credential.js';

export interface AwsKeys {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string | undefined;
  readonly region: string | undefined;
  readonly service: string | undefined;
  readonly placeholderKeyId: string;
  readonly maxBodyBytes: number;
}

export function compileAwsCredential(
  id: string,
  c: AwsSigV4Config,
  keys: { accessKeyId: string; secretAccessKey: string; sessionToken: string | undefined },
): Credential {
  const needles = new Set<string>();
  // The key id is not a secret to AWS, but the sandbox has no business learning the real one
  // (S3 error bodies echo it as <AWSAccessKeyId>).
  addForms(needles, keys.accessKeyId);
  addForms(needles, keys.secretAccessKey);
  if (keys.sessionToken !== undefined) addForms(needles, keys.sessionToken);
  return {
    id,
    header: 'authorization',
    value: undefined,
    query: undefined,
    placeholder: undefined,
    secret: '',
    needles: [...needles].sort((a, b) => b.length - a.length),
    aws: {
      ...keys,
      region: c.region,
      service: c.service,
      placeholderKeyId: c.placeholderKeyId,
      maxBodyBytes: c.maxBodyBytes,
    },
  };
}

const REGION = /^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$/;
const SUFFIXES = ['.amazonaws.com', '.amazonaws.com.cn'];
/** Endpoint prefixes whose signing name differs from the prefix. */
const SIGNING_NAMES: Readonly<Record<string, string>> = {
  'bedrock-runtime': 'bedrock',
  'bedrock-agent-runtime': 'bedrock',
  'bedrock-agent': 'bedrock',
};

/**
 * The signing region and service of an AWS endpoint host name: `SERVICE.REGION.amazonaws.com`
 * (signing names that differ are mapped: bedrock-runtime signs as "bedrock"), and S3's forms:
 * `s3.REGION`, `BUCKET.s3.REGION`, `s3.dualstack.REGION`, `s3-REGION` (legacy), `s3.amazonaws.com`
 * (us-east-1), `...s3-accesspoint.REGION`. Undefined for anything else.
 */
export function scopeFromHost(host: string): { region: string; service: string } | undefined {
  const h = host.toLowerCase();
  const suffix = SUFFIXES.find((s) => h.endsWith(s));
  if (suffix === undefined) return undefined;
  const labels = h.slice(0, -suffix.length).split('.');
  let ri = -1;
  for (let i = labels.length - 1; i >= 0; i--)
    if (REGION.test(labels[i] as string)) {
      ri = i;
      break;
    }
  let si = -1;
  for (let i = (ri < 0 ? labels.length : ri) - 1; i >= 0; i--) {
    const l = labels[i] as string;
    if (l === 's3' || l.startsWith('s3-')) {
      si = i;
      break;
    }
  }
  if (si >= 0) {
    const l = labels[si] as string;
    const legacy = l.startsWith('s3-') && REGION.test(l.slice(3)) ? l.slice(3) : undefined;
    return { region: ri > si ? (labels[ri] as string) : (legacy ?? 'us-east-1'), service: 's3' };
  }
  if (ri < 1) return undefined;
  const prefix = (labels[ri - 1] as string).replace(/-fips$/, '');
  return { region: labels[ri] as string, service: SIGNING_NAMES[prefix] ?? prefix };
}
