import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import type { Config } from '../config/types.js';
import { SandgateError } from '../errors.js';

/**
 * How sandgate speaks TLS to intercepted upstreams: one SecureContext trusting Node's root store
 * (tls.rootCertificates, Mozilla's list) plus `upstream.caFile`, and one keep-alive pool.
 * Built once per config load; the file is read here, never on the data path.
 *
 * The context goes into the Agent's options, so every pooled connection uses it; https.Agent
 * keys its pool on host, port and servername (not on the context), and there is one context per
 * Agent, so connections are never shared across trust settings.
 * Host name verification is Node's default checkServerIdentity (RFC 6125 / RFC 9110 §4.3.4).
 */
export interface UpstreamTls {
  readonly context: tls.SecureContext;
  readonly agent: https.Agent;
}

export function createUpstreamTls(cfg: Config['upstream']): UpstreamTls {
  const extra = cfg.caFile !== undefined ? readCaFile(cfg.caFile) : [];
  const context = tls.createSecureContext({ ca: [...tls.rootCertificates, ...extra], minVersion: 'TLSv1.2' });
  const agent = new https.Agent({
    keepAlive: true,
    keepAliveMsecs: 30_000,
    maxFreeSockets: 256,
    scheduling: 'lifo',
    // Idle pooled connections are closed after this; active ones are not affected (the agent
    // only destroys free sockets on timeout).
    timeout: 30_000,
    secureContext: context,
    // HTTP/1.1 only upstream: the relay is HTTP/1.1 end to end.
    ALPNProtocols: ['http/1.1'],
  });
  return { context, agent };
}

function readCaFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SandgateError(`upstream.caFile: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 'CONFIG');
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new SandgateError(`upstream.caFile: ${file} holds no PEM certificate`, 'CONFIG');
  for (const [i, pem] of blocks.entries()) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new SandgateError(`upstream.caFile: certificate #${i + 1} in ${file} is invalid (${(err as Error).message})`, 'CONFIG');
    }
  }
  return blocks;
}

/** Name a TLS verification failure for the audit line (the sandbox only sees "502"). */
export function tlsFailure(err: NodeJS.ErrnoException): string | undefined {
  const code = err.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `upstream certificate does not match the host (${code})`;
  if (TLS_VERIFY_CODES.has(code)) return `upstream certificate invalid (${code})`;
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || /SSL|TLS/.test(err.message))
    return `upstream TLS handshake failed (${code || err.message})`;
  return undefined;
}

/** OpenSSL X509_V_ERR_* names as Node reports them (src/crypto/crypto_common.cc). */
const TLS_VERIFY_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'HOSTNAME_MISMATCH',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_CHAIN_TOO_LONG',
]);
