/** Entry point of a worker process (`workers: N` > 1), forked by src/cluster/primary.ts. */
import { runWorker } from './worker.js';

runWorker().catch((err: Error) => {
  process.stderr.write(`sandgate worker: ${err.message}\n`);
  process.exit(1);
});
