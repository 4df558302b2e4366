/**
 * A real browser through the gate: Debian's headless `chromium` in the sandbox namespace. Chromium
 * sends a GREASE encrypted_client_hello extension (0xfe0d) on every TLS connection when it has no
 * ECH config (and sandgate's DNS hands out none), so this is the client that shows ECH GREASE is
 * decided on the outer SNI: every conn line below must say `ech: true`.
 *
 * Chromium trusts sandgate's CA the way a browser image would: an NSS database in the HOME it runs
 * with ($HOME/.pki/nssdb, made with certutil), never --ignore-certificate-errors. The test PKI's
 * root sits in the same database, standing in for the public roots that passthrough upstreams chain to.
 * Names resolve through sandgate's own DNS responder (the sandbox's resolv.conf points at the host).
 *
 * Chromium starts in about a second here; the tests are serial and keep to four runs.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, type World, type Gate, type Upstream, type Line } from '../helpers/gate.js';
import type { ExecResult } from '../../src/net/topology.js';

const SECRET = `sk-browser-${randomBytes(12).toString('hex')}`;
const ICPT = 'llm.example.test';

let w: World;
let g: Gate;
let icpt: Upstream;
/** HOME with both roots in its NSS db; bare: only the test PKI's root (no sandgate CA). */
let home: string;
let bare: string;
let runs = 0;

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue([ICPT], { tag: 'browser-icpt' });
  icpt = await startUpstream(w.topo, 'a', ['--name', 'icpt', '--port', '8443', '--tls', cert.cert, cert.key, '--expect-auth', `Bearer ${SECRET}`]);
  const config = {
    ...baseConfig(w, {
      allow: [
        { host: 'api.example.test' },
        { host: ICPT, ports: [8443], inject: 'llm' },
      ],
      upstream: { hosts: Object.fromEntries([...NAMES, ICPT].map((n) => [n, w.a])), allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile },
    }),
    credentials: { llm: { secret: { env: 'SG_BROWSER_LLM' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_BROWSER_LLM: SECRET } });
  // The browser image's trust store: sandgate's CA (created on sandgate's first run) and the roots
  // passthrough upstreams chain to. `-t C,,`: a trusted CA for TLS server certificates.
  home = nssHome([join(w.dir, 'ca', 'ca.pem'), w.pki.caFile]);
  bare = nssHome([w.pki.caFile]);
});

/** A HOME whose $HOME/.pki/nssdb (where Chromium on Linux reads user trust) trusts these CA files. */
function nssHome(cas: string[]): string {
  const dir = mkdtempSync(join(w.dir, 'home-'));
  const db = `sql:${join(dir, '.pki', 'nssdb')}`;
  mkdirSync(join(dir, '.pki', 'nssdb'), { recursive: true });
  execFileSync('certutil', ['-d', db, '-N', '--empty-password']);
  cas.forEach((ca, i) => execFileSync('certutil', ['-A', '-d', db, '-n', `ca${i}`, '-t', 'C,,', '-i', ca]));
  return dir;
}

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** One headless chromium run in the sandbox: the DOM of `url` after load (stdout). */
function chromium(url: string, extra: string[] = [], homeDir = home): Promise<ExecResult> {
  const profile = join(homeDir, `profile-${runs++}`);
  return w.topo.exec(w.sandbox, 'timeout', ['-k', '5', '45', 'chromium',
    '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions',
    `--user-data-dir=${profile}`, ...extra, '--dump-dom', url,
  ], { env: { ...process.env, HOME: homeDir }, timeoutMs: 55_000 });
}

const connLine = (host: string, pred: (l: Line) => boolean): Promise<Line> =>
  g.log.waitFor((l) => l.event === 'conn' && l.host === host && pred(l), 10_000, `conn line for ${host}`);

test.serial('passthrough: chromium loads an allowed https page; its hello carried ECH GREASE (ech: true)', async (t) => {
  const r = await chromium('https://api.example.test/browser-pass');
  t.regex(r.stdout, /"server":"a"/, `chromium got no page: ${r.stdout.slice(0, 300)} ${r.stderr.slice(-800)}`);
  t.regex(r.stdout, /"path":"\/browser-pass"/);
  const line = await connLine('api.example.test', (l) => l.decision === 'allow');
  t.is(line.ech, true, 'chromium sent encrypted_client_hello (GREASE)');
  t.is(line.intercept, undefined, 'passthrough, not intercepted');
  t.is(line.upstream, `${w.a}:443`);
});

test.serial('interception: chromium trusts sandgate\'s CA from its NSS db; the upstream gets the injected credential', async (t) => {
  const r = await chromium(`https://${ICPT}:8443/browser-icpt`);
  t.regex(r.stdout, /"server":"icpt"/, `chromium got no page: ${r.stdout.slice(0, 300)} ${r.stderr.slice(-800)}`);
  t.false(r.stdout.includes(SECRET), 'the secret never reaches the sandbox');
  const up = await icpt.log.waitFor((l) => (l.request as Line | undefined)?.path === '/browser-icpt', 5000, 'upstream request');
  t.is((up.request as Line).auth, 'ok', 'the upstream saw exactly the injected credential');
  const line = await connLine(ICPT, (l) => l.intercept === true && l.decision === 'allow');
  t.is(line.ech, true, 'chromium sent encrypted_client_hello (GREASE)');
  t.is(line.error, undefined, 'the handshake with chromium completed');
  const http = await g.log.waitFor((l) => l.event === 'http' && l.path === '/browser-icpt', 5000, 'http line');
  t.like(http, { decision: 'allow', credential: 'llm', status: 200 });
});

test.serial('without sandgate\'s CA in its NSS db chromium refuses the intercepted page (the trust comes from that db)', async (t) => {
  const r = await chromium(`https://${ICPT}:8443/browser-untrusted`, [], bare);
  t.notRegex(r.stdout, /"server"/);
  const line = await connLine(ICPT, (l) => l.intercept === true && typeof l.error === 'string');
  t.regex(String(line.error), /TLS handshake with the sandbox failed/);
  t.false(icpt.log.lines.some((l) => (l.request as Line | undefined)?.path === '/browser-untrusted'));
});

test.serial('an unlisted host does not load: chromium\'s hello is denied on its SNI (ech: true)', async (t) => {
  // Sandgate's DNS would answer NXDOMAIN; map the name to upstream b's address so the TLS decision is tested.
  const r = await chromium('https://evil.example.test/browser-evil', [`--host-resolver-rules=MAP evil.example.test ${w.b}`]);
  t.notRegex(r.stdout, /"server"/);
  const line = await connLine('evil.example.test', (l) => l.decision === 'deny');
  t.is(line.ech, true);
  t.is(line.reason, 'evil.example.test:443 is not allowed');
  t.false(w.upstreams[1]!.log.lines.some((l) => (l.request as Line | undefined)?.path === '/browser-evil'), 'upstream b saw no request');
});
