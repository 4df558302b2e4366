/**
 * Real clients nobody here wrote: git over smart HTTP, the `openai` npm SDK, the `ws`
 * WebSocket client and curl, each in the sandbox namespace with no real credential, talking through
 * sandgate's interception to fake upstreams that insist on the real one. After each exchange the
 * test greps every byte the sandbox received, and every audit/stderr line of sandgate, for the
 * secrets (raw and base64-encoded, as Basic auth would carry them).
 *
 * The first three tests check the fakes themselves without sandgate (client and server in the same
 * upstream namespace: nothing is routed between namespaces except through sandgate), so a failure
 * further down is sandgate's, not the fake's.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createWorld, startGate, startFake, baseConfig, ROOT, type Fake, type World, type Gate } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

const HELPERS = join(ROOT, 'test/helpers');
const GIT = '/usr/bin/git';
const CURL = '/usr/bin/curl';

// Per-run secrets: random, so a hit in captured bytes can only come from sandgate's injection.
const LLM_KEY = `sk-real-llm-${randomBytes(16).toString('hex')}`;
const GIT_TOKEN = `ghp_real${randomBytes(16).toString('hex')}`;
const WS_TOKEN = `ws-real-${randomBytes(16).toString('hex')}`;
const GIT_USER = 'x-access-token';
const LLM_PLACEHOLDER = 'sk-sandgate-llm-placeholder';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
/** Every form in which a secret could leak: raw, and base64 (alone, and as Basic user:password). */
const FORBIDDEN: { what: string; text: string }[] = [
  { what: 'LLM key', text: LLM_KEY },
  { what: 'LLM key (base64)', text: b64(LLM_KEY) },
  { what: 'git token', text: GIT_TOKEN },
  { what: 'git token (base64)', text: b64(GIT_TOKEN) },
  { what: 'git Basic credentials (base64)', text: b64(`${GIT_USER}:${GIT_TOKEN}`) },
  { what: 'WebSocket token', text: WS_TOKEN },
  { what: 'WebSocket token (base64)', text: b64(WS_TOKEN) },
];

function assertNoSecret(t: ExecutionContext, captured: string, where: string): void {
  for (const f of FORBIDDEN) t.false(captured.includes(f.text), `the ${f.what} appears in ${where}`);
}

/** Name resolution in a namespace via its own /etc/netns/NS/hosts (sandgate's DNS responder is another issue). */
function addHosts(ns: string, entries: [string, string][]): void {
  appendFileSync(`/etc/netns/${ns}/hosts`, entries.map(([ip, name]) => `${ip}\t${name}\n`).join(''));
}

/** Everything under a directory as one string (a clone's files, trace files): what git received. */
function readTree(dir: string): string {
  let out = '';
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    const st = statSync(p);
    out += st.isDirectory() ? readTree(p) : readFileSync(p).toString('latin1');
  }
  return out;
}

/** A clean environment: nothing of the test runner's, so no credential can reach a client by accident. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...extra };
}

let w: World;
let bareRepo: string;
let fakes: { git: Fake; llm: Fake; ws: Fake };
let gateP: Promise<Gate> | undefined;

test.before(async () => {
  w = await createWorld(
    {
      upstreams: [
        { name: 'a', subnet: 2 },
        { name: 'b', subnet: 3 },
        { name: 'git', subnet: 4 },
        { name: 'llm', subnet: 5 },
        { name: 'ws', subnet: 6 },
      ],
    },
    { https: false },
  );
  bareRepo = join(w.dir, 'git-root', 'project.git');
  const gitCert = w.pki.issue(['git.example.test'], { tag: 'git' });
  const llmCert = w.pki.issue(['api.example.test'], { tag: 'llm' });
  const wsCert = w.pki.issue(['ws.example.test'], { tag: 'ws' });
  const [git, llm, ws] = await Promise.all([
    startFake(w, 'git', 'fake-git-server.mjs', [
      '--port',
      '443',
      '--tls',
      gitCert.cert,
      gitCert.key,
      '--repo',
      bareRepo,
      '--user',
      GIT_USER,
      '--password',
      GIT_TOKEN,
    ]),
    startFake(w, 'llm', 'fake-openai-server.mjs', ['--port', '443', '--tls', llmCert.cert, llmCert.key, '--key', LLM_KEY]),
    startFake(w, 'ws', 'fake-ws-server.mjs', ['--port', '443', '--tls', wsCert.cert, wsCert.key, '--token', WS_TOKEN]),
  ]);
  fakes = { git, llm, ws };
  // Each upstream namespace resolves its own name to loopback (direct checks); the sandbox resolves
  // every name to the upstream's address, where sandgate's transparent listener picks the flow up.
  addHosts(w.topo.ns('git'), [['127.0.0.1', 'git.example.test']]);
  addHosts(w.topo.ns('llm'), [['127.0.0.1', 'api.example.test']]);
  addHosts(w.topo.ns('ws'), [['127.0.0.1', 'ws.example.test']]);
  addHosts(w.sandbox, [
    [w.topo.addr('git'), 'git.example.test'],
    [w.topo.addr('llm'), 'api.example.test'],
    [w.topo.addr('ws'), 'ws.example.test'],
  ]);
});

test.after.always(async () => {
  if (gateP)
    await gateP.then(
      (g) => g.proc.kill('SIGKILL'),
      () => undefined,
    );
  await w?.cleanup();
});

/** sandgate with intercepted rules for the three fakes; started once, by the first test that needs it. */
function gate(): Promise<Gate> {
  gateP ??= (async () => {
    const base = baseConfig(w, {
      allow: [
        { host: 'api.example.test', inject: 'llm' },
        { host: 'git.example.test', inject: 'git' },
        { host: 'ws.example.test', inject: 'ws' },
      ],
      upstream: {
        hosts: { 'api.example.test': w.topo.addr('llm'), 'git.example.test': w.topo.addr('git'), 'ws.example.test': w.topo.addr('ws') },
        caFile: w.pki.caFile,
      },
    });
    const config = {
      ...base,
      credentials: {
        llm: { secret: { env: 'LLM_API_KEY' }, placeholder: LLM_PLACEHOLDER },
        git: { secret: { env: 'GIT_TOKEN' }, basic: { username: GIT_USER } },
        ws: { secret: { env: 'WS_TOKEN' } },
      },
    };
    const g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { LLM_API_KEY: LLM_KEY, GIT_TOKEN, WS_TOKEN } });
    if (!existsSync(caPem())) throw new Error(`sandgate is ready but its CA ${caPem()} does not exist`);
    return g;
  })();
  return gateP;
}

const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

/** After each exchange: nothing sandgate logged or printed carries a secret. */
function assertGateClean(t: ExecutionContext, g: Gate): void {
  assertNoSecret(t, g.log.raw.join('\n'), "sandgate's audit log");
  assertNoSecret(t, g.stderr(), "sandgate's stderr");
}

function parseOut(r: ExecResult): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`client printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

interface GitRun {
  r: ExecResult;
  seen: string;
}

/** git in namespace `ns`, with an empty HOME and no system/global config: no credential helper, no prompt. */
async function gitIn(ns: string, cwd: string, argv: string[], ca: string): Promise<GitRun> {
  const home = mkdtempSync(join(w.dir, 'home-'));
  const trace = join(home, 'trace-curl.log');
  const r = await w.topo.exec(ns, GIT, ['-C', cwd, ...argv], {
    timeoutMs: 20000,
    env: cleanEnv({
      HOME: home,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ASKPASS: '/bin/false',
      GIT_SSL_CAINFO: ca,
      GIT_TRACE_CURL: trace,
    }),
  });
  // GIT_TRACE_CURL holds every header and data byte git's libcurl received.
  return { r, seen: `${r.stdout}\n${r.stderr}\n${existsSync(trace) ? readFileSync(trace, 'latin1') : ''}` };
}

function bareLog(): string {
  return execFileSync(GIT, ['--git-dir', bareRepo, 'log', '--format=%s', 'main'], {
    env: cleanEnv({ GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' }),
    encoding: 'utf8',
  });
}

const commitArgs = ['-c', 'user.name=agent', '-c', 'user.email=agent@sandbox.test', 'commit', '-q', '-m'];

/* ------------------------------------------------------------------------------------------ */
/* The fakes, directly                                                                        */
/* ------------------------------------------------------------------------------------------ */

test('fake git server directly: 401 without credentials; clone and push with Basic credentials', async (t) => {
  const ns = w.topo.ns('git');
  const work = mkdtempSync(join(w.dir, 'direct-git-'));
  const anon = await gitIn(ns, work, ['clone', 'https://git.example.test/project.git', 'anon'], w.pki.caFile);
  t.not(anon.r.code, 0);
  t.regex(anon.r.stderr, /could not read Username|Authentication failed/);
  t.truthy(fakes.git.log.find((l) => (l.request as { auth?: string } | undefined)?.auth === 'missing' && l.status === 401));

  const header = `http.extraHeader=Authorization: Basic ${b64(`${GIT_USER}:${GIT_TOKEN}`)}`;
  const clone = await gitIn(ns, work, ['-c', header, 'clone', 'https://git.example.test/project.git', 'wc'], w.pki.caFile);
  t.is(clone.r.code, 0, clone.r.stderr);
  t.is(readFileSync(join(work, 'wc', 'README.md'), 'utf8'), 'hello from the fake git upstream\n');
  appendFileSync(join(work, 'wc', 'direct.txt'), 'direct\n');
  const wc = join(work, 'wc');
  t.is((await gitIn(ns, wc, ['add', 'direct.txt'], w.pki.caFile)).r.code, 0);
  t.is((await gitIn(ns, wc, [...commitArgs, 'pushed directly'], w.pki.caFile)).r.code, 0);
  const push = await gitIn(ns, wc, ['-c', header, 'push', 'origin', 'main'], w.pki.caFile);
  t.is(push.r.code, 0, push.r.stderr);
  t.regex(bareLog(), /^pushed directly$/m);
  t.truthy(fakes.git.log.find((l) => (l.request as { path?: string } | undefined)?.path === '/project.git/git-receive-pack' && l.status === 200));
  // The fake's own log never carries the password.
  assertNoSecret(t, fakes.git.log.raw.join('\n'), "the fake git server's log");
});

/** Send times (Date.now(), same machine clock) of the fake LLM's first streamed response that started after `since`. */
async function streamSentAt(since: number): Promise<number[]> {
  const line = await fakes.llm.log.waitFor(
    (l) => {
      const at = (l.request as { sentAt?: number[] } | undefined)?.sentAt;
      return Array.isArray(at) && (at[0] ?? 0) >= since;
    },
    5000,
    "the fake LLM's log line for the stream",
  );
  return (line.request as { sentAt: number[] }).sentAt;
}

test('fake OpenAI server directly: the SDK with the real key completes and streams; a wrong key gets 401', async (t) => {
  const ns = w.topo.ns('llm');
  const since = Date.now();
  const env = cleanEnv({ NODE_EXTRA_CA_CERTS: w.pki.caFile });
  const base = 'https://api.example.test/v1';
  const client = join(HELPERS, 'openai-client.mjs');
  const [ok, stream, bad] = await Promise.all([
    w.topo.exec(ns, process.execPath, [client, '--base', base, '--key', LLM_KEY, '--mode', 'complete'], { env, timeoutMs: 15000 }),
    w.topo.exec(ns, process.execPath, [client, '--base', base, '--key', LLM_KEY, '--mode', 'stream'], { env, timeoutMs: 15000 }),
    w.topo.exec(ns, process.execPath, [client, '--base', base, '--key', LLM_PLACEHOLDER, '--mode', 'complete'], { env, timeoutMs: 15000 }),
  ]);
  const o = parseOut(ok);
  t.true(o.ok, String(o.error));
  t.is(o.content, 'Hello from the fake upstream.');
  const s = parseOut(stream);
  t.true(s.ok, String(s.error));
  t.is(s.content, 'Hello from the stream.');
  const chunks = s.chunks as { t: number }[];
  t.is(chunks.length, 3);
  const sentAt = await streamSentAt(since);
  // Causality, not speed: the first chunk reached the client before the server sent the last one.
  t.true(chunks[0]!.t <= sentAt[2]!, `first chunk arrived at ${chunks[0]!.t}, after the last was sent at ${sentAt[2]}`);
  const b = parseOut(bad);
  t.false(b.ok);
  t.is(b.status, 401);
  t.regex(String(b.error), /Incorrect API key/);
  assertNoSecret(t, fakes.llm.log.raw.join('\n'), "the fake OpenAI server's log");
});

test('fake WebSocket server directly: the bearer token opens it and is reflected; none gets 401', async (t) => {
  const ns = w.topo.ns('ws');
  const env = cleanEnv({ NODE_EXTRA_CA_CERTS: w.pki.caFile });
  const client = join(HELPERS, 'ws-client.mjs');
  const good = parseOut(
    await w.topo.exec(ns, process.execPath, [client, '--url', 'wss://ws.example.test/socket', '--token', WS_TOKEN], { env, timeoutMs: 12000 }),
  );
  t.true(good.ok, JSON.stringify(good));
  const msgs = good.messages as { text: string }[];
  t.deepEqual(JSON.parse(msgs[0]!.text), { hello: 'fake-ws', authorization: `Bearer ${WS_TOKEN}` });
  t.true(String(good.raw).includes(WS_TOKEN), 'the raw capture works: it sees the reflected token when nothing scrubs it');
  const none = parseOut(await w.topo.exec(ns, process.execPath, [client, '--url', 'wss://ws.example.test/socket'], { env, timeoutMs: 12000 }));
  t.false(none.ok);
  t.is(none.status, 401);
  assertNoSecret(t, fakes.ws.log.raw.join('\n'), "the fake WebSocket server's log");
});

/* ------------------------------------------------------------------------------------------ */
/* Through sandgate: the sandbox holds no secret                                              */
/* ------------------------------------------------------------------------------------------ */

test.serial('git clone and git push through sandgate: Basic credentials injected, none in the sandbox', async (t) => {
  const g = await gate();
  const work = mkdtempSync(join(w.dir, 'sbx-git-'));
  const clone = await gitIn(w.sandbox, work, ['clone', 'https://git.example.test/project.git', 'wc'], caPem());
  t.is(clone.r.code, 0, clone.r.stderr);
  const wc = join(work, 'wc');
  t.is(readFileSync(join(wc, 'README.md'), 'utf8'), 'hello from the fake git upstream\n');
  const msg = `pushed from the sandbox ${randomBytes(4).toString('hex')}`;
  appendFileSync(join(wc, 'agent.txt'), 'written by the agent\n');
  t.is((await gitIn(w.sandbox, wc, ['add', 'agent.txt'], caPem())).r.code, 0);
  t.is((await gitIn(w.sandbox, wc, [...commitArgs, msg], caPem())).r.code, 0);
  const push = await gitIn(w.sandbox, wc, ['push', 'origin', 'main'], caPem());
  t.is(push.r.code, 0, push.r.stderr);
  t.is(bareLog().split('\n')[0], msg, "the commit arrived in the upstream's bare repository");

  // The upstream saw the right credentials on every request, once each; sandgate audited them.
  const reqs = fakes.git.log.lines.filter((l) => l.request !== undefined).map((l) => l.request as { path: string; auth: string; authHeaders: number });
  const receive = reqs.filter((r) => r.path === '/project.git/git-receive-pack');
  t.true(receive.length > 0 && receive.every((r) => r.auth === 'ok' && r.authHeaders === 1), JSON.stringify(receive));
  const line = await g.log.waitFor(
    (l) => l.event === 'http' && l.host === 'git.example.test' && l.path === '/project.git/git-receive-pack',
    5000,
    'audit line for the push',
  );
  t.is(line.credential, 'git');
  t.is(line.status, 200);
  t.is(line.decision, 'allow');

  assertNoSecret(t, clone.seen + push.seen + readTree(wc), 'what git in the sandbox received (trace, output, work tree)');
  assertGateClean(t, g);
});

test.serial('the openai SDK with a placeholder key: one chat completion through sandgate', async (t) => {
  const g = await gate();
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [join(HELPERS, 'openai-client.mjs'), '--base', 'https://api.example.test/v1', '--key', LLM_PLACEHOLDER, '--mode', 'complete'],
    { env: cleanEnv({ NODE_EXTRA_CA_CERTS: caPem() }), timeoutMs: 15000 },
  );
  const o = parseOut(r);
  t.true(o.ok, String(o.error));
  t.is(o.content, 'Hello from the fake upstream.');
  const seen = fakes.llm.log.lines.filter((l) => (l.request as { stream?: boolean } | undefined)?.stream === false).pop()?.request as
    | { auth: string; authHeaders: number }
    | undefined;
  t.is(seen?.auth, 'ok', 'the upstream got the real key');
  t.is(seen?.authHeaders, 1, 'the placeholder was replaced, not sent alongside');
  const line = await g.log.waitFor((l) => l.event === 'http' && l.host === 'api.example.test' && l.path === '/v1/chat/completions', 5000, 'audit line');
  t.is(line.credential, 'llm');
  t.is(line.status, 200);
  assertNoSecret(t, r.stdout + r.stderr, 'what the SDK in the sandbox received');
  assertGateClean(t, g);
});

test.serial('the openai SDK streams through sandgate: each chunk arrives as it is sent', async (t) => {
  const g = await gate();
  const since = Date.now();
  const r = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [join(HELPERS, 'openai-client.mjs'), '--base', 'https://api.example.test/v1', '--key', LLM_PLACEHOLDER, '--mode', 'stream'],
    { env: cleanEnv({ NODE_EXTRA_CA_CERTS: caPem() }), timeoutMs: 15000 },
  );
  const s = parseOut(r);
  t.true(s.ok, String(s.error));
  t.is(s.content, 'Hello from the stream.');
  const chunks = s.chunks as { t: number; content: string }[];
  t.is(chunks.length, 3);
  // A proxy that buffered the response could deliver nothing before the server's last event;
  // each chunk must reach the sandbox before the server sends the next (causal, not a timing bound).
  const sentAt = await streamSentAt(since);
  for (let i = 0; i + 1 < chunks.length; i++) {
    t.true(chunks[i]!.t <= sentAt[i + 1]!, `chunk ${i} arrived at ${chunks[i]!.t}, after chunk ${i + 1} was sent at ${sentAt[i + 1]}`);
  }
  const seen = fakes.llm.log.lines.filter((l) => (l.request as { stream?: boolean } | undefined)?.stream === true).pop()?.request as
    | { auth: string }
    | undefined;
  t.is(seen?.auth, 'ok');
  assertNoSecret(t, r.stdout + r.stderr, 'what the streaming SDK in the sandbox received');
  assertGateClean(t, g);
});

test.serial('curl with no key at all gets the key injected; a placeholder is replaced; a reflecting upstream leaks nothing', async (t) => {
  const g = await gate();
  const curl = (args: string[]): Promise<ExecResult> =>
    w.topo.exec(w.sandbox, CURL, ['-sS', '-i', '--max-time', '8', '--cacert', caPem(), ...args], { env: cleanEnv({}), timeoutMs: 10000 });
  const lastEcho = (): { auth: string; authHeaders: number } | undefined =>
    fakes.llm.log.lines.filter((l) => (l.request as { path?: string } | undefined)?.path === '/v1/echo').pop()?.request as
      | { auth: string; authHeaders: number }
      | undefined;

  const none = await curl(['https://api.example.test/v1/echo']);
  t.is(none.code, 0, none.stderr);
  t.regex(none.stdout, /^HTTP\/2 200/);
  t.is(lastEcho()?.auth, 'ok', 'the upstream got the real key though curl sent none');
  t.is(lastEcho()?.authHeaders, 1);
  assertNoSecret(t, none.stdout + none.stderr, "curl's view of an upstream that echoes the credential (headers and body)");

  const ph = await curl(['-H', `Authorization: Bearer ${LLM_PLACEHOLDER}`, 'https://api.example.test/v1/echo']);
  t.is(ph.code, 0, ph.stderr);
  t.regex(ph.stdout, /^HTTP\/2 200/);
  t.is(lastEcho()?.auth, 'ok');
  t.is(lastEcho()?.authHeaders, 1, 'replaced, not duplicated');
  assertNoSecret(t, ph.stdout + ph.stderr, "curl's view with a placeholder key");

  const post = await curl([
    '-H',
    'content-type: application/json',
    '--data',
    '{"model":"gpt-fake","messages":[{"role":"user","content":"hi"}]}',
    'https://api.example.test/v1/chat/completions',
  ]);
  t.is(post.code, 0, post.stderr);
  t.regex(post.stdout, /^HTTP\/2 200/);
  t.regex(post.stdout, /"object":"chat.completion"/);
  await g.log.waitFor((l) => l.event === 'http' && l.path === '/v1/echo' && l.credential === 'llm', 5000, 'audit line for /v1/echo');
  assertGateClean(t, g);
});

test.serial('python3 urllib (SSL_CERT_FILE) and Node fetch (NODE_EXTRA_CA_CERTS) with no key get it injected', async (t) => {
  const g = await gate();
  const lastEcho = (): { auth: string; authHeaders: number } | undefined =>
    fakes.llm.log.lines.filter((l) => (l.request as { path?: string } | undefined)?.path === '/v1/echo').pop()?.request as
      | { auth: string; authHeaders: number }
      | undefined;
  // Python's ssl.create_default_context() loads OpenSSL's default paths, which honour SSL_CERT_FILE.
  const py = await w.topo.exec(
    w.sandbox,
    '/usr/bin/python3',
    [
      '-c',
      [
        'import urllib.request, sys',
        'r = urllib.request.urlopen("https://api.example.test/v1/echo", timeout=8)',
        'sys.stdout.write(str(r.status) + "\\n" + str(r.headers) + "\\n" + r.read().decode())',
      ].join('\n'),
    ],
    { env: cleanEnv({ SSL_CERT_FILE: caPem() }), timeoutMs: 10000 },
  );
  t.is(py.code, 0, py.stderr);
  t.regex(py.stdout, /^200\n/);
  t.is(lastEcho()?.auth, 'ok');
  t.is(lastEcho()?.authHeaders, 1);
  assertNoSecret(t, py.stdout + py.stderr, 'what python3 urllib in the sandbox received');

  const node = await w.topo.exec(
    w.sandbox,
    process.execPath,
    [
      '-e',
      `
    fetch('https://api.example.test/v1/echo').then(async (r) => {
      process.stdout.write(r.status + '\\n' + [...r.headers].map((h) => h.join(': ')).join('\\n') + '\\n' + await r.text());
    }, (e) => { console.error(String(e), e.cause); process.exit(1); });`,
    ],
    { env: cleanEnv({ NODE_EXTRA_CA_CERTS: caPem() }), timeoutMs: 10000 },
  );
  t.is(node.code, 0, node.stderr);
  t.regex(node.stdout, /^200\n/);
  t.is(lastEcho()?.auth, 'ok');
  assertNoSecret(t, node.stdout + node.stderr, 'what Node fetch in the sandbox received');
  assertGateClean(t, g);
});

test.serial('a ws client through sandgate: the token is injected on the upgrade, echo works, no frame carries the token', async (t) => {
  const g = await gate();
  const r = await w.topo.exec(w.sandbox, process.execPath, [join(HELPERS, 'ws-client.mjs'), '--url', 'wss://ws.example.test/socket'], {
    env: cleanEnv({ NODE_EXTRA_CA_CERTS: caPem() }),
    timeoutMs: 12000,
  });
  const o = parseOut(r);
  if (o.ok !== true) t.log('sandgate audit, last lines:', g.log.raw.slice(-6).join('\n'), '\nstderr:', g.stderr());
  t.true(o.ok, JSON.stringify({ ...o, raw: undefined }));
  const up = fakes.ws.log.lines.filter((l) => l.upgrade !== undefined).pop() as { upgrade: { auth: string; authHeaders: number }; status: number } | undefined;
  t.is(up?.upgrade.auth, 'ok', 'the upstream got the real token on the upgrade request');
  t.is(up?.upgrade.authHeaders, 1);
  t.is(up?.status, 101);
  // The upstream reflected the Authorization it received in its first frame: sandgate must scrub it.
  const hello = (o.messages as { text: string }[] | undefined)?.[0];
  t.truthy(hello);
  t.is((JSON.parse(hello?.text ?? '{}') as { hello?: string }).hello, 'fake-ws');
  assertNoSecret(t, String(o.raw) + r.stdout + r.stderr, 'the bytes the WebSocket client in the sandbox received');
  await g.log.waitFor((l) => l.event === 'http' && l.host === 'ws.example.test' && l.credential === 'ws', 5000, 'audit line for the upgrade');
  assertGateClean(t, g);
});
