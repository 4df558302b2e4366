import net from 'node:net';
import sockopt from 'sockopt';
import { SandgateError } from '../errors.js';

const SOL_IP = 0;
const IP_TRANSPARENT = 19; // linux/in.h: lets TPROXY hand this listener connections for any destination

/**
 * The TPROXY target. With IP_TRANSPARENT set on the listening socket, the kernel's tproxy
 * statement assigns it connections addressed to any IP:port; each accepted socket's
 * localAddress:localPort is then the destination the sandbox dialled (Documentation/networking/tproxy.rst).
 */
export function listenTransparent(address: string, port: number, onSocket: (s: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onSocket);
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new SandgateError(`cannot listen on ${address}:${port} (listen.port): ${err.code ?? err.message}`, 'LISTEN', { cause: err }));
    });
    server.listen({ host: address, port, backlog: 4096 }, () => {
      try {
        sockopt.setsockopt(server, SOL_IP, IP_TRANSPARENT, 1);
      } catch (err) {
        server.close();
        reject(new SandgateError(`cannot set IP_TRANSPARENT on the listener (needs CAP_NET_ADMIN): ${(err as Error).message}`, 'LISTEN', { cause: err }));
        return;
      }
      server.removeAllListeners('error');
      server.on('error', () => {
        /* accept errors (EMFILE...) are transient; the server keeps listening */
      });
      resolve(server);
    });
  });
}
