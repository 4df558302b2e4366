#!/usr/bin/env node
import { main } from './cli/main.js';

main(process.argv.slice(2)).then(
  (code) => { if (code !== undefined) process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`sandgate: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
