/**
 * Plays the HTTP relay's core (src/http/sandbox-conn.ts, exchange.ts, attempt.ts) with no socket:
 * the test feeds events (bytes from the sandbox, upstream connections ready or failed, bytes
 * from the upstream, closes, tokens) and reads what the core did off recorders of SandboxIo and
 * UpstreamIo (src/http/io.ts), in the spirit of mitmproxy's Playbook.
 */
import type { ConnInfo } from '../../src/net/conn-info.js';
import type { Runtime } from '../../src/runtime.js';
import { Tripwire } from '../../src/creds/tripwire.js';
import { Quarantine } from '../../src/control/quarantine.js';
import type { Line } from './gate.js';
import { parseConfig } from '../../src/config/load.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { loadCredentials } from '../../src/creds/secrets.js';
import { UpstreamReader } from '../../src/http/attempt.js';
import { SandboxConn } from '../../src/http/sandbox-conn.js';
import type { DecodeSink, Decoder, SandboxIo, UpgradeHandover, UpstreamIo, UpstreamWaiter } from '../../src/http/io.js';
import type { Target } from '../../src/upstream/pool.js';
import type { CredentialSource } from '../../src/creds/credential.js';
import type { AuditFields } from '../../src/audit/logger.js';

export const SECRET = 'sk-play-0123456789abcdef';
export const AUTH = `Bearer ${SECRET}`;
export const API = 'api.example.test';
export const OPEN = 'open.example.test';
/** k's placeholder: replaced by the secret toward api.example.test, a tripwire anywhere else. */
export const PLACEHOLDER = 'ph-play-k-0123';

/** One upstream connection, as the core sees it: what it was sent, whether it was released or destroyed. */
export class UpRecorder implements UpstreamIo {
  readonly reader: UpstreamReader;
  sent = '';
  corked = 0;
  paused = false;
  released = false;
  destroyed = false;
  /** What write() returns (false: the upstream's buffer is full). */
  accepts = true;

  constructor(readonly id: number) {
    this.reader = new UpstreamReader(this);
  }

  write(data: string | Buffer): boolean {
    this.sent += typeof data === 'string' ? data : data.toString('latin1');
    return this.accepts;
  }

  cork(): void {
    this.corked++;
  }
  uncork(): void {
    this.corked--;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  release(): void {
    this.released = true;
  }
  /** As the pool does (UpstreamPool.release): a connection destroyed meanwhile is not taken back. */
  releaseSoon(): void {
    queueMicrotask(() => {
      if (!this.destroyed) this.released = true;
    });
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    // As a socket does: its close event follows.
    queueMicrotask(() => {
      this.reader.closed();
    });
  }

  /** The upstream sends these bytes (latin1). */
  answer(text: string): void {
    this.reader.data(Buffer.from(text, 'latin1'));
  }
}

/** A connection the core asked for: the test answers it with ready() or fail(). */
export interface Dial {
  readonly target: Target;
  readonly waiter: UpstreamWaiter;
  aborted: boolean;
}

export class FakeDecoder implements Decoder {
  written: Buffer[] = [];
  ended = false;
  constructor(
    readonly coding: string,
    readonly sink: DecodeSink,
  ) {}
  write(chunk: Buffer): void {
    this.written.push(chunk);
  }
  end(): void {
    this.ended = true;
  }
}

/** The sandbox side: everything written to it, and what was done to the connection. */
export class Play implements SandboxIo {
  readonly conn: SandboxConn;
  readonly lines: Line[];
  received = '';
  flushes = 0;
  isReading = true;
  stopped = false;
  closedGracefully = false;
  destroyed = false;
  clock = 1000;
  readonly dials: Dial[] = [];
  readonly decoders: FakeDecoder[] = [];
  readonly upgrades: UpgradeHandover[] = [];
  source_: UpstreamIo | undefined;
  #ups = 0;

  constructor(info: ConnInfo, lines: Line[]) {
    this.lines = lines;
    this.conn = new SandboxConn(this, info);
  }

  // SandboxIo
  write(data: string | Buffer, encoding: 'latin1' | 'utf8' = 'latin1'): void {
    this.received += typeof data === 'string' ? Buffer.from(data, encoding).toString('latin1') : data.toString('latin1');
  }
  flush(): void {
    this.flushes++;
  }
  reading(on: boolean): void {
    this.isReading = on;
  }
  stopReading(): void {
    this.stopped = true;
    this.isReading = false;
  }
  close(): void {
    this.closedGracefully = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  gone(): boolean {
    return this.destroyed;
  }
  source(up: UpstreamIo | undefined): void {
    this.source_ = up;
  }
  upgrade(req: UpgradeHandover): void {
    this.upgrades.push(req);
  }
  connect(_info: ConnInfo, target: Target, waiter: UpstreamWaiter): () => void {
    const d: Dial = { target, waiter, aborted: false };
    this.dials.push(d);
    return () => {
      d.aborted = true;
    };
  }
  decoder(coding: string, sink: DecodeSink): Decoder {
    const d = new FakeDecoder(coding, sink);
    this.decoders.push(d);
    return d;
  }
  now(): number {
    return this.clock;
  }

  // Playing
  /** The sandbox sends these bytes (latin1). */
  send(text: string): void {
    this.conn.data(Buffer.from(text, 'latin1'));
  }

  /** The last connection asked for is set up: a new upstream connection (or `up`, a pooled one). */
  ready(up?: UpRecorder): UpRecorder {
    const d = this.dials.at(-1);
    if (d === undefined) throw new Error('no connection was asked for');
    const u = up ?? new UpRecorder(++this.#ups);
    d.waiter.upstreamReady(u, up !== undefined);
    return u;
  }

  /** What the sandbox received since the last take(). */
  take(): string {
    const r = this.received;
    this.received = '';
    return r;
  }
}

/** Let queued microtasks run (the next pipelined request starts in one). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

export interface PlayWorld {
  /** A connection from sandbox `s`: intercepted TLS for `sni`, or plain HTTP. */
  play(o?: { sni?: string; port?: number }): Play;
  readonly lines: Line[];
  /** Http audit lines so far. */
  http(): Line[];
  readonly rt: Runtime;
}

/**
 * A Runtime with one sandbox: api.example.test injects the static credential `k` (Bearer SECRET),
 * token.example.test uses `source` when given, open.example.test is plain passthrough HTTP.
 */
export function playWorld(o: { source?: CredentialSource; extraAllow?: string; onTripwire?: 'deny' | 'quarantine' } = {}): PlayWorld {
  const config = parseConfig(
    `
sandboxes: [{ name: s, cidr: 10.77.1.0/24, policy: p }]
policies:
  p:
    onTripwire: ${o.onTripwire ?? 'deny'}
    allow:
      - { host: ${API}, inject: k, ports: [443] }
      - { host: token.example.test, inject: t, ports: [443] }
      - { host: ${OPEN}, ports: [80] }
${o.extraAllow ?? ''}
credentials:
  k: { secret: { env: SG_K }, placeholder: ${PLACEHOLDER} }
  t: { secret: { env: SG_K } }
`,
    'play.yaml',
  );
  const policies = compilePolicies(config);
  const loaded = loadCredentials(config, { env: { SG_K: SECRET }, readFile: () => '' });
  // token.example.test injects `t`: the static `k` unless a source is given.
  const credentials = new Map<string, CredentialSource>(loaded);
  credentials.set('t', o.source ?? (loaded.get('k') as CredentialSource));
  const lines: Line[] = [];
  const audit = {
    write(f: AuditFields) {
      lines.push(JSON.parse(JSON.stringify(f)) as Line);
    },
    flush() {
      /* kept */
    },
    logger: undefined,
  };
  const rt = {
    config,
    policies,
    credentials,
    audit,
    upstream: { guard: { check: () => undefined } },
    tokenNet: { guard: { check: () => undefined } },
    tripwire: Tripwire.compile(config.credentials),
    quarantine: new Quarantine(),
  } as unknown as Runtime;
  const sandbox = { name: 's', policy: policies.byName.get('p')!, source: 'config' as const, spec: { name: 's', policy: 'p', cidr: '10.77.1.0/24' } };
  return {
    lines,
    rt,
    http: () => lines.filter((l) => l.event === 'http'),
    play: (p = {}) => {
      const port = p.port ?? (p.sni !== undefined ? 443 : 80);
      const info: ConnInfo = { rt, sandbox, src: '10.77.1.2:40000', dst: `10.77.2.2:${port}`, dstPort: port, ...(p.sni !== undefined ? { sni: p.sni } : {}) };
      return new Play(info, lines);
    },
  };
}

/** A request as the sandbox writes it. */
export function req(method: string, path: string, host: string, fields: string[] = [], body = '', version = '1.1'): string {
  return `${method} ${path} HTTP/${version}\r\nHost: ${host}\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n${body}`;
}

/** The head sandgate sends upstream for api.example.test: Host first, the sandbox's fields, then the credential. */
export function upHead(method: string, path: string, fields: string[] = [], te?: string): string {
  return (
    `${method} ${path} HTTP/1.1\r\nHost: ${API}\r\n${fields.map((f) => `${f}\r\n`).join('')}` +
    `${te !== undefined ? `Transfer-Encoding: ${te}\r\n` : ''}authorization: ${AUTH}\r\nAccept-Encoding: identity\r\n\r\n`
  );
}

/** A response sandgate writes itself. */
export function own(status: number, reason: string, body: Record<string, unknown>, close: boolean, extra = ''): string {
  const text = JSON.stringify({ ...body, by: 'sandgate' });
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}${close ? 'Connection: close\r\n' : ''}\r\n${text}`;
}

/** A Content-Length response. */
export function ok(body: string, fields: string[] = []): string {
  return `HTTP/1.1 200 OK\r\n${fields.map((f) => `${f}\r\n`).join('')}Content-Length: ${body.length}\r\n\r\n${body}`;
}

/** sandgate's same-length mask (src/http/scrub.ts). */
export const mask = (s: string): string => `[redacted]${'*'.repeat(s.length - 10)}`;

export type { Line };
