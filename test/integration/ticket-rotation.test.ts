/**
 * TLS session ticket keys rotate (tls.ticketKeyRotationMs): a ticket issued before a rotation no
 * longer resumes, in the primary's leaf contexts and in every worker's; one issued after resumes.
 * workers: 2, so the rotation must reach the workers over IPC. Rotation every 2 s here; the test
 * waits for it causally (an old ticket stops resuming), never on a timer of its own.
 */
import test from 'ava';
import { join } from 'node:path';
import { createWorld, startGate, baseConfig, type World, type Gate } from '../helpers/gate.js';
import type { ExecResult } from '../../src/demo/topology.js';

const HOST = 'api.example.test';
let w: World;
let g: Gate;

test.before(async () => {
  w = await createWorld();
  const base = baseConfig(w, { allow: [{ host: HOST, inject: 'k' }], upstream: { caFile: w.pki.caFile } });
  const config = {
    ...base,
    tls: { ...(base.tls as Record<string, unknown>), ticketKeyRotationMs: 2000 },
    workers: 2,
    credentials: { k: { secret: { env: 'SG_TEST_TICKET_K' } } },
  };
  g = await startGate(w.topo, w.dir, config, 'sandgate.json', { env: { SG_TEST_TICKET_K: 'sk-ticket-rotation-0123456789' } });
});

test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

/** One intercepted request with openssl s_client: -sess_out saves the session, -sess_in offers it. */
function connect(flag: '-sess_out' | '-sess_in', sess: string, path: string): Promise<ExecResult> {
  const ca = join(w.dir, 'ca', 'ca.pem');
  // The request and a short wait let the TLS 1.3 tickets (sent after the handshake) arrive.
  return w.topo.exec(
    w.sandbox,
    '/bin/sh',
    [
      '-c',
      `(printf 'GET ${path} HTTP/1.1\\r\\nHost: ${HOST}\\r\\n\\r\\n'; sleep 0.3) | /usr/bin/openssl s_client -connect ${w.a}:443 -servername ${HOST} -CAfile ${ca} ${flag} ${sess} 2>&1`,
    ],
    { timeoutMs: 10_000 },
  );
}
const reused = (r: ExecResult): boolean => /^Reused,/m.test(r.stdout);

test('a ticket from before a rotation no longer resumes on either worker; a fresh one does', async (t) => {
  const old = join(w.dir, 'old.sess');
  const first = await connect('-sess_out', old, '/ticket-old');
  t.regex(first.stdout, /^New,/m, first.stdout);
  // Until the first rotation (at most 2 s), the old ticket may still resume; wait for the moment
  // it stops (bounded: 30 tries), then both workers must refuse it.
  let refused = false;
  for (let i = 0; i < 30 && !refused; i++) refused = !reused(await connect('-sess_in', old, `/wait-${i}`));
  t.true(refused, 'the old ticket still resumed after 30 tries (no rotation)');
  const after = [await connect('-sess_in', old, '/after-1'), await connect('-sess_in', old, '/after-2')];
  t.deepEqual(after.map(reused), [false, false], 'the old ticket resumes on no worker');
  // A ticket issued now resumes (until the next rotation: take it and use it at once, and allow
  // one rotation to fall in between by trying twice).
  let fresh = false;
  for (let i = 0; i < 2 && !fresh; i++) {
    const sess = join(w.dir, `fresh-${i}.sess`);
    await connect('-sess_out', sess, `/fresh-${i}`);
    fresh = reused(await connect('-sess_in', sess, `/fresh-${i}-again`));
  }
  t.true(fresh, 'a ticket issued after the rotation resumes');
  const by = new Set(g.log.lines.filter((l) => l.event === 'conn' && l.host === HOST && l.intercept === true).map((l) => l.worker));
  t.is(by.size, 2, `both workers served these connections: ${[...by].join(',')}`);
});
