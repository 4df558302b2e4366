/**
 * HTTP/2's own attacks against the sandbox-facing session (src/http/h2-front.ts), each sent as
 * raw frames by test/helpers/h2-raw-client.mjs from the sandbox namespace: every one is bounded
 * (refused, reset or the session closed), never relayed upstream, and sandgate keeps serving.
 *
 * Tests are serial: they share one sandgate and one upstream log.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, startGate, startUpstream, baseConfig, NAMES, ROOT, type World, type Gate, type Upstream, type Line } from '../helpers/gate.js';

const SECRET = `sk-h2-${randomBytes(12).toString('hex')}`;
const HOST = 'h2att.example.test';
const RAW = join(ROOT, 'test/helpers/h2-raw-client.mjs');
const H2_CLIENT = join(ROOT, 'test/helpers/h2-client.mjs');
/** RFC 9113 §7 error codes. */
const PROTOCOL_ERROR = 1;

let w: World;
let g: Gate;
let upstream: Upstream;
const caPem = (): string => join(w.dir, 'ca', 'ca.pem');

test.before(async () => {
  w = await createWorld();
  const cert = w.pki.issue([HOST], { tag: 'h2att' });
  upstream = await startUpstream(w.topo, 'a', ['--name', 'h2att', '--port', '8443', '--tls', cert.cert, cert.key, '--h2', '--expect-auth', `Bearer ${SECRET}`]);
  const hosts: Record<string, string> = Object.fromEntries([...NAMES, HOST].map((n) => [n, w.a]));
  const config = {
    ...baseConfig(w, { allow: [{ host: HOST, ports: [8443], inject: 'k' }], upstream: { hosts, allowPrivate: ['10.77.0.0/16'], caFile: w.pki.caFile } }),
    credentials: { k: { secret: { env: 'SG_TEST_H2' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_H2: SECRET } });
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, `${w.a}\t${HOST}\n`);
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

interface RawOut {
  settings: Record<string, number>;
  goaway: { code: number; lastStreamId: number } | null;
  rst: Record<string, number>;
  responses: { stream: number; status: number }[];
  closed: boolean;
  unsent: number;
}

async function raw(mode: string, n = 0): Promise<RawOut> {
  const r = await w.topo.exec(w.sandbox, process.execPath, [RAW, caPem(), HOST, '8443', mode, String(n)], { timeoutMs: 30000 });
  try {
    return JSON.parse(r.stdout.trim()) as RawOut;
  } catch {
    throw new Error(`raw client ${mode}: ${r.stdout} ${r.stderr}`);
  }
}

/** Upstream requests whose path starts with `prefix`. */
const upstreamSaw = (prefix: string): number => upstream.log.lines.filter((l) => String((l.request as Line | undefined)?.path).startsWith(prefix)).length;

/** After an attack: a well-behaved client on a new connection is still served, with the credential. */
async function stillServes(t: ExecutionContext, path: string): Promise<void> {
  const r = await w.topo.exec(w.sandbox, process.execPath, [H2_CLIENT, caPem(), `https://${HOST}:8443`, JSON.stringify([{ path }])], { timeoutMs: 15000 });
  const out = JSON.parse(r.stdout.trim() || '{}') as { results?: { status: number }[] };
  t.is(out.results?.[0]?.status, 200, `served after the attack: ${r.stdout} ${r.stderr}`);
  t.is(((await upstream.log.waitFor((l) => (l.request as Line | undefined)?.path === path, 5000, path)).request as Line).auth, 'ok');
}

test.serial(
  'SETTINGS: 100 concurrent streams, no push, a 16 KiB header list, no extended CONNECT; a :protocol request is reset and CONNECT gets 400',
  async (t) => {
    const out = await raw('settings');
    t.is(out.settings[3], 100, 'SETTINGS_MAX_CONCURRENT_STREAMS');
    t.is(out.settings[2], 0, 'SETTINGS_ENABLE_PUSH');
    t.is(out.settings[6], 16384, 'SETTINGS_MAX_HEADER_LIST_SIZE');
    t.not(out.settings[8], 1, 'SETTINGS_ENABLE_CONNECT_PROTOCOL is not advertised (RFC 8441 §3)');
    // A WebSocket over HTTP/2 (RFC 8441) without the setting: a malformed request, reset (RFC 9113 §8.1.1).
    const ws = await raw('connect-protocol');
    t.true(ws.rst[PROTOCOL_ERROR] === 1 || ws.goaway?.code === PROTOCOL_ERROR, JSON.stringify(ws));
    t.deepEqual(ws.responses, []);
    const connect = await raw('connect');
    t.deepEqual(connect.responses, [{ stream: 1, status: 400 }], JSON.stringify(connect));
    t.like(await g.log.waitFor((l) => l.event === 'http' && l.method === 'CONNECT', 5000, 'CONNECT line'), { status: 400, decision: 'deny', alpn: 'h2' });
    t.is(upstreamSaw('/ws'), 0);
  },
);

test.serial('a host field that differs from :authority is a second Host: 400 on that stream, nothing upstream', async (t) => {
  const out = await raw('host-mismatch');
  t.deepEqual(out.responses, [{ stream: 1, status: 400 }], JSON.stringify(out));
  t.like(await g.log.waitFor((l) => l.event === 'http' && l.path === '/host-mismatch', 5000, 'line'), {
    status: 400,
    decision: 'deny',
    reason: 'more than one Host header',
    alpn: 'h2',
  });
  t.is(upstreamSaw('/host-mismatch'), 0);
});

test.serial('rapid reset (CVE-2023-44487): 3000 streams opened and reset at once end in GOAWAY; sandgate keeps serving', async (t) => {
  const out = await raw('rapid-reset', 3000);
  t.not(out.goaway, null, JSON.stringify(out));
  // nghttp2's reset rate limit: a burst of 1000, then 33 per second.
  t.true((out.goaway?.lastStreamId ?? 0) < 2 * 3000, 'the session ended before every stream was taken');
  t.true(upstreamSaw('/rr/') < 3000);
  await stillServes(t, '/after/rapid-reset');
});

test.serial('a CONTINUATION flood (a header block that never ends) closes the session; nothing goes upstream', async (t) => {
  const out = await raw('continuation', 200);
  t.true(out.goaway !== null || out.closed, JSON.stringify(out));
  t.deepEqual(out.responses, []);
  t.is(upstreamSaw('/cont'), 0);
  t.is(
    g.log.find((l) => l.event === 'http' && l.path === '/cont'),
    undefined,
  );
  await stillServes(t, '/after/continuation');
});

test.serial(
  'a header list over 16 KiB sent before the SETTINGS acknowledgement gets 431 from sandgate; an HPACK bomb (one 4000-byte entry referenced 2000 times) resets its stream',
  async (t) => {
    const ENHANCE_YOUR_CALM = 11;
    // Sent right after the preface: nghttp2 does not hold the client to 16 KiB yet, sandgate does.
    const big = await raw('big-headers', 20);
    t.deepEqual(big.responses, [{ stream: 1, status: 431 }], JSON.stringify(big));
    t.like(await g.log.waitFor((l) => l.event === 'http' && l.path === '/big', 5000, '/big line'), { status: 431, decision: 'deny', alpn: 'h2' });
    const bomb = await raw('hpack-bomb', 2000);
    t.is(bomb.rst[ENHANCE_YOUR_CALM], 1, JSON.stringify(bomb));
    t.is(upstreamSaw('/big'), 0);
    t.is(upstreamSaw('/bomb'), 0);
    await stillServes(t, '/after/headers');
  },
);

test.serial('more streams than SETTINGS_MAX_CONCURRENT_STREAMS: the session ends (PROTOCOL_ERROR), at most 100 exchanges were started', async (t) => {
  const out = await raw('streams', 150);
  t.true(out.closed || out.goaway !== null, JSON.stringify(out));
  t.true(g.log.lines.filter((l) => l.event === 'http' && String(l.path).startsWith('/open/')).length <= 100);
  await stillServes(t, '/after/streams');
});

test.serial(
  'PING and SETTINGS floods from a client that never reads: the session closed for flooding, or the flood left unread; sandgate keeps serving',
  async (t) => {
    // Past what the kernel buffers of both ends hold of the acknowledgements (a few MB), so that
    // a sandgate reading the whole flood would have to hold the rest itself.
    const N = 2_000_000;
    for (const [mode, size] of [
      ['ping-flood', 17],
      ['settings-flood', 9],
    ] as const) {
      const before = g.log.lines.length;
      const out = await raw(mode, N);
      // Either nghttp2 saw its acknowledgements pile up (more than 1000 queued) and closed the
      // session, or sandgate stopped reading a peer that does not read its answers: most of the
      // flood is still on the client's side. Both bound what one connection makes sandgate hold.
      t.true(out.closed || out.unsent > (N * size) / 2, `${mode}: ${JSON.stringify(out)}`);
      if (out.closed) {
        const line = await g.log.waitFor((l) => g.log.lines.indexOf(l) >= before && l.event === 'error' && l.alpn === 'h2', 5000, `${mode} error line`);
        t.regex(String(line.reason), /^HTTP\/2 session failed \(ERR_HTTP2_ERROR: /, `${mode}: ${String(line.reason)}`);
      }
    }
    await stillServes(t, '/after/floods');
  },
);
