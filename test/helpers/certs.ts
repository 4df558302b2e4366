import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throwaway test PKI made with openssl: a root CA and server certificates for the fake
 * upstreams. Distinct from sandgate's own interception CA: this one plays the public CAs
 * that real API servers use.
 */
export interface TestPki {
  dir: string;
  caPem: string;
  caFile: string;
  /** Issue a certificate for the given DNS names; returns paths of cert and key files. */
  issue(names: string[], opts?: { days?: number; expired?: boolean; selfSigned?: boolean; tag?: string }): { cert: string; key: string };
  cleanup(): void;
}

function ossl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'sg-pki-'));
  ossl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'], dir);
  ossl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      'ca.key',
      '-sha256',
      '-days',
      '30',
      '-subj',
      '/CN=sandgate test root',
      '-out',
      'ca.pem',
      '-addext',
      'basicConstraints=critical,CA:true',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  let n = 0;
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    caPem: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    issue(names, opts = {}) {
      const tag = opts.tag ?? `leaf${n++}`;
      const key = join(dir, `${tag}.key`);
      const cert = join(dir, `${tag}.pem`);
      ossl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
      const ext = join(dir, `${tag}.ext`);
      writeFileSync(ext, `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:false\n`);
      if (opts.selfSigned) {
        ossl(
          [
            'req',
            '-x509',
            '-new',
            '-key',
            key,
            '-sha256',
            '-days',
            '30',
            '-subj',
            `/CN=${names[0]}`,
            '-out',
            cert,
            '-addext',
            `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}`,
          ],
          dir,
        );
        return { cert, key };
      }
      const csr = join(dir, `${tag}.csr`);
      ossl(['req', '-new', '-key', key, '-subj', `/CN=${names[0]}`, '-out', csr], dir);
      if (opts.expired) throw new Error('expired certificates: openssl 3.0 x509 -req cannot backdate; mint them with src/tls/x509.ts');
      ossl(
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          'ca.pem',
          '-CAkey',
          'ca.key',
          '-CAcreateserial',
          '-sha256',
          '-days',
          String(opts.days ?? 30),
          '-extfile',
          ext,
          '-out',
          cert,
        ],
        dir,
      );
      return { cert, key };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
