/**
 * The world of the token-credential tests (test/integration/auth-*.test.ts): the standard world
 * (src: test/helpers/gate.ts) plus
 * - a second sandbox namespace "bob" (10.77.8.0/24) beside "sbx" (10.77.1.0/24), for isolation;
 * - a fake auth service + OAuth2 token endpoint in its own upstream namespace "auth" (10.77.4.2),
 *   HTTPS on 8443 with a certificate for auth.internal.test, plain HTTP on 8080;
 * - a fake API on upstream "a" (10.77.2.2:443) that accepts only tokens the auth service minted,
 *   checks whose they are, and echoes the Authorization header it got (so scrubbing is tested).
 * Every per-run secret (service key, client secret, refresh token, mint key) is random.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, ROOT, startFake, type Fake, type Line, type World } from './gate.js';

export { startFake, type Fake };

const HELPERS = join(ROOT, 'test/helpers');
const hex = (): string => randomBytes(12).toString('hex');

export const SERVICE_KEY = `svc-key-${hex()}`;
export const CLIENT_ID = 'sandgate-client';
export const CLIENT_SECRET = `client-secret-${hex()}`;
export const REFRESH_TOKEN = `rtok_initial_${hex()}`;
export const MINT_KEY = `mint-${hex()}`;
export const AUTH_HOST = 'auth.internal.test';

export interface AuthWorld {
  w: World;
  auth: Fake;
  api: Fake;
  /** Sandbox namespace of sandbox "sbx" (user alice) and "bob" (user bob). */
  ns: { alice: string; bob: string };
}

/** `names`: every API host name the tests use; each resolves (in both sandboxes and for sandgate) to the fake API. */
export async function createAuthWorld(names: string[], opts: { ttl?: number; scope?: string } = {}): Promise<AuthWorld> {
  const w = await createWorld(
    {
      sandboxes: [
        { name: 'sbx', subnet: 1 },
        { name: 'bob', subnet: 8 },
      ],
      upstreams: [
        { name: 'a', subnet: 2 },
        { name: 'b', subnet: 3 },
        { name: 'auth', subnet: 4 },
      ],
    },
    { https: false },
  );
  try {
    const apiCert = w.pki.issue(names, { tag: 'token-api' });
    const authCert = w.pki.issue([AUTH_HOST], { tag: 'auth' });
    const [auth, api] = await Promise.all([
      startFake(w, 'auth', 'fake-auth-service.mjs', [
        '--port',
        '8443',
        '--plain-port',
        '8080',
        '--tls',
        authCert.cert,
        authCert.key,
        '--service-key',
        SERVICE_KEY,
        '--mint-key',
        MINT_KEY,
        '--ttl',
        String(opts.ttl ?? 1),
        '--client-id',
        CLIENT_ID,
        '--client-secret',
        CLIENT_SECRET,
        '--refresh-token',
        REFRESH_TOKEN,
        ...(opts.scope !== undefined ? ['--scope', opts.scope] : []),
      ]),
      startFake(w, 'a', 'fake-token-api.mjs', ['--port', '443', '--tls', apiCert.cert, apiCert.key, '--mint-key', MINT_KEY]),
    ]);
    const ns = { alice: w.sandbox, bob: w.topo.ns('bob') };
    // Sandboxes resolve every API name to the fake API's address, where sandgate's transparent
    // listener picks the flow up (sandgate's own DNS responder is not under test here).
    for (const n of [ns.alice, ns.bob]) appendFileSync(`/etc/netns/${n}/hosts`, names.map((h) => `${w.a}\t${h}\n`).join(''));
    return { w, auth, api, ns };
  } catch (err) {
    await w.cleanup();
    throw err;
  }
}

/**
 * sandgate's config: two sandboxes (agent-a = alice on sbx, agent-b = bob on bob), `allow` rules,
 * `credentials`; every name resolves to the fake API, auth.internal.test to the auth namespace.
 */
export function authConfig(aw: AuthWorld, names: string[], allow: unknown[], credentials: Record<string, unknown>): Record<string, unknown> {
  const { w } = aw;
  return {
    listen: { port: 15001, dnsPort: 15053, control: join(w.dir, 'control.sock') },
    tls: { caDir: join(w.dir, 'ca') },
    upstream: {
      hosts: { ...Object.fromEntries(names.map((n) => [n, w.a])), [AUTH_HOST]: w.topo.addr('auth') },
      allowPrivate: ['10.77.0.0/16'],
      caFile: w.pki.caFile,
    },
    sandboxes: [
      { name: 'agent-a', interface: w.topo.hostIface('sbx'), cidr: '10.77.1.0/24', policy: 'default', user: 'alice' },
      { name: 'agent-b', interface: w.topo.hostIface('bob'), cidr: '10.77.8.0/24', policy: 'default', user: 'bob' },
    ],
    policies: { default: { allow } },
    credentials,
    ...(process.env['SANDGATE_TEST_BACKEND'] ? { firewall: { backend: process.env['SANDGATE_TEST_BACKEND'] } } : {}),
  };
}

export const authUrl = (query = ''): string => `https://${AUTH_HOST}:8443/token${query}`;
export const secretEnv = { SG_AUTH_KEY: SERVICE_KEY, SG_CLIENT_SECRET: CLIENT_SECRET, SG_REFRESH_TOKEN: REFRESH_TOKEN };

export interface LoadResult {
  n: number;
  ms: number;
  statuses: Record<string, number>;
  errors: Record<string, number>;
  /** Responses in which "tk_" (any token) appeared: must be 0. */
  leaked: number;
  /** Responses in which sandgate masked the echoed token. */
  redacted: number;
  subjects: Record<string, number>;
}

/** test/helpers/token-load-client.mjs in a sandbox namespace. */
export async function load(
  aw: AuthWorld,
  ns: string,
  url: string,
  o: { n: number; concurrency: number; durationMs?: number; method?: string; bodyBytes?: number },
): Promise<LoadResult> {
  const ca = join(aw.w.dir, 'ca', 'ca.pem');
  const args = [join(HELPERS, 'token-load-client.mjs'), '--url', url, '--ca', ca, '--n', String(o.n), '--concurrency', String(o.concurrency)];
  if (o.durationMs !== undefined) args.push('--duration-ms', String(o.durationMs));
  if (o.method !== undefined) args.push('--method', o.method);
  if (o.bodyBytes !== undefined) args.push('--body-bytes', String(o.bodyBytes));
  const r = await aw.w.topo.exec(ns, process.execPath, args, { timeoutMs: (o.durationMs ?? 0) + 20_000 });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as LoadResult;
  } catch {
    throw new Error(`load client failed (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

export const calls = (aw: AuthWorld, pred: (c: Line) => boolean): Line[] =>
  aw.auth.log.lines.map((l) => l.call as Line | undefined).filter((c): c is Line => c !== undefined && pred(c));

export const apiRequests = (aw: AuthWorld, pred: (r: Line) => boolean): Line[] =>
  aw.api.log.lines.map((l) => l.request as Line | undefined).filter((r): r is Line => r !== undefined && pred(r));

/** Every string that must never appear in anything sandgate printed. */
export const NEVER_LOGGED = [SERVICE_KEY, CLIENT_SECRET, REFRESH_TOKEN, 'tk_', 'rtok_'];
