import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUpstreamTls, tlsFailure } from '../../src/upstream/tls.js';
import { SandgateError } from '../../src/errors.js';

const base = { hosts: {}, allowPrivate: [], connectTimeoutMs: 1000 };
let dir: string;

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-utls-'));
});
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('upstream.caFile: read at load; missing, empty or invalid files are config errors naming the key', (t) => {
  const missing = t.throws(() => createUpstreamTls({ ...base, caFile: join(dir, 'nope.pem') }), { instanceOf: SandgateError });
  t.regex(missing?.message ?? '', /^upstream\.caFile: cannot read .*nope\.pem \(ENOENT\)$/);
  t.is((missing as SandgateError).code, 'CONFIG');
  writeFileSync(join(dir, 'empty.pem'), 'not a certificate\n');
  t.throws(() => createUpstreamTls({ ...base, caFile: join(dir, 'empty.pem') }), { message: /holds no PEM certificate/ });
  writeFileSync(join(dir, 'bad.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  t.throws(() => createUpstreamTls({ ...base, caFile: join(dir, 'bad.pem') }), { message: /certificate #1 in .* is invalid/ });
});

test('a valid caFile builds one context and a keep-alive pool that uses it', (t) => {
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(dir, 'k.pem')]);
  execFileSync('openssl', ['req', '-x509', '-new', '-key', join(dir, 'k.pem'), '-subj', '/CN=test root', '-days', '1', '-out', join(dir, 'ca.pem')], {
    stdio: 'ignore',
  });
  const u = createUpstreamTls({ ...base, caFile: join(dir, 'ca.pem') });
  t.truthy(u.context);
  t.true((u.agent as unknown as { keepAlive: boolean }).keepAlive);
  t.is((u.agent.options as { secureContext?: unknown }).secureContext, u.context);
  t.truthy(createUpstreamTls(base).context, "no caFile: Node's roots only");
});

test('TLS failures are named for the audit line', (t) => {
  const e = (code: string, message = 'x'): NodeJS.ErrnoException => Object.assign(new Error(message), { code });
  t.is(tlsFailure(e('CERT_HAS_EXPIRED')), 'upstream certificate invalid (CERT_HAS_EXPIRED)');
  t.is(tlsFailure(e('DEPTH_ZERO_SELF_SIGNED_CERT')), 'upstream certificate invalid (DEPTH_ZERO_SELF_SIGNED_CERT)');
  t.is(tlsFailure(e('ERR_TLS_CERT_ALTNAME_INVALID')), 'upstream certificate does not match the host (ERR_TLS_CERT_ALTNAME_INVALID)');
  t.regex(tlsFailure(e('ERR_SSL_WRONG_VERSION_NUMBER')) ?? '', /handshake failed/);
  t.is(tlsFailure(e('ECONNREFUSED', 'connect ECONNREFUSED')), undefined);
});
