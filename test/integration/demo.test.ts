import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// `sandgate demo` as a user runs it: the built CLI (npm run build first), its own namespaces.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'dist/cli.js');
const IP = '/usr/sbin/ip';

/** The scene titles every run shows (later issues add scenes; these stay). */
const HEADINGS = [
  'An allowed API call goes through (HTTPS, not decrypted)',
  'A host the policy does not list is cut off',
  'A listed name aimed at another address reaches the listed server',
  'TLS to a bare IP address is denied',
  'Plain HTTP with a forged Host header gets a 403',
  'UDP and ICMP (ping) go nowhere',
];
const SCENE_IDS = ['allowed-call', 'unlisted-host', 'name-steering', 'ip-literal', 'forged-host', 'udp-icmp'];

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves once stdout matches. */
  waitOut(re: RegExp, ms?: number): Promise<void>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function demo(t: { teardown(fn: () => void): void }, args: string[] = [], node: string[] = [CLI, 'demo']): Run {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
  const child = spawn(process.execPath, [...node, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    for (const w of [...waiters]) w();
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  // A failed assertion must not leave a (--keep) demo running: SIGTERM makes it clean up.
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitOut(re, ms = 20_000) {
      return new Promise((res, rej) => {
        const check = (): void => {
          if (!re.test(out)) return;
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          res();
        };
        const timer = setTimeout(() => rej(new Error(`timed out waiting for ${re} in:\n${out}\n${err}`)), ms);
        waiters.push(check);
        check();
      });
    },
    done,
  };
}

/** Namespaces (and /etc/netns dirs) of the demo process `pid`: `sg-<pid>-*`. */
function namespacesOf(pid: number | undefined): string[] {
  const ls = (d: string): string[] => (existsSync(d) ? readdirSync(d) : []);
  return [...new Set([...ls('/run/netns'), ...ls('/etc/netns')])].filter((n) => n.startsWith(`sg-${pid}-`));
}

/** The demo's temporary directory, as printed on its "trust" line. */
function tmpDirOf(stdout: string): string | undefined {
  return /(\/tmp\/sg-demo-[A-Za-z0-9]+)/.exec(stdout)?.[1];
}

/** Pids of live processes whose command line mentions `needle` (e.g. the demo's temp dir). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) pids.push(Number(p));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

test('demo: every scene behaves, the audit summary is printed, nothing is left behind', async (t) => {
  const run = demo(t);
  const { code } = await run.done;
  const out = run.stdout();
  t.is(code, 0, `${out}\n${run.stderr()}`);
  HEADINGS.forEach((h, i) => t.true(out.includes(`[${i + 1}/`) && out.includes(`] ${h}`), `heading ${i + 1}: ${h}`));
  t.notRegex(out, /^\s*FAIL\b/m);
  t.regex(out, /^\s*PASS\s+refused with a TLS alert: "tlsv1 alert access denied"/m);
  // The summary: header row, then rows with the decisions the scenes provoked.
  t.regex(out, /^Audit log: \d+ decisions/m);
  t.regex(out, /TIME\s+SANDBOX\s+DECISION\s+PROTO\s+HOST \/ DST\s+REASON \/ RULE/);
  t.regex(out, /^\s+\d\d:\d\d:\d\d\s+agent\s+allow\s+tls\s+api\.example\.test\s+rule allow\[0\]/m);
  t.regex(out, /^\s+\d\d:\d\d:\d\d\s+agent\s+deny\s+tls\s+evil\.example\.test\s/m);
  t.regex(out, /^\s+\d\d:\d\d:\d\d\s+agent\s+deny\s+tls\s+10\.77\.3\.2:443\s+no SNI/m);
  t.regex(out, /^\s+\d\d:\d\d:\d\d\s+agent\s+deny\s+http\s+evil\.example\.test\s+403/m);
  t.regex(out, /^Cleanup: stopped \d+ processes/m);
  t.regex(out, /^Result: all \d+ scenes behaved as expected/m);
  // Not a terminal: no colours, and every line fits 80 columns.
  t.notRegex(out, /\x1b\[/);
  const long = out.split('\n').filter((l) => l.length > 80);
  t.deepEqual(long, []);
  t.deepEqual(namespacesOf(run.child.pid), []);
  const dir = tmpDirOf(out);
  t.truthy(dir);
  t.false(existsSync(dir ?? ''), `${dir} was removed`);
  t.deepEqual(processesMentioning(dir ?? '\0'), [], 'no fake server or sandgate of the demo still runs');
});

test('demo --json: one result object with every scene, the audit lines and the cleanup', async (t) => {
  const run = demo(t, ['--json']);
  const { code } = await run.done;
  t.is(code, 0, run.stderr());
  const lines = run.stdout().trim().split('\n');
  t.is(lines.length, 1, 'nothing but the JSON object on stdout');
  const r = JSON.parse(lines[0] ?? '{}') as {
    ok: boolean;
    scenes: { id: string; ok: boolean; checks: { ok: boolean }[] }[];
    audit: Record<string, unknown>[];
    cleanup: { ok: boolean; left: string[]; removed: string[] };
    world: { namespaces: string[] };
  };
  t.true(r.ok);
  for (const id of SCENE_IDS) t.true(r.scenes.find((s) => s.id === id)?.ok, id);
  t.true(r.scenes.every((s) => s.checks.length > 0 && s.checks.every((c) => c.ok)));
  t.truthy(r.audit.find((l) => l.decision === 'deny' && l.host === 'evil.example.test' && l.proto === 'tls'));
  t.truthy(r.audit.find((l) => l.decision === 'allow' && l.dst === '10.77.3.2:443' && l.upstream === '10.77.2.2:443'));
  t.true(r.cleanup.ok);
  t.deepEqual(r.cleanup.left, []);
  t.deepEqual([...r.cleanup.removed].sort(), [...r.world.namespaces].sort());
  t.deepEqual(namespacesOf(run.child.pid), []);
});

test('demo: SIGTERM mid-run removes namespaces, processes and files, and exits 143', async (t) => {
  const run = demo(t);
  await run.waitOut(/\[2\/\d+\]/);
  const dir = tmpDirOf(run.stdout());
  t.true(namespacesOf(run.child.pid).length > 0, 'namespaces exist while it runs');
  run.child.kill('SIGTERM');
  const { code } = await run.done;
  t.is(code, 143, run.stderr());
  t.regex(run.stderr(), /SIGTERM, cleaning up/);
  t.deepEqual(namespacesOf(run.child.pid), []);
  t.truthy(dir);
  t.false(existsSync(dir ?? ''), `${dir} was removed`);
  t.deepEqual(processesMentioning(dir ?? '\0'), []);
});

test('demo --keep: everything stays up (and answers) until SIGTERM, then it cleans up and exits 0', async (t) => {
  const run = demo(t, ['--keep']);
  await run.waitOut(/audit lines appear below/);
  const pid = run.child.pid;
  const nss = namespacesOf(pid);
  t.is(nss.length, 4, nss.join(', '));
  // The printed poke command works: the sandbox still reaches the listed server through sandgate.
  const poke = /^\s+ip netns exec (\S+-agent) curl --cacert (\S+) (https:\/\/api\.example\.test\/)$/m.exec(run.stdout());
  t.truthy(poke, run.stdout());
  const r = await new Promise<string>((res) => {
    const c = spawn(IP, ['netns', 'exec', poke?.[1] ?? '', 'curl', '-sS', '--max-time', '5', '--cacert', poke?.[2] ?? '', `${poke?.[3] ?? ''}poke`]);
    let o = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      o += d;
    });
    c.on('close', () => res(o));
  });
  t.regex(r, /"server":"api".*"path":"\/poke"/);
  // Its audit line is streamed live.
  await run.waitOut(/Kept \(--keep\)[\s\S]*\n {2}allow tls api\.example\.test/);
  run.child.kill('SIGTERM');
  const { code } = await run.done;
  t.is(code, 0, run.stderr());
  t.regex(run.stdout(), /^Cleanup: stopped/m);
  t.deepEqual(namespacesOf(pid), []);
});

test('demo as a non-root user: one sentence on stderr, exit 1, nothing created', async (t) => {
  // Pretend to be uid 1000 in-process: spawning as another user would also need the checkout
  // to be readable by that user, which CI does not promise.
  const main = pathToFileURL(join(ROOT, 'dist/cli/main.js')).href;
  const script = `process.getuid = () => 1000; const { main } = await import(${JSON.stringify(main)}); process.exitCode = await main(['demo']);`;
  const run = demo(t, [], ['--input-type=module', '-e', script]);
  const { code } = await run.done;
  t.is(code, 1);
  t.is(run.stdout(), '');
  t.regex(run.stderr(), /^sandgate demo: must run as root[^\n]*\.\n$/);
  t.deepEqual(namespacesOf(run.child.pid), []);
});
