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
 * Chromium starts in about a second here; the tests are serial and keep to six runs.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  createWorld,
  startGate,
  startUpstream,
  startFake,
  baseConfig,
  NAMES,
  type World,
  type Gate,
  type Upstream,
  type Line,
  type Fake,
} from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

const SECRET = `sk-browser-${randomBytes(12).toString('hex')}`;
const ICPT = 'llm.example.test';
/** Real ECH: the public (outer) name is intercepted; the inner name is listed nowhere. */
const FRONT = 'front.example.test';
const INNER = 'inner.example.test';
const DOH = 'doh.example.test';
/** Real ECH: the public name is a passthrough rule; the inner name is listed nowhere. */
const INNER2 = 'inner2.example.test';

let w: World;
let g: Gate;
let icpt: Upstream;
let doh: Fake;
/** HOME with both roots in its NSS db; bare: only the test PKI's root (no sandgate CA). */
let home: string;
let bare: string;
let runs = 0;

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue([ICPT], { tag: 'browser-icpt' });
  icpt = await startUpstream(w.topo, 'a', ['--name', 'icpt', '--port', '8443', '--tls', cert.cert, cert.key, '--expect-auth', `Bearer ${SECRET}`]);
  const dohCert = w.pki.issue([DOH], { tag: 'doh' });
  doh = await startFake(w, 'b', 'fake-doh-server.mjs', [
    '--port',
    '8443',
    '--tls',
    dohCert.cert,
    dohCert.key,
    '--answer',
    `${INNER}=${w.a}`,
    '--answer',
    `${FRONT}=${w.a}`,
    '--ech',
    `${INNER}=${FRONT}`,
    '--answer',
    `${INNER2}=${w.a}`,
    '--ech',
    `${INNER2}=api.example.test`,
  ]);
  const config = {
    ...baseConfig(w, {
      allow: [{ host: 'api.example.test' }, { host: ICPT, ports: [8443], inject: 'llm' }, { host: FRONT, inject: 'llm' }, { host: DOH, ports: [8443] }],
      upstream: {
        hosts: { ...Object.fromEntries([...NAMES, ICPT, FRONT].map((n) => [n, w.a])), [DOH]: w.b },
        allowPrivate: ['10.77.0.0/16'],
        caFile: w.pki.caFile,
      },
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
  return w.topo.exec(
    w.sandbox,
    'timeout',
    [
      '-k',
      '5',
      '45',
      'chromium',
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-extensions',
      `--user-data-dir=${profile}`,
      ...extra,
      '--dump-dom',
      url,
    ],
    { env: { ...process.env, HOME: homeDir }, timeoutMs: 55_000 },
  );
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

test.serial("interception: chromium trusts sandgate's CA from its NSS db; the upstream gets the injected credential", async (t) => {
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
  // Chromium takes h2 when sandgate offers it: the page came over an HTTP/2 stream.
  t.is(http.alpn, 'h2');
  t.is(line.alpn, 'h2');
});

test.serial("without sandgate's CA in its NSS db chromium refuses the intercepted page (the trust comes from that db)", async (t) => {
  const r = await chromium(`https://${ICPT}:8443/browser-untrusted`, [], bare);
  t.notRegex(r.stdout, /"server"/);
  const line = await connLine(ICPT, (l) => l.intercept === true && typeof l.error === 'string');
  t.regex(String(line.error), /TLS handshake with the sandbox failed/);
  t.false(icpt.log.lines.some((l) => (l.request as Line | undefined)?.path === '/browser-untrusted'));
});

test.serial("an unlisted host does not load: chromium's hello is denied on its SNI (ech: true)", async (t) => {
  // Sandgate's DNS would answer NXDOMAIN; map the name to upstream b's address so the TLS decision is tested.
  const r = await chromium('https://evil.example.test/browser-evil', [`--host-resolver-rules=MAP evil.example.test ${w.b}`]);
  t.notRegex(r.stdout, /"server"/);
  const line = await connLine('evil.example.test', (l) => l.decision === 'deny');
  t.is(line.ech, true);
  t.is(line.reason, 'evil.example.test:443 is not allowed');
  t.false(
    w.upstreams[1]!.log.lines.some((l) => (l.request as Line | undefined)?.path === '/browser-evil'),
    'upstream b saw no request',
  );
});

/**
 * Runs fn with chromium in the sandbox using the fake DoH resolver. Chromium asks for HTTPS
 * records only over its own DNS client, and sandgate's responder never answers HTTPS/SVCB, so DoH
 * (an allowed host here) is how it gets an ECH config. The managed policy lives in /etc/chromium
 * inside the sandbox namespace only (ip netns exec mounts /etc/netns/NS/* over /etc).
 */
async function withDoh(fn: () => Promise<void>): Promise<void> {
  const etc = `/etc/netns/${w.sandbox}/chromium`;
  mkdirSync(`${etc}/policies/managed`, { recursive: true });
  copyFileSync('/etc/chromium/master_preferences', `${etc}/master_preferences`);
  writeFileSync(
    `${etc}/policies/managed/doh.json`,
    JSON.stringify({ DnsOverHttpsMode: 'secure', DnsOverHttpsTemplates: `https://${DOH}:8443/dns-query{?dns}` }),
  );
  try {
    await fn();
  } finally {
    rmSync(etc, { recursive: true, force: true });
  }
}

test.serial(
  'real ECH to an intercepted public name: sandgate answers for the outer name, chromium takes ECH as rejected and retries with the inner name in clear, which is denied',
  async (t) => {
    await withDoh(async () => {
      const r = await chromium(`https://${INNER}/browser-ech`);
      t.notRegex(r.stdout, /"server"/, 'the page did not load');
      t.truthy(
        doh.log.find((l) => l.query === INNER && l.type === 65),
        'chromium asked for the HTTPS record (and got the ECH config)',
      );
      // Real ECH: the outer SNI is the config's public name, not the name in the URL.
      const outer = await connLine(FRONT, (l) => l.intercept === true);
      t.is(outer.ech, true);
      // sandgate has no ECH keys: it answered the outer hello for FRONT; chromium, seeing ECH not
      // accepted and no retry configs, connected again without ECH, the inner name now in clear.
      const retry = await connLine(INNER, (l) => l.decision === 'deny');
      t.is(retry.reason, `${INNER}:443 is not allowed`);
      t.falsy(
        g.log.find((l) => l.event === 'http' && l.path === '/browser-ech'),
        'no request was relayed',
      );
    });
  },
);

test.serial(
  "real ECH to a passthrough public name: the hello is relayed to that name's upstream (an ECH-capable provider would serve the inner name)",
  async (t) => {
    await withDoh(async () => {
      const before = g.log.lines.length;
      const r = await chromium(`https://${INNER2}/browser-ech2`);
      t.truthy(doh.log.find((l) => l.query === INNER2 && l.type === 65));
      // The fake upstream has no ECH either, so chromium falls back as above: inner name in clear, denied.
      t.notRegex(r.stdout, /"server"/);
      await connLine(INNER2, (l) => l.decision === 'deny');
      const outer = g.log.lines.slice(before).find((l) => l.event === 'conn' && l.host === 'api.example.test' && l.decision === 'allow');
      t.truthy(outer, 'the outer hello, to the allowed public name, was allowed');
      t.is(outer?.ech, true);
      t.is(outer?.intercept, undefined, 'passthrough: sandgate never sees inside');
      t.is(outer?.upstream, `${w.a}:443`);
    });
  },
);
