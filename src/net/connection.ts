import type net from 'node:net';
import type { Runtime } from '../runtime.js';
import type { Sandbox } from '../policy/sandboxes.js';
import type { CompiledRule } from '../policy/policy.js';
import type { AuditFields } from '../audit/logger.js';
import { SandgateError } from '../errors.js';
import { who, type ConnInfo } from './conn-info.js';
import { peek } from './peek.js';
import { classify } from './classify.js';
import { serveHttp } from '../http/relay.js';
import { connectTcp, connectToHost } from '../upstream/connect.js';
import { splice } from './splice.js';
import { endWith, refuseWithAlert } from './tls-alert.js';
import { jsonResponse } from '../http/headers.js';
import { afterTripwire, QUARANTINED } from '../control/quarantine.js';
import type { RouteIfaceCache } from './route-iface.js';
import type { ConnRegistry } from './conn-registry.js';
import { METADATA_IP } from '../metadata/answer.js';
import { serveMetadata } from '../metadata/serve.js';
import type { AskApproval } from '../approvals/ask.js';
import { approvedSandbox, sandboxReason } from '../approvals/ask.js';
import { readRequestHead, requestHost } from './request-host.js';
import type { Peeked } from './peek.js';

export interface Gate {
  /** The current runtime (swapped on reload). */
  runtime(): Runtime;
  readonly ifaces: RouteIfaceCache;
  /** TLS interception for hosts whose rule injects or checks requests (set once interception is enabled). */
  readonly intercept?: (socket: net.Socket, head: Buffer, info: ConnInfo, rule: CompiledRule) => void;
  /** Open connections per sandbox, closed when a registered sandbox is removed (src/control). */
  readonly conns?: ConnRegistry;
  /**
   * Whether the DNS responder gave `sandbox` `ip` for `host` (raw TCP rules). Set in a worker
   * process, which asks the primary (it runs the responder and holds the answer log); unset, the
   * runtime's own log is read (src/cluster/worker.ts).
   */
  readonly answered?: (sandbox: string, host: string, ip: string) => Promise<boolean>;
  /** `unlisted: ask` (docs/approvals.md): waits for an approver's decision on (sandbox, host, port). */
  readonly ask?: AskApproval;
}

/**
 * One accepted (TPROXY'd) connection: who sent it, where it was going, and what it is. Raw TCP
 * rules are decided on the address alone, before any byte is read (server-speaks-first protocols
 * such as SSH or SMTP must work); everything else is classified from its first bytes.
 * A denial closes the connection before any byte reaches an upstream: a refused ClientHello with
 * a TLS alert naming the refusal (src/net/tls-alert.ts), anything else with a reset.
 */
export async function handleConnection(gate: Gate, socket: net.Socket): Promise<void> {
  const rt = gate.runtime();
  socket.on('error', () => {
    /* reported where it matters; an unhandled 'error' must not crash the gate */
  });
  const srcIp = socket.remoteAddress ?? '';
  const dstIp = socket.localAddress ?? '';
  const dstPort = socket.localPort ?? 0;
  const src = `${srcIp}:${socket.remotePort ?? 0}`;
  const dst = `${dstIp}:${dstPort}`;
  const conn = (f: Omit<AuditFields, 'event'>): void => rt.audit.write({ event: 'conn', src, dst, ...f });

  const iface = rt.sandboxes.needsIface ? await gate.ifaces.lookup(srcIp) : undefined;
  const sandbox = rt.sandboxes.identify(srcIp, iface);
  if (!sandbox) {
    conn({ decision: 'deny', reason: 'source is not a configured sandbox' });
    socket.resetAndDestroy();
    return;
  }
  // Same tick as identify(): a sandbox removed while the route lookup ran is caught here.
  if (gate.conns && !gate.conns.track(sandbox, socket)) {
    conn({ decision: 'deny', sandbox: sandbox.name, reason: 'the sandbox was removed' });
    return;
  }
  const info: ConnInfo = { rt, sandbox, src, dst, dstPort };
  const ident = who(info);
  const policy = sandbox.policy;
  // Quarantined (a tripwire, src/control/quarantine.ts): nothing new until an operator releases it.
  if (rt.quarantine.has(sandbox.name)) return refuseQuarantined(rt, socket, ident, policy.namedPorts.has(dstPort));

  // Instance metadata, for policies that enable it: answered from memory, never relayed. Every
  // other connection to 169.254.169.254 (other ports, other policies) goes on as before and meets
  // the policy and the SSRF guard (docs/metadata.md).
  if (policy.metadata !== undefined && dstIp === METADATA_IP && dstPort === 80) {
    serveMetadata(socket, info, policy.metadata);
    return;
  }

  // Raw TCP: the destination must be an address sandgate itself resolved for a listed name.
  if (policy.tcpPorts.has(dstPort)) {
    const rule = await matchTcpRule(gate, rt, sandbox, dstIp, dstPort);
    if (rule) return passRaw(rt, socket, ident, rule, dstIp, dstPort);
  }
  if (!policy.namedPorts.has(dstPort)) {
    const v = policy.denied(`port ${dstPort} is not allowed`);
    if (v.decision === 'would-deny') return reportOriginal(rt, socket, ident, 'tcp', undefined, v.reason, dstIp, dstPort);
    conn({ ...ident, decision: 'deny', proto: 'tcp', reason: v.reason });
    socket.resetAndDestroy();
    return;
  }

  let p = await peek(socket, rt.peekTimeoutMs);
  let route = classify(info, p, gate.intercept !== undefined);
  if (route.kind === 'http' && gate.ask && policy.unlisted === 'ask') {
    // The name of a plain-HTTP connection is in its first request's Host: read the head (held,
    // nothing sent anywhere) and ask about it before the relay starts.
    p = { kind: 'http', head: await readRequestHead(socket, p.head, rt.peekTimeoutMs) };
    const host = requestHost(p.head);
    // A placeholder in the Host is the tripwire's (admit() refuses it), never a question for an approver.
    if (host !== undefined && rt.tripwire?.inName(host) === undefined && policy.asks(host, dstPort) && policy.find(host, dstPort, 'http') === undefined) {
      const approved = await askFor(gate, rt, socket, info, tlsOrHttpIdent(ident, p), host, 'http');
      if (approved === undefined) return;
      serveHttp(socket, approved, p.head);
      return;
    }
  }
  if (route.kind === 'ask' && gate.ask) {
    // The ClientHello is held (already read, nothing sent upstream) until the decision.
    const approved = await askFor(gate, rt, socket, info, tlsOrHttpIdent(ident, p), route.host, 'tls');
    if (approved === undefined) return;
    route = classify(approved, p, gate.intercept !== undefined);
  }
  // A ClientHello carrying encrypted_client_hello is said so on its lines (decided on the outer SNI).
  const ech = p.kind === 'tls' && p.hello.ech;
  const tlsIdent = ech ? { ...ident, ech: true } : ident;
  switch (route.kind) {
    case 'deny':
      if (route.tripwire !== undefined) {
        rt.audit.write({
          event: 'tripwire',
          ...tlsIdent,
          proto: 'tls',
          host: route.host,
          decision: 'deny',
          reason: route.reason,
          credential: route.tripwire.credential,
          onTripwire: policy.onTripwire,
        });
        afterTripwire(rt, sandbox, route.tripwire, route.reason);
      } else conn({ ...tlsIdent, decision: 'deny', proto: route.proto, host: route.host, rule: route.rule, reason: route.reason });
      // A refused ClientHello is answered with an alert the client can read; anything else is reset.
      if (route.alert !== undefined) refuseWithAlert(socket, route.alert);
      else socket.resetAndDestroy();
      return;
    case 'http':
      serveHttp(socket, info, p.head);
      return;
    case 'ask':
      // Asking needs an approver; without one (no broker wired) an unlisted name is a denial.
      conn({ ...tlsIdent, decision: 'deny', proto: 'tls', host: route.host, reason: `${route.host}:${dstPort} is not allowed` });
      refuseWithAlert(socket, 'access_denied');
      return;
    case 'raw':
      return reportOriginal(rt, socket, tlsIdent, 'tls', undefined, route.reason, dstIp, dstPort, p.head);
    case 'passthrough':
      return passTls(
        rt,
        socket,
        tlsIdent,
        route.host,
        dstPort,
        p.head,
        route.decision === 'allow' ? { decision: 'allow', rule: route.rule } : { decision: 'would-deny', reason: route.reason },
      );
    case 'intercept':
      gate.intercept?.(socket, p.head, { ...info, sni: route.sni, ...(ech ? { ech: true } : {}) }, route.rule);
      return;
    default: {
      const never: never = route;
      return never;
    }
  }
}

function tlsOrHttpIdent(ident: Ident, p: Peeked): Ident & { ech?: true } {
  return p.kind === 'tls' && p.hello.ech ? { ...ident, ech: true } : ident;
}

/**
 * Holds the connection until an approver decides about (sandbox, host, port): the ConnInfo it
 * goes on with (its sandbox's policy allows exactly that name and port), or undefined when it was
 * denied (a TLS access_denied alert, 403 for plain HTTP, with a conn line) or went away meanwhile.
 */
async function askFor(
  gate: Gate,
  rt: Runtime,
  socket: net.Socket,
  info: ConnInfo,
  ident: Ident,
  host: string,
  via: 'tls' | 'http',
): Promise<ConnInfo | undefined> {
  const ask = gate.ask as AskApproval;
  const started = performance.now();
  const o = await ask(info.sandbox, host, info.dstPort, via);
  const ms = Math.round(performance.now() - started);
  const proto = via;
  if (!o.allow) {
    rt.audit.write({ event: 'conn', ...ident, decision: 'deny', proto, host, reason: o.reason, ...(o.id !== undefined ? { approval: o.id } : {}), ms });
    if (via === 'http' && !socket.destroyed) socket.end(jsonResponse(403, { error: 'denied', reason: sandboxReason(o) }));
    else refuseWithAlert(socket, 'access_denied');
    return undefined;
  }
  if (socket.destroyed || socket.readableEnded) {
    rt.audit.write({
      event: 'conn',
      ...ident,
      decision: 'allow',
      proto,
      host,
      approval: o.id,
      error: 'the sandbox closed the connection while it waited for approval',
      ms,
    });
    socket.destroy();
    return undefined;
  }
  return { ...info, sandbox: approvedSandbox(info.sandbox, host, info.dstPort, o) };
}

/**
 * A quarantined sandbox's new connection, refused so that a client can read why: on a port
 * where TLS or HTTP is expected, a TLS access_denied alert or an HTTP 403 `quarantined` once the
 * first bytes say which; anything else (other ports, other bytes, silence) is reset.
 */
async function refuseQuarantined(rt: Runtime, socket: net.Socket, ident: Ident, namedPort: boolean): Promise<void> {
  const line = { event: 'conn' as const, ...ident, decision: 'deny' as const, reason: QUARANTINED };
  if (!namedPort) {
    rt.audit.write(line);
    socket.resetAndDestroy();
    return;
  }
  const p = await peek(socket, rt.peekTimeoutMs);
  if (p.kind === 'tls') {
    rt.audit.write({ ...line, proto: 'tls', host: p.hello.sni });
    refuseWithAlert(socket, 'access_denied');
  } else if (p.kind === 'http') {
    rt.audit.write({ ...line, proto: 'http' });
    endWith(socket, jsonResponse(403, { error: 'denied', reason: QUARANTINED }));
  } else {
    rt.audit.write(line);
    socket.resetAndDestroy();
  }
}

/**
 * The tcp rule for this port whose host has dstIp. Which rules could match is the policy's
 * (tcpRulesFor); whether a rule's name has dstIp is I/O: either sandgate's DNS responder gave
 * this sandbox dstIp for the rule's name (still within its TTL; it may since have rotated
 * upstream), or sandgate resolves the name to dstIp now.
 */
async function matchTcpRule(gate: Gate, rt: Runtime, sandbox: Sandbox, dstIp: string, dstPort: number): Promise<CompiledRule | undefined> {
  for (const rule of sandbox.policy.tcpRulesFor(dstPort)) {
    if (gate.answered ? await gate.answered(sandbox.name, rule.host, dstIp) : rt.dnsAnswers.has(sandbox.name, rule.host, dstIp)) return rule;
    try {
      const addrs = await rt.upstream.resolver.resolve(rule.host);
      if (addrs.includes(dstIp)) return rule;
    } catch {
      /* unresolvable: this rule cannot match */
    }
  }
  return undefined;
}

type Ident = ReturnType<typeof who>;

function upstreamFailure(err: unknown): string {
  return err instanceof SandgateError ? err.message : `upstream error (${(err as Error).message})`;
}

/** SNI passthrough: connect to the SNI host as sandgate resolves it, never the sandbox's choice. */
async function passTls(
  rt: Runtime,
  socket: net.Socket,
  ident: Ident,
  host: string,
  port: number,
  head: Buffer,
  d: { decision: 'allow'; rule: string } | { decision: 'would-deny'; reason: string },
): Promise<void> {
  const started = performance.now();
  try {
    const { socket: up, address } = await connectToHost(host, port, rt.upstream.resolver, rt.upstream.guard, rt.config.upstream.connectTimeoutMs);
    rt.audit.write({ event: 'conn', ...ident, ...d, proto: 'tls', host, upstream: `${address}:${port}`, ms: Math.round(performance.now() - started) });
    relay(rt, socket, up, head, ident, 'tls', host);
  } catch (err) {
    const ms = Math.round(performance.now() - started);
    if (err instanceof SandgateError && err.code === 'UPSTREAM_FORBIDDEN') {
      // The SSRF guard refused every address: a denial (as for raw TCP), even in report mode.
      rt.audit.write({ event: 'conn', ...ident, decision: 'deny', proto: 'tls', host, reason: err.message, ms });
      refuseWithAlert(socket, 'access_denied');
      return;
    }
    rt.audit.write({ event: 'conn', ...ident, ...d, proto: 'tls', host, error: upstreamFailure(err), ms });
    socket.resetAndDestroy();
  }
}

async function passRaw(rt: Runtime, socket: net.Socket, ident: Ident, rule: CompiledRule, dstIp: string, dstPort: number): Promise<void> {
  const started = performance.now();
  const why = rt.upstream.guard.check(dstIp);
  if (why) {
    rt.audit.write({ event: 'conn', ...ident, decision: 'deny', proto: 'tcp', host: rule.host, reason: why });
    socket.resetAndDestroy();
    return;
  }
  try {
    const up = await connectTcp(dstIp, dstPort, rt.config.upstream.connectTimeoutMs);
    rt.audit.write({
      event: 'conn',
      ...ident,
      decision: 'allow',
      proto: 'tcp',
      host: rule.host,
      rule: rule.id,
      upstream: `${dstIp}:${dstPort}`,
      ms: Math.round(performance.now() - started),
    });
    relay(rt, socket, up, undefined, ident, 'tcp', rule.host);
  } catch (err) {
    rt.audit.write({ event: 'conn', ...ident, decision: 'allow', proto: 'tcp', host: rule.host, rule: rule.id, error: upstreamFailure(err) });
    socket.resetAndDestroy();
  }
}

/** Report mode with no name to go by: the original destination, still behind the SSRF guard. */
async function reportOriginal(
  rt: Runtime,
  socket: net.Socket,
  ident: Ident,
  proto: 'tls' | 'tcp',
  host: string | undefined,
  reason: string,
  dstIp: string,
  dstPort: number,
  head?: Buffer,
): Promise<void> {
  const why = rt.upstream.guard.check(dstIp);
  if (why) {
    rt.audit.write({ event: 'conn', ...ident, decision: 'deny', proto, host, reason: why });
    socket.resetAndDestroy();
    return;
  }
  try {
    const up = await connectTcp(dstIp, dstPort, rt.config.upstream.connectTimeoutMs);
    rt.audit.write({ event: 'conn', ...ident, decision: 'would-deny', proto, host, reason, upstream: `${dstIp}:${dstPort}` });
    relay(rt, socket, up, head, ident, proto, host);
  } catch (err) {
    rt.audit.write({ event: 'conn', ...ident, decision: 'would-deny', proto, host, reason, error: upstreamFailure(err) });
    socket.resetAndDestroy();
  }
}

function relay(rt: Runtime, client: net.Socket, up: net.Socket, head: Buffer | undefined, ident: Ident, proto: 'tls' | 'tcp', host: string | undefined): void {
  splice(client, up, head, (s) => {
    rt.audit.write({ event: 'close', ...ident, proto, host, bytesIn: s.bytesIn, bytesOut: s.bytesOut, ms: s.ms, ...(s.error ? { error: s.error } : {}) });
  });
}
