#!/usr/bin/env node
import { main } from './cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    if (code === undefined) return;
    process.exitCode = code;
    // A `run` that fails part-way through startup (e.g. listen.dnsPort in use) may already hold
    // an open listener, which would keep a failed process alive doing nothing. stderr is a pipe
    // or file here, written synchronously on Linux, so exiting loses no message.
    if (code !== 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`sandgate: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
