/**
 * The validator's primitives: each check records a Problem (a key path and a message an operator
 * can act on) and returns undefined, so one pass reports every problem in the file. Section
 * readers (the sibling files) build on these.
 */
import net from 'node:net';
import type { SecretSource } from '../types.js';

export type PathPart = string | number;
export interface Problem {
  path: PathPart[];
  message: string;
  atKey?: boolean;
}
export type Obj = Record<string, unknown>;

export const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // RFC 9110 §5.6.2 token (header names, methods)
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class Reader {
  readonly problems: Problem[] = [];

  fail(path: PathPart[], message: string, atKey = false): undefined {
    this.problems.push({ path, message, atKey });
    return undefined;
  }

  /** A mapping; unknown keys are errors (a typo must never silently widen or narrow a policy). */
  obj(v: unknown, path: PathPart[], keys: readonly string[], required: readonly string[] = []): Obj | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.fail(path, 'must be a mapping');
    const o = v as Obj;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k)) this.fail([...path, k], `unknown key "${k}" (expected one of: ${keys.join(', ')})`, true);
    }
    for (const k of required) if (o[k] === undefined || o[k] === null) this.fail(path, `missing required key "${k}"`);
    return o;
  }

  optObj(v: unknown, path: PathPart[], keys: readonly string[]): Obj {
    if (v === undefined || v === null) return {};
    return this.obj(v, path, keys) ?? {};
  }

  str(v: unknown, path: PathPart[], re?: RegExp, what?: string): string | undefined {
    if (typeof v !== 'string' || v.length === 0) return this.fail(path, 'must be a non-empty string');
    if (re && !re.test(v)) return this.fail(path, `"${v}" is not ${what ?? 'valid'}`);
    return v;
  }

  port(v: unknown, path: PathPart[]): number | undefined {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) return this.fail(path, 'must be a port number from 1 to 65535');
    return v;
  }

  int(v: unknown, path: PathPart[], min: number, max: number, dflt: number): number {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(path, `must be a whole number from ${min} to ${max}`);
      return dflt;
    }
    return v;
  }

  list(v: unknown, path: PathPart[]): unknown[] | undefined {
    if (!Array.isArray(v)) return this.fail(path, 'must be a list');
    return v;
  }

  oneOf<T extends string>(v: unknown, path: PathPart[], options: readonly T[]): T | undefined {
    if (typeof v !== 'string' || !options.includes(v as T)) return this.fail(path, `must be one of: ${options.join(', ')}`);
    return v as T;
  }

  ipAddress(v: unknown, path: PathPart[]): string | undefined {
    if (typeof v !== 'string' || net.isIP(v) === 0) return this.fail(path, 'must be an IP address');
    return v;
  }

  /** Where a secret comes from: exactly one of an environment variable or a file; never the value. */
  secret(raw: unknown, p: PathPart[]): SecretSource | undefined {
    const s = this.obj(raw, p, ['env', 'file']);
    if (!s) return undefined;
    if ((s.env === undefined) === (s.file === undefined))
      return this.fail(p, 'must have exactly one of "env" or "file" (secrets never live in the config file)');
    if (s.env !== undefined) {
      const env = this.str(s.env, [...p, 'env'], ENV_NAME, 'an environment variable name');
      return env ? { env } : undefined;
    }
    const file = this.str(s.file, [...p, 'file']);
    return file ? { file } : undefined;
  }
}
