/**
 * Can sandgate write where the config says it will (tls.caDir, log.file, the control socket's
 * directory)? Checked by `sandgate check` and by `run` before anything else, so a typo fails
 * at once with the key's name instead of part-way through start-up, or never (recursive mkdir
 * under /proc does not return on this kernel: kernel pseudo file systems are refused up front).
 *
 * Read-only checks (stat, statfs, access): nothing is created here.
 */
import { accessSync, constants, statSync, statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Config } from './types.js';

/** statfs(2) f_type of kernel pseudo file systems (linux/magic.h): nothing of sandgate's belongs there. */
const PSEUDO_FS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x63677270, 'cgroup2'],
  [0x27e0eb, 'cgroup'],
  [0x64626720, 'debugfs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x74726163, 'tracefs'],
]);

export interface PathProblem {
  /** The config key, e.g. "tls.caDir". */
  readonly key: string;
  readonly message: string;
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/** The path itself if it exists, else its nearest existing ancestor. */
function nearestExisting(path: string): string {
  let p = path;
  for (;;) {
    try {
      statSync(p);
      return p;
    } catch (err) {
      // ENOTDIR: an ancestor is a file; walking up finds it, and the caller says so.
      if (code(err) !== 'ENOENT' && code(err) !== 'ENOTDIR') return p;
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}

function pseudoFs(path: string): string | undefined {
  try {
    return PSEUDO_FS.get(Number(statfsSync(path).type));
  } catch {
    return undefined;
  }
}

/** Why `dir` cannot be used (or created) as a writable directory, or undefined. */
export function dirProblem(dir: string): string | undefined {
  const abs = resolve(dir);
  const existing = nearestExisting(abs);
  const fs = pseudoFs(existing);
  if (fs !== undefined) return `${dir} is on the kernel's ${fs} file system, where sandgate cannot keep files`;
  let st;
  try {
    st = statSync(existing);
  } catch (err) {
    return `cannot inspect ${existing} (${code(err)})`;
  }
  if (!st.isDirectory()) return existing === abs ? `${dir} exists and is not a directory` : `${existing} is not a directory, so ${dir} cannot be created`;
  try {
    accessSync(existing, constants.W_OK | constants.X_OK);
  } catch (err) {
    return existing === abs ? `${dir} is not writable (${code(err)})` : `${dir} does not exist and ${existing} is not writable (${code(err)})`;
  }
  return undefined;
}

/** Why `file` cannot be appended to (or created), or undefined. */
export function fileProblem(file: string): string | undefined {
  const abs = resolve(file);
  let st;
  try {
    st = statSync(abs);
  } catch (err) {
    if (code(err) !== 'ENOENT' && code(err) !== 'ENOTDIR') return `cannot inspect ${file} (${code(err)})`;
    return dirProblem(dirname(abs));
  }
  if (st.isDirectory()) return `${file} is a directory`;
  const fs = pseudoFs(abs);
  if (fs !== undefined) return `${file} is on the kernel's ${fs} file system`;
  try {
    accessSync(abs, constants.W_OK);
  } catch (err) {
    return `${file} is not writable (${code(err)})`;
  }
  return undefined;
}

/** Every path the config makes sandgate write, checked. */
export function pathProblems(config: Config): PathProblem[] {
  const out: PathProblem[] = [];
  const ca = dirProblem(config.tls.caDir);
  if (ca !== undefined) out.push({ key: 'tls.caDir', message: ca });
  if (config.log.file !== undefined) {
    const log = fileProblem(config.log.file);
    if (log !== undefined) out.push({ key: 'log.file', message: log });
  }
  if (config.listen.control !== false) {
    const st = config.stateDir !== config.tls.caDir ? dirProblem(config.stateDir) : undefined;
    if (st !== undefined) out.push({ key: 'stateDir', message: st });
    const c = dirProblem(dirname(config.listen.control));
    if (c !== undefined) out.push({ key: 'listen.control', message: c });
  }
  return out;
}
