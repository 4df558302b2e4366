import net from 'node:net';
import { SandgateError } from '../errors.js';
import type { AddressGuard } from './address-guard.js';
import { PooledReader, usePooledReader } from './pooled-read.js';
import type { UpstreamResolver } from './resolver.js';

/**
 * Connect with a timeout; TCP_NODELAY on (testing-network.md: Nagle + delayed ACK cost ~45 ms per
 * request). The socket's reads are pooled (pooled-read.ts): it is meant for splice(), which
 * attaches the reader; it emits no 'data' events.
 */
export function connectTcp(address: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const reader = new PooledReader();
    const s = net.connect({ host: address, port, allowHalfOpen: true, noDelay: true, onread: reader.onread });
    usePooledReader(s, reader);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new SandgateError(`connect to ${address}:${port} timed out after ${timeoutMs} ms`, 'UPSTREAM_CONNECT'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new SandgateError(`connect to ${address}:${port} failed (${err.code ?? err.message})`, 'UPSTREAM_CONNECT', { cause: err }));
    });
  });
}

/**
 * Resolve `host`, drop guarded addresses, then try the remaining ones in order (at most 3).
 * Throws SandgateError UPSTREAM_RESOLVE / UPSTREAM_FORBIDDEN / UPSTREAM_CONNECT.
 */
export async function connectToHost(
  host: string,
  port: number,
  resolver: UpstreamResolver,
  guard: AddressGuard,
  timeoutMs: number,
): Promise<{ socket: net.Socket; address: string }> {
  const addrs = await resolver.resolve(host);
  let lastErr: unknown;
  let tried = 0;
  for (const address of addrs) {
    const why = guard.check(address);
    if (why) {
      lastErr = new SandgateError(why, 'UPSTREAM_FORBIDDEN');
      continue;
    }
    if (tried++ >= 3) break;
    try {
      return { socket: await connectTcp(address, port, timeoutMs), address };
    } catch (err) {
      lastErr = err;
    }
  }
  throw lastErr ?? new SandgateError(`no usable address for ${host}`, 'UPSTREAM_RESOLVE');
}
