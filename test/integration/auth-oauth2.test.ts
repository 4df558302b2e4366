/**
 * oauth2 credentials end to end (client_credentials and refresh_token grants against a fake token
 * endpoint in its own namespace), and the token cache's hit rate under load (2,000 requests over
 * 5 s with 1 s tokens), read from the `stop` audit line.
 *
 * Tokens live 1 s, so every test here spans several refreshes.
 */
import test from 'ava';
import { startGate, type Gate, type Line } from '../helpers/gate.js';
import {
  AUTH_HOST,
  CLIENT_ID,
  apiRequests,
  authConfig,
  authUrl,
  calls,
  createAuthWorld,
  load,
  NEVER_LOGGED,
  secretEnv,
  type AuthWorld,
} from '../helpers/auth-world.js';

const H = {
  cc: 'cc.oauth.example.test',
  body: 'body.oauth.example.test',
  rt: 'rt.oauth.example.test',
  load: 'load.example.test',
};
const NAMES = Object.values(H);
const SCOPE = 'read write';

let aw: AuthWorld;
let g: Gate;

test.before(async () => {
  aw = await createAuthWorld(NAMES, { ttl: 1, scope: SCOPE });
  const authIp = aw.w.topo.addr('auth');
  const config = authConfig(
    aw,
    NAMES,
    [
      { host: H.cc, inject: 'cc' },
      { host: H.body, inject: 'ccbody' },
      { host: H.rt, inject: 'rt' },
      { host: H.load, inject: 'load' },
    ],
    {
      // Plain HTTP to an IP literal inside upstream.allowPrivate (10.77.0.0/16): accepted.
      cc: {
        oauth2: {
          tokenUrl: `http://${authIp}:8080/oauth/token`,
          grant: 'client_credentials',
          clientId: CLIENT_ID,
          clientSecret: { env: 'SG_CLIENT_SECRET' },
          scope: SCOPE,
        },
      },
      ccbody: {
        oauth2: {
          tokenUrl: `https://${AUTH_HOST}:8443/oauth/token`,
          grant: 'client_credentials',
          clientId: CLIENT_ID,
          clientSecret: { env: 'SG_CLIENT_SECRET' },
          scope: SCOPE,
          clientAuth: 'body',
        },
      },
      rt: {
        oauth2: {
          tokenUrl: `https://${AUTH_HOST}:8443/oauth/token`,
          grant: 'refresh_token',
          clientId: CLIENT_ID,
          clientSecret: { env: 'SG_CLIENT_SECRET' },
          refreshToken: { env: 'SG_REFRESH_TOKEN' },
          scope: SCOPE,
        },
      },
      load: { authService: { url: authUrl('?ttl=1'), secret: { env: 'SG_AUTH_KEY' } } },
    },
  );
  g = await startGate(aw.w.topo, aw.w.dir, config, 'sandgate.json', { env: secretEnv });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await aw?.w.cleanup();
});

const oauthCalls = (): Line[] => calls(aw, (c) => c.kind === 'oauth2');

test.serial('client_credentials (HTTP Basic client auth, over http:// to an allowPrivate address): one token for every sandbox, refreshed', async (t) => {
  const before = oauthCalls().length;
  // Both users' sandboxes share the client's token: client credentials are not per user.
  const [ra, rb] = await Promise.all([
    load(aw, aw.ns.alice, `https://${H.cc}/c/${CLIENT_ID}/a`, { n: 100, concurrency: 4, durationMs: 2500 }),
    load(aw, aw.ns.bob, `https://${H.cc}/c/${CLIENT_ID}/b`, { n: 100, concurrency: 4, durationMs: 2500 }),
  ]);
  t.deepEqual(ra.statuses, { 200: 100 }, JSON.stringify(ra));
  t.deepEqual(rb.statuses, { 200: 100 }, JSON.stringify(rb));
  t.deepEqual({ ...ra.subjects, ...rb.subjects }, { [`client:${CLIENT_ID}`]: 100 });
  t.is(ra.leaked + rb.leaked, 0);
  t.is(ra.redacted + rb.redacted, 200, 'the echoed access token is scrubbed');
  const c = oauthCalls().slice(before);
  // 1 s tokens, refreshed from 0.5 s: about 5 calls in 2.5 s, shared by both sandboxes.
  t.true(c.length >= 3 && c.length <= 8, `${c.length} calls`);
  t.true(c.every((x) => x.grant === 'client_credentials' && x.clientOk === true && x.basic === true && x.scope === SCOPE));
  t.is(apiRequests(aw, (x) => String(x.path).startsWith(`/c/${CLIENT_ID}/`) && x.status !== 200).length, 0);
});

test.serial('client_credentials with clientAuth: body (client_id and client_secret in the form)', async (t) => {
  const before = oauthCalls().length;
  const r = await load(aw, aw.ns.alice, `https://${H.body}/c/${CLIENT_ID}/body`, { n: 20, concurrency: 20 });
  t.deepEqual(r.statuses, { 200: 20 }, JSON.stringify(r));
  const c = oauthCalls().slice(before);
  t.is(c.length, 1, 'single-flight');
  t.like(c[0], { grant: 'client_credentials', clientOk: true, basic: false });
});

test.serial('refresh_token grant: the rotated refresh token is used for the next refresh, never the stale one', async (t) => {
  const before = oauthCalls().length;
  const r = await load(aw, aw.ns.bob, `https://${H.rt}/c/${CLIENT_ID}/rt`, { n: 120, concurrency: 4, durationMs: 3000 });
  t.deepEqual(r.statuses, { 200: 120 }, JSON.stringify(r));
  t.is(r.leaked, 0);
  const c = oauthCalls().slice(before);
  t.true(c.length >= 4, `${c.length} calls: each refresh rotated the refresh token`);
  t.true(
    c.every((x) => x.grant === 'refresh_token' && x.clientOk === true && x.staleRefresh === false),
    JSON.stringify(c),
  );
});

test.serial('token cache hit rate under load: 2,000 requests over 5 s with 1 s tokens (from the stop line)', async (t) => {
  const r = await load(aw, aw.ns.alice, `https://${H.load}/u/alice/load`, { n: 2000, concurrency: 20, durationMs: 5000 });
  t.deepEqual(r.statuses, { 200: 2000 }, JSON.stringify(r));
  t.is(r.leaked, 0);
  const fetched = calls(aw, (c) => c.host === H.load).length;
  g.proc.kill('SIGTERM');
  const stop = await g.log.waitFor((l) => l.event === 'stop', 5000, 'the stop line');
  const s = (stop.tokenCache as Record<string, Record<string, number>> | undefined)?.load;
  t.truthy(s, JSON.stringify(stop));
  if (!s) return;
  t.is(s.hits! + s.misses!, 2000);
  t.is(s.fetches, fetched, 'every fetch is one call to the service (no retries needed)');
  t.true(s.hitRate! >= 0.98, `hit rate ${s.hitRate}`);
  t.log(
    `load: ${r.n} requests in ${r.ms} ms; token cache: ${s.hits} hits, ${s.misses} misses (${s.coalesced} joined a call in flight), hit rate ${(s.hitRate! * 100).toFixed(2)}%; ${s.fetches} calls to the auth service (${s.refreshes} ahead of expiry)`,
  );
  // Everything sandgate printed, over the whole file: no token, no secret.
  const all = g.log.raw.join('\n') + g.stderr();
  for (const x of NEVER_LOGGED) t.false(all.includes(x), `sandgate printed ${x.slice(0, 5)}...`);
});
