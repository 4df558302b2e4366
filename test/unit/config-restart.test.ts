import test from 'ava';
import { parseConfig } from '../../src/config/load.js';
import { DEFAULTS } from '../../src/config/defaults.js';
import { RESTART_KEYS, restartNeeded } from '../../src/config/restart.js';
import type { Config } from '../../src/config/types.js';

const BASE = `sandboxes:\n  - { name: a, interface: "sbx-*", policy: p }\npolicies:\n  p:\n    allow:\n      - host: api.example.test\n`;
const parse = (extra = ''): Config => parseConfig(BASE + extra, 'test.yaml');

test('a minimal config gets every default from the one defaults module', (t) => {
  const c = parse();
  t.deepEqual(c.listen, DEFAULTS.listen);
  t.deepEqual(c.firewall, DEFAULTS.firewall);
  t.deepEqual(c.dns, DEFAULTS.dns);
  t.deepEqual(c.packets, DEFAULTS.packets);
  t.is(c.tls.caDir, DEFAULTS.tls.caDir);
  t.is(c.log.level, DEFAULTS.log.level);
  t.is(c.upstream.connectTimeoutMs, DEFAULTS.upstream.connectTimeoutMs);
  t.is(c.workers, DEFAULTS.workers);
});

test('a reload that changes a restart key is refused, naming the key and what to do', (t) => {
  const prev = parse();
  t.is(restartNeeded(prev, parse()), undefined);
  t.is(restartNeeded(prev, parse('listen: { port: 15002 }\n')), 'listen.port cannot change on reload (restart sandgate)');
  t.is(
    restartNeeded(prev, parse('firewall: { table: other }\n')),
    'firewall.table cannot change on reload (run "sandgate firewall down" with the old config, then restart)',
  );
  t.is(restartNeeded(prev, parse('tls: { caDir: /tmp/x }\n')), 'tls.caDir cannot change on reload (restart sandgate)');
  t.is(restartNeeded(prev, parse('log: { file: /tmp/x.log }\n')), 'log.file cannot change on reload (restart sandgate)');
  t.is(restartNeeded(prev, parse('workers: 2\n')), 'workers cannot change on reload (restart sandgate)');
  // Policies, credentials, DNS limits and log level are what a reload is for.
  t.is(restartNeeded(prev, parse('dns: { rateLimit: { qps: 5 } }\nlog: { level: debug }\n')), undefined);
  t.is(restartNeeded(prev, parse('metrics: { listen: "127.0.0.1:9464" }\n')), 'metrics cannot change on reload (restart sandgate)');
  t.is(restartNeeded(prev, parse('stateDir: /tmp/state\n')), 'stateDir cannot change on reload (restart sandgate)');
  t.is(RESTART_KEYS.length, 17);
});
