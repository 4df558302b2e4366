#!/usr/bin/env node
/**
 * `npm run bench`: sandgate side by side with the physical limit and with the proxies people would
 * otherwise use, in one run, interleaved and repeated. docs/performance.md explains the
 * figures; this header explains what each measurement is.
 *
 * Topology (src/demo/topology.ts, all in namespaces made here; the root namespace is never touched):
 *
 *   sandbox ns "sbx" 10.77.1.2 --veth-- host ns 10.77.1.1 | 10.77.2.1 --veth-- upstream ns "up" 10.77.2.2
 *   (wrk, node clients)                 (sandgate, HAProxy, mitmproxy)        (nginx, HTTPS :443)
 *   sandbox ns "fl" 10.77.3.2 --veth-- host ns 10.77.3.1   (the DNS flood of the dnsflood scenario)
 *
 * Targets (what the sandbox's traffic goes through; exactly one is active at a time):
 *   direct        wrk -> 10.77.2.2 routed by the host namespace (ip_forward=1 there, sandgate's
 *                 firewall removed): the same path with no proxy, the physical limit here.
 *   sg-pass       sandgate's firewall installed; wrk -> pass.example.test (10.77.2.2), TPROXY'd
 *                 to sandgate, SNI-checked, spliced, not decrypted.
 *   sg-intercept  sandgate's firewall installed; wrk -> bench.example.test, TPROXY'd, TLS
 *                 terminated with a leaf from sandgate's CA, `Authorization: Bearer $BENCH_KEY`
 *                 injected, re-encrypted to nginx (verified against the bench CA).
 *   haproxy-tcp   firewall removed; wrk -> 10.77.1.11:443 (HAProxy in the host namespace, TCP mode,
 *                 SNI inspected and matched, then spliced to nginx).
 *   haproxy-mitm  firewall removed; wrk -> 10.77.1.12:443 (HAProxy terminating TLS with a cert
 *                 for bench.example.test, same header set, re-encrypting to nginx, verified).
 *   mitmproxy     firewall removed; wrk -> 10.77.1.13:443 (mitmdump in reverse mode with the same
 *                 certificate and the same header set by a one-line addon), if it runs.
 *   sg-intercept-cmp the same from another build of sandgate (--compare DIR, e.g. the main branch's
 *               dist/), started in place of the first whenever this target is measured: an old and
 *               a new build measured in one run, interleaved (only with --compare)
 *   sg-intercept-w the same with `workers: N` (--workers, default 2): a second sandgate, started
 *               in place of the first whenever this target is measured (same firewall table)
 * HAProxy and mitmproxy are explicit targets (wrk dials their address; the sandbox's hosts file
 * maps the test name there), so they see the same bytes as sandgate without a firewall of
 * their own; sandgate's firewall is installed only while sandgate is measured.
 *
 * Scenarios (wrk always under `timeout`; every measurement follows a short warm-up):
 *   keepalive   wrk -t2 -c50, GET /small.txt (17 bytes) over keep-alive: req/s, p50, p99, proxy
 *               CPU per request, upstream connections nginx accepted per request (stub_status).
 *   h2          h2load -t1 -c50 -m10 (--h2-streams), GET /small.txt over HTTP/2: 50 connections with
 *               10 streams in flight on each, through the targets that terminate TLS and offer h2
 *               (sandgate intercepting, HAProxy MITM with `alpn h2,http/1.1`); both reach nginx over
 *               HTTP/1.1 (nginx offers no h2 unless --h2-upstream). req/s, p50/p99 from h2load's
 *               per-request log, proxy CPU per request.
 *   latency     wrk -t1 -c1: one sequential client; p50/p99, and what a proxy adds over direct.
 *   connclose   wrk -t2 -c50 with `Connection: close`: a new TCP+TLS connection per request.
 *               nginx and HAProxy are configured not to resume sessions; sandgate and mitmproxy
 *               issue TLS 1.3 tickets that wrk reuses (probed and reported: "resumes"). Proxy CPU
 *               time per connection from /proc/PID/stat.
 *   bulk        wrk -t2 -c16, GET /1m.bin (1 MiB): MB/s.
 *   idle        N (10,000) TLS connections opened by a node client in the sandbox through the
 *               intercepting targets and held idle: the proxy's RSS (summed over its processes).
 *   dns         a node UDP client in the sandbox, 32 queries in flight, for an allowed and for a
 *               denied name: answers/s (sandgate only; it is the DNS responder).
 *   dnsflood    one sandbox's DNS flood against another's queries, with sandgate's default dns
 *               limits (reloaded in for the scenario): a well-behaved client in "sbx" (150
 *               queries/s, below dns.rateLimit) measured twice in the same run, once alone and
 *               once while sandbox "fl" (10.77.3.2) sends random names as fast as one process
 *               can (bench/lib/dns-flood.mjs): answers/s, lost (unanswered after 1 s), p50/p99.
 *
 * Every round runs every scenario over every target, target order and scenario order rotated per
 * round; the report gives medians and the spread (min-max) and ratios to direct and to HAProxy.
 * Every process started here is ended by pid; the namespaces are destroyed on exit and on SIGINT.
 *
 * Usage: node scripts/bench.mjs [--quick] [--only SCENARIO,...] [--targets TARGET,...] [--rounds N]
 *        [--duration S] [--idle-count N] [--profile] [--no-setup] [--out PREFIX] [--dist DIR]
 *        [--workers N] [--compare DIR] [--pin | --no-pin] [--h2-streams N] [--h2-upstream]
 *
 * Pinned layout (--pin, the default with two CPUs or more): the proxy under test and nginx share
 * CPU 0 (nginx with one worker, HAProxy with one thread), wrk and the node clients run on the
 * last CPU, so req/s measures what one core of proxy does, and the proxy's CPU time per request,
 * per connection and per MiB (utime+stime from /proc/PID/stat) is the per-core efficiency.
 */
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIB = join(ROOT, 'bench/lib');
/** The sandgate build under test; --dist DIR points at another one (e.g. to compare a change). */
let DIST = join(ROOT, 'dist');
let CLI = join(DIST, 'cli.js');
const WRK = '/usr/bin/wrk';
const H2LOAD = '/usr/bin/h2load';
const TIMEOUT = '/usr/bin/timeout';
const SYSCTL = '/usr/sbin/sysctl';
const IP = '/usr/sbin/ip';

const UP = '10.77.2.2';
const HOST_SBX = '10.77.1.1';
const HA_TCP = '10.77.1.11';
const HA_MITM = '10.77.1.12';
const MITM = '10.77.1.13';
const BENCH_NAME = 'bench.example.test';
const PASS_NAME = 'pass.example.test';
const DENIED_NAME = 'denied.example.test';
const SG_PORT = 15001;
const SG_DNS_PORT = 15053;

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */
/* ------------------------------------------------------------------------------------------ */

const ALL_SCENARIOS = ['keepalive', 'h2', 'latency', 'connclose', 'bulk', 'idle', 'dns', 'dnsflood'];
const ALL_TARGETS = ['direct', 'sg-pass', 'sg-intercept', 'sg-intercept-cmp', 'sg-intercept-w', 'haproxy-tcp', 'haproxy-mitm', 'mitmproxy'];

function usage(msg) {
  if (msg) process.stderr.write(`bench: ${msg}\n`);
  process.stderr.write(`usage: node scripts/bench.mjs [--quick] [--only ${ALL_SCENARIOS.join(',')}]
       [--targets ${ALL_TARGETS.join(',')}] [--rounds N] [--duration S]
       [--idle-count N] [--profile] [--no-setup] [--out PREFIX] [--workers N] [--compare DIR]
       [--h2-streams N] [--h2-upstream]
  --quick        one round, 2 s per measurement (a smoke run; figures are rough)
  --only         scenarios to run (default: all)
  --targets      targets to run (default: all that start)
  --rounds N     rounds (default 3; quick 1)
  --duration S   seconds per measurement (default 5; quick 2)
  --idle-count N idle connections in the idle scenario (default 10000)
  --profile      run sandgate under node --cpu-prof; the profile's top functions go in the report
  --pin          (default with 2+ CPUs) the proxy under test and nginx share CPU 0, the load
                 generators (wrk, node clients) run on the last CPU; nginx has one worker and
                 HAProxy one thread. The sg-intercept-w target's processes may use every CPU.
  --no-pin       no affinity: everything shares every CPU (nginx one worker per CPU, HAProxy one
                 thread per CPU)
  --no-setup     do not run scripts/bench-setup.sh first
  --out PREFIX   write PREFIX.json and PREFIX.md (default bench/results/latest)
  --dist DIR     the sandgate build to measure (default dist/, which \`npm run bench\` builds)
  --h2-streams N streams in flight per connection in the h2 scenario (h2load -m; default 10)
  --h2-upstream  nginx offers h2 too, and HAProxy's MITM backend offers h2,http/1.1 as sandgate
                 always does: the intercepting proxies then reach nginx over HTTP/2 in every scenario
  --workers N    workers of the sg-intercept-w target (sandgate's \`workers: N\`; default 2)
  --compare DIR  also measure the build in DIR (its cli.js) as target sg-intercept-cmp, interleaved
                 with sg-intercept (e.g. --only keepalive --targets sg-intercept,sg-intercept-cmp)
  --node-args S  extra node options for sandgate, space-separated (e.g. "--max-semi-space-size=32")
  --rerender F   rewrite F's markdown (F.json -> F.md) from its JSON, measuring nothing
`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    nodeArgs: [],
    quick: false,
    only: ALL_SCENARIOS,
    targets: ALL_TARGETS,
    rounds: undefined,
    duration: undefined,
    idleCount: 10000,
    workers: 2,
    h2Streams: 10,
    h2Upstream: false,
    // Pinned by default where there are two cores or more (see --no-pin).
    pin: cpus().length >= 2,
    profile: false,
    setup: true,
    out: join(ROOT, 'bench/results/latest'),
  };
  const list = (v, allowed, flag) => {
    if (!v) usage(`${flag} needs a value`);
    const items = v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const i of items) if (!allowed.includes(i)) usage(`${flag}: unknown "${i}" (one of ${allowed.join(', ')})`);
    return items;
  };
  const num = (v, flag) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) usage(`${flag} needs a positive number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--quick':
        o.quick = true;
        break;
      case '--only':
        o.only = list(argv[++i], ALL_SCENARIOS, a);
        break;
      case '--targets':
        o.targets = list(argv[++i], ALL_TARGETS, a);
        break;
      case '--rounds':
        o.rounds = Math.round(num(argv[++i], a));
        break;
      case '--duration':
        o.duration = num(argv[++i], a);
        break;
      case '--idle-count':
        o.idleCount = Math.round(num(argv[++i], a));
        break;
      case '--compare':
        o.compare = resolve(argv[++i] ?? usage('--compare needs a value'));
        break;
      case '--h2-streams':
        o.h2Streams = Math.round(num(argv[++i], a));
        if (o.h2Streams < 1 || o.h2Streams > 100) usage('--h2-streams: 1 to 100');
        break;
      case '--h2-upstream':
        o.h2Upstream = true;
        break;
      case '--workers':
        o.workers = Math.round(num(argv[++i], a));
        if (o.workers < 2 || o.workers > 64) usage('--workers: 2 to 64');
        break;
      case '--profile':
        o.profile = true;
        break;
      case '--pin':
        if (cpus().length < 2) usage('--pin needs two CPUs or more');
        o.pin = true;
        break;
      case '--no-pin':
        o.pin = false;
        break;
      case '--node-args':
        o.nodeArgs = (argv[++i] ?? '').split(' ').filter(Boolean);
        break;
      case '--no-setup':
        o.setup = false;
        break;
      case '--rerender':
        o.rerender = resolve(argv[++i] ?? usage('--rerender needs a value'));
        break;
      case '--dist':
        DIST = resolve(argv[++i] ?? usage('--dist needs a value'));
        CLI = join(DIST, 'cli.js');
        break;
      case '--out':
        o.out = resolve(argv[++i] ?? usage('--out needs a value'));
        break;
      case '-h':
      case '--help':
        usage();
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (o.compare === undefined) {
    if (argv.includes('--targets') && o.targets.includes('sg-intercept-cmp')) usage('--targets sg-intercept-cmp needs --compare DIR');
    o.targets = o.targets.filter((t) => t !== 'sg-intercept-cmp');
  } else if (!existsSync(join(o.compare, 'cli.js'))) {
    usage(`--compare: ${join(o.compare, 'cli.js')} is missing`);
  }
  o.rounds ??= o.quick ? 1 : 3;
  o.duration ??= o.quick ? 2 : 5;
  o.warmup = o.quick ? 0.5 : 1;
  // The 10k-connection scenario caps itself in time; quick runs use fewer connections.
  if (o.quick && !argv.includes('--idle-count')) o.idleCount = 2000;
  return o;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/** CPU sets of the pinned layout (--pin): the proxy and the upstream on one core, the load on another. */
const PIN = { server: '0', load: String(cpus().length - 1), all: `0-${cpus().length - 1}` };
const TASKSET = '/usr/bin/taskset';

/** `cmd args` under `taskset -c set` when pinning, else unchanged. */
function pinned(pin, set, cmd, args) {
  return pin && set ? [TASKSET, ['-c', set, cmd, ...args]] : [cmd, args];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  // fn returns a falsy value to keep waiting; an exception (e.g. "the process exited") ends the wait.
  while (Date.now() < end) {
    const v = await fn();
    if (v) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function median(xs) {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function stats(xs) {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (s.length === 0) return null;
  return { median: median(s), min: Math.min(...s), max: Math.max(...s), n: s.length };
}

function rotate(arr, k) {
  if (arr.length === 0) return arr;
  const r = k % arr.length;
  return [...arr.slice(r), ...arr.slice(0, r)];
}

const CLK_TCK = Number(execFileSync('/usr/bin/getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** pid -> parent pid for every process, to find a proxy's worker processes (nginx, cluster). */
function parentMap() {
  const m = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
      m.set(Number(d), Number(rest[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  return m;
}

function processTree(root) {
  const parents = parentMap();
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, ppid] of parents) if (ppid === out[i]) out.push(pid);
  return out;
}

/** utime+stime of a process tree in microseconds (threads included: /proc/PID/stat sums them). */
function cpuUs(root) {
  if (!root) return null;
  let ticks = 0;
  for (const pid of processTree(root)) {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of proc(5); `rest` starts at field 3.
      ticks += Number(rest[11]) + Number(rest[12]);
    } catch {
      /* exited */
    }
  }
  return (ticks * 1e6) / CLK_TCK;
}

/** Resident set size of a process tree, MiB. */
function rssMiB(root) {
  let kb = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kb / 1024;
}

function sha256(file) {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.stdout || '').trim()}`);
  return r.stdout;
}

function version(cmd, args, re) {
  try {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    const m = re.exec(`${r.stdout}\n${r.stderr}`);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Throwaway PKI (openssl): ECDSA P-256 CA and one leaf for the test names                    */
/* ------------------------------------------------------------------------------------------ */

function makePki(dir) {
  const ossl = (...a) => sh('/usr/bin/openssl', a);
  const p = (f) => join(dir, f);
  ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('ca.key'));
  ossl(
    'req',
    '-x509',
    '-new',
    '-key',
    p('ca.key'),
    '-sha256',
    '-days',
    '2',
    '-subj',
    '/CN=sandgate bench CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    p('ca.pem'),
  );
  ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('leaf.key'));
  ossl('req', '-new', '-key', p('leaf.key'), '-subj', `/CN=${BENCH_NAME}`, '-out', p('leaf.csr'));
  // The IP SAN lets mitmproxy's reverse mode (which dials the address) verify nginx too.
  writeFileSync(
    p('leaf.ext'),
    [
      `subjectAltName=DNS:${BENCH_NAME},DNS:${PASS_NAME},IP:${UP}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
    ].join('\n') + '\n',
  );
  ossl(
    'x509',
    '-req',
    '-in',
    p('leaf.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-sha256',
    '-extfile',
    p('leaf.ext'),
    '-out',
    p('leaf.pem'),
  );
  // HAProxy and mitmproxy take certificate and key in one file.
  writeFileSync(p('front.pem'), readFileSync(p('leaf.pem'), 'utf8') + readFileSync(p('leaf.key'), 'utf8'));
  return { ca: p('ca.pem'), cert: p('leaf.pem'), key: p('leaf.key'), combined: p('front.pem') };
}

/* ------------------------------------------------------------------------------------------ */
/* Server configurations                                                                      */
/* ------------------------------------------------------------------------------------------ */

function nginxConf(dir, pki, key, pin, h2Upstream) {
  const www = join(dir, 'www');
  mkdirSync(www, { recursive: true, mode: 0o755 });
  // nginx's workers run as an unprivileged user: they must traverse the (0700) temp dir to www.
  chmodSync(dir, 0o711);
  mkdirSync(join(dir, 'nginx-tmp'), { recursive: true });
  writeFileSync(join(www, 'small.txt'), 'hello from nginx\n');
  writeFileSync(join(www, '1m.bin'), randomBytes(1 << 20));
  const t = join(dir, 'nginx-tmp');
  return `daemon off;
master_process on;
worker_processes ${pin ? 1 : 'auto'};
worker_rlimit_nofile 20000;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections 16000; }
http {
  access_log off;
  client_body_temp_path ${t}/body; proxy_temp_path ${t}/proxy; fastcgi_temp_path ${t}/fcgi;
  uwsgi_temp_path ${t}/uwsgi; scgi_temp_path ${t}/scgi;
  default_type application/octet-stream;
  sendfile on; tcp_nodelay on;
  # wrk keeps each connection for the whole run; nginx's default (1000 requests) would reconnect.
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  # What the upstream saw, without echoing the secret (sandgate would redact an echo anyway):
  # proves each proxy injected the same header (checked before measuring).
  map $http_authorization $bench_auth { "Bearer ${key}" "injected"; "" "none"; default "other"; }
  server {
    listen ${UP}:443 ssl${h2Upstream ? ' http2' : ''};
    ssl_certificate ${pki.cert};
    ssl_certificate_key ${pki.key};
    ssl_protocols TLSv1.3;
    # Full handshakes only: "direct" then costs what a new connection really costs.
    ssl_session_cache off;
    ssl_session_tickets off;
    root ${www};
    location = /auth { default_type text/plain; return 200 "auth=$bench_auth\\n"; }
  }
  # Accepted-connection counter: upstream connections each proxy opens per request (pooling).
  server {
    listen 127.0.0.1:8080;
    location = /status { stub_status; }
  }
}
`;
}

function haproxyConf(pki, key, pin, h2Upstream) {
  return `global
  # Where the hard RLIMIT_NOFILE is lower than what maxconn implies (2 fds per connection),
  # warn instead of refusing to start: idle MITM connections use one descriptor each.
  no strict-limits
  maxconn 10500
  nbthread ${pin ? 1 : cpus().length}
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
  ssl-server-verify required
defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  maxconn 10500
frontend tcp_sni
  mode tcp
  bind ${HA_TCP}:443
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend nginx_tcp if { req_ssl_sni -i ${PASS_NAME} ${BENCH_NAME} }
backend nginx_tcp
  mode tcp
  server up ${UP}:443
frontend mitm
  mode http
  option http-keep-alive
  bind ${HA_MITM}:443 ssl crt ${pki.combined} alpn h2,http/1.1
  http-request set-header Authorization "Bearer ${key}"
  default_backend nginx_tls
backend nginx_tls
  mode http
  http-reuse always
  server up ${UP}:443 ssl verify required ca-file ${pki.ca} sni str(${BENCH_NAME}) alpn ${h2Upstream ? 'h2,http/1.1' : 'http/1.1'}
`;
}

function sandgateConf(dir, pki, auditFile) {
  return {
    // The control socket in the bench's own directory: the default path is shared with any other
    // sandgate on the host.
    listen: { port: SG_PORT, dnsPort: SG_DNS_PORT, control: join(dir, 'control.sock') },
    log: { file: auditFile, level: 'info' },
    tls: { caDir: join(dir, 'sg-ca') },
    dns: { rateLimit: { qps: 1_000_000, burst: 1_000_000 } },
    upstream: {
      hosts: { [BENCH_NAME]: UP, [PASS_NAME]: UP },
      caFile: pki.ca,
      allowPrivate: ['10.77.0.0/16'],
    },
    sandboxes: [
      { name: 'bench', interface: 'sbx-sbx', cidr: '10.77.1.0/24', policy: 'bench' },
      { name: 'flood', interface: 'sbx-fl', cidr: '10.77.3.0/24', policy: 'bench' },
    ],
    policies: { bench: { allow: [{ host: BENCH_NAME, inject: 'bench' }, { host: PASS_NAME }] } },
    credentials: { bench: { secret: { env: 'BENCH_KEY' } } },
  };
}

/* ------------------------------------------------------------------------------------------ */
/* The bench                                                                                  */
/* ------------------------------------------------------------------------------------------ */

class Bench {
  constructor(opts) {
    this.o = opts;
    this.topo = undefined;
    this.dir = mkdtempSync(join(tmpdir(), 'sg-bench-'));
    this.key = `sk-bench-${randomBytes(12).toString('hex')}`;
    this.procs = {}; // label -> { child, tail() }
    this.targets = {}; // id -> { id, name, addr, sandgate, forward, pid(), ca, intercepts, ref }
    this.skipped = {}; // id -> reason
    this.resumes = {}; // id -> 'yes' | 'no' | 'unknown' (TLS session resumption toward the sandbox)
    this.state = { fw: undefined, forward: false };
    this.results = []; // one row per measurement
    this.notes = [];
  }

  /** Starts a long-running process in a namespace; keeps the tail of its output for errors. */
  start(label, ns, cmd, args, env, cpuSet) {
    const [c, a] = pinned(this.o.pin, cpuSet, cmd, args);
    const child = this.topo.spawn(ns, c, a, env ? { env } : {});
    let tail = '';
    const keep = (d) => {
      tail = (tail + d).slice(-4000);
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => {
      tail += `\nspawn error: ${e.message}`;
    });
    const p = { child, label, tail: () => tail, exited: () => child.exitCode !== null || child.signalCode !== null };
    this.procs[label] = p;
    return p;
  }

  async stop(label) {
    const p = this.procs[label];
    if (!p || p.exited()) return;
    p.child.kill('SIGTERM');
    await Promise.race([new Promise((r) => p.child.once('exit', r)), sleep(5000)]);
    if (!p.exited()) p.child.kill('SIGKILL');
  }

  async curl(name, addr, path, ca) {
    const r = await this.topo.exec(
      this.topo.ns('sbx'),
      'curl',
      ['-fsS', '--max-time', '5', '--cacert', ca, '--resolve', `${name}:443:${addr}`, `https://${name}${path}`],
      { timeoutMs: 8000 },
    );
    return r;
  }

  async setup() {
    const { topo } = this;
    // Extra host addresses on the sandbox link for the explicit proxies (inside the host ns only).
    const r = await topo.exec(topo.hostNs, IP, ['addr', 'add', `${HA_TCP}/32`, 'dev', topo.hostIface('sbx')]);
    if (r.code !== 0) throw new Error(`ip addr add: ${r.stderr}`);
    await topo.exec(topo.hostNs, IP, ['addr', 'add', `${HA_MITM}/32`, 'dev', topo.hostIface('sbx')]);
    await topo.exec(topo.hostNs, IP, ['addr', 'add', `${MITM}/32`, 'dev', topo.hostIface('sbx')]);

    this.pki = makePki(this.dir);
    writeFileSync(join(this.dir, 'nginx.conf'), nginxConf(this.dir, this.pki, this.key, this.o.pin, this.o.h2Upstream));
    this.bulkSha = sha256(join(this.dir, 'www', '1m.bin'));
    writeFileSync(join(this.dir, 'haproxy.cfg'), haproxyConf(this.pki, this.key, this.o.pin, this.o.h2Upstream));
    writeFileSync(
      join(this.dir, 'inject.py'),
      'import os\nKEY = os.environ["BENCH_KEY"]\n\ndef request(flow):\n    flow.request.headers["Authorization"] = "Bearer " + KEY\n',
    );
    this.auditFile = join(this.dir, 'audit.log');
    this.sgConfigPath = join(this.dir, 'sandgate.json');
    writeFileSync(this.sgConfigPath, JSON.stringify(sandgateConf(this.dir, this.pki, this.auditFile), null, 2));

    // The upstream.
    const nginx = this.start(
      'nginx',
      topo.ns('up'),
      '/usr/sbin/nginx',
      ['-c', join(this.dir, 'nginx.conf'), '-e', join(this.dir, 'nginx-error.log')],
      undefined,
      PIN.server,
    );
    await waitFor(
      async () => {
        if (nginx.exited()) throw new Error(`nginx exited: ${nginx.tail()}`);
        const c = await topo.exec(topo.ns('up'), 'curl', [
          '-fsS',
          '--max-time',
          '2',
          '--cacert',
          this.pki.ca,
          '--resolve',
          `${BENCH_NAME}:443:${UP}`,
          `https://${BENCH_NAME}/small.txt`,
        ]);
        return c.code === 0;
      },
      10000,
      'nginx',
    );

    const env = { ...process.env, BENCH_KEY: this.key };
    const wants = (id) => this.o.targets.includes(id);
    const def = (t) => {
      this.targets[t.id] = t;
    };
    def({
      id: 'direct',
      name: BENCH_NAME,
      addr: UP,
      sandgate: false,
      forward: true,
      ca: this.pki.ca,
      intercepts: false,
      pid: () => this.procs.nginx?.child.pid,
      label: 'direct (no proxy)',
    });

    // HAProxy (one process, one thread per core: its default configuration).
    if (wants('haproxy-tcp') || wants('haproxy-mitm')) {
      const ha = this.start('haproxy', topo.hostNs, '/usr/sbin/haproxy', ['-db', '-f', join(this.dir, 'haproxy.cfg')], undefined, PIN.server);
      const pid = () => ha.child.pid;
      def({
        id: 'haproxy-tcp',
        name: PASS_NAME,
        addr: HA_TCP,
        sandgate: false,
        forward: false,
        ca: this.pki.ca,
        intercepts: false,
        pid,
        label: 'HAProxy TCP/SNI',
      });
      def({
        id: 'haproxy-mitm',
        name: BENCH_NAME,
        addr: HA_MITM,
        sandgate: false,
        forward: false,
        ca: this.pki.ca,
        intercepts: true,
        pid,
        label: 'HAProxy MITM+inject',
      });
    }
    if (wants('mitmproxy')) {
      const mitmdump = ['/usr/bin/mitmdump', '/usr/local/bin/mitmdump'].find((p) => existsSync(p));
      if (!mitmdump) {
        this.skipped.mitmproxy = 'mitmdump is not installed';
      } else {
        mkdirSync(join(this.dir, 'mitm'), { recursive: true });
        const m = this.start(
          'mitmproxy',
          topo.hostNs,
          mitmdump,
          [
            '-q',
            '--mode',
            `reverse:https://${UP}:443/`,
            '--listen-host',
            MITM,
            '--listen-port',
            '443',
            '--certs',
            `*=${this.pki.combined}`,
            '--set',
            `confdir=${join(this.dir, 'mitm')}`,
            '--set',
            `ssl_verify_upstream_trusted_ca=${this.pki.ca}`,
            '--set',
            'keep_host_header=true',
            '-s',
            join(this.dir, 'inject.py'),
          ],
          env,
          PIN.server,
        );
        def({
          id: 'mitmproxy',
          name: BENCH_NAME,
          addr: MITM,
          sandgate: false,
          forward: false,
          ca: this.pki.ca,
          intercepts: true,
          pid: () => m.child.pid,
          label: 'mitmproxy (reverse)',
        });
      }
    }

    // sandgate: installs its firewall when it starts.
    if (wants('sg-pass') || wants('sg-intercept') || wants('sg-intercept-cmp') || this.o.only.includes('dns') || this.o.only.includes('dnsflood')) {
      const nodeArgs = [...this.o.nodeArgs];
      if (this.o.profile) {
        this.profDir = join(this.dir, 'prof');
        mkdirSync(this.profDir, { recursive: true });
        nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${this.profDir}`);
      }
      this.sgEnv = env;
      this.sgVariants = { sandgate: { args: [...nodeArgs, CLI, 'run', '-c', this.sgConfigPath], audit: this.auditFile } };
      await this.startSandgate('sandgate', env);
      this.state.fw = true;
      const pid = () => this.procs.sandgate.child.pid;
      const sgCa = join(this.dir, 'sg-ca', 'ca.pem');
      def({
        id: 'sg-pass',
        name: PASS_NAME,
        addr: UP,
        sandgate: true,
        sgProc: 'sandgate',
        forward: false,
        ca: this.pki.ca,
        intercepts: false,
        pid,
        label: 'sandgate passthrough',
      });
      def({
        id: 'sg-intercept',
        name: BENCH_NAME,
        addr: UP,
        sandgate: true,
        sgProc: 'sandgate',
        forward: false,
        ca: sgCa,
        intercepts: true,
        pid,
        label: 'sandgate intercept+inject',
      });
      if (wants('sg-intercept-cmp')) {
        // The other build, same config, options, firewall table, CA and port; activate() swaps it
        // in place of the first whenever this target is measured.
        this.sgVariants['sandgate-cmp'] = { args: [...nodeArgs, join(this.o.compare, 'cli.js'), 'run', '-c', this.sgConfigPath], audit: this.auditFile };
        def({
          id: 'sg-intercept-cmp',
          name: BENCH_NAME,
          addr: UP,
          sandgate: true,
          sgProc: 'sandgate-cmp',
          forward: false,
          ca: sgCa,
          intercepts: true,
          pid: () => this.procs['sandgate-cmp'].child.pid,
          label: `sandgate intercept+inject (${this.o.compare})`,
        });
      }
      if (wants('sg-intercept-w')) {
        // The same config with `workers: N`, run instead of the first sandgate while this target is
        // measured (activate() swaps them; both use one firewall table, one CA, one port).
        const wConfig = join(this.dir, 'sandgate-w.json');
        const wAudit = join(this.dir, 'audit-w.log');
        writeFileSync(wConfig, JSON.stringify({ ...sandgateConf(this.dir, this.pki, wAudit), workers: this.o.workers }, null, 2));
        this.sgVariants['sandgate-w'] = { args: [CLI, 'run', '-c', wConfig], audit: wAudit };
        def({
          id: 'sg-intercept-w',
          name: BENCH_NAME,
          addr: UP,
          sandgate: true,
          sgProc: 'sandgate-w',
          forward: false,
          ca: sgCa,
          intercepts: true,
          pid: () => this.procs['sandgate-w'].child.pid,
          label: `sandgate intercept+inject ×${this.o.workers} workers`,
        });
      }
    }

    // Check every target end to end (and that the intercepting ones inject the same header)
    // before measuring anything; a target that fails is reported as skipped, not measured.
    for (const t of Object.values(this.targets)) {
      await this.activate(t);
      const want = t.intercepts ? 'auth=injected' : 'auth=none';
      let last;
      try {
        await waitFor(
          async () => {
            last = await this.curl(t.name, t.addr, '/auth', t.ca);
            return last.code === 0 && last.stdout.trim() === want;
          },
          t.id === 'mitmproxy' ? 15000 : 8000,
          `${t.id} answering`,
        );
        // The 1 MiB body arrives intact even when the client reads slowly (backpressure in the
        // relay: a proxy that reuses read buffers must not overwrite queued bytes).
        const file = join(this.dir, `dl-${t.id}.bin`);
        const dl = await this.topo.exec(
          this.topo.ns('sbx'),
          'curl',
          ['-fsS', '--max-time', '20', '--limit-rate', '4M', '--cacert', t.ca, '--resolve', `${t.name}:443:${t.addr}`, '-o', file, `https://${t.name}/1m.bin`],
          { timeoutMs: 25000 },
        );
        if (dl.code !== 0 || sha256(file) !== this.bulkSha) {
          last = { code: dl.code, stdout: '', stderr: dl.code !== 0 ? dl.stderr : '1 MiB download corrupted (sha256 differs)' };
          throw new Error('bulk');
        }
      } catch {
        const proc = {
          'haproxy-tcp': 'haproxy',
          'haproxy-mitm': 'haproxy',
          mitmproxy: 'mitmproxy',
          'sg-pass': 'sandgate',
          'sg-intercept': 'sandgate',
          'sg-intercept-w': 'sandgate-w',
          'sg-intercept-cmp': 'sandgate-cmp',
          direct: 'nginx',
        }[t.id];
        const why = last ? `curl exit ${last.code}: ${(last.stderr || last.stdout).trim().slice(0, 200)}` : 'no answer';
        this.skipped[t.id] = `sanity check failed (${why})${this.procs[proc]?.exited() ? `; process exited: ${this.procs[proc].tail().slice(-300)}` : ''}`;
        log(`skipping ${t.id}: ${this.skipped[t.id]}`);
        delete this.targets[t.id];
      }
    }
    for (const id of ALL_TARGETS) if (!this.o.targets.includes(id)) delete this.targets[id];
    // Does the endpoint the sandbox's TLS ends at resume sessions? (wrk reuses a session ticket
    // on reconnect; with resumption a "new connection" skips the certificate and signature.)
    for (const t of Object.values(this.targets)) {
      await this.activate(t);
      this.resumes[t.id] = await this.probeResumption(t);
    }
  }

  /** Two `openssl s_client` connections, the second offering the first's session: "yes" if reused. */
  async probeResumption(t) {
    const sess = join(this.dir, `sess-${t.id}`);
    const run = (extra) =>
      this.topo.exec(
        this.topo.ns('sbx'),
        '/bin/sh',
        [
          '-c',
          // The request and a short wait let the TLS 1.3 tickets (sent after the handshake) arrive.
          `(printf 'GET /small.txt HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' "$1"; sleep 0.4) | /usr/bin/openssl s_client -connect "$2:443" -servername "$1" -CAfile "$3" ${extra} "$4" 2>&1`,
          'sh',
          t.name,
          t.addr,
          t.ca,
          sess,
        ],
        { timeoutMs: 10000 },
      );
    await run('-sess_out');
    const r = await run('-sess_in');
    return /^Reused,/m.test(r.stdout) ? 'yes' : /^New,/m.test(r.stdout) ? 'no' : 'unknown';
  }

  /** Starts one sandgate variant (`sandgate`, or `sandgate-w` with workers) and waits for its ready line. */
  async startSandgate(label, env) {
    const v = this.sgVariants[label];
    const before = existsSync(v.audit) ? readFileSync(v.audit, 'utf8').split('"event":"ready"').length : 1;
    // With workers, sandgate may use every core (docs/performance.md, "1 vs N workers").
    const sg = this.start(label, this.topo.hostNs, process.execPath, v.args, env, label === 'sandgate-w' ? PIN.all : PIN.server);
    await waitFor(
      () => {
        if (sg.exited()) throw new Error(`${label} exited: ${sg.tail()}`);
        return existsSync(v.audit) && readFileSync(v.audit, 'utf8').split('"event":"ready"').length > before;
      },
      20000,
      `${label} ready`,
    );
    this.sgRunning = label;
    this.sgGeneration = (this.sgGeneration ?? 0) + 1;
  }

  /** Routes the sandbox's traffic to one target: firewall, forwarding and hosts file. */
  async activate(t) {
    const { topo } = this;
    let started = false;
    if (t.sgProc !== undefined && this.sgRunning !== t.sgProc) {
      // SIGTERM leaves the firewall in place; the other sandgate re-creates the same table.
      await this.stop(this.sgRunning);
      await this.startSandgate(t.sgProc, this.sgEnv);
      started = true;
    }
    if (this.state.fw !== undefined && this.state.fw !== t.sandgate) {
      // `sandgate firewall up|down -c FILE` (the documented commands) in the host namespace, with
      // --force: the bench routes traffic around the sandgate it keeps running (they refuse otherwise).
      const action = t.sandgate ? 'up' : 'down';
      const r = await topo.exec(topo.hostNs, process.execPath, [CLI, 'firewall', action, '--force', '-c', this.sgConfigPath], { timeoutMs: 20000 });
      if (r.code !== 0) throw new Error(`sandgate firewall ${action}: ${(r.stderr || r.stdout).trim()}`);
      this.state.fw = t.sandgate;
    }
    if (this.state.forward !== t.forward) {
      const r = await topo.exec(topo.hostNs, SYSCTL, ['-q', '-w', `net.ipv4.ip_forward=${t.forward ? 1 : 0}`]);
      if (r.code !== 0) throw new Error(`sysctl in ${topo.hostNs}: ${r.stderr}`);
      this.state.forward = t.forward;
    }
    // `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts for each command it runs.
    writeFileSync(`/etc/netns/${topo.ns('sbx')}/hosts`, `127.0.0.1\tlocalhost\n${t.addr}\t${t.name}\n`);
    return started;
  }

  /** nginx's accepted-connection counter (stub_status), or null. */
  async upstreamAccepts() {
    const r = await this.topo.exec(this.topo.ns('up'), 'curl', ['-fsS', '--max-time', '2', 'http://127.0.0.1:8080/status'], { timeoutMs: 4000 });
    const m = /\n\s*(\d+)\s+(\d+)\s+(\d+)/.exec(r.stdout);
    return m ? Number(m[1]) : null;
  }

  /** One wrk run in the sandbox; returns its parsed report, or an error row. */
  async wrk(t, sc, seconds) {
    const args = ['-t', String(sc.threads), '-c', String(sc.conns), '-d', `${seconds}s`, '--timeout', '10s', '-s', join(LIB, 'report.lua')];
    for (const h of sc.headers ?? []) args.push('-H', h);
    args.push(`https://${t.name}${sc.path}`);
    const limit = Math.ceil(seconds + 20);
    const [cmd, a] = pinned(this.o.pin, PIN.load, TIMEOUT, ['-k', '5', String(limit), WRK, ...args]);
    const r = await this.topo.exec(this.topo.ns('sbx'), cmd, a, { timeoutMs: (limit + 10) * 1000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('BENCH_JSON '));
    if (!line) return { error: `wrk exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 300)}` };
    return JSON.parse(line.slice('BENCH_JSON '.length));
  }

  /**
   * One h2load run in the sandbox (HTTP/2 over TLS, ALPN h2), its report in wrk's shape (bench/lib/
   * report.lua): h2load prints no percentiles, so they come from its per-request log (--log-file:
   * start, status, microseconds to the end of the response).
   */
  async h2load(t, sc, seconds) {
    const logFile = join(this.dir, 'h2load.log');
    rmSync(logFile, { force: true });
    const args = ['-t', '1', '-c', String(sc.conns), '-m', String(sc.streams), '-D', String(seconds), '--log-file', logFile, `https://${t.name}${sc.path}`];
    const limit = Math.ceil(seconds + 20);
    const [cmd, a] = pinned(this.o.pin, PIN.load, TIMEOUT, ['-k', '5', String(limit), H2LOAD, ...args]);
    const r = await this.topo.exec(this.topo.ns('sbx'), cmd, a, { timeoutMs: (limit + 10) * 1000 });
    const fin = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(r.stdout);
    const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(r.stdout);
    const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(r.stdout);
    const traffic = /traffic: .*?\((\d+)\) total/.exec(r.stdout);
    const alpn = /Application protocol: (\S+)/.exec(r.stdout)?.[1];
    if (alpn !== undefined && alpn !== 'h2') return { error: `h2load: the target chose ${alpn}, not h2` };
    if (!fin || !req || !codes || alpn === undefined) return { error: `h2load exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}` };
    const lat = [];
    let sum = 0;
    if (existsSync(logFile)) {
      for (const line of readFileSync(logFile, 'utf8').split('\n')) {
        const us = Number(line.split('\t')[2]);
        if (Number.isFinite(us) && line) {
          lat.push(us);
          sum += us;
        }
      }
    }
    lat.sort((x, y) => x - y);
    const q = (f) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] : NaN);
    const done = Number(req[3]);
    return {
      requests: done,
      duration_us: Number(fin[1]) * (fin[2] === 'ms' ? 1e3 : 1e6),
      bytes: traffic ? Number(traffic[1]) : 0,
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
      mean: lat.length ? sum / lat.length : NaN,
      connect_errors: 0,
      read_errors: Number(req[6]),
      write_errors: 0,
      status_errors: Number(req[5]) + Number(codes[3]) + Number(codes[4]),
      timeouts: Number(req[7]),
    };
  }

  /** The scenario's load generator: wrk (HTTP/1.1), or h2load for the HTTP/2 scenario. */
  load(t, sc, seconds) {
    return sc.tool === 'h2load' ? this.h2load(t, sc, seconds) : this.wrk(t, sc, seconds);
  }

  async measureWrk(round, scName, sc, t) {
    // A sandgate just (re)started is cold: V8 is still compiling its hot paths on background
    // threads, whose CPU counts as the process's. It warms up longer.
    // So is a sandgate's path it has not served yet since it started (intercepted after
    // passthrough, bulk after keep-alive): V8 compiles that path during the first seconds of
    // traffic. Each (sandgate process, target, scenario) gets the long warm-up once.
    await this.activate(t);
    this.warmed ??= new Set();
    const key = `${t.sandgate ? this.sgGeneration : 0}|${t.id}|${scName}`;
    const cold = t.sandgate && !this.warmed.has(key);
    this.warmed.add(key);
    await this.load(t, sc, cold ? Math.max(this.o.warmup, this.o.quick ? 2 : 4) : this.o.warmup);
    const pid = t.pid();
    const upPid = this.procs.nginx.child.pid;
    const a0 = await this.upstreamAccepts();
    const c0 = cpuUs(pid);
    const u0 = cpuUs(upPid);
    const seconds = sc.seconds ?? this.o.duration;
    const w = await this.load(t, sc, seconds);
    const c1 = cpuUs(pid);
    const u1 = cpuUs(upPid);
    const a1 = await this.upstreamAccepts();
    const row = { round, scenario: scName, target: t.id };
    if (w.error) {
      row.error = w.error;
      log(`${scName} ${t.id}: ${w.error}`);
    } else {
      const secs = w.duration_us / 1e6;
      const errors = w.connect_errors + w.read_errors + w.write_errors + w.status_errors + w.timeouts;
      Object.assign(row, {
        requests: w.requests,
        seconds: secs,
        rps: w.requests / secs,
        mbps: w.bytes / secs / 1e6,
        p50_ms: w.p50 / 1000,
        p90_ms: w.p90 / 1000,
        p99_ms: w.p99 / 1000,
        mean_ms: w.mean / 1000,
        errors,
        errorDetail: { connect: w.connect_errors, read: w.read_errors, write: w.write_errors, status: w.status_errors, timeout: w.timeouts },
        // For "direct" the proxy is nginx itself, so its figures are the upstream's.
        proxyCpuUsPerReq: t.id === 'direct' ? null : (c1 - c0) / Math.max(1, w.requests),
        proxyCpuCores: t.id === 'direct' ? null : (c1 - c0) / 1e6 / secs,
        upstreamCpuUsPerReq: (u1 - u0) / Math.max(1, w.requests),
        // Connections nginx accepted per request: 1 with Connection: close and no pooling,
        // ~0 when a proxy reuses its upstream connections.
        upstreamConnsPerReq: a0 != null && a1 != null ? (a1 - a0) / Math.max(1, w.requests) : null,
      });
      // wrk counts a request that got any response; non-2xx/3xx are "status" errors.
      if (errors > 0.01 * w.requests) row.error = `errors: ${JSON.stringify(row.errorDetail)}`;
      log(
        `${scName.padEnd(9)} ${t.id.padEnd(12)} ${fmt(row.rps, 0).padStart(8)} req/s ${fmt(row.mbps, 0).padStart(6)} MB/s p50 ${fmt(row.p50_ms, 2)} ms p99 ${fmt(row.p99_ms, 2)} ms cpu ${fmt(row.proxyCpuUsPerReq, 1)} us/req${errors ? ` errors ${errors}` : ''}`,
      );
    }
    this.results.push(row);
  }

  /** One bench/lib/dns-load.mjs run from the sandbox for `seconds` (bounded by timeout): its JSON result, or { error }. */
  async dnsLoad(name, seconds, extra) {
    const [cmd, args] = pinned(this.o.pin, PIN.load, TIMEOUT, [
      '-k',
      '5',
      String(Math.ceil(seconds + 15)),
      process.execPath,
      join(LIB, 'dns-load.mjs'),
      '--server',
      HOST_SBX,
      '--port',
      '53',
      '--name',
      name,
      '--seconds',
      String(seconds),
      ...extra,
    ]);
    const r = await this.topo.exec(this.topo.ns('sbx'), cmd, args, { timeoutMs: (seconds + 25) * 1000 });
    try {
      return JSON.parse(r.stdout.trim().split('\n').pop());
    } catch {
      return { error: `dns-load exit ${r.code}: ${r.stderr.trim().slice(0, 300)}` };
    }
  }

  async measureDns(round, kind) {
    const t = this.targets['sg-intercept'] ?? this.targets['sg-pass'];
    await this.activate(t);
    const name = kind === 'allowed' ? BENCH_NAME : DENIED_NAME;
    const pid = t.pid();
    const run = (seconds) => this.dnsLoad(name, seconds, ['--window', '32']);
    await run(this.o.warmup);
    const c0 = cpuUs(pid);
    const d = await run(this.o.duration);
    const c1 = cpuUs(pid);
    const row = { round, scenario: `dns-${kind}`, target: 'sandgate' };
    if (d.error) row.error = d.error;
    else {
      const expect = kind === 'allowed' ? 'NOERROR' : 'NXDOMAIN';
      Object.assign(row, {
        qps: d.qps,
        answered: d.answered,
        lost: d.lost,
        rcodes: d.rcodes,
        p50_ms: d.p50_us / 1000,
        p99_ms: d.p99_us / 1000,
        proxyCpuUsPerReq: (c1 - c0) / Math.max(1, d.answered),
      });
      if ((d.rcodes[expect] ?? 0) < 0.99 * d.answered) row.error = `unexpected answers: ${JSON.stringify(d.rcodes)}`;
      log(`dns-${kind.padEnd(7)} sandgate     ${fmt(d.qps, 0).padStart(8)} answers/s p50 ${fmt(row.p50_ms, 2)} ms lost ${d.lost} ${JSON.stringify(d.rcodes)}`);
    }
    this.results.push(row);
  }

  /**
   * The victim's answers/s alone and under another sandbox's flood, same run, with the default dns
   * limits: the bench's own config lifts them (the dns scenario measures the responder's
   * throughput from one source), so they are reloaded out for this scenario and back in after.
   */
  async measureDnsFlood(round) {
    const t = this.targets['sg-intercept'] ?? this.targets['sg-pass'];
    await this.activate(t);
    const p = this.procs[this.sgRunning];
    const reload = async (conf) => {
      const v = this.sgVariants[this.sgRunning];
      const before = existsSync(v.audit) ? readFileSync(v.audit, 'utf8').split('"action":"reloaded"').length : 1;
      writeFileSync(this.sgRunning === 'sandgate' ? this.sgConfigPath : join(this.dir, 'sandgate-w.json'), JSON.stringify(conf, null, 2));
      p.child.kill('SIGHUP');
      await waitFor(() => readFileSync(v.audit, 'utf8').split('"action":"reloaded"').length > before, 10000, 'sandgate reloaded');
    };
    const conf = JSON.parse(readFileSync(this.sgRunning === 'sandgate' ? this.sgConfigPath : join(this.dir, 'sandgate-w.json'), 'utf8'));
    const { dns: _lifted, ...defaults } = conf;
    await reload(defaults);
    const seconds = this.o.duration;
    const victim = () => this.dnsLoad(BENCH_NAME, seconds, ['--window', '4', '--pace-qps', '150', '--timeout-ms', '1000']);
    try {
      for (const flooded of [false, true]) {
        let flood;
        let floodOut = '';
        if (flooded) {
          flood = this.start(
            'dns-flood',
            this.topo.ns('fl'),
            process.execPath,
            [join(LIB, 'dns-flood.mjs'), '--server', this.topo.hostAddr('fl'), '--suffix', 'flood.denied.test', '--seconds', String(seconds + 5)],
            undefined,
            PIN.load,
          );
          flood.child.stdout.on('data', (d) => {
            floodOut += d;
          });
          await waitFor(() => floodOut.includes('"flooding":true') || flood.exited(), 10000, 'the flood to start');
          await sleep(300);
        }
        const d = await victim();
        const row = { round, scenario: flooded ? 'dnsflood-flooded' : 'dnsflood-alone', target: 'sandgate' };
        if (flood) {
          await this.stop('dns-flood');
          const last = floodOut.trim().split('\n').pop();
          try {
            row.floodPps = JSON.parse(last).pps;
          } catch {
            row.error = `dns-flood: ${flood.tail().slice(0, 300)}`;
          }
        }
        if (d.error) row.error = d.error;
        else {
          Object.assign(row, {
            qps: d.qps,
            sent: d.sent,
            answered: d.answered,
            lost: d.lost,
            rcodes: d.rcodes,
            p50_ms: d.p50_us / 1000,
            p99_ms: d.p99_us / 1000,
          });
          log(
            `${row.scenario.padEnd(16)} sandgate ${fmt(d.qps, 0).padStart(6)} answers/s of ${d.sent} sent, lost ${d.lost}, p50 ${fmt(row.p50_ms, 2)} ms p99 ${fmt(row.p99_ms, 2)} ms${row.floodPps ? `; flood ${fmt(row.floodPps, 0)} queries/s` : ''}`,
          );
        }
        this.results.push(row);
      }
    } finally {
      await reload(conf);
    }
  }

  /** N idle TLS connections through an intercepting target; the proxy's RSS before and while they are held. */
  async measureIdle(t) {
    await this.activate(t);
    const pid = t.pid();
    const before = rssMiB(pid);
    const count = this.o.idleCount;
    // Handshakes run at ~1-2k/s here; bound the whole thing.
    const holdS = Math.ceil(count / 100) + 60;
    const client = this.start(
      `idle-${t.id}`,
      this.topo.ns('sbx'),
      TIMEOUT,
      [
        '-k',
        '5',
        String(holdS + 10),
        process.execPath,
        join(LIB, 'idle-client.mjs'),
        '--addr',
        t.addr,
        '--port',
        '443',
        '--name',
        t.name,
        '--ca',
        t.ca,
        '--count',
        String(count),
        '--concurrency',
        '64',
        '--hold-s',
        String(holdS),
      ],
      undefined,
      PIN.load,
    );
    let opened;
    try {
      opened = await waitFor(
        () => {
          const line = client
            .tail()
            .split('\n')
            .find((l) => l.includes('"phase":"opened"'));
          if (line) return JSON.parse(line);
          if (client.exited()) throw new Error(`idle client exited: ${client.tail().slice(-300)}`);
          return undefined;
        },
        holdS * 1000,
        `${count} idle connections via ${t.id}`,
      );
    } catch (e) {
      this.results.push({ round: 0, scenario: 'idle', target: t.id, error: e.message });
      await this.stop(`idle-${t.id}`);
      return;
    }
    // Let the proxy settle (GC, buffers), then sample.
    await sleep(2000);
    const held = rssMiB(pid);
    const fds = (() => {
      try {
        return readdirSync(`/proc/${pid}/fd`).length;
      } catch {
        return null;
      }
    })();
    client.child.stdin.end();
    await Promise.race([new Promise((r) => client.child.once('exit', r)), sleep(10000)]);
    await this.stop(`idle-${t.id}`);
    await sleep(1500);
    const after = rssMiB(pid);
    const row = {
      round: 0,
      scenario: 'idle',
      target: t.id,
      count,
      opened: opened.ok,
      open: opened.open,
      failed: opened.failed,
      openMs: opened.ms,
      rssBeforeMiB: before,
      rssHeldMiB: held,
      rssAfterMiB: after,
      kibPerConn: ((held - before) * 1024) / Math.max(1, opened.open),
      fds,
    };
    if (opened.failed > 0) row.error = `failed handshakes: ${JSON.stringify(opened.errors)}`;
    log(
      `idle      ${t.id.padEnd(12)} ${opened.open}/${count} open in ${opened.ms} ms; RSS ${fmt(before, 0)} -> ${fmt(held, 0)} MiB (${fmt(row.kibPerConn, 1)} KiB/conn), after close ${fmt(after, 0)} MiB`,
    );
    this.results.push(row);
  }

  async run() {
    const o = this.o;
    const wrkScenarios = {
      keepalive: { path: '/small.txt', threads: 2, conns: 50 },
      latency: { path: '/small.txt', threads: 1, conns: 1, seconds: Math.min(3, o.duration) },
      connclose: { path: '/small.txt', threads: 2, conns: 50, headers: ['Connection: close'] },
      bulk: { path: '/1m.bin', threads: 2, conns: 16 },
      // HTTP/2: 50 connections as in keep-alive, 10 streams in flight on each (docs/performance.md
      // says why). Only the targets that terminate TLS and offer h2 themselves: nginx offers no h2,
      // so direct and the TCP ones would negotiate HTTP/1.1, and so would mitmproxy, which offers
      // the sandbox what the upstream chose.
      h2: { tool: 'h2load', path: '/small.txt', conns: 50, streams: o.h2Streams, h2Only: true },
    };
    const targets = ALL_TARGETS.filter((id) => this.targets[id]).map((id) => this.targets[id]);
    const hasSg = targets.some((t) => t.sandgate);

    if (o.only.includes('idle')) {
      for (const id of ['sg-intercept', 'haproxy-mitm']) if (this.targets[id]) await this.measureIdle(this.targets[id]);
    }
    const scen = Object.keys(wrkScenarios).filter((s) => o.only.includes(s));
    for (let round = 0; round < o.rounds; round++) {
      log(
        `round ${round + 1}/${o.rounds} (load ${loadavg()
          .map((x) => x.toFixed(2))
          .join(' ')})`,
      );
      for (const s of rotate(scen, round)) {
        for (const t of rotate(targets, round))
          if (!wrkScenarios[s].h2Only || (t.intercepts && t.id !== 'mitmproxy')) await this.measureWrk(round, s, wrkScenarios[s], t);
      }
      if (o.only.includes('dns') && hasSg) {
        for (const kind of rotate(['allowed', 'denied'], round)) await this.measureDns(round, kind);
      }
      if (o.only.includes('dnsflood') && hasSg) await this.measureDnsFlood(round);
    }
  }

  async cleanup() {
    if (this.cleaned) return this.cleaned;
    this.cleaned = (async () => {
      // sandgate first, by pid, so --cpu-prof writes its profile on a clean exit.
      if (this.procs.sandgate) await this.stop('sandgate');
      if (this.procs['sandgate-w']) await this.stop('sandgate-w');
      if (this.procs['sandgate-cmp']) await this.stop('sandgate-cmp');
      if (this.profDir && existsSync(this.profDir)) {
        const files = readdirSync(this.profDir).filter((f) => f.endsWith('.cpuprofile'));
        if (files.length > 0) {
          const dest = `${this.o.out}.cpuprofile`;
          copyFileSync(join(this.profDir, files[0]), dest);
          this.profile = dest;
        }
      }
      if (this.topo) await this.topo.destroy().catch((e) => log(`cleanup: ${e.message}`));
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.cleaned;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Report                                                                                     */
/* ------------------------------------------------------------------------------------------ */

function fmt(v, digits = 1) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** The HAProxy mode each target is compared with: the one doing the same job. */
const REF = {
  'sg-pass': 'haproxy-tcp',
  'haproxy-tcp': 'haproxy-tcp',
  'sg-intercept': 'haproxy-mitm',
  'sg-intercept-w': 'haproxy-mitm',
  'sg-intercept-cmp': 'haproxy-mitm',
  'haproxy-mitm': 'haproxy-mitm',
  mitmproxy: 'haproxy-mitm',
};

function summarise(results) {
  const groups = new Map();
  for (const r of results) {
    if (r.error && r.scenario !== 'idle') continue;
    const k = `${r.scenario}|${r.target}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const out = {};
  for (const [k, rows] of groups) {
    const [scenario, target] = k.split('|');
    const metrics = {};
    for (const m of [
      'rps',
      'mbps',
      'qps',
      'p50_ms',
      'p90_ms',
      'p99_ms',
      'proxyCpuUsPerReq',
      'proxyCpuCores',
      'upstreamCpuUsPerReq',
      'upstreamConnsPerReq',
      'rssBeforeMiB',
      'rssHeldMiB',
      'rssAfterMiB',
      'kibPerConn',
    ]) {
      const s = stats(rows.map((r) => r[m]));
      if (s) metrics[m] = s;
    }
    (out[scenario] ??= {})[target] = metrics;
  }
  // Ratios, from medians: to direct and to the HAProxy mode that does the same job.
  const ratioMetric = { keepalive: 'rps', h2: 'rps', connclose: 'rps', bulk: 'mbps', latency: 'p50_ms' };
  for (const [scenario, metric] of Object.entries(ratioMetric)) {
    const sc = out[scenario];
    if (!sc) continue;
    for (const [target, m] of Object.entries(sc)) {
      const v = m[metric]?.median;
      const d = sc.direct?.[metric]?.median;
      const h = REF[target] ? sc[REF[target]]?.[metric]?.median : undefined;
      m.ratio = {
        metric,
        toDirect: v != null && d ? v / d : null,
        toHaproxy: v != null && h ? v / h : null,
        haproxy: REF[target] ?? null,
      };
      if (scenario === 'latency' && d != null && v != null) m.addedP50Ms = v - d;
      // CPU per request (per connection, per MiB) against HAProxy's: the per-core efficiency.
      const hc = REF[target] ? sc[REF[target]]?.proxyCpuUsPerReq?.median : undefined;
      const c = m.proxyCpuUsPerReq?.median;
      m.ratio.cpuToHaproxy = c != null && hc ? c / hc : null;
      if (scenario === 'connclose') m.ratio.cpuPerConnToHaproxy = m.ratio.cpuToHaproxy;
    }
  }
  return out;
}

function checkTargets(sum, idleCount) {
  const g = (sc, t, m) => sum[sc]?.[t]?.[m]?.median ?? null;
  const ratio = (a, b) => (a != null && b ? a / b : null);
  const checks = [];
  const add = (what, value, goal, ok, unit = '×') => checks.push({ what, value, goal, ok: value == null ? null : ok(value), unit });
  add(
    'intercept keep-alive req/s vs HAProxy MITM',
    ratio(g('keepalive', 'sg-intercept', 'rps'), g('keepalive', 'haproxy-mitm', 'rps')),
    '≥ 0.5 (stretch 0.7)',
    (v) => v >= 0.5,
  );
  add(
    'intercept HTTP/2 (h2load, 50 conns × 10 streams) req/s vs HAProxy MITM h2',
    ratio(g('h2', 'sg-intercept', 'rps'), g('h2', 'haproxy-mitm', 'rps')),
    '≥ 0.5',
    (v) => v >= 0.5,
  );
  add('passthrough keep-alive req/s vs HAProxy TCP', ratio(g('keepalive', 'sg-pass', 'rps'), g('keepalive', 'haproxy-tcp', 'rps')), '≥ 0.9', (v) => v >= 0.9);
  add(
    'intercept keep-alive req/s, N workers vs 1 (same run)',
    ratio(g('keepalive', 'sg-intercept-w', 'rps'), g('keepalive', 'sg-intercept', 'rps')),
    '> 1 where cores are spare (here wrk and nginx share them)',
    (v) => v > 1,
  );
  add(
    'intercept keep-alive CPU µs/req, this build vs --compare build (same run)',
    ratio(g('keepalive', 'sg-intercept', 'proxyCpuUsPerReq'), g('keepalive', 'sg-intercept-cmp', 'proxyCpuUsPerReq')),
    '≤ 1.05 for a change that must not cost more than 5 %',
    (v) => v <= 1.05,
  );
  add('intercept keep-alive req/s vs mitmproxy', ratio(g('keepalive', 'sg-intercept', 'rps'), g('keepalive', 'mitmproxy', 'rps')), '≥ 10', (v) => v >= 10);
  add('intercept keep-alive p99 at 50 connections', g('keepalive', 'sg-intercept', 'p99_ms'), '≤ 3 ms', (v) => v <= 3, 'ms');
  const lat = g('latency', 'sg-intercept', 'p50_ms');
  const latD = g('latency', 'direct', 'p50_ms');
  add('intercept added latency, one sequential client (p50)', lat != null && latD != null ? lat - latD : null, '≤ 0.5 ms', (v) => v <= 0.5, 'ms');
  add(
    'intercept new connection per request, req/s vs HAProxy MITM',
    ratio(g('connclose', 'sg-intercept', 'rps'), g('connclose', 'haproxy-mitm', 'rps')),
    '≥ 1.0',
    (v) => v >= 1,
  );
  add('passthrough bulk MB/s vs HAProxy TCP', ratio(g('bulk', 'sg-pass', 'mbps'), g('bulk', 'haproxy-tcp', 'mbps')), '≥ 0.95', (v) => v >= 0.95);
  add('intercept bulk MB/s vs HAProxy MITM', ratio(g('bulk', 'sg-intercept', 'mbps'), g('bulk', 'haproxy-mitm', 'mbps')), '≥ 0.85', (v) => v >= 0.85);
  add(
    `${idleCount.toLocaleString('en-US')} idle intercepted connections, sandgate RSS`,
    g('idle', 'sg-intercept', 'rssHeldMiB'),
    idleCount >= 10000 ? '≤ 500 MB' : '≤ 500 MB at 10,000',
    (v) => v * 1.048576 <= 500,
    'MiB',
  );
  return checks;
}

function markdown(report) {
  const { summary: s, meta } = report;
  const L = [];
  const targets = ALL_TARGETS.filter((t) => Object.values(s).some((sc) => sc[t]));
  const label = Object.fromEntries(Object.values(report.targets).map((t) => [t.id, t.label]));
  const cell = (st, d = 0) => (st ? `${fmt(st.median, d)}${st.n > 1 ? ` <sub>${fmt(st.min, d)}–${fmt(st.max, d)}</sub>` : ''}` : '–');
  const r2 = (v) => (v == null ? '–' : `${v.toFixed(2)}×`);
  L.push(`# sandgate bench: ${meta.date}`);
  L.push('');
  L.push(
    `${meta.cpus}× ${meta.cpuModel}, ${meta.kernel}, node ${meta.node}; ${meta.rounds} round(s) × ${meta.duration} s per measurement (${meta.warmup} s warm-up), interleaved, order rotated per round. Load average before ${meta.loadBefore.join(' ')}, after ${meta.loadAfter.join(' ')}${meta.loadBefore[0] > 1 ? ' (**other work was running: figures are noisy; compare ratios within this run only**)' : ''}.`,
  );
  L.push(
    meta.pin
      ? `Pinned (--pin): the proxy under test and nginx (one worker) share CPU ${PIN.server}, wrk and the node clients run on CPU ${PIN.load}; HAProxy runs one thread; the ×N workers target may use CPUs ${PIN.all}. "proxy CPU" is the proxy's processes' utime+stime (/proc/PID/stat) per request, per new connection or per MiB.`
      : 'Not pinned (--no-pin): wrk, nginx (one worker per CPU) and the proxy (HAProxy one thread per CPU) share every CPU.',
  );
  L.push('');
  L.push(
    'Cells: median <sub>min–max</sub> over rounds. Ratios from medians; "×HAProxy" compares with the HAProxy mode doing the same job (TCP/SNI for passthrough, MITM for interception).',
  );
  L.push('');
  L.push(
    `Versions: ${Object.entries(meta.versions)
      .map(([k, v]) => `${k} ${v ?? '?'}`)
      .join(', ')}.`,
  );
  if (Object.keys(report.skipped).length) {
    L.push('');
    for (const [t, why] of Object.entries(report.skipped)) L.push(`- skipped **${t}**: ${why}`);
  }
  // One table in the issue's shape: medians per scenario and target, ratio to direct in brackets.
  const rows = [
    ['keep-alive small, req/s', 'keepalive', 'rps', 0, true],
    ['keep-alive p99 ms (50 conns)', 'keepalive', 'p99_ms', 2, false],
    ['keep-alive, proxy CPU µs/req', 'keepalive', 'proxyCpuUsPerReq', 1, false],
    [`HTTP/2 small, req/s (50 conns × ${meta.h2Streams ?? 10} streams)`, 'h2', 'rps', 0, true],
    ['HTTP/2 p99 ms', 'h2', 'p99_ms', 2, false],
    ['HTTP/2, proxy CPU µs/req', 'h2', 'proxyCpuUsPerReq', 1, false],
    ['one client, p50 ms', 'latency', 'p50_ms', 3, false],
    ['new TLS connection per request, conn/s', 'connclose', 'rps', 0, true],
    ['proxy CPU per new connection, µs', 'connclose', 'proxyCpuUsPerReq', 0, false],
    ['1 MiB downloads, MB/s', 'bulk', 'mbps', 0, true],
    ['1 MiB downloads, proxy CPU µs/MiB', 'bulk', 'proxyCpuUsPerReq', 0, false],
  ].filter(([, sc]) => s[sc]);
  if (rows.length) {
    L.push(
      '',
      '## Summary (medians; ×direct in brackets)',
      '',
      `| scenario | ${targets.map((t) => label[t] ?? t).join(' | ')} |`,
      `| --- | ${targets.map(() => '---:').join(' | ')} |`,
    );
    for (const [name, sc, m, d, withRatio] of rows) {
      L.push(
        `| ${name} | ${targets
          .map((t) => {
            const v = s[sc]?.[t]?.[m]?.median;
            const base = s[sc]?.direct?.[m]?.median;
            return v == null ? '–' : `${fmt(v, d)}${withRatio && base && t !== 'direct' ? ` (${(v / base).toFixed(2)}×)` : ''}`;
          })
          .join(' | ')} |`,
      );
    }
    const idleRow = targets.map((t) => {
      const r = report.results.find((x) => x.scenario === 'idle' && x.target === t && x.rssHeldMiB !== undefined);
      return r ? `${fmt(r.rssHeldMiB, 0)} MiB` : '–';
    });
    if (idleRow.some((c) => c !== '–')) L.push(`| ${fmt(report.meta.idleCount, 0)} idle intercepted connections, RSS | ${idleRow.join(' | ')} |`);
  }
  const section = (title, sc, cols) => {
    if (!s[sc]) return;
    L.push('', `## ${title}`, '', `| target | ${cols.map((c) => c[0]).join(' | ')} |`, `| --- | ${cols.map(() => '---:').join(' | ')} |`);
    for (const t of targets) {
      const m = s[sc][t];
      if (!m) continue;
      L.push(`| ${label[t] ?? t} | ${cols.map((c) => c[1](m, t)).join(' | ')} |`);
    }
  };
  section('Keep-alive, small responses (wrk -t2 -c50)', 'keepalive', [
    ['req/s', (m) => cell(m.rps)],
    ['p50 ms', (m) => cell(m.p50_ms, 2)],
    ['p99 ms', (m) => cell(m.p99_ms, 2)],
    ['proxy CPU µs/req', (m) => cell(m.proxyCpuUsPerReq, 1)],
    ['nginx CPU µs/req', (m) => cell(m.upstreamCpuUsPerReq, 1)],
    ['proxy cores busy', (m) => cell(m.proxyCpuCores, 2)],
    ['upstream conns/req', (m) => cell(m.upstreamConnsPerReq, 3)],
    ['×direct', (m) => r2(m.ratio?.toDirect)],
    ['×HAProxy', (m) => r2(m.ratio?.toHaproxy)],
    ['CPU/req ×HAProxy', (m) => r2(m.ratio?.cpuToHaproxy)],
  ]);
  const m2 = meta.h2Streams ?? 10;
  section(
    `HTTP/2, small responses (h2load -c50 -m${m2}: 50 connections, ${m2} streams in flight on each; ${meta.h2Upstream ? 'HTTP/2' : 'HTTP/1.1'} to nginx)`,
    'h2',
    [
      ['req/s', (m) => cell(m.rps)],
      ['p50 ms', (m) => cell(m.p50_ms, 2)],
      ['p99 ms', (m) => cell(m.p99_ms, 2)],
      ['proxy CPU µs/req', (m) => cell(m.proxyCpuUsPerReq, 1)],
      ['nginx CPU µs/req', (m) => cell(m.upstreamCpuUsPerReq, 1)],
      ['proxy cores busy', (m) => cell(m.proxyCpuCores, 2)],
      ['upstream conns/req', (m) => cell(m.upstreamConnsPerReq, 3)],
      ['×HAProxy', (m) => r2(m.ratio?.toHaproxy)],
      ['CPU/req ×HAProxy', (m) => r2(m.ratio?.cpuToHaproxy)],
    ],
  );
  section('One sequential client (wrk -t1 -c1, keep-alive)', 'latency', [
    ['p50 ms', (m) => cell(m.p50_ms, 3)],
    ['p99 ms', (m) => cell(m.p99_ms, 3)],
    ['added p50 vs direct, ms', (m, t) => (t === 'direct' ? '–' : fmt(m.addedP50Ms, 3))],
    ['req/s', (m) => cell(m.rps)],
  ]);
  section('New TLS connection per request (wrk -t2 -c50, Connection: close)', 'connclose', [
    ['conn/s', (m) => cell(m.rps)],
    ['resumes', (_m, t) => report.resumption?.[t] ?? '–'],
    ['p99 ms', (m) => cell(m.p99_ms, 2)],
    ['proxy CPU µs/conn', (m) => cell(m.proxyCpuUsPerReq, 0)],
    ['nginx CPU µs/conn', (m) => cell(m.upstreamCpuUsPerReq, 0)],
    ['upstream conns/req', (m) => cell(m.upstreamConnsPerReq, 2)],
    ['×direct', (m) => r2(m.ratio?.toDirect)],
    ['×HAProxy', (m) => r2(m.ratio?.toHaproxy)],
    ['CPU/conn ×HAProxy', (m) => r2(m.ratio?.cpuPerConnToHaproxy)],
  ]);
  section('1 MiB downloads (wrk -t2 -c16)', 'bulk', [
    ['MB/s', (m) => cell(m.mbps)],
    ['p99 ms', (m) => cell(m.p99_ms, 1)],
    ['proxy CPU µs/MiB', (m) => cell(m.proxyCpuUsPerReq, 0)],
    ['nginx CPU µs/MiB', (m) => cell(m.upstreamCpuUsPerReq, 0)],
    ['×direct', (m) => r2(m.ratio?.toDirect)],
    ['×HAProxy', (m) => r2(m.ratio?.toHaproxy)],
    ['CPU/MiB ×HAProxy', (m) => r2(m.ratio?.cpuToHaproxy)],
  ]);
  const idle = report.results.filter((r) => r.scenario === 'idle');
  if (idle.length) {
    L.push(
      '',
      '## Idle intercepted connections',
      '',
      '| target | open / asked | time to open | RSS before | RSS held | per connection | RSS after close |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const r of idle) {
      if (r.rssHeldMiB === undefined) {
        L.push(`| ${label[r.target] ?? r.target} | failed: ${r.error} | | | | | |`);
        continue;
      }
      L.push(
        `| ${label[r.target] ?? r.target} | ${r.open} / ${r.count} | ${fmt(r.openMs / 1000, 1)} s | ${fmt(r.rssBeforeMiB, 0)} MiB | ${fmt(r.rssHeldMiB, 0)} MiB | ${fmt(r.kibPerConn, 1)} KiB | ${fmt(r.rssAfterMiB, 0)} MiB |`,
      );
    }
  }
  const dns = ['dns-allowed', 'dns-denied'].filter((k) => s[k]?.sandgate);
  if (dns.length) {
    L.push(
      '',
      '## DNS (sandgate responder, UDP, 32 queries in flight)',
      '',
      '| query | answers/s | p50 ms | p99 ms | CPU µs/answer |',
      '| --- | ---: | ---: | ---: | ---: |',
    );
    for (const k of dns) {
      const m = s[k].sandgate;
      L.push(
        `| ${k === 'dns-allowed' ? `allowed (${BENCH_NAME}, A from upstream.hosts)` : `denied (${DENIED_NAME}, NXDOMAIN)`} | ${cell(m.qps)} | ${cell(m.p50_ms, 2)} | ${cell(m.p99_ms, 2)} | ${cell(m.proxyCpuUsPerReq, 1)} |`,
      );
    }
  }
  const flood = ['dnsflood-alone', 'dnsflood-flooded'].filter((k) => s[k]?.sandgate);
  if (flood.length) {
    L.push(
      '',
      "## DNS under another sandbox's flood (default dns limits; victim paced at 150 queries/s, 4 in flight)",
      '',
      '| victim | answers/s | lost (per run, median) | p50 ms | p99 ms | flood queries/s |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const k of flood) {
      const m = s[k].sandgate;
      const rows = report.results.filter((r) => r.scenario === k && !r.error);
      const med = (xs) => (xs.length ? xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
      L.push(
        `| ${k === 'dnsflood-alone' ? 'alone' : 'during the flood'} | ${cell(m.qps)} | ${med(rows.map((r) => r.lost)) ?? '–'} of ${med(rows.map((r) => r.sent)) ?? '–'} | ${cell(m.p50_ms, 2)} | ${cell(m.p99_ms, 2)} | ${k === 'dnsflood-alone' ? '–' : fmt(med(rows.map((r) => r.floodPps)), 0)} |`,
      );
    }
  }
  if (report.checks.length) {
    L.push('', '## Targets (this run)', '', '| target | value | goal | met |', '| --- | ---: | --- | --- |');
    for (const c of report.checks)
      L.push(
        `| ${c.what} | ${c.value == null ? 'not measured' : c.unit === '×' ? `${c.value.toFixed(2)}×` : `${fmt(c.value, c.unit === 'MiB' ? 0 : 2)} ${c.unit}`} | ${c.goal} | ${c.ok == null ? '–' : c.ok ? 'yes' : '**no**'} |`,
      );
  }
  const errs = report.results.filter((r) => r.error);
  if (errs.length) {
    L.push('', '## Errors', '');
    for (const e of errs) L.push(`- round ${e.round} ${e.scenario} ${e.target}: ${e.error}`);
  }
  if (report.profileSummary) {
    const p = report.profileSummary;
    L.push(
      '',
      `## Where sandgate's time goes (node --cpu-prof, whole run)`,
      '',
      `\`${report.profile}\`: ${fmt(p.busyMs, 0)} ms busy of ${fmt(p.totalMs, 0)} ms sampled. Open it in Chrome DevTools or speedscope for a flame graph.`,
      '',
      '| area | % of busy | ms |',
      '| --- | ---: | ---: |',
    );
    for (const a of p.areas.filter((x) => x.pctBusy != null && x.pctBusy >= 0.5)) L.push(`| ${a.area} | ${fmt(a.pctBusy, 1)} | ${fmt(a.ms, 0)} |`);
    L.push('', '| function (self time) | % of busy | ms |', '| --- | ---: | ---: |');
    for (const f of p.functions) L.push(`| \`${f.fn}\` | ${fmt(f.pctBusy, 1)} | ${fmt(f.ms, 0)} |`);
  }
  return L.join('\n') + '\n';
}

/* ------------------------------------------------------------------------------------------ */
/* Main                                                                                       */
/* ------------------------------------------------------------------------------------------ */

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.rerender) {
    const file = o.rerender.replace(/\.(json|md)$/, '');
    const report = JSON.parse(readFileSync(`${file}.json`, 'utf8'));
    writeFileSync(`${file}.md`, markdown(report));
    process.stdout.write(markdown(report));
    return;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (it builds network namespaces and nftables rules inside them)\n');
    process.exit(1);
  }
  if (o.setup) {
    const r = spawnSync('/bin/sh', [join(ROOT, 'scripts/bench-setup.sh')], { stdio: 'inherit' });
    if (r.status !== 0) {
      process.stderr.write('bench: scripts/bench-setup.sh failed\n');
      process.exit(1);
    }
  }
  if (!existsSync(CLI)) {
    process.stderr.write(`bench: ${CLI} is missing: run "npm run build" first\n`);
    process.exit(1);
  }
  for (const tool of [WRK, TIMEOUT, '/usr/sbin/nginx', '/usr/bin/openssl', ...(o.only.includes('h2') ? [H2LOAD] : [])]) {
    if (!existsSync(tool)) {
      process.stderr.write(`bench: ${tool} is missing (scripts/bench-setup.sh installs it)\n`);
      process.exit(1);
    }
  }
  const { createTopology, sweepStale } = await import(join(DIST, 'demo/topology.js'));

  const bench = new Bench(o);
  let interrupted = false;
  const onSignal = (sig) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    bench.cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const t0 = Date.now();
  const loadBefore = loadavg().map((x) => Number(x.toFixed(2)));
  try {
    const swept = await sweepStale();
    if (swept.length) log(`removed stale namespaces: ${swept.join(', ')}`);
    bench.topo = await createTopology({
      prefix: `sg-${process.pid}-bench-`,
      sandboxes: [
        { name: 'sbx', subnet: 1 },
        { name: 'fl', subnet: 3 },
      ],
      upstreams: [{ name: 'up', subnet: 2 }],
    });
    log(`topology ${bench.topo.prefix}*, temp dir ${bench.dir}`);
    await bench.setup();
    log(`targets: ${Object.keys(bench.targets).join(', ')}; scenarios: ${o.only.join(', ')}; ${o.rounds} round(s) × ${o.duration} s`);
    await bench.run();
  } catch (e) {
    if (!interrupted) {
      log(`failed: ${e.stack ?? e.message}`);
      for (const p of Object.values(bench.procs)) if (p.exited()) log(`${p.label} exited: ${p.tail().slice(-500)}`);
    }
    await bench.cleanup();
    process.exit(1);
  }
  await bench.cleanup();
  if (interrupted) return;

  const summary = summarise(bench.results);
  const report = {
    meta: {
      date: new Date().toISOString(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      kernel: release(),
      node: process.version,
      rounds: o.rounds,
      duration: o.duration,
      warmup: o.warmup,
      quick: o.quick,
      pin: o.pin,
      scenarios: o.only,
      idleCount: o.idleCount,
      h2Streams: o.h2Streams,
      h2Upstream: o.h2Upstream,
      wallSeconds: Math.round((Date.now() - t0) / 1000),
      loadBefore,
      loadAfter: loadavg().map((x) => Number(x.toFixed(2))),
      versions: {
        wrk: version(WRK, ['--version'], /wrk (\S+)/),
        ...(o.only.includes('h2') ? { h2load: version(H2LOAD, ['--version'], /nghttp2\/(\S+)/) } : {}),
        nginx: version('/usr/sbin/nginx', ['-v'], /nginx\/(\S+)/),
        haproxy: version('/usr/sbin/haproxy', ['-v'], /version (\S+)/),
        mitmproxy: version('/usr/bin/mitmdump', ['--version'], /Mitmproxy: (\S+)/),
        openssl: version('/usr/bin/openssl', ['version'], /OpenSSL (\S+)/),
      },
    },
    targets: Object.fromEntries(Object.values(bench.targets).map((t) => [t.id, { id: t.id, label: t.label, name: t.name, addr: t.addr }])),
    skipped: bench.skipped,
    resumption: bench.resumes,
    summary,
    checks: checkTargets(summary, o.idleCount),
    results: bench.results,
    profile: bench.profile ?? null,
    profileSummary: bench.profile ? (await import(join(LIB, 'cpuprofile-top.mjs'))).summarise(bench.profile, 25) : null,
  };
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(`${o.out}.json`, JSON.stringify(report, null, 2) + '\n');
  const md = markdown(report);
  writeFileSync(`${o.out}.md`, md);
  process.stdout.write(md);
  log(`wrote ${o.out}.json and ${o.out}.md in ${report.meta.wallSeconds} s`);
}

// Importable (e.g. `const { Bench } = await import('./scripts/bench.mjs')`) for ad-hoc experiments.
export { Bench, parseArgs, cpuUs, rssMiB };
if (import.meta.url === `file://${process.argv[1]}`) await main();
