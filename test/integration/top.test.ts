/**
 * `sandgate top` in a real terminal: a detached tmux session of fixed size (test/helpers/tmux.ts),
 * keys sent with send-keys, the screen read with capture-pane until what is expected appears
 * (hang detectors, no timed assertions).
 *
 * First against a real sandgate with sandbox namespaces: its decisions, then (its policy reloaded
 * to `unlisted: ask`) requests held for approval and answered from top's approvals panel; then
 * against small fake control servers for what a real daemon does not readily show (ids replaced,
 * answered elsewhere, no /approvals, a restart).
 */
import test from 'ava';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseConfig, CLI, createWorld, startGate, type Gate, type World } from '../helpers/gate.js';
import { startInTmux, type Screen } from '../helpers/tmux.js';

let w: World | undefined;
let g: Gate | undefined;
let config: Record<string, unknown> | undefined;
let dir: string;
const screens: Screen[] = [];

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-top-'));
});
test.after.always(async () => {
  for (const s of screens) await s.kill();
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

async function top(socket: string, env: readonly string[] = []): Promise<Screen> {
  const s = await startInTmux(['/usr/bin/env', ...env, process.execPath, CLI, 'top', '--socket', socket], dir, 160, 40);
  screens.push(s);
  return s;
}

/** The decision table's rows: the lines below its header. */
function rows(screen: string): string[] {
  const lines = screen.split('\n');
  const head = lines.findIndex((l) => l.startsWith('TIME '));
  return head < 0 ? [] : lines.slice(head + 1).filter((l) => /^\d\d:\d\d:\d\d /.test(l));
}

/** The totals column of a sandbox in the per-sandbox panel. */
function total(screen: string, sandbox: string): number {
  const line = screen.split('\n').find((l) => l.startsWith(`${sandbox} `));
  return line === undefined ? 0 : Number(line.trim().split(/\s+/)[3]);
}

test.serial('a real gate: decisions appear as they happen; filter, pause, denials only, quit', async (t) => {
  w = await createWorld();
  config = baseConfig(w);
  const sock = (config.listen as { control: string }).control;
  g = await startGate(w.topo, w.dir, config);
  const s = await top(sock);
  await s.until((x) => x.includes('TIME ') && x.includes('SANDBOX'), 'the empty view');
  const world = w;
  const api = () => world.curl(['--resolve', `api.example.test:443:${world.a}`, 'https://api.example.test/']);
  const evil = () => world.curl(['--resolve', `evil.example.test:443:${world.b}`, 'https://evil.example.test/']);
  const plain = (path: string) => world.curl(['--resolve', `plain.example.test:80:${world.a}`, `http://plain.example.test${path}`]);

  t.is((await api()).code, 0);
  t.not((await evil()).code, 0);
  let screen = await s.until(
    (x) =>
      rows(x).some((r) => r.includes('api.example.test') && r.includes('ALLOW')) && rows(x).some((r) => r.includes('evil.example.test') && r.includes('DENY')),
    'the allowed and the denied request',
  );
  t.regex(
    rows(screen).find((r) => r.includes('evil.example.test')) ?? '',
    /^\d\d:\d\d:\d\d agent\s+tls\s+evil\.example\.test\s+DENY\s+evil\.example\.test:443 is not allowed/,
  );
  t.regex(screen, /^agent\s+\d+\.\d\s+\d+\.\d\s+2\s+1\s*$/m, 'per-sandbox panel: 2 requests, 1 denied');
  t.true(screen.includes('PENDING APPROVALS (0)'), 'the daemon serves /approvals: the panel is there, empty');
  // Denials highlighted: the deny row is drawn in red (SGR 31), the allowed one is not.
  const colored = (await s.capture(true)).split('\n');
  const sgr = (host: string): string => colored.find((l) => l.includes(host) && /\d\d:\d\d:\d\d/.test(l)) ?? '';
  t.regex(sgr('evil.example.test'), /\x1b\[[0-9;]*31[;m]/);
  t.notRegex(sgr('api.example.test'), /\x1b\[[0-9;]*31[;m]/);

  // Filter by host.
  await s.keys('/');
  await s.literal('evil');
  await s.keys('Enter');
  screen = await s.until((x) => x.includes('filter: evil'), 'filter applied');
  t.true(rows(screen).length > 0);
  t.true(rows(screen).every((r) => r.includes('evil.example.test')));
  await s.keys('Escape');
  screen = await s.until((x) => !x.includes('filter: evil') && rows(x).some((r) => r.includes('api.example.test')), 'filter cleared');

  // Pause: the line of a request made meanwhile is held back; the totals show top did receive it.
  await s.keys('p');
  await s.until((x) => x.includes('PAUSED'), 'paused');
  const before = total(await s.capture(), 'agent');
  t.is((await plain('/while-paused')).code, 0);
  screen = await s.until((x) => total(x, 'agent') > before && x.includes('PAUSED (1 held)'), 'the totals counting while paused');
  t.false(screen.includes('/while-paused'), 'no new line while paused');
  await s.keys('p');
  screen = await s.until((x) => rows(x).some((r) => r.includes('GET /while-paused')), 'the held line after resume');
  t.false(screen.includes('PAUSED'));
  t.log(`\n${screen}`);

  // Denials only.
  await s.keys('d');
  screen = await s.until((x) => x.includes('DENIALS ONLY'), 'denials only');
  t.true(rows(screen).length > 0);
  t.true(rows(screen).every((r) => r.includes('DENY')));
  await s.keys('d');
  await s.until((x) => !x.includes('DENIALS ONLY') && rows(x).some((r) => r.includes('ALLOW')), 'everything again');

  await s.keys('q');
  t.is(await s.untilExit('top exiting on q'), 0);
});

test.serial('a real gate with `unlisted: ask`: a held request is listed under PENDING APPROVALS; a lets it through once, x denies another', async (t) => {
  // The gate of the test above, its policy now asking about every unlisted name.
  if (w === undefined || g === undefined || config === undefined) {
    w = await createWorld();
    config = baseConfig(w);
    g = await startGate(w.topo, w.dir, config);
  }
  const gate = g;
  const world = w;
  const policies = config.policies as { default: Record<string, unknown> };
  t.like(await gate.reload({ ...config, policies: { default: { ...policies.default, unlisted: 'ask', askTimeoutMs: 30_000 } } }), { action: 'reloaded' });
  const s = await top((config.listen as { control: string }).control);
  await s.until((x) => x.includes('PENDING APPROVALS (0)'), 'the approvals panel');
  const held = (host: string) => world.curl(['--resolve', `${host}:443:${world.a}`, `https://${host}/held`], { timeoutMs: 25_000 });
  const pendingLine = (host: string) => gate.log.waitFor((l) => l.event === 'approval' && l.action === 'pending' && l.host === host, 15_000, `pending ${host}`);

  // a: allow once. The request was held at its ClientHello and completes once answered.
  const first = held('evil.example.test');
  const p1 = await pendingLine('evil.example.test');
  let screen = await s.until(
    (x) => x.includes('PENDING APPROVALS (1)') && /> evil\.example\.test:443\s+agent\s+alice\s+tls/.test(x),
    'the held request listed',
  );
  t.log(`\n${screen}`);
  await s.keys('a');
  const r1 = await first;
  t.is(r1.code, 0, r1.stderr);
  t.like(JSON.parse(r1.stdout), { server: 'a', path: '/held' });
  t.like(await gate.log.waitFor((l) => l.event === 'approval' && l.action === 'decided' && l.id === p1.id), {
    decision: 'allow',
    scope: 'once',
    approver: 'top',
    host: 'evil.example.test',
  });
  t.like(await gate.log.waitFor((l) => l.event === 'conn' && l.host === 'evil.example.test' && l.decision === 'allow'), {
    rule: `approvals.once.${String(p1.id)}`,
  });
  screen = await s.until((x) => x.includes('PENDING APPROVALS (0)'), 'the answered request off the list');

  // x: deny. A denied held ClientHello gets a TLS access_denied alert.
  const second = held('private.example.test');
  const p2 = await pendingLine('private.example.test');
  await s.until((x) => x.includes('PENDING APPROVALS (1)') && /> private\.example\.test:443\s+agent/.test(x), 'the second held request listed');
  await s.keys('x');
  const r2 = await second;
  t.not(r2.code, 0);
  t.regex(r2.stderr, /alert access denied/i);
  t.like(await gate.log.waitFor((l) => l.event === 'approval' && l.action === 'decided' && l.id === p2.id), { decision: 'deny', approver: 'top' });
  screen = await s.until((x) => x.includes('PENDING APPROVALS (0)') && /private\.example\.test:443 \(agent\): deny/.test(x), 'the denial shown');
  await s.keys('q');
  t.is(await s.untilExit('top exiting on q'), 0);
});

interface Fake {
  path: string;
  posts: { url: string; body: Record<string, unknown> }[];
  /** Writes one line to every open /approvals?watch=1 stream. */
  approvals(line: Record<string, unknown>): void;
  events(line: Record<string, unknown>): void;
  /** Forgets a pending id without telling the watchers. */
  forget(id: string): void;
  close(): Promise<void>;
}

/**
 * A control server that speaks the approvals API: GET /events, GET /approvals?watch=1 (NDJSON),
 * POST /approvals/ID {action, approver} answered 200 and followed by the `decided` line a daemon
 * sends, or 404 for an id it does not know.
 */
async function fakeControl(name: string): Promise<Fake> {
  const path = join(dir, name);
  const watchers: http.ServerResponse[] = [];
  const eventStreams: http.ServerResponse[] = [];
  const known = new Set<string>();
  const posts: Fake['posts'] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/events') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      eventStreams.push(res);
      return;
    }
    if (req.method === 'GET' && url === '/approvals?watch=1') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      watchers.push(res);
      return;
    }
    const m = /^\/approvals\/([^/]+)$/.exec(url);
    if (req.method === 'POST' && m) {
      let text = '';
      req.on('data', (d: Buffer) => {
        text += d.toString('utf8');
      });
      req.on('end', () => {
        const id = decodeURIComponent(m[1] as string);
        const body = JSON.parse(text) as Record<string, unknown>;
        posts.push({ url, body });
        if (!known.delete(id)) {
          res.writeHead(404, { 'content-type': 'application/json' });
          res.end('{"error":"no such approval"}\n');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}\n');
        for (const wr of watchers) wr.write(`${JSON.stringify({ event: 'decided', id, action: body.action, approver: body.approver })}\n`);
      });
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"no such path"}\n');
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return {
    path,
    posts,
    approvals(line) {
      if (line.event === 'pending') known.add(line.id as string);
      for (const wr of watchers) wr.write(`${JSON.stringify(line)}\n`);
    },
    forget(id) {
      known.delete(id);
    },
    events(line) {
      for (const e of eventStreams) e.write(`${JSON.stringify(line)}\n`);
    },
    close() {
      return new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
    },
  };
}

const pending = (id: string, host: string, sandbox = 'agent') => ({
  event: 'pending',
  id,
  sandbox,
  user: 'alice',
  host,
  port: 443,
  via: 'tls',
  since: new Date().toISOString(),
  expires: new Date(Date.now() + 120_000).toISOString(),
});

test.serial('approvals: pending requests shown prominently; a, s, P, x answer the selected one', async (t) => {
  const fake = await fakeControl('fake-approvals.sock');
  try {
    const s = await top(fake.path);
    await s.until((x) => x.includes('PENDING APPROVALS (0)'), 'the approvals panel');
    fake.approvals(pending('id-1', 'one.example.test'));
    fake.approvals(pending('id-2', 'two.example.test', 'other'));
    fake.approvals(pending('id/3', 'three.example.test'));
    fake.approvals(pending('id-4', 'four.example.test'));
    let screen = await s.until((x) => x.includes('PENDING APPROVALS (4)') && x.includes('four.example.test'), 'four pending');
    t.regex(screen, /> one\.example\.test:443\s+agent\s+alice\s+tls\s+expires in \d+s/);
    t.log(`\n${screen}`);

    // a: allow the selected (first) once; the daemon's `decided` line takes it off the list.
    await s.keys('a');
    screen = await s.until((x) => x.includes('PENDING APPROVALS (3)') && !/one\.example\.test:443\s+agent/.test(x), 'one answered');
    t.deepEqual(fake.posts.at(-1), { url: '/approvals/id-1', body: { action: 'once', approver: 'top' } });
    // Down, s: allow the second for its sandbox (now: three, after two).
    await s.keys('Down');
    await s.until((x) => /> three\.example\.test:443/.test(x), 'selection moved');
    await s.keys('s');
    await s.until((x) => x.includes('PENDING APPROVALS (2)'), 'three answered');
    t.deepEqual(fake.posts.at(-1), { url: '/approvals/id%2F3', body: { action: 'sandbox', approver: 'top' } });
    await s.keys('P');
    await s.until((x) => x.includes('PENDING APPROVALS (1)'), 'four answered');
    t.deepEqual(fake.posts.at(-1), { url: '/approvals/id-4', body: { action: 'policy', approver: 'top' } });
    await s.keys('x');
    screen = await s.until((x) => x.includes('PENDING APPROVALS (0)'), 'two answered');
    t.deepEqual(fake.posts.at(-1), { url: '/approvals/id-2', body: { action: 'deny', approver: 'top' } });
    t.regex(screen, /two\.example\.test:443 \(other\): deny/);

    // A line for an id already listed replaces it.
    fake.approvals(pending('id-5', 'five.example.test'));
    await s.until((x) => x.includes('PENDING APPROVALS (1)'), 'five pending');
    fake.approvals({ ...pending('id-5', 'five.example.test'), via: 'dns' });
    await s.until((x) => /five\.example\.test:443\s+agent\s+alice\s+dns/.test(x) && x.includes('PENDING APPROVALS (1)'), 'replaced by id');
    // An id the daemon no longer knows (answered elsewhere, its `decided` line not yet here):
    // the POST gets 404 and top takes it off the list.
    fake.forget('id-5');
    await s.keys('x');
    screen = await s.until((x) => x.includes('PENDING APPROVALS (0)'), 'the unknown id gone');
    t.deepEqual(fake.posts.at(-1), { url: '/approvals/id-5', body: { action: 'deny', approver: 'top' } });
    t.regex(screen, /five\.example\.test:443 \(agent\): no longer pending/);

    // Decisions still flow on the same screen.
    fake.events({ time: new Date().toISOString(), event: 'conn', proto: 'tls', sandbox: 'agent', host: 'evil.example.test', decision: 'deny', reason: 'no' });
    await s.until((x) => rows(x).some((r) => r.includes('evil.example.test')), 'a decision');
    await s.keys('q');
    t.is(await s.untilExit('top exiting on q'), 0);
  } finally {
    await fake.close();
  }
});

test.serial('a daemon without /approvals (404): top hides the panel and the answer keys post nothing (and draws live under CI=true)', async (t) => {
  const path = join(dir, 'fake-404.sock');
  const posts: string[] = [];
  const events: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      events.push(res);
      return;
    }
    if (req.method === 'POST') posts.push(req.url ?? '');
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"no such path"}\n');
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  try {
    // A CI environment (CI=true, CI_*) must not turn the live view into a last-frame-only one.
    const s = await top(path, ['CI=true', 'CI_JOB_ID=1']);
    await s.until((x) => x.includes('TIME ') && events.length === 1, 'the view');
    events[0]?.write(
      `${JSON.stringify({ time: new Date().toISOString(), event: 'conn', proto: 'tls', sandbox: 'agent', host: 'api.example.test', decision: 'allow' })}\n`,
    );
    events[0]?.write(
      `${JSON.stringify({ time: new Date().toISOString(), event: 'conn', proto: 'tls', sandbox: 'agent', host: 'evil.example.test', decision: 'deny' })}\n`,
    );
    const screen = await s.until(
      (x) => rows(x).some((r) => r.includes('api.example.test')) && rows(x).some((r) => r.includes('evil.example.test')),
      'decisions',
    );
    t.false(screen.includes('PENDING APPROVALS'));
    // Colours too, under CI=true.
    const red = (await s.capture(true)).split('\n').find((l) => l.includes('evil.example.test')) ?? '';
    t.regex(red, /\x1b\[[0-9;]*31[;m]/);
    await s.keys('a', 'x', 'P', 's', 'q');
    t.is(await s.untilExit('top exiting on q'), 0);
    t.deepEqual(posts, []);
  } finally {
    await new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  }
});

test.serial('the daemon closing the stream (a restart): top reconnects and goes on', async (t) => {
  const path = join(dir, 'fake-restart.sock');
  const events: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      events.push(res);
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"no such path"}\n');
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  const line = (host: string): string =>
    `${JSON.stringify({ time: new Date().toISOString(), event: 'conn', proto: 'tls', sandbox: 'agent', host, decision: 'allow' })}\n`;
  try {
    const s = await top(path);
    await s.until((x) => x.includes('TIME ') && events.length === 1, 'the view');
    events[0]?.write(line('before.example.test'));
    await s.until((x) => rows(x).some((r) => r.includes('before.example.test')), 'the first line');
    server.closeAllConnections();
    await s.until((x) => x.includes('reconnected') && events.length === 2, 'the stream opened again');
    events[1]?.write(line('after.example.test'));
    const screen = await s.until((x) => rows(x).some((r) => r.includes('after.example.test')), 'a line on the new stream');
    t.true(
      rows(screen).some((r) => r.includes('before.example.test')),
      'what was seen stays',
    );
    await s.keys('q');
    t.is(await s.untilExit('top exiting on q'), 0);
  } finally {
    await new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  }
});
