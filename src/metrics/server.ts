/**
 * The opt-in Prometheus endpoint (`metrics: { listen: IP:PORT }`, docs/operations.md): `GET
 * /metrics` in the text exposition format, nothing else. Counters come from the audit stream
 * (audit-metrics.ts); gauges are read from the runtime when scraped.
 *
 * Reachability: the listener is on the gate host. The firewall drops every packet from a
 * sandbox to the host's own addresses but for the TPROXY'd and redirected ones (input chain),
 * and a sandbox's TCP to any address and port is TPROXY'd to the gate's own listener, which
 * denies a port no rule lists: a sandbox never reaches this server (test/integration/metrics.test.ts).
 * Bind it to loopback or a management address all the same.
 */
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Runtime } from '../runtime.js';
import { isTokenSource, type TokenCacheStats } from '../creds/credential.js';
import { SandgateError } from '../errors.js';
import type { AuditFields } from '../audit/logger.js';
import { AuditMetrics } from './audit-metrics.js';

export interface MetricsSources {
  runtime(): Runtime;
  /** Open connections sandgate holds for a sandbox now (this process's). */
  openConnections(sandbox: string): number;
  /** With `workers: N`: how many worker processes are ready. */
  workersReady?(): number;
}

export interface Metrics {
  readonly registry: Registry;
  /** Counts one audit line (the audit writer's observer). */
  observe(f: AuditFields): void;
  /** Starts the HTTP listener. */
  listen(address: string, port: number): Promise<MetricsListener>;
}

export interface MetricsListener {
  listening(): boolean;
  close(): Promise<void>;
}

export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const fromAudit = new AuditMetrics(registry);
  const registers = [registry];

  new Gauge({
    name: 'sandgate_open_connections',
    help: "Open TCP connections (relays, HTTP, DNS over TCP) sandgate holds per sandbox; with workers: N, the primary's own (DNS over TCP)",
    labelNames: ['sandbox'],
    registers,
    collect() {
      this.reset();
      for (const sb of sources.runtime().sandboxes.list) this.set({ sandbox: sb.name }, sources.openConnections(sb.name));
    },
  });
  // Token sources (authService, oauth2 credentials): their caches' present state and lifetime counts.
  const tokens = (): [string, TokenCacheStats][] => {
    const out: [string, TokenCacheStats][] = [];
    for (const [id, c] of sources.runtime().credentials) if (isTokenSource(c)) out.push([id, c.stats()]);
    return out;
  };
  new Gauge({
    name: 'sandgate_token_cache_entries',
    help: 'Tokens cached per token-source credential',
    labelNames: ['credential'],
    registers,
    collect() {
      this.reset();
      for (const [credential, s] of tokens()) this.set({ credential }, s.entries);
    },
  });
  const tokenCounter = (name: string, help: string, pick: (s: TokenCacheStats) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['credential'],
      registers,
      collect() {
        this.reset();
        for (const [credential, s] of tokens()) this.inc({ credential }, pick(s));
      },
    });
  };
  tokenCounter('sandgate_token_cache_hits_total', 'Token requests served from the cache', (s) => s.hits);
  tokenCounter('sandgate_token_cache_misses_total', 'Token requests that waited for a token', (s) => s.misses);
  tokenCounter('sandgate_token_fetches_total', 'Calls to the token service (auth service, OAuth2 token endpoint)', (s) => s.fetches);
  tokenCounter('sandgate_token_fetch_failures_total', 'Token service calls that failed', (s) => s.failures);
  if (sources.workersReady) {
    const ready = sources.workersReady;
    new Gauge({
      name: 'sandgate_workers_ready',
      help: 'Worker processes ready (workers: N)',
      registers,
      collect() {
        this.set(ready());
      },
    });
  }

  return {
    registry,
    observe: (f) => {
      fromAudit.observe(f);
    },
    listen: (address, port) => listen(registry, address, port),
  };
}

async function listen(registry: Registry, address: string, port: number): Promise<MetricsListener> {
  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxHeaderSize: 8 * 1024 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text) }).end(req.method === 'HEAD' ? undefined : text);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new SandgateError(`cannot listen on ${address}:${port} (metrics.listen): ${err.code ?? err.message}`, 'LISTEN', { cause: err })),
    );
    server.listen({ host: address, port, exclusive: true }, () => resolve());
  });
  server.on('error', () => {
    /* accept errors (EMFILE) are transient */
  });
  let closing: Promise<void> | undefined;
  return {
    listening: () => server.listening,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
