import test from 'ava';
import { compileCredential, injectQuery, withQueryParam } from '../../src/creds/credential.js';
import { requestHead } from '../../src/http/request-head.js';
import { scrubString } from '../../src/http/scrub.js';
import { loadCredentials } from '../../src/creds/secrets.js';
import { parseConfig } from '../../src/config/load.js';
import { SandgateError, exitCodeFor } from '../../src/errors.js';
import type { CredentialConfig } from '../../src/config/types.js';

const SECRET = 'sk-real-0123456789';
/** The fields requestHead (src/http/request-head.ts) sends upstream, as [name, value] pairs after Host. */
function injected(fields: [string, string][], cred: ReturnType<typeof compileCredential>): [string, string][] {
  const raw = fields.flat();
  const head = requestHead({ method: 'GET', url: '/', rawHeaders: raw, connectionNamed: undefined }, 'api', cred);
  return head
    .split('\r\n')
    .slice(2, -2)
    .map((l) => {
      const i = l.indexOf(': ');
      return [l.slice(0, i), l.slice(i + 2)] as [string, string];
    });
}

const cfg = (c: Partial<CredentialConfig>): CredentialConfig => ({ secret: { env: 'X' }, header: 'Authorization', format: 'Bearer {secret}', ...c });

test('default form: Authorization: Bearer {secret}, replacing what the sandbox sent (never duplicated)', (t) => {
  const cred = compileCredential('llm', cfg({}), SECRET);
  const h = injected(
    [
      ['Authorization', 'Bearer sandbox-junk'],
      ['accept', '*/*'],
    ],
    cred,
  );
  t.deepEqual(h, [
    ['accept', '*/*'],
    ['authorization', `Bearer ${SECRET}`],
    ['Accept-Encoding', 'identity'],
  ]);
  t.is(h.filter(([k]) => k.toLowerCase() === 'authorization').length, 1);
});

test('custom header and format; the header name is matched case-insensitively', (t) => {
  const cred = compileCredential('k', cfg({ header: 'X-Api-Key', format: 'key={secret};v=1' }), SECRET);
  t.is(cred.header, 'x-api-key');
  t.deepEqual(injected([['X-API-Key', 'mine']], cred), [
    ['x-api-key', `key=${SECRET};v=1`],
    ['Accept-Encoding', 'identity'],
  ]);
});

test('a secret with $ patterns is inserted literally', (t) => {
  const cred = compileCredential('k', cfg({}), 'a$&b$1c$$d-long');
  t.is(cred.value, 'Bearer a$&b$1c$$d-long');
});

test('Basic form: base64(username:secret), and the base64 is a needle to scrub', (t) => {
  const cred = compileCredential('git', cfg({ basic: { username: 'x-access-token' } }), SECRET);
  const b64 = Buffer.from(`x-access-token:${SECRET}`).toString('base64');
  t.is(cred.value, `Basic ${b64}`);
  t.true(cred.needles.includes(b64));
  t.true(cred.needles.includes(SECRET));
  t.deepEqual(injected([['authorization', 'Basic Zm9vOmJhcg==']], cred), [
    ['authorization', `Basic ${b64}`],
    ['Accept-Encoding', 'identity'],
  ]);
});

test('placeholder: replaced in every header value; the credential header is still set', (t) => {
  const cred = compileCredential('llm', cfg({ placeholder: 'sk-placeholder' }), SECRET);
  const h = injected(
    [
      ['Authorization', 'Bearer sk-placeholder'],
      ['X-Other', 'token=sk-placeholder; again=sk-placeholder'],
      ['Cookie', 'a=sk-placeholder'],
      ['Cookie', 'b=1'],
      ['Content-Length', '3'],
    ],
    cred,
  );
  t.deepEqual(h, [
    ['X-Other', `token=${SECRET}; again=${SECRET}`],
    ['Cookie', `a=${SECRET}`],
    ['Cookie', 'b=1'],
    ['Content-Length', '3'],
    ['authorization', `Bearer ${SECRET}`],
    ['Accept-Encoding', 'identity'],
  ]);
});

test('query form: the parameter is set, every copy the sandbox sent is dropped, no header is added', (t) => {
  const cred = compileCredential('q', cfg({ query: 'key' }), SECRET);
  t.is(cred.value, undefined);
  t.deepEqual(injected([['Authorization', 'Bearer mine']], cred), [
    ['Authorization', 'Bearer mine'],
    ['Accept-Encoding', 'identity'],
  ]);
  t.is(injectQuery('/v1/x', cred), `/v1/x?key=${SECRET}`);
  t.is(injectQuery('/v1/x?a=1&key=junk&b=%20&k%65y=2&key', cred), `/v1/x?a=1&b=%20&key=${SECRET}`);
  t.is(injectQuery('/v1/x?', cred), `/v1/x?key=${SECRET}`);
  t.true(cred.needles.includes(encodeURIComponent(SECRET)));
});

test('withQueryParam encodes the value', (t) => {
  t.is(withQueryParam('/p?x=1', 'api key', 'a&b=c d'), '/p?x=1&api%20key=a%26b%3Dc%20d');
  t.is(injectQuery('/p?x=1', compileCredential('h', cfg({}), SECRET)), '/p?x=1', 'header mode leaves the target alone');
});

test('needles are sorted longest first and include the JSON-escaped form', (t) => {
  const cred = compileCredential('k', cfg({}), 'se"cret\\value1');
  const lens = cred.needles.map((n) => n.length);
  t.deepEqual(
    lens,
    [...lens].sort((a, b) => b - a),
  );
  t.true(cred.needles.includes('se\\"cret\\\\value1'));
});

test('a secret with "/" is also a needle in its JSON form with "\\/" (PHP json_encode writes it so)', (t) => {
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  const cred = compileCredential('k', cfg({}), secret);
  t.true(cred.needles.includes('wJalrXUtnFEMI\\/K7MDENG\\/bPxRfiCYEXAMPLEKEY'));
  const echoed = JSON.stringify({ echo: secret }).replaceAll('/', '\\/');
  t.false(scrubString(echoed, cred.needles).includes('K7MDENG'));
});

test('the secret inside a longer base64 text (an echo of a whole header block), at any alignment, is masked', (t) => {
  const secret = 'sk-live-0123456789abcdefghijklmnop';
  const cred = compileCredential('k', cfg({}), secret);
  for (const prefix of ['', 'a', 'ab', 'abc', '{"authorization":"Bearer ']) {
    for (const enc of ['base64', 'base64url'] as const) {
      const echoed = Buffer.from(`${prefix}${secret}", "x-other": "1"}`).toString(enc);
      const out = scrubString(echoed, cred.needles);
      t.not(out, echoed, `${enc} after ${JSON.stringify(prefix)}`);
      // What is left around the mask decodes to at most a few bytes of the secret, never a run of 8.
      const left = out.split(/\[redacted\]|\*+/);
      for (const part of left) t.false(Buffer.from(part, enc).toString('latin1').includes(secret.slice(8, 16)), part);
    }
  }
});

const yaml = (credentials: string): string => `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies: { p: { allow: [{ host: api.example.test, inject: llm }] } }
credentials:
${credentials}
`;

test('loadCredentials reads env and file sources once, trimming one trailing newline', (t) => {
  const config = parseConfig(yaml(`  llm: { secret: { env: SG_K } }\n  f: { secret: { file: /k }, basic: { username: u } }`), 'c.yaml');
  const creds = loadCredentials(config, { env: { SG_K: `${SECRET}\n` }, readFile: (f) => (f === '/k' ? 'file-secret-123\r\n' : '') });
  t.is(creds.get('llm')?.value, `Bearer ${SECRET}`);
  t.is(creds.get('f')?.secret, 'file-secret-123');
});

test('a missing, unreadable, empty, short or multi-line secret is a config error (exit 2) naming credentials.ID.secret', (t) => {
  const config = parseConfig(yaml('  llm: { secret: { env: SG_K } }'), 'c.yaml');
  const fileConfig = parseConfig(yaml('  llm: { secret: { file: /nope } }'), 'c.yaml');
  const cases: [typeof config, NodeJS.ProcessEnv, RegExp][] = [
    [config, {}, /^credentials\.llm\.secret: environment variable SG_K is not set$/],
    [config, { SG_K: '' }, /credentials\.llm\.secret: .* is empty/],
    [config, { SG_K: 'short' }, /credentials\.llm\.secret: .* shorter than 8/],
    [config, { SG_K: 'two\nlines-of-secret' }, /credentials\.llm\.secret: .* one line of printable ASCII/],
    [config, { SG_K: ' padded-secret ' }, /credentials\.llm\.secret/],
    [fileConfig, {}, /^credentials\.llm\.secret: cannot read \/nope \(ENOENT\)$/],
  ];
  for (const [c, env, re] of cases) {
    const err = t.throws(
      () =>
        loadCredentials(c, {
          env,
          readFile: () => {
            throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
          },
        }),
      { instanceOf: SandgateError },
    );
    t.regex(err?.message ?? '', re);
    t.is(exitCodeFor(err), 2);
    t.false((err?.message ?? '').includes('two\nlines'), 'the value never appears in the error');
  }
});
