// A sandbox-side client that speaks raw bytes, for test/integration/relay.test.ts. Plain `node`,
// run inside a sandbox namespace. One connection, TLS (verified against --ca, SNI --servername)
// or plain TCP, driven by a list of steps; nothing is parsed, so the test sees every byte.
//
// stdin: one JSON object {host, port, servername?, ca?, steps, timeoutMs?} (stdin, not argv: a
//   step may carry more bytes than one argument can); without servername the connection is plain TCP. Steps, in order:
//   {"write":B64}                    send these bytes (one write)
//   {"until":TEXT,"count":N}         wait until TEXT (latin1) occurs N times (default 1) in what was received
//   {"close":true}                   close the connection and report
//   After the last step (if it is not close), wait for the peer to close.
// Prints one JSON line and exits: {"received":B64,"ended":BOOL,"error":CODE|null,"timedOut":BOOL,
//   "waiting":TEXT|null}; ended: the peer closed its side; timedOut: timeoutMs passed first (waiting:
//   the text an "until" step was still waiting for).
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

const input = [];
for await (const c of process.stdin) input.push(c);
const spec = JSON.parse(Buffer.concat(input).toString('utf8'));
const steps = [...spec.steps];
const chunks = [];
let ended = false;
let error = null;
let waiting = null;
let reported = false;

const s = spec.servername
  ? tls.connect({ host: spec.host, port: spec.port, servername: spec.servername, ca: readFileSync(spec.ca), ALPNProtocols: ['http/1.1'] })
  : net.connect({ host: spec.host, port: spec.port });
s.setNoDelay(true);

const report = (timedOut) => {
  if (reported) return;
  reported = true;
  process.stdout.write(JSON.stringify({ received: Buffer.concat(chunks).toString('base64'), ended, error, timedOut, waiting }) + '\n');
  s.destroy();
  process.exit(0);
};
const timer = setTimeout(() => report(true), spec.timeoutMs ?? 5000);

const occurrences = (text) => {
  const all = Buffer.concat(chunks).toString('latin1');
  let n = 0;
  for (let i = all.indexOf(text); i >= 0; i = all.indexOf(text, i + text.length)) n++;
  return n;
};

/** Run steps until one must wait for bytes. */
const advance = () => {
  while (steps.length > 0) {
    const st = steps[0];
    if (st.write !== undefined) s.write(Buffer.from(st.write, 'base64'));
    else if (st.until !== undefined) {
      if (occurrences(st.until) < (st.count ?? 1)) {
        waiting = st.until;
        return;
      }
      waiting = null;
    } else if (st.close) {
      clearTimeout(timer);
      report(false);
      return;
    }
    steps.shift();
  }
};

s.once(spec.servername ? 'secureConnect' : 'connect', advance);
s.on('data', (d) => {
  chunks.push(d);
  if (waiting !== null) advance();
});
s.on('end', () => {
  ended = true;
});
s.on('error', (e) => {
  error = e.code ?? String(e);
});
s.on('close', () => {
  clearTimeout(timer);
  report(false);
});
