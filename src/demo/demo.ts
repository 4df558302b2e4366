/**
 * `sandgate demo`: a self-contained demonstration in throwaway network namespaces. It builds a
 * sandbox, fake upstream servers and a host namespace running the real sandgate (dist/cli.js run),
 * plays the scenes in scenes.ts from inside the sandbox, prints what sandgate's audit log said, and
 * removes everything again: on success, on failure, and on SIGINT/SIGTERM.
 *
 * Exit 0 when every scene behaved as expected and cleanup left nothing behind, 1 otherwise
 * (2 for a bad flag). `--keep` leaves everything running until Ctrl-C so it can be poked at;
 * `--json` prints one machine-readable result object instead of the narrative.
 */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { sweepStale, type ExecResult } from './topology.js';
import { tool } from '../util/tools.js';
import type { JsonLine } from './json-lines.js';
import { auditOneLiner, auditTable, fit, isDecision, makeStyle, para, wrap, type Style } from './render.js';
import { SCENES, SERVERS, baseConfig, type CurlResult, type DemoConfig, type Scene, type SceneContext, type SceneSetup } from './scenes.js';
import { createWorld, DemoSetupError, PORTS, type DemoWorld, type Gate, type TeardownReport } from './world.js';

const USAGE = `usage: sandgate demo [--keep] [--json]   (as root)

  Builds throwaway namespaces (a sandbox, two fake servers, sandgate between them),
  plays a few scenes from the sandbox and checks each outcome; exits 0 when all pass.
  --keep   leave everything running until Ctrl-C, with commands to poke at it
  --json   print one JSON result object instead of the narrative
`;
/** A scene that has not finished by then is reported as failed (its clients have shorter limits). */
const SCENE_TIMEOUT_MS = 20_000;
const CURL_TIMEOUT_MS = 5_000;
/** Marks curl's -w trailer so it can be split from the body. */
const CURL_MARK = '@@sandgate-demo ';
/** Exit statuses for "killed by signal N" as shells report them (128 + N). */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export interface CheckRecord {
  ok: boolean;
  text: string;
}
export interface SceneRecord {
  id: string;
  title: string;
  ok: boolean;
  checks: CheckRecord[];
  skipped: string[];
  transcript: string[];
  audit: JsonLine[];
  ms: number;
}

interface Options {
  keep: boolean;
  json: boolean;
  help: boolean;
}

function parseDemoArgs(args: string[]): Options {
  try {
    const { values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { keep: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
    return { keep: values.keep === true, json: values.json === true, help: values.help === true };
  } catch (err) {
    throw new SandgateError(`demo: ${(err as Error).message}\n${USAGE}`.trimEnd(), 'USAGE');
  }
}

/** Human output, silenced in --json mode and once an interrupt has taken over the terminal. */
class Output {
  readonly style: Style;
  readonly width: number;
  #muted = false;
  constructor(readonly json: boolean) {
    const tty = process.stdout.isTTY === true;
    // No colours for pipes and CI logs, nor when NO_COLOR is set (no-color.org).
    this.style = makeStyle(tty && !json && process.env.NO_COLOR === undefined);
    this.width = tty ? Math.max(60, Math.min(process.stdout.columns || 80, 100)) : 80;
  }
  line(text = ''): void {
    if (!this.json && !this.#muted) process.stdout.write(`${text}\n`);
  }
  lines(texts: readonly string[]): void {
    for (const t of texts) this.line(t);
  }
  para(text: string, indent = '  ', paint: (s: string) => string = (s) => s): void {
    for (const l of para(text, this.width, indent)) this.line(paint(l));
  }
  mute(): void {
    this.#muted = true;
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '') ?? ''
  );
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** "sg-1-ab12-{agent,api,evil,h}" */
function nsList(names: readonly string[], prefix: string): string {
  if (names.length === 0) return 'none';
  if (!names.every((n) => n.startsWith(prefix))) return names.join(', ');
  return `${prefix}{${names.map((n) => n.slice(prefix.length)).join(',')}}`;
}

/* ------------------------------------------------------------------------------------------ */
/* Scenes                                                                                     */
/* ------------------------------------------------------------------------------------------ */

function parseCurl(r: ExecResult): CurlResult {
  const at = r.stdout.lastIndexOf(`\n${CURL_MARK}`);
  const body = at >= 0 ? r.stdout.slice(0, at) : r.stdout;
  const m = /^(\d+) (\d+)/.exec(at >= 0 ? r.stdout.slice(at + 1 + CURL_MARK.length) : '');
  let json: JsonLine | undefined;
  try {
    const v: unknown = JSON.parse(body);
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) json = v as JsonLine;
  } catch {
    json = undefined;
  }
  return { ...r, status: Number(m?.[1] ?? 0), verify: Number(m?.[2] ?? -1), body, json };
}

async function runScene(scene: Scene, world: DemoWorld, gate: Gate, config: DemoConfig): Promise<SceneRecord> {
  const started = performance.now();
  const rec: SceneRecord = { id: scene.id, title: scene.title, ok: false, checks: [], skipped: [], transcript: [], audit: [], ms: 0 };
  const auditFrom = gate.audit.lines.length;
  const seenFrom = new Map([...world.servers.values()].map((s) => [s.node, s.log.lines.length]));
  const { topo } = world;
  const server = (node: string) => {
    const s = world.servers.get(node);
    if (!s) throw new Error(`no demo server named ${node}`);
    return s;
  };
  const ctx: SceneContext = {
    sandbox: world.sandbox,
    caFile: world.caFile,
    dir: world.dir,
    config,
    server,
    async curl(args, o = {}) {
      const timeoutMs = o.timeoutMs ?? CURL_TIMEOUT_MS;
      rec.transcript.push(`$ curl ${args.map(shellQuote).join(' ')}`);
      const r = parseCurl(
        await topo.exec(
          world.sandbox.ns,
          tool('curl'),
          [
            '-sS',
            '--max-time',
            String(timeoutMs / 1000),
            '--cacert',
            o.cacert ?? world.caFile,
            '-w',
            `\n${CURL_MARK}%{http_code} %{ssl_verify_result}`,
            ...args,
          ],
          { timeoutMs: timeoutMs + 2000 },
        ),
      );
      if (!o.quiet) {
        rec.transcript.push(r.status > 0 ? `HTTP ${r.status}  ${r.body.trim()}` : firstLine(r.stderr) || `curl exited ${r.code}`);
      }
      return r;
    },
    inSandbox(cmd, args, o) {
      rec.transcript.push(`$ ${o.show}`);
      return topo.exec(world.sandbox.ns, cmd, args, { timeoutMs: o.timeoutMs ?? CURL_TIMEOUT_MS });
    },
    inHost(cmd, args, o = {}) {
      return topo.exec(topo.hostNs, cmd, args, { timeoutMs: o.timeoutMs ?? CURL_TIMEOUT_MS });
    },
    audit(pred, timeoutMs = 2000) {
      return gate.audit.waitFor((l) => isDecision(l) && pred(l), { from: auditFrom, timeoutMs });
    },
    seen(node, kind) {
      return server(node).log.since(seenFrom.get(node) ?? 0, (l) => l[kind] !== undefined);
    },
    waitSeen(node, pred, timeoutMs = 2000) {
      return server(node).log.waitFor(pred, { from: seenFrom.get(node) ?? 0, timeoutMs });
    },
    show(text) {
      rec.transcript.push(text);
    },
    check(ok, pass, fail) {
      rec.checks.push({ ok, text: ok ? pass : (fail ?? `not so: ${pass}`) });
      return ok;
    },
    skip(why) {
      rec.skipped.push(why);
    },
    sleep(ms) {
      return new Promise((r) => setTimeout(r, ms));
    },
  };
  try {
    await withTimeout(scene.run(ctx), SCENE_TIMEOUT_MS, `scene ${scene.id}`);
  } catch (err) {
    rec.checks.push({ ok: false, text: `the scene could not run: ${(err as Error).message}` });
  }
  rec.audit = gate.audit.since(auditFrom, isDecision);
  rec.ok = rec.checks.length > 0 && rec.checks.every((c) => c.ok);
  rec.ms = Math.round(performance.now() - started);
  return rec;
}

/* ------------------------------------------------------------------------------------------ */
/* Narrative                                                                                  */
/* ------------------------------------------------------------------------------------------ */

function policyText(config: DemoConfig): string {
  const rules = Object.values(config.policies)
    .flatMap((p) => p.allow)
    .map((r) => {
      const ports = Array.isArray(r.ports) ? r.ports.join(', ') : '443';
      const extra = ['inject', 'methods', 'paths', 'protocol']
        .filter((k) => r[k] !== undefined)
        .map((k) => `${k} ${Array.isArray(r[k]) ? (r[k] as unknown[]).join(',') : String(r[k])}`);
      return [`${String(r.host)} on ${ports}`, ...extra].join(', ');
    });
  return `allow ${rules.join('; ')}; everything else is denied`;
}

function printIntro(out: Output): void {
  out.line(out.style.bold('sandgate demo'));
  out.para(
    "Throwaway network namespaces: an agent's sandbox, two servers outside it, and sandgate in between. The agent tries a few things; each scene checks what happened, and sandgate's audit log is summarised at the end.",
  );
  out.line();
}

function printSetup(out: Output, world: DemoWorld, gate: Gate, config: DemoConfig, ms: number): void {
  const s = out.style;
  out.line(s.bold(`Setup`) + s.dim(` (${seconds(ms)})`));
  const rows: [string, string][] = [
    ['sandbox', `${world.sandbox.name.padEnd(18)} ${world.sandbox.ip.padEnd(10)}  namespace ${world.sandbox.ns}`],
    ...[...world.servers.values()].map((v): [string, string] => [
      'server',
      `${v.host.padEnd(18)} ${v.ip.padEnd(10)}  ${v.listed ? 'listed in the policy' : 'not listed'}`,
    ]),
    ['sandgate', `pid ${gate.proc.pid ?? '?'} in namespace ${world.topo.hostNs}, its firewall there`],
    ['policy', policyText(config)],
    ['names', "the sandbox's /etc/hosts knows both servers, so every attempt reaches the network without DNS"],
    ['trust', `the sandbox trusts the demo public CA (curl --cacert ${world.caFile}, left out below)`],
  ];
  for (const [k, v] of rows) {
    // Keep the padding of rows that fit; wrap (collapsing spaces) only those that do not.
    const lines = 12 + v.length <= out.width ? [v] : wrap(v, out.width - 12);
    lines.forEach((l, i) => out.line(`  ${(i === 0 ? k : '').padEnd(10)}${l}`));
  }
  out.line();
}

function printScene(out: Output, rec: SceneRecord, scene: Scene, n: number, total: number): void {
  const s = out.style;
  out.line(s.bold(`[${n}/${total}] ${rec.title}`));
  out.para(scene.about, '  ', s.dim);
  for (const t of rec.transcript) {
    // Commands wrap; output shows at most three lines.
    const lines = wrap(t, out.width - 6);
    const shown = t.startsWith('$ ') ? lines : lines.slice(0, 3);
    if (!t.startsWith('$ ') && lines.length > 3) shown[2] = fit(`${shown[2] ?? ''} …`, out.width - 6);
    shown.forEach((l, i) => out.line(`    ${i === 0 ? '' : '  '}${l}`));
  }
  for (const line of rec.audit) out.lines(auditOneLiner(line, out.width, s, '  audit  '));
  if (rec.audit.length === 0) out.line(`  audit  ${s.dim("(none: nothing reached sandgate's listeners)")}`);
  for (const c of rec.checks) {
    const tag = c.ok ? s.green('PASS') : s.red('FAIL');
    para(c.text, out.width, '        ').forEach((l, i) => out.line(i === 0 ? `  ${tag}  ${l.trimStart()}` : l));
  }
  for (const why of rec.skipped) out.line(`  ${s.yellow('SKIP')}  ${why}`);
  out.line();
}

function printSummary(out: Output, decisions: readonly JsonLine[]): void {
  out.line(out.style.bold(`Audit log`) + `: ${decisions.length} decisions as sandgate wrote them (stdout, JSON; times UTC)`);
  out.lines(auditTable(decisions, out.width, out.style));
  out.line();
}

function printCleanup(out: Output, report: TeardownReport, world: DemoWorld): void {
  const prefix = world.topo.prefix;
  if (report.ok) {
    out.para(
      `Cleanup: stopped ${report.processes} processes (sandgate and the fake servers); removed namespaces ${nsList(report.removed, prefix)}, with sandgate's firewall in them, and ${world.dir}.`,
      '',
      (l) => l,
    );
  } else {
    out.para(`Cleanup FAILED: ${report.error ?? ''} still present: ${nsList(report.left, prefix)} (remove with: ip netns del NAME).`, '', out.style.red);
  }
}

function printKeep(out: Output, world: DemoWorld, gate: Gate): void {
  const s = out.style;
  const api = world.servers.get('api');
  const evil = world.servers.get('evil');
  const sbx = `ip netns exec ${world.sandbox.ns}`;
  out.line(s.bold('Kept (--keep)') + `: everything stays up until Ctrl-C or SIGTERM to pid ${process.pid}.`);
  out.line('  Poke at it as root (commands are left unwrapped for copying):');
  if (api) out.line(`    ${sbx} curl --cacert ${world.caFile} https://${api.host}/`);
  if (evil) out.line(`    ${sbx} curl --cacert ${world.caFile} https://${evil.host}/`);
  if (evil) out.line(`    ${sbx} curl -H 'Host: ${evil.host}' http://${api?.host ?? evil.ip}/`);
  out.line(`    ip netns exec ${world.topo.hostNs} nft list ruleset`);
  out.line(`    cat ${world.configFile}`);
  out.line(`  sandgate is pid ${gate.proc.pid ?? '?'}; its new audit lines appear below as it writes them.`);
  out.line();
}

/* ------------------------------------------------------------------------------------------ */
/* Main                                                                                       */
/* ------------------------------------------------------------------------------------------ */

export async function runDemo(args: string[]): Promise<number> {
  const opts = parseDemoArgs(args);
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('sandgate demo: must run as root, because it creates network namespaces and firewall rules (try: sudo node dist/cli.js demo).\n');
    return 1;
  }
  const out = new Output(opts.json);
  const t0 = performance.now();
  let world: DemoWorld | undefined;
  let building: Promise<DemoWorld> | undefined;
  let keeping: (() => void) | undefined;
  let interrupted = false;

  // SIGINT/SIGTERM: remove everything, then exit as killed by that signal. While --keep waits, a
  // signal is the normal way to end, so it just ends the wait. A second signal exits at once; the
  // topology's exit hook then removes the namespaces synchronously.
  const onSignal = (sig: NodeJS.Signals): void => {
    if (keeping) {
      keeping();
      keeping = undefined;
      return;
    }
    if (interrupted) process.exit(SIGNAL_EXIT[sig] ?? 1);
    interrupted = true;
    out.mute();
    process.stderr.write(`sandgate demo: ${sig}, cleaning up\n`);
    // Mid-setup, wait for the world to exist (or to have failed and removed itself) first.
    const done = (world ? Promise.resolve(world) : (building ?? Promise.resolve(undefined))).catch(() => undefined).then((w) => w?.teardown());
    void done.then(
      (r) => {
        if (r && !r.ok) process.stderr.write(`sandgate demo: cleanup left ${r.left.join(', ')} behind (${r.error ?? 'unknown error'})\n`);
        process.exit(SIGNAL_EXIT[sig] ?? 1);
      },
      () => process.exit(SIGNAL_EXIT[sig] ?? 1),
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A reader that went away (`demo | head`, a killed parent) must not turn into an uncaught EPIPE
  // that ends the process half-way through its cleanup: stop writing instead.
  const onStdoutError = (): void => out.mute();
  /** One sentence on stderr, and in --json mode a result object that says the same. */
  const fail = (message: string): void => {
    const sentence = `${message.replace(/[.\s]+$/, '')}.`;
    if (opts.json) process.stdout.write(`${JSON.stringify({ ok: false, error: sentence })}\n`);
    process.stderr.write(`sandgate demo: ${sentence}\n`);
  };
  process.stdout.on('error', onStdoutError);

  try {
    printIntro(out);
    if (!existsSync(tool('curl'))) throw new DemoSetupError('curl is not installed (Debian: apt-get install curl)');
    const swept = await sweepStale();
    if (swept.length > 0) out.para(`Removed ${swept.length} namespaces left behind by runs that died: ${swept.join(', ')}.`);

    let config: DemoConfig;
    let gate: Gate;
    try {
      building = createWorld(SERVERS);
      world = await building;
      const w = world;
      const setup: SceneSetup = {
        config: baseConfig(w),
        env: {},
        server(node) {
          const s = w.servers.get(node);
          if (!s) throw new Error(`no demo server named ${node}`);
          return s;
        },
      };
      for (const scene of SCENES) scene.setup?.(setup);
      config = setup.config;
      gate = await w.startGate(config, setup.env);
    } catch (err) {
      if (!interrupted) fail(`setup failed: ${(err as Error).message}`);
      if (world) await world.teardown();
      return 1;
    }
    printSetup(out, world, gate, config, performance.now() - t0);

    const records: SceneRecord[] = [];
    for (const [i, scene] of SCENES.entries()) {
      if (interrupted) break;
      const rec = await runScene(scene, world, gate, config);
      records.push(rec);
      printScene(out, rec, scene, i + 1, SCENES.length);
    }
    if (gate.proc.exitCode !== null || gate.proc.signalCode !== null) {
      out.para(
        `sandgate exited during the demo (${gate.proc.exitCode ?? gate.proc.signalCode}): ${firstLine(gate.stderr()) || 'no message'}`,
        '',
        out.style.red,
      );
    }
    const decisions = gate.audit.lines.filter(isDecision);
    printSummary(out, decisions);
    const scenesOk = records.length === SCENES.length && records.every((r) => r.ok);
    const failed = records.filter((r) => !r.ok).map((r) => r.id);

    const took = seconds(performance.now() - t0);
    if (opts.keep) {
      if (opts.json) process.stdout.write(`${JSON.stringify(result(world, records, decisions, undefined, t0, scenesOk))}\n`);
      printKeep(out, world, gate);
      const stop = gate.audit.onLine((l) => {
        if (isDecision(l)) out.lines(auditOneLiner(l, out.width, out.style, '  '));
      });
      const onExit = (): void => {
        if (!keeping) return; // a signal already ended the wait (Ctrl-C reaches sandgate too)
        out.line('sandgate exited; cleaning up.');
        keeping();
      };
      await new Promise<void>((resolve) => {
        keeping = resolve;
        gate.proc.once('exit', onExit);
      });
      keeping = undefined;
      gate.proc.off('exit', onExit);
      stop();
      out.line();
    }
    const report = await world.teardown();
    printCleanup(out, report, world);
    const ok = scenesOk && report.ok;
    if (opts.json && !opts.keep) process.stdout.write(`${JSON.stringify(result(world, records, decisions, report, t0, ok))}\n`);
    if (scenesOk) out.line(out.style.green(`Result: all ${SCENES.length} scenes behaved as expected`) + ` (${took}).`);
    else
      out.para(
        `Result: ${failed.length || SCENES.length - records.length} of ${SCENES.length} scenes did not behave as expected${failed.length ? `: ${failed.join(', ')}` : ''} (${took}).`,
        '',
        out.style.red,
      );
    return ok ? 0 : 1;
  } catch (err) {
    // Anything unexpected: say it in one sentence, still clean up.
    if (!interrupted) fail((err as Error).message);
    if (world) await world.teardown();
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onStdoutError);
  }
}

function result(world: DemoWorld, scenes: SceneRecord[], audit: JsonLine[], cleanup: TeardownReport | undefined, t0: number, ok: boolean): unknown {
  return {
    ok,
    ms: Math.round(performance.now() - t0),
    world: {
      namespaces: world.namespaces,
      sandbox: world.sandbox,
      servers: [...world.servers.values()].map((s) => ({ node: s.node, host: s.host, ip: s.ip, listed: s.listed, ports: PORTS })),
      ...(cleanup ? {} : { configFile: world.configFile, caFile: world.caFile }),
    },
    scenes,
    audit,
    cleanup: cleanup ?? { kept: true },
  };
}
