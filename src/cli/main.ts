import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SandgateError, exitCodeFor } from '../errors.js';
import { DEFAULT_CA_DIR } from '../config/defaults.js';
import { loadConfigFile, ConfigError, formatLocated } from '../config/load.js';
import { planFromConfig } from '../firewall/from-config.js';
import { firewallDown, firewallShow, firewallUp, resolveBackend } from '../firewall/backend.js';
import { renderRuleset } from '../firewall/render-nft.js';
import { EMPTY_STATE, chainPrefix, iptablesSpec, renderRestoreUp } from '../firewall/render-iptables.js';
import { renderIpsetUp } from '../firewall/render-ipset.js';
import { runDaemon } from '../daemon.js';
import type { Config } from '../config/types.js';
import { pathProblems } from '../config/paths.js';
import { loadCredentialSources } from '../creds/secrets.js';
import { createUpstreamTls } from '../upstream/tls.js';

const USAGE = `usage: sandgate <command> [options]

  run -c FILE                    run the gate in the foreground (firewall, listeners, audit)
  check -c FILE [--offline]      validate FILE and what run needs (writable paths, upstream.caFile,
                                 secret sources; --offline skips secrets); exit 2 with one line each
  firewall up|down|show -c FILE  install, remove or print the firewall rules for FILE's sandboxes
                                 (up/down refuse while a sandgate serves FILE; --force overrides)
  firewall render -c FILE        print the ruleset FILE implies without touching the system
  ca init [--dir DIR]            create the interception CA if absent
  ca cert [--dir DIR]            print the CA certificate (PEM)
  reload [-c FILE | --socket PATH]
                                 make the running daemon re-read its config (as SIGHUP) and print
                                 what it loaded, or why it refused (exit 2; the old config stays)
  wait-ready [-c FILE | --socket PATH] [--timeout S]
                                 wait until the daemon serves (its control socket answers); exit 1
                                 after S seconds (default 30)
  install-service [-c FILE] [--unit-dir DIR] [--print]
                                 write the systemd unit (DIR default /etc/systemd/system) running
                                 this sandgate with FILE (default /etc/sandgate/sandgate.yaml)
  --version                      print sandgate's version
  sandbox add|set|rm|ls ...      register, change, remove, list sandboxes of the running daemon
                                 (sandgate sandbox --help)
  approvals list|watch|allow ID [--for once|sandbox|policy]|deny ID|added
                                 pending unlisted: ask decisions of the running daemon
                                 (sandgate approvals --help)
  health [--socket PATH | -c FILE] [--json]
                                 exit 0 when the running daemon's firewall is in place and its
                                 listeners accept, 1 otherwise
  audit [FILE] [filters] [--json | --summary] [-f]
                                 query the audit log (FILE or stdin): --sandbox, --user, --host GLOB,
                                 --decision, --event, --since/--until (10m or ISO time); -f follows
                                 FILE across rotation (sandgate audit --help)
  suggest [FILE] [--sandbox NAME] [--policy NAME] [--json] [--diff CONFIG]
                                 draft a policy from what a report-mode run's audit log shows:
                                 hosts, ports, methods, path globs, credentials, with counts
                                 (sandgate suggest --help)
  top [--socket PATH | -c FILE]  live view of the running daemon's decisions, per-sandbox rates and
                                 pending approvals (keys: / filter, p pause, d denials, q quit)
  demo                           a self-contained demonstration in throwaway namespaces
`;

function usage(message: string): never {
  throw new SandgateError(`${message}\n${USAGE}`, 'USAGE');
}

function configFlag(args: string[], command: string): string {
  return configAndFlags(args, command, []).config;
}

/** -c FILE plus the boolean flags `extra` names. */
function configAndFlags(args: string[], command: string, booleans: readonly string[]): { config: string; flags: ReadonlySet<string> } {
  let values: Record<string, string | boolean | undefined>;
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { config: { type: 'string', short: 'c' } };
  for (const b of booleans) options[b] = { type: 'boolean' };
  try {
    ({ values } = parseArgs({ args, options, allowPositionals: false, strict: true }));
  } catch (err) {
    usage(`${command}: ${(err as Error).message}`);
  }
  if (typeof values.config !== 'string' || values.config === '') usage(`${command}: missing -c FILE (the config file)`);
  return { config: values.config, flags: new Set(booleans.filter((b) => values[b] === true)) };
}

/** Returns the exit code (undefined for a long-running command that keeps the process alive). */
export async function main(argv: string[]): Promise<number | undefined> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'run':
        return await cmdRun(configFlag(rest, 'run'));
      case 'check':
        return cmdCheck(rest);
      case 'firewall':
        return await cmdFirewall(rest);
      case 'ca':
        return await cmdCa(rest);
      case 'reload':
        return await cmdReload(rest);
      case 'wait-ready':
        return await cmdWaitReady(rest);
      case 'install-service':
        return await cmdInstallService(rest);
      case '--version':
      case 'version':
        process.stdout.write(`sandgate ${packageVersion()}\n`);
        return 0;
      case 'sandbox': {
        const { cmdSandbox } = await import('./sandbox.js');
        return await cmdSandbox(rest);
      }
      case 'approvals': {
        const { cmdApprovals } = await import('./approvals.js');
        return await cmdApprovals(rest);
      }
      case 'health': {
        const { cmdHealth } = await import('./health.js');
        return await cmdHealth(rest);
      }
      case 'audit': {
        const { cmdAudit } = await import('./audit.js');
        return await cmdAudit(rest);
      }
      case 'suggest': {
        const { cmdSuggest } = await import('./suggest.js');
        return await cmdSuggest(rest);
      }
      case 'top': {
        const { cmdTop } = await import('./top.js');
        return await cmdTop(rest);
      }
      case 'demo': {
        const { runDemo } = await import('../demo/demo.js');
        return await runDemo(rest);
      }
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        return usage(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(formatLocated(p) + '\n');
    } else {
      process.stderr.write(`sandgate: ${(err as Error).message}\n`);
    }
    return exitCodeFor(err);
  }
}

/**
 * Everything `run` needs before it touches the system: the config, the paths it writes, the
 * upstream CA file and (unless --offline, for checking configs away from the host) every
 * credential's secret source. One line per problem, exit 2.
 */
function cmdCheck(args: string[]): number {
  const { config: file, flags } = configAndFlags(args, 'check', ['offline']);
  const config = loadConfigFile(file);
  const problems = pathProblems(config).map((p) => `${file}: ${p.key}: ${p.message}`);
  try {
    createUpstreamTls(config.upstream);
  } catch (err) {
    problems.push(`${file}: ${(err as Error).message}`);
  }
  if (!flags.has('offline')) {
    try {
      loadCredentialSources(config);
    } catch (err) {
      problems.push(`${file}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`${p}\n`);
    return 2;
  }
  process.stdout.write(`${file}: ok (${config.sandboxes.length} sandboxes, ${Object.keys(config.policies).length} policies)\n`);
  return 0;
}

async function cmdFirewall(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  if (!action || !['up', 'down', 'show', 'render'].includes(action)) usage('firewall: expected up, down, show or render');
  const flags = configAndFlags(rest, `firewall ${action}`, action === 'up' || action === 'down' ? ['force'] : []);
  const config = loadConfigFile(flags.config);
  const plan = planFromConfig(config);
  // up would empty a live daemon's sets (registered sandboxes) and down would open its
  // sandboxes' way out of nothing: both wait until it is stopped, unless --force (recovery).
  if ((action === 'up' || action === 'down') && !flags.flags.has('force')) await refuseWhileServed(config, action);
  // render touches nothing, so `auto` is not probed there: it prints nft unless iptables is configured.
  const backend = action === 'render' ? (config.firewall.backend === 'iptables' ? 'iptables' : 'nft') : await resolveBackend(config.firewall.backend);
  const what = backend === 'nft' ? `table inet ${plan.table}` : `iptables chains ${chainPrefix(plan)}-*`;
  switch (action) {
    case 'up': {
      const { warnings } = await firewallUp(plan, backend);
      for (const w of warnings) process.stderr.write(`sandgate: warning: ${w}\n`);
      process.stdout.write(`firewall installed: ${what}, ${plan.sandboxes.length} sandboxes\n`);
      break;
    }
    case 'down':
      await firewallDown(plan, backend);
      process.stdout.write(`firewall removed: ${what}, ip rule and route table ${plan.routeTable}\n`);
      break;
    case 'show':
      process.stdout.write(await firewallShow(plan, backend));
      break;
    default: {
      if (backend === 'nft') {
        process.stdout.write(renderRuleset(plan));
        break;
      }
      const spec = iptablesSpec(plan);
      const sets = renderIpsetUp(chainPrefix(plan), plan);
      if (sets !== '') process.stdout.write(`# ipset -exist restore\n${sets}`);
      process.stdout.write(
        `# iptables-restore --noflush\n${renderRestoreUp(spec.v4, EMPTY_STATE)}# ip6tables-restore --noflush\n${renderRestoreUp(spec.v6, EMPTY_STATE)}`,
      );
    }
  }
  return 0;
}

async function refuseWhileServed(config: Config, action: string): Promise<void> {
  const { socketAnswers, listeningPorts } = await import('../preflight.js');
  const control = config.listen.control;
  if (control !== false && (await socketAnswers(control))) {
    throw new SandgateError(
      `firewall ${action}: a sandgate answers on the control socket ${control}; stop it first, or give --force (nothing was changed)`,
      'RUNTIME',
    );
  }
  if (listeningPorts().has(config.listen.port)) {
    throw new SandgateError(
      `firewall ${action}: something listens on listen.port ${config.listen.port} (a running sandgate?); stop it first, or give --force (nothing was changed)`,
      'RUNTIME',
    );
  }
}

/** The version in the package.json shipped beside dist/ (and src/ in development). */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

/** `sandgate reload`: POST /reload on the control socket; exit 0 reloaded, 2 refused, 1 unreachable/failed. */
async function cmdReload(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { socket: { type: 'string' }, config: { type: 'string', short: 'c' } }, allowPositionals: false, strict: true }));
  } catch (err) {
    usage(`reload: ${(err as Error).message}`);
  }
  const { socketPath, expectOk } = await import('./sandbox.js');
  const { controlRequest } = await import('../control/client.js');
  const path = socketPath('reload', values, 'reload');
  let out;
  try {
    out = expectOk(await controlRequest(path, 'POST', '/reload'));
  } catch (err) {
    if (err instanceof SandgateError && err.code === 'REJECTED')
      throw new SandgateError(`reload refused, the running config stays: ${err.message}`, 'REJECTED');
    throw err;
  }
  const r = out.reloaded as { file: string; sandboxes: number; policies: number; registered: number };
  process.stdout.write(`reloaded ${r.file}: ${r.sandboxes} sandboxes, ${r.policies} policies, ${r.registered} registered\n`);
  return 0;
}

/**
 * `sandgate wait-ready`: polls the control socket until the daemon answers GET /sandboxes (it
 * binds the socket only once firewall and listeners are up). The unit's ExecStartPost.
 */
async function cmdWaitReady(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: { socket: { type: 'string' }, config: { type: 'string', short: 'c' }, timeout: { type: 'string' } },
      allowPositionals: false,
      strict: true,
    }));
  } catch (err) {
    usage(`wait-ready: ${(err as Error).message}`);
  }
  const seconds = values.timeout === undefined ? 30 : Number(values.timeout);
  if (!Number.isFinite(seconds) || seconds <= 0) usage(`wait-ready: --timeout needs a number of seconds, got ${JSON.stringify(values.timeout)}`);
  const { socketPath } = await import('./sandbox.js');
  const { controlRequest } = await import('../control/client.js');
  const path = socketPath(
    'wait-ready',
    { ...(values.socket !== undefined ? { socket: values.socket } : {}), ...(values.config !== undefined ? { config: values.config } : {}) },
    'wait-ready',
  );
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      const r = await controlRequest(path, 'GET', '/sandboxes');
      if (r.status === 200) {
        process.stdout.write(`sandgate is serving (control socket ${path})\n`);
        return 0;
      }
    } catch {
      /* not there yet */
    }
    if (Date.now() >= deadline) throw new SandgateError(`wait-ready: no sandgate answered on ${path} within ${seconds} s`, 'RUNTIME');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `sandgate install-service`: the unit for this node and this sandgate (src/cli/service-unit.ts). */
async function cmdInstallService(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: { config: { type: 'string', short: 'c' }, 'unit-dir': { type: 'string' }, print: { type: 'boolean' } },
      allowPositionals: false,
      strict: true,
    }));
  } catch (err) {
    usage(`install-service: ${(err as Error).message}`);
  }
  const { renderUnit, DEFAULT_UNIT_PATHS } = await import('./service-unit.js');
  const { resolve, join } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const { mkdirSync, renameSync, writeFileSync } = await import('node:fs');
  const unit = renderUnit({
    node: process.execPath,
    cli: fileURLToPath(new URL('../cli.js', import.meta.url)),
    config: values.config !== undefined ? resolve(values.config) : DEFAULT_UNIT_PATHS.config,
  });
  if (values.print === true) {
    process.stdout.write(unit);
    return 0;
  }
  const dir = values['unit-dir'] ?? '/etc/systemd/system';
  const target = join(dir, 'sandgate.service');
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${target}.tmp`, unit, { mode: 0o644 });
    renameSync(`${target}.tmp`, target);
  } catch (err) {
    throw new SandgateError(`install-service: cannot write ${target} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'RUNTIME');
  }
  process.stdout.write(`installed ${target}\nnext: systemctl daemon-reload && systemctl enable --now sandgate\n`);
  return 0;
}

async function cmdCa(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  let values;
  try {
    ({ values } = parseArgs({ args: rest, options: { dir: { type: 'string' }, config: { type: 'string', short: 'c' } }, strict: true }));
  } catch (err) {
    usage(`ca: ${(err as Error).message}`);
  }
  const dir = values.dir ?? (values.config ? loadConfigFile(values.config).tls.caDir : DEFAULT_CA_DIR);
  const { initCa, loadCa } = await import('../tls/ca.js');
  if (action === 'init') {
    const { created } = await initCa(dir);
    process.stdout.write(`${created ? 'created' : 'exists'}: ${dir}/ca.pem (key ${dir}/ca.key, mode 0600)\n`);
    return 0;
  }
  if (action === 'cert') {
    process.stdout.write((await loadCa(dir)).certPem);
    return 0;
  }
  return usage('ca: expected init or cert');
}

async function cmdRun(file: string): Promise<number | undefined> {
  const daemon = await runDaemon(file);
  process.on('SIGHUP', () => {
    void daemon.reload();
  });
  // logrotate's postrotate: reopen log.file at its path. A listener also keeps Node from
  // starting its inspector on SIGUSR1 (its default), which no gate should ever do.
  process.on('SIGUSR1', () => {
    daemon.reopenLog();
  });
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    daemon.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return undefined;
}
