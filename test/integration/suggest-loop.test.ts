/**
 * The report -> suggest -> enforce loop against a real sandgate in namespaces: a workload (curl
 * and python3 in the sandbox, to several fake hosts: intercepted with a credential, passthrough
 * TLS, plain HTTP) runs under a report-mode policy; `sandgate suggest` drafts a policy from the
 * recorded audit log; that YAML, exactly as printed, becomes the config in enforce mode; the same
 * workload then runs with nothing denied, and a host it never used is denied.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { baseConfig, CLI, createWorld, NAMES, startGate, type Gate, type Line, type World } from '../helpers/gate.js';

const SECRET = 'sk-real-secret-for-suggest-0123456789';
let w: World;
let g: Gate;

test.before(async () => {
  w = await createWorld();
  appendFileSync(`/etc/netns/${w.sandbox}/hosts`, NAMES.map((n) => `${w.a}\t${n}\n`).join(''));
});
test.after.always(async () => {
  g?.proc.kill('SIGKILL');
  await w?.cleanup();
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Trusts both the test PKI (passthrough hosts) and sandgate's CA (intercepted ones). */
const bundle = (): string => join(w.dir, 'bundle.pem');

const UUID = '9b2f7e2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b';

/** The workload: [what, run] pairs; each resolves to curl's http code (or python's status) and the marker path. */
function workload(tag: string): (() => Promise<{ what: string; status: string; err: string }>)[] {
  const curl = (what: string, args: string[]) => async () => {
    const r = await w.topo.exec(w.sandbox, 'curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '8', '--cacert', bundle(), ...args], {
      timeoutMs: 10_000,
    });
    return { what, status: r.stdout.trim(), err: r.stderr };
  };
  return [
    curl('GET api', [`https://api.example.test/v1/items/${tag}1`]),
    curl('GET api 2', [`https://api.example.test/v1/items/${tag}2`]),
    curl('POST api', ['-X', 'POST', '-d', '{}', `https://api.example.test/v1/items/${tag}3/parts`]),
    curl('GET api v2', [`https://api.example.test/v2/users/${UUID}`]),
    curl('passthrough evil', ['https://evil.example.test/pass']),
    curl('passthrough wild', ['https://x.wild.example.test/pass']),
    curl('plain', ['http://plain.example.test/simple']),
    async () => {
      const r = await w.topo.exec(
        w.sandbox,
        '/usr/bin/python3',
        ['-c', 'import urllib.request, sys\nr = urllib.request.urlopen("https://deep.x.wild.example.test/py", timeout=8)\nsys.stdout.write(str(r.status))'],
        { env: { PATH: '/usr/bin:/bin', SSL_CERT_FILE: bundle() }, timeoutMs: 10_000 },
      );
      return { what: 'python deep', status: r.stdout.trim(), err: r.stderr };
    },
  ];
}

const decided = (l: Line): boolean => (l.event === 'conn' || l.event === 'http') && typeof l.decision === 'string';

test.serial('report mode, suggest, enforce: the same workload runs with nothing denied; a host it never used is denied', async (t) => {
  const report = {
    ...baseConfig(w, {
      mode: 'report',
      // The credential's host is intercepted (a rule with inject); its methods/paths are narrower
      // than the workload needs, so report mode logs would-deny for some requests.
      // Port 80 is listed (for a name the workload never uses): on a port no rule lists, report
      // mode relays the bytes without reading a name (docs/policy.md, "Report mode").
      allow: [
        { host: 'api.example.test', inject: 'llm', methods: ['GET'], paths: ['/v1/items/*'] },
        { host: 'ports.example.test', ports: [80] },
      ],
      upstream: { caFile: w.pki.caFile },
    }),
    credentials: { llm: { secret: { env: 'SG_TEST_SUGGEST' } } },
  };
  g = await startGate(w.topo, w.dir, report, 'sandgate.yaml', { env: { SG_TEST_SUGGEST: SECRET } });
  writeFileSync(bundle(), readFileSync(w.pki.caFile, 'utf8') + readFileSync(join(w.dir, 'ca', 'ca.pem'), 'utf8'));

  for (const step of workload('1')) {
    const r = await step();
    t.is(r.status, '200', `report mode, ${r.what}: ${r.err}`);
  }
  // Every request has its line (the last, python's, is a passthrough conn line).
  await g.log.waitFor((l) => l.event === 'conn' && l.host === 'deep.x.wild.example.test', 5000, 'the last conn line');
  await g.log.waitFor((l) => l.event === 'http' && l.path === '/simple', 5000, 'the plain http line');
  const reportLines = g.log.lines.filter(decided);
  t.true(reportLines.some((l) => l.decision === 'would-deny'));
  t.false(
    reportLines.some((l) => l.decision === 'deny'),
    JSON.stringify(reportLines.filter((l) => l.decision === 'deny')),
  );

  // The audit log as an operator has it (sandgate's stdout here), then suggest on it.
  const logFile = join(w.dir, 'audit.log');
  writeFileSync(logFile, `${g.log.raw.join('\n')}\n`);
  const yaml = await cli(['suggest', logFile, '--wildcard-min', '0']);
  t.is(yaml.code, 0, yaml.stderr);
  t.log(yaml.stdout);
  t.regex(yaml.stdout, /^ {6}- host: api\.example\.test +# 4 connections, 4 requests \(allow 6, would-deny 2\)$/m);
  t.regex(yaml.stdout, /^ {8}inject: llm +# 4 requests injected$/m);
  t.regex(yaml.stdout, /^ {8}methods: \[GET, POST\] +# GET: 3, POST: 1$/m);
  t.regex(yaml.stdout, /^ {10}- "\/v1\/items\/\*" +# 2$/m);
  t.regex(yaml.stdout, /^ {10}- "\/v1\/items\/\*\/parts" +# 1$/m);
  t.regex(yaml.stdout, /^ {10}- "\/v2\/users\/\*" +# 1$/m);
  t.regex(yaml.stdout, /^ {6}- host: plain\.example\.test +# 1 request/m);
  t.regex(yaml.stdout, /^ {8}ports: \[80\]/m);
  const diff = await cli(['suggest', logFile, '--wildcard-min', '0', '--diff', g.configPath]);
  t.is(diff.code, 0, diff.stderr);
  t.log(diff.stdout);
  t.regex(
    diff.stdout,
    /^~ api\.example\.test: methods \[GET\] -> \[GET, POST\]; paths \[\/v1\/items\/\*\] -> \[\/v1\/items\/\*, \/v1\/items\/\*\/parts, \/v2\/users\/\*\]/m,
  );
  t.regex(diff.stdout, /^\+ evil\.example\.test ports \[443\]/m);
  t.regex(diff.stdout, /^- ports\.example\.test ports \[80\] +# no line in the log used it$/m);

  // The draft, as printed (comments and all), becomes the config's policies, in enforce mode.
  const { policies: _old, ...rest } = report as Record<string, unknown>;
  const text = `${stringify(rest)}${yaml.stdout}`;
  writeFileSync(g.configPath, text);
  const before = g.log.lines.length;
  g.proc.kill('SIGHUP');
  const reloaded = await g.log.waitFor((l) => l.event === 'config' && (l.action === 'reloaded' || l.action === 'rejected'), 5000, 'the reload');
  t.is(reloaded.action, 'reloaded', JSON.stringify(reloaded));

  for (const step of workload('2')) {
    const r = await step();
    t.is(r.status, '200', `enforce mode, ${r.what}: ${r.err}`);
  }
  await g.log.waitFor((l) => l.event === 'conn' && l.host === 'deep.x.wild.example.test' && g.log.lines.indexOf(l) > before, 5000, 'the last conn line');
  const enforced = g.log.lines.slice(before).filter(decided);
  t.true(enforced.length >= 8);
  t.deepEqual(
    enforced.filter((l) => l.decision !== 'allow'),
    [],
  );
  t.true(enforced.filter((l) => l.event === 'http' && l.host === 'api.example.test').every((l) => l.credential === 'llm'));

  // The drafted policy is what the workload used, no more: a name it never reached is denied.
  const other = await w.topo.exec(w.sandbox, 'curl', ['-sS', '-o', '/dev/null', '--max-time', '5', '--cacert', bundle(), 'https://wild.example.test/'], {
    timeoutMs: 8000,
  });
  t.not(other.code, 0);
  await g.log.waitFor((l) => l.event === 'conn' && l.host === 'wild.example.test' && l.decision === 'deny', 5000, 'the deny line');
});
