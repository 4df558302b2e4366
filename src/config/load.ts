import { readFileSync } from 'node:fs';
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode, type Document } from 'yaml';
import { SandgateError } from '../errors.js';
import type { Config } from './types.js';
import { validateConfig, type PathPart, type Problem } from './validate.js';

export interface Located {
  file: string;
  line: number;
  col: number;
  path: string;
  message: string;
}

/** "FILE:LINE:COL: key.path: message" (`sandgate check`, docs/policy.md). */
export function formatLocated(p: Located): string {
  return `${p.file}:${p.line}:${p.col}: ${p.path || '(root)'}: ${p.message}`;
}

export class ConfigError extends SandgateError {
  readonly problems: readonly Located[];
  constructor(problems: Located[]) {
    const first = problems[0];
    super(first ? formatLocated(first) + (problems.length > 1 ? ` (and ${problems.length - 1} more)` : '') : 'invalid config', 'CONFIG');
    this.problems = problems;
  }
}

export function pathText(path: readonly PathPart[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

/** Parse + validate a config text; throws ConfigError with every problem located. */
export function parseConfig(text: string, file: string): Config {
  const lc = new LineCounter();
  // JSON is YAML; uniqueKeys keeps "a key twice" an error rather than last-one-wins.
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false, strict: true });
  const problems: Located[] = [];
  for (const e of doc.errors) {
    const pos = lc.linePos(e.pos[0]);
    problems.push({ file, line: pos.line, col: pos.col, path: '', message: firstLine(e.message) });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: firstLine((err as Error).message) }]);
  }
  const { config, problems: found } = validateConfig(raw);
  if (!config) throw new ConfigError(found.map((p) => locate(doc, lc, file, p)).sort((a, b) => a.line - b.line || a.col - b.col));
  return deepFreeze(config);
}

export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SandgateError(`${file}: cannot read config file (${code ?? (err as Error).message})`, 'CONFIG');
  }
  return parseConfig(text, file);
}

function firstLine(s: string): string {
  return (s.split('\n')[0] ?? s).trim();
}

/** Point at the deepest node of the path that exists (the key itself for unknown keys). */
function locate(doc: Document, lc: LineCounter, file: string, p: Problem): Located {
  let node: unknown = doc.contents;
  let offset = 0;
  for (const [i, part] of p.path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find(
        (it) => (it.key as YamlNode & { value?: unknown })?.value === part || String((it.key as { value?: unknown })?.value) === String(part),
      );
      if (!pair) break;
      const keyNode = pair.key as YamlNode | undefined;
      offset = keyNode?.range?.[0] ?? offset;
      // By index: a parent segment may have the same name as the offending key (policies.x.x).
      if (p.atKey && i === p.path.length - 1) {
        node = undefined;
        break;
      }
      node = pair.value;
      const r = (node as YamlNode | null)?.range;
      if (r) offset = r[0];
    } else if (isSeq(node) && typeof part === 'number') {
      const item = node.items[part] as YamlNode | undefined;
      if (!item) break;
      node = item;
      if (item.range) offset = item.range[0];
    } else break;
  }
  const pos = lc.linePos(offset);
  return { file, line: pos.line, col: pos.col, path: pathText(p.path), message: p.message };
}

export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}
