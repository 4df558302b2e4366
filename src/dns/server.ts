/**
 * The DNS responder's sockets: UDP and TCP on listen.address:listen.dnsPort. The firewall's nat
 * `redirect` sends every sandbox packet to port 53 (any address) here; conntrack rewrites the
 * reply's source back to the address the sandbox asked, so a reply from this socket looks like
 * it came from that address (render-nft.ts explains why nat rather than TPROXY).
 *
 * All decisions are DnsResponder's; this file bounds the resources the sandbox can tie up:
 * pending UDP queries, TCP connections per sandbox, idle TCP connections, frame size (wire.ts
 * MAX_QUERY_SIZE), queries in flight per TCP connection, and unread replies.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';
import { SandgateError } from '../errors.js';
import { DnsResponder, UNKNOWN_SOURCE, type IfaceLookup } from './responder.js';
import type { AskApproval } from '../approvals/ask.js';
import { TcpFrameReader, encodeTcpFrame, MAX_QUERY_SIZE } from './wire.js';

/** UDP queries being answered at once, over all sandboxes; past this, datagrams are dropped (clients retry). */
const MAX_PENDING_UDP = 4096;
/**
 * Receive buffer asked for on the UDP socket (SO_RCVBUF). Every sandbox's datagrams queue on this
 * one socket, and the firewall lets each source send a burst (dns.sourceRateLimit.burst, 2,000
 * by default) before its rate applies; the default buffer (net.core.rmem_default, 212,992 bytes)
 * holds only about 300 small datagrams, so one source's burst would overflow it and take other
 * sandboxes' queries down with it. 4 MiB holds several bursts. The kernel caps the request at
 * net.core.rmem_max (socket(7)), silently; the size obtained is in the `ready` audit line.
 */
export const UDP_RECV_BUFFER = 4 * 1024 * 1024;
/** Queries read ahead on one TCP connection before reading pauses (RFC 7766 §6.2.1.1 pipelining). */
const MAX_PIPELINE = 32;
/** TCP connections over all sources, a backstop behind the per-sandbox limit. */
const MAX_TCP_CONNECTIONS = 4096;
/** How often bursts and sampling summaries are written. */
const TICK_MS = 250;

export interface DnsServerOptions {
  runtime(): Runtime;
  ifaces: IfaceLookup;
  address: string;
  port: number;
  /**
   * Registers a DNS-over-TCP connection as one of its sandbox's (src/net/conn-registry.ts), so
   * removing the sandbox closes it; false: the sandbox is gone, the socket is already closed.
   */
  track?: (sandbox: Sandbox, socket: net.Socket) => boolean;
  /** `unlisted: ask` (docs/approvals.md): a query for an unlisted name waits for the decision. */
  ask?: AskApproval;
}

export interface DnsServer {
  readonly responder: DnsResponder;
  /** The UDP socket's receive buffer as the kernel granted it (bytes; see UDP_RECV_BUFFER). */
  readonly udpRecvBuffer: number;
  /** Both sockets are bound and open (for health). */
  listening(): boolean;
  /** Stops both sockets, drops open TCP connections, writes pending burst/summary lines. */
  close(): Promise<void>;
}

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const responder = new DnsResponder({ runtime: opts.runtime, ifaces: opts.ifaces, ...(opts.ask ? { ask: opts.ask } : {}) });
  const udp = await bindUdp(opts, responder);
  let tcp: { server: net.Server; sockets: Set<net.Socket> };
  try {
    tcp = await listenTcp(opts, responder);
  } catch (err) {
    udp.close();
    throw err;
  }
  const timer = setInterval(() => responder.tick(), TICK_MS);
  timer.unref();
  let udpOpen = true;
  udp.once('close', () => {
    udpOpen = false;
  });
  let closing: Promise<void> | undefined;
  return {
    responder,
    udpRecvBuffer: udp.getRecvBufferSize(),
    listening: () => udpOpen && tcp.server.listening,
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        for (const s of tcp.sockets) s.destroy();
        await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.server.close(() => r()))]);
        responder.tick(true);
      })();
      return closing;
    },
  };
}

function listenError(opts: DnsServerOptions, proto: string, err: NodeJS.ErrnoException): SandgateError {
  return new SandgateError(`cannot listen on ${opts.address}:${opts.port} ${proto} (listen.dnsPort): ${err.code ?? err.message}`, 'LISTEN', { cause: err });
}

function bindUdp(opts: DnsServerOptions, responder: DnsResponder): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const udp = dgram.createSocket({ type: net.isIPv6(opts.address) ? 'udp6' : 'udp4', recvBufferSize: UDP_RECV_BUFFER });
    let pending = 0;
    udp.on('message', (msg, rinfo) => {
      if (pending >= MAX_PENDING_UDP) return;
      pending++;
      responder
        .handle(msg, rinfo.address, rinfo.port, 'udp')
        .then(
          (reply) => {
            // A send error (the sandbox went away) is not ours to report.
            if (reply) udp.send(reply, rinfo.port, rinfo.address, () => undefined);
          },
          (err: Error) => opts.runtime().audit.write({ event: 'error', proto: 'dns', reason: `dns responder failed: ${err.message}` }),
        )
        .finally(() => {
          pending--;
        });
    });
    udp.once('error', (err) => reject(listenError(opts, 'udp', err)));
    udp.bind({ address: opts.address, port: opts.port, exclusive: true }, () => {
      udp.removeAllListeners('error');
      udp.on('error', () => {
        /* ICMP-induced errors on an unconnected socket: nothing to do */
      });
      resolve(udp);
    });
  });
}

function listenTcp(opts: DnsServerOptions, responder: DnsResponder): Promise<{ server: net.Server; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  const open = new Map<string, number>();
  return new Promise((resolve, reject) => {
    // allowHalfOpen: a client may send its queries and FIN at once; answers still go out.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      serveTcp(opts, responder, socket, open).catch(() => socket.destroy());
    });
    server.maxConnections = MAX_TCP_CONNECTIONS;
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(opts, 'tcp', err)));
    server.listen({ host: opts.address, port: opts.port, backlog: 1024 }, () => {
      server.removeAllListeners('error');
      server.on('error', () => {
        /* accept errors (EMFILE...) are transient */
      });
      resolve({ server, sockets });
    });
  });
}

/**
 * One DNS-over-TCP connection (RFC 1035 §4.2.2, RFC 7766): length-prefixed queries, several per
 * connection, answered in the order they were sent. Closed when idle for dns.tcp.idleTimeoutMs
 * (a stalled half-sent frame counts as idle), on an oversize frame, or on a query that gets no
 * reply (a response sent to us): silently skipping a frame would leave the client waiting.
 */
async function serveTcp(opts: DnsServerOptions, responder: DnsResponder, socket: net.Socket, open: Map<string, number>): Promise<void> {
  socket.on('error', () => {
    /* reset by the peer: nothing to report */
  });
  const rt = opts.runtime();
  const srcIp = socket.remoteAddress ?? '';
  const srcPort = socket.remotePort ?? 0;
  const sandbox = await responder.identify(rt, srcIp);
  if (sandbox && opts.track && !opts.track(sandbox, socket)) return;
  const key = sandbox?.name ?? UNKNOWN_SOURCE;
  const count = open.get(key) ?? 0;
  if (count >= rt.config.dns.tcp.maxConnections) {
    responder.audit(rt, key, performance.now(), {
      ...(sandbox ? { sandbox: sandbox.name, ...(sandbox.user !== undefined ? { user: sandbox.user } : {}) } : {}),
      src: `${srcIp}:${srcPort}`,
      decision: 'deny',
      reason: `too many DNS-over-TCP connections (dns.tcp.maxConnections: ${rt.config.dns.tcp.maxConnections})`,
    });
    socket.destroy();
    return;
  }
  open.set(key, count + 1);
  socket.once('close', () => {
    const n = (open.get(key) ?? 1) - 1;
    if (n <= 0) open.delete(key);
    else open.set(key, n);
  });
  if (socket.destroyed) return;
  socket.setTimeout(rt.config.dns.tcp.idleTimeoutMs, () => socket.destroy());

  const reader = new TcpFrameReader(MAX_QUERY_SIZE);
  /** Complete frames not yet started; reading pauses while there are any, so this holds one read's worth at most. */
  const backlog: Buffer[] = [];
  let chain: Promise<void> = Promise.resolve();
  let inflight = 0;
  let writeBlocked = false;
  let ended = false;

  const pump = (): void => {
    while (backlog.length > 0 && inflight < MAX_PIPELINE) {
      const frame = backlog.shift() as Buffer;
      inflight++;
      // Answers are computed concurrently (lookups overlap) and written in the order asked.
      const answer = responder.handle(frame, srcIp, srcPort, 'tcp').catch(() => undefined);
      chain = chain
        .then(() => answer)
        .then((reply) => {
          inflight--;
          if (socket.destroyed) return;
          if (!reply) {
            socket.destroy();
            return;
          }
          if (!socket.write(encodeTcpFrame(reply))) {
            writeBlocked = true;
            socket.once('drain', () => {
              writeBlocked = false;
              pump();
            });
          }
          pump();
        });
    }
    if (socket.destroyed || ended) return;
    // Read on only when everything read so far is being answered and the client reads its replies.
    if (backlog.length > 0 || inflight >= MAX_PIPELINE || writeBlocked) socket.pause();
    else if (socket.isPaused()) socket.resume();
  };

  socket.on('data', (chunk: Buffer) => {
    try {
      backlog.push(...reader.push(chunk));
    } catch {
      socket.destroy(); // a frame over MAX_QUERY_SIZE: no DNS query is that large
      return;
    }
    pump();
  });
  socket.on('end', () => {
    ended = true;
    void chain.then(function finish(): void | Promise<void> {
      // Frames still waiting behind the pipeline limit are answered before the close.
      if (backlog.length > 0 || inflight > 0) return chain.then(finish);
      if (!socket.destroyed) socket.end();
    });
  });
  socket.resume();
}
