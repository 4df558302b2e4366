/**
 * The audit log as the `audit` and `suggest` commands read it: a FILE or stdin, line by line
 * (src/audit/follow.ts LineSplitter), with the same errors for both.
 */
import { closeSync, createReadStream, openSync } from 'node:fs';
import { SandgateError } from '../errors.js';
import { LineSplitter } from '../audit/follow.js';

/** Why `file` cannot be read, checked before any output (bad input, exit 2); undefined if it can. */
export function unreadable(file: string): string | undefined {
  try {
    closeSync(openSync(file, 'r'));
    return undefined;
  } catch (err) {
    return `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
}

/** Every line of `file` (stdin when undefined) to `onLine`; resolves at the end of the input. */
export function eachLine(cmd: string, file: string | undefined, onLine: (line: string) => void): Promise<void> {
  const input = file !== undefined ? createReadStream(file) : process.stdin;
  const splitter = new LineSplitter();
  return new Promise<void>((resolve, reject) => {
    input.on('data', (chunk: Buffer | string) => {
      for (const l of splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) onLine(l);
    });
    input.once('end', () => {
      for (const l of splitter.end()) onLine(l);
      resolve();
    });
    input.once('error', (err: NodeJS.ErrnoException) =>
      reject(new SandgateError(`${cmd}: cannot read ${file ?? 'stdin'} (${err.code ?? err.message})`, 'USAGE')),
    );
  });
}
