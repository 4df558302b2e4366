/**
 * `sandgate suggest [FILE]`: the I/O shell around src/audit/suggest.ts. Reads an audit log (FILE
 * or stdin), drafts each sandbox's policy, prints it as YAML with counts (or JSON, or the
 * difference against a config's policies). Exit 2 for bad flags or unreadable input.
 */
import { parseArgs } from 'node:util';
import { SandgateError } from '../errors.js';
import { eachLine, unreadable } from './log-input.js';
import { parseLine } from '../audit/query.js';
import { configPolicies, draft, gather, type SandboxFacts } from '../audit/suggest.js';
import { renderDiff, renderYaml } from '../audit/suggest-render.js';
import { loadConfigFile } from '../config/load.js';
import { exitQuietlyOnClosedStdout } from './audit.js';

export const SUGGEST_USAGE = `usage: sandgate suggest [FILE | -] [--sandbox NAME] [--policy NAME] [--json] [--diff CONFIG]

  Drafts a policy from the audit log (FILE, or stdin) of a run in report mode: the hosts each
  sandbox reached, their ports, methods and path globs (numeric, UUID and hash-like segments
  become *), the credentials injected, with a count per line as a YAML comment.
    --sandbox NAME       only this sandbox (default: one policy per sandbox in the log)
    --policy NAME        the drafted policy's name (one sandbox only; default: the policy its
                         lines name, else the sandbox's name)
    --wildcard-min N     propose *.domain when N or more names share a registrable domain
                         (default 3; 0: never); never at or above a public suffix
    --include-denied     also draft what was denied (a log of an enforce-mode run)
    --json               the policies as JSON (the config's format, no counts)
    --diff CONFIG        what the draft changes against CONFIG's policies (+ added, - unused,
                         ~ changed, = same)
`;

function bad(message: string): never {
  throw new SandgateError(`suggest: ${message}\n${SUGGEST_USAGE}`, 'USAGE');
}

export async function cmdSuggest(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(SUGGEST_USAGE);
    return 0;
  }
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        sandbox: { type: 'string' },
        policy: { type: 'string' },
        'wildcard-min': { type: 'string' },
        'include-denied': { type: 'boolean' },
        json: { type: 'boolean' },
        diff: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    bad((err as Error).message);
  }
  if (positionals.length > 1) bad(`one FILE at most, got ${positionals.length}`);
  const file = positionals[0] === '-' ? undefined : positionals[0];
  const wildcardMin = values['wildcard-min'] === undefined ? 3 : Number(values['wildcard-min']);
  if (!Number.isInteger(wildcardMin) || wildcardMin < 0) bad(`--wildcard-min needs a whole number (0: never), got "${values['wildcard-min']}"`);
  if (wildcardMin === 1) bad('--wildcard-min 1 would turn every name into a wildcard; use 2 or more (0: never)');
  if (values.policy !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(values.policy)) bad(`--policy must match [A-Za-z0-9_.-]{1,64}, got "${values.policy}"`);
  if (values.json === true && values.diff !== undefined) bad('--json and --diff: choose one');
  if (file === undefined && process.stdin.isTTY === true) bad('give a FILE, or pipe the log on stdin');
  const cannot = file !== undefined ? unreadable(file) : undefined;
  if (cannot !== undefined) bad(cannot);
  exitQuietlyOnClosedStdout();
  // The config first: a bad CONFIG is reported before reading a long log.
  const config = values.diff !== undefined ? loadConfigFile(values.diff) : undefined;

  const facts = new Map<string, SandboxFacts>();
  let read = 0;
  let malformed = 0;
  const onLine = (text: string): void => {
    read++;
    const p = parseLine(text);
    if (!p.ok) {
      if (!p.empty) malformed++;
      return;
    }
    gather(facts, p.line.fields, { ...(values.sandbox !== undefined ? { sandbox: values.sandbox } : {}), includeDenied: values['include-denied'] === true });
  };
  await eachLine('suggest', file, onLine);
  if (malformed > 0) process.stderr.write(`sandgate suggest: ${malformed} of ${read} lines are not audit lines (JSON objects with an "event"), skipped\n`);
  const sandboxes = [...facts.values()].sort((a, b) => a.sandbox.localeCompare(b.sandbox));
  if (values.policy !== undefined && sandboxes.length > 1) bad(`--policy names one policy, but the log has ${sandboxes.length} sandboxes: add --sandbox NAME`);
  const byConfig = (sandbox: string): string | undefined => config?.sandboxes.find((c) => c.name === sandbox)?.policy;
  let drafts = sandboxes.map((s) => {
    const policy = values.policy ?? byConfig(s.sandbox);
    return draft(s, { wildcardMin, ...(policy !== undefined ? { policy } : {}) });
  });
  const names = drafts.map((d) => d.policy);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) {
    // Two sandboxes drafting one policy name would overwrite each other: name each after its sandbox.
    drafts = drafts.map((d) => ({ ...d, policy: d.sandbox }));
    process.stderr.write(`sandgate suggest: several sandboxes used policy "${twice}": each drafted policy is named after its sandbox\n`);
  }
  if (config !== undefined && values.diff !== undefined) process.stdout.write(renderDiff(drafts, config, values.diff));
  else if (values.json === true) process.stdout.write(`${JSON.stringify({ policies: configPolicies(drafts) }, null, 2)}\n`);
  else process.stdout.write(renderYaml(drafts));
  return 0;
}
