/**
 * The metadata responder's socket shell (src/metadata/serve.ts) over a real loopback connection:
 * answers, keep-alive, HEAD, a malformed request, and the audit line of each, which never carries
 * a session token or a request header.
 */
import test from 'ava';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { AuditFields } from '../../src/audit/logger.js';
import type { MetadataConfig } from '../../src/config/types.js';
import type { ConnInfo } from '../../src/net/conn-info.js';
import { serveMetadata } from '../../src/metadata/serve.js';

const CFG: MetadataConfig = {
  gce: {
    projectId: 'p1',
    numericProjectId: '1',
    email: 'e@p1.iam.gserviceaccount.com',
    scopes: ['s'],
    accessToken: 'ya29.placeholder',
    expiresInS: 100,
    zone: 'z',
    instanceId: '1',
  },
  aws: {
    role: 'r',
    accessKeyId: 'ASIAPLACEHOLDER00000',
    secretAccessKey: 'secret-placeholder',
    sessionToken: 'token-placeholder',
    credentialLifetimeS: 3600,
    region: 'us-east-1',
    availabilityZone: 'us-east-1a',
    instanceId: 'i-0000000000000000',
    instanceType: 't3.micro',
    accountId: '000000000000',
  },
};

/** A loopback server whose connections go to serveMetadata, as the transparent listener's would (paused). */
async function responder(idleMs?: number): Promise<{ port: number; lines: AuditFields[]; close: () => void }> {
  const lines: AuditFields[] = [];
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    const info = {
      rt: { audit: { write: (f: AuditFields) => lines.push(f) } },
      sandbox: { name: 'agent', user: 'alice' },
      src: `${socket.remoteAddress}:${socket.remotePort}`,
      dst: '169.254.169.254:80',
      dstPort: 80,
    } as unknown as ConnInfo;
    serveMetadata(socket, info, CFG, idleMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, lines, close: () => server.close() };
}

/**
 * Sends `raw` on one connection and collects everything until the server closes it (the last
 * request says `Connection: close`); the timer only keeps a hang from stalling the suite.
 */
function exchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, 10_000);
    s.on('data', (d) => {
      got += d.toString('latin1');
    });
    s.on('close', done);
    s.on('error', done);
    s.write(raw);
  });
}

test('two requests on one kept-alive connection: a session token, then the role with it; HEAD has no body; one audit line each, no token in them', async (t) => {
  const r = await responder();
  t.teardown(r.close);
  const first = await exchange(
    r.port,
    'PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n',
  );
  t.regex(first, /^HTTP\/1\.1 200 /);
  const token = first.slice(first.indexOf('\r\n\r\n') + 4);
  t.true(token.length > 0, first);
  t.regex(token, /^SG\d+\./);
  const two = await exchange(
    r.port,
    `GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: ${token}\r\n\r\n` +
      'HEAD /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n',
  );
  const responses = two.split(/(?=HTTP\/1\.1 )/);
  t.is(responses.length, 2, two);
  t.regex(responses[0] ?? '', /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nr$/);
  t.regex(responses[1] ?? '', /^HTTP\/1\.1 200 [\s\S]*metadata-flavor: Google[\s\S]*content-length: 2\r\n[\s\S]*\r\n\r\n$/i);
  t.deepEqual(
    r.lines.map((l) => [l.event, l.decision, l.service, l.method, l.path, l.status, l.answer]),
    [
      ['metadata', 'allow', 'aws', 'PUT', '/latest/api/token', 200, 'session token'],
      ['metadata', 'allow', 'aws', 'GET', '/latest/meta-data/iam/security-credentials/', 200, 'role name'],
      ['metadata', 'allow', 'gce', 'HEAD', '/computeMetadata/v1/project/project-id', 200, 'project id'],
    ],
  );
  t.like(r.lines[0], { sandbox: 'agent', user: 'alice', dst: '169.254.169.254:80', proto: 'http' });
  t.false(JSON.stringify(r.lines).includes(token), 'the session token is never audited');
});

test('a malformed request gets 400 and a deny line; the query of a path is not audited', async (t) => {
  const r = await responder();
  t.teardown(r.close);
  const bad = await exchange(r.port, 'GET /latest HTTP/1.1\r\nBad Header\r\n\r\n');
  t.regex(bad, /^HTTP\/1\.1 400 /);
  t.like(r.lines.at(-1), { event: 'metadata', decision: 'deny', status: 400, reason: 'malformed request' });
  await exchange(
    r.port,
    'GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=secret-looking HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  t.like(r.lines.at(-1), {
    decision: 'deny',
    status: 403,
    path: '/computeMetadata/v1/instance/service-accounts/default/token',
    reason: 'no Metadata-Flavor: Google header',
  });
});

test('a malformed percent escape in a GCE service account name is answered (404) on the connection, and the responder goes on serving', async (t) => {
  const r = await responder();
  t.teardown(r.close);
  // Before: decodeURIComponent threw from the request handler, and node:http rethrew it out of the process.
  const got = await exchange(
    r.port,
    'GET /computeMetadata/v1/instance/service-accounts/%E0%A4%A/token HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n' +
      'GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n',
  );
  const responses = got.split(/(?=HTTP\/1\.1 )/);
  t.is(responses.length, 2, got);
  t.regex(responses[0] ?? '', /^HTTP\/1\.1 404 /);
  t.regex(responses[1] ?? '', /^HTTP\/1\.1 200 [\s\S]*\r\n\r\np1$/);
  t.like(r.lines.at(-2), { event: 'metadata', decision: 'deny', status: 404, reason: 'an unknown service account' });
});

test('a connection that sends nothing is closed by the idle timeout (no request, no line)', async (t) => {
  const r = await responder(200);
  t.teardown(r.close);
  // Nothing is sent; the 10 s timer only catches a hang.
  const s = net.connect(r.port, '127.0.0.1');
  const closed = await new Promise<boolean>((resolve) => {
    const hang = setTimeout(() => resolve(false), 10_000);
    s.on('close', () => {
      clearTimeout(hang);
      resolve(true);
    });
    s.on('error', () => undefined);
  });
  t.true(closed);
  t.deepEqual(r.lines, []);
});
