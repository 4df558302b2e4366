/** The credential schema's token sources: authService and oauth2 keys, defaults, and what is refused. */
import test from 'ava';
import { ConfigError, parseConfig, type Located } from '../../src/config/load.js';

const BASE = `sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies: { p: { allow: [{ host: api.example.test, inject: c }] } }
upstream: { allowPrivate: [10.77.0.0/16] }
credentials:
  c:
`;

function problems(cred: string): Located[] {
  try {
    parseConfig(
      BASE +
        cred
          .split('\n')
          .map((l) => `    ${l}`)
          .join('\n') +
        '\n',
      'sg.yaml',
    );
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}
const ok = (cred: string): ReturnType<typeof parseConfig> =>
  parseConfig(
    BASE +
      cred
        .split('\n')
        .map((l) => `    ${l}`)
        .join('\n') +
      '\n',
    'sg.yaml',
  );
/** The one problem with the credential (an invalid credential also makes the rule's `inject` unknown: that echo is dropped). */
const one = (cred: string): string => {
  const p = problems(cred).filter((x) => x.path !== 'policies.p.allow[0].inject');
  if (p.length !== 1) throw new Error(`expected one problem, got ${JSON.stringify(p)}`);
  return `${p[0]!.path}: ${p[0]!.message}`;
};

test('authService: url, secret; timeoutMs defaults to 2000; header/format/placeholder apply to the token', (t) => {
  const c = ok('authService: { url: "https://auth.internal.test/token", secret: { env: AUTH_KEY } }\nformat: "Token {secret}"').credentials.c;
  t.deepEqual(c, {
    authService: { url: 'https://auth.internal.test/token', timeoutMs: 2000, secret: { env: 'AUTH_KEY' } },
    header: 'Authorization',
    format: 'Token {secret}',
  });
  t.is(ok('authService: { url: "http://127.0.0.1:9000/t", timeoutMs: 500, secret: { file: /k } }').credentials.c?.authService?.timeoutMs, 500);
});

test('oauth2: both grants, defaults (clientAuth basic, timeoutMs 2000), scope', (t) => {
  const cc = ok('oauth2: { tokenUrl: "https://idp.test/oauth/token", grant: client_credentials, clientId: x, clientSecret: { env: S }, scope: "a b" }')
    .credentials.c;
  t.deepEqual(cc?.oauth2, {
    tokenUrl: 'https://idp.test/oauth/token',
    grant: 'client_credentials',
    clientId: 'x',
    clientSecret: { env: 'S' },
    scope: 'a b',
    clientAuth: 'basic',
    timeoutMs: 2000,
  });
  const rt = ok('oauth2: { tokenUrl: "https://idp.test/t", grant: refresh_token, clientId: x, refreshToken: { file: /rt }, clientAuth: body }').credentials.c;
  t.deepEqual(rt?.oauth2, {
    tokenUrl: 'https://idp.test/t',
    grant: 'refresh_token',
    clientId: 'x',
    refreshToken: { file: '/rt' },
    clientAuth: 'body',
    timeoutMs: 2000,
  });
});

test('exactly one source per credential', (t) => {
  t.is(
    one('header: X-Key'),
    'credentials.c: needs one of "secret", "authService", "oauth2", "googleServiceAccount" or "awsSigV4" (where the credential comes from)',
  );
  t.is(
    one('secret: { env: K }\nauthService: { url: "https://a.test/t", secret: { env: A } }'),
    'credentials.c: has "secret" and "authService": exactly one source is allowed',
  );
});

test('service URLs: https anywhere; http only to a loopback or allowPrivate IP literal; no credentials or fragments in the URL', (t) => {
  const svc = (url: string): string => `authService: { url: "${url}", secret: { env: A } }`;
  t.deepEqual(problems(svc('http://127.0.0.1:8080/token')), []);
  t.deepEqual(problems(svc('http://[::1]:8080/token')), []);
  t.deepEqual(problems(svc('http://10.77.4.2:8080/token')), [], 'inside upstream.allowPrivate');
  t.regex(one(svc('http://10.78.0.2/token')), /http:\/\/ to 10\.78\.0\.2 is refused: tokens would cross the network in clear/);
  t.regex(one(svc('http://auth.internal.test/token')), /http:\/\/ is only allowed to an IP address/);
  t.regex(one(svc('ftp://auth.internal.test/token')), /must be an https:\/\//);
  t.regex(one(svc('https://user:pw@auth.internal.test/token')), /must not carry user:password/);
  t.regex(one(svc('https://auth.internal.test/token#x')), /fragment/);
  t.regex(one(svc('not a url')), /is not a URL/);
  t.regex(
    one('oauth2: { tokenUrl: "http://idp.test/t", grant: client_credentials, clientId: x, clientSecret: { env: S } }'),
    /^credentials\.c\.oauth2\.tokenUrl: /,
  );
});

test('authService and oauth2 mistakes are named by key', (t) => {
  t.is(one('authService: { url: "https://a.test/t" }'), 'credentials.c.authService: missing required key "secret"');
  t.is(one('authService: { url: "https://a.test/t", secret: "inline-key" }'), 'credentials.c.authService.secret: must be a mapping');
  t.is(
    one('authService: { url: "https://a.test/t", secret: { env: A }, timeoutMs: 10 }'),
    'credentials.c.authService.timeoutMs: must be a whole number from 100 to 60000',
  );
  t.regex(one('authService: { url: "https://a.test/t", secret: { env: A }, cache: 5 }'), /^credentials\.c\.authService\.cache: unknown key "cache"/);
  t.is(
    one('oauth2: { tokenUrl: "https://idp.test/t", grant: client_credentials, clientId: x }'),
    'credentials.c.oauth2: grant client_credentials needs "clientSecret"',
  );
  t.is(one('oauth2: { tokenUrl: "https://idp.test/t", grant: refresh_token, clientId: x }'), 'credentials.c.oauth2: grant refresh_token needs "refreshToken"');
  t.is(
    one('oauth2: { tokenUrl: "https://idp.test/t", grant: client_credentials, clientId: x, clientSecret: { env: S }, refreshToken: { env: R } }'),
    'credentials.c.oauth2.refreshToken: only applies to grant refresh_token',
  );
  t.is(
    one('oauth2: { tokenUrl: "https://idp.test/t", grant: password, clientId: x, clientSecret: { env: S } }'),
    'credentials.c.oauth2.grant: must be one of: client_credentials, refresh_token',
  );
  t.regex(
    one('oauth2: { tokenUrl: "https://idp.test/t", grant: client_credentials, clientId: x, clientSecret: { env: S }, scope: "a\\"b" }'),
    /^credentials\.c\.oauth2\.scope: .* scope tokens/,
  );
  t.is(
    one('oauth2: { tokenUrl: "https://idp.test/t", grant: client_credentials, clientId: x, clientSecret: { env: S }, clientAuth: jwt }'),
    'credentials.c.oauth2.clientAuth: must be one of: basic, body',
  );
});

test('format cannot be combined with basic (Basic builds the header value itself)', (t) => {
  t.is(
    one('secret: { env: K }\nbasic: { username: u }\nformat: "token {secret}"'),
    'credentials.c.format: cannot be combined with "basic" (Basic builds the header value itself)',
  );
});

test('awsSigV4: keys from env/file, placeholder key id and body limit default, region/service optional; header options refused', (t) => {
  const c = ok('awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { file: /run/sk }, sessionToken: { env: ST } }').credentials.c;
  t.deepEqual(c?.awsSigV4, {
    accessKeyId: { env: 'AK' },
    secretAccessKey: { file: '/run/sk' },
    sessionToken: { env: 'ST' },
    placeholderKeyId: 'AKIASANDGATEPLACEHOLDER',
    maxBodyBytes: 16 * 1024 * 1024,
  });
  const d = ok(
    'awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { env: SK }, region: eu-west-1, service: s3, placeholderKeyId: AKIAMYPLACEHOLDER0001, maxBodyBytes: 4096 }',
  ).credentials.c;
  t.like(d?.awsSigV4, { region: 'eu-west-1', service: 's3', placeholderKeyId: 'AKIAMYPLACEHOLDER0001', maxBodyBytes: 4096 });
  t.is(one('awsSigV4: { accessKeyId: { env: AK } }'), 'credentials.c.awsSigV4: needs both "accessKeyId" and "secretAccessKey"');
  t.regex(
    one('awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { env: SK } }\nplaceholder: sk-placeholder-x'),
    /credentials\.c\.placeholder: does not apply to an "awsSigV4" credential/,
  );
  t.regex(
    one('awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { env: SK }, placeholderKeyId: short }'),
    /placeholderKeyId: "short" is not an access key id/,
  );
  t.regex(one('awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { env: SK }, region: "US East" }'), /region: "US East" is not a region name/);
});

test('placeholderIn: header, query, body (default header only); needs a placeholder; maxBodyBytes bounded', (t) => {
  const c = ok('secret: { env: K }\nplaceholder: sk-placeholder-x\nplaceholderIn: [query, body]\nmaxBodyBytes: 2048').credentials.c;
  t.deepEqual(c?.placeholderIn, ['query', 'body']);
  t.is(c?.maxBodyBytes, 2048);
  t.is(ok('secret: { env: K }\nplaceholder: sk-placeholder-x').credentials.c?.placeholderIn, undefined);
  t.is(one('secret: { env: K }\nplaceholderIn: [body]'), 'credentials.c.placeholderIn: needs "placeholder" (the string to replace)');
  t.regex(one('secret: { env: K }\nplaceholder: sk-placeholder-x\nplaceholderIn: [cookie]'), /placeholderIn\[0\]: must be one of: header, query, body/);
  t.regex(one('secret: { env: K }\nplaceholder: sk-placeholder-x\nmaxBodyBytes: 10'), /maxBodyBytes: must be a whole number/);
});

test('awsSigV4 with authService: temporary keys from the service; not together with static keys', (t) => {
  const c = ok('awsSigV4: { authService: { url: "https://auth.internal.example/aws", secret: { env: SVC } }, region: us-east-1 }').credentials.c;
  t.like(c?.awsSigV4, { authService: { url: 'https://auth.internal.example/aws', timeoutMs: 2000, secret: { env: 'SVC' } }, region: 'us-east-1' });
  t.is(c?.awsSigV4?.accessKeyId, undefined);
  t.regex(
    one('awsSigV4: { accessKeyId: { env: AK }, secretAccessKey: { env: SK }, authService: { url: "https://a.example/x", secret: { env: SVC } } }'),
    /needs either "accessKeyId" and "secretAccessKey" .* or "authService"/,
  );
  t.regex(one('awsSigV4: { region: us-east-1 }'), /needs either "accessKeyId" and "secretAccessKey"/);
  t.regex(one('awsSigV4: { accessKeyId: { env: AK } }'), /needs both "accessKeyId" and "secretAccessKey"/);
});
