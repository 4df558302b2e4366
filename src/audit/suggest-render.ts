/**
 * Drafted policies as text: YAML in the config's own format with a count per line as a comment,
 * and the difference against the policies of a config in use. Pure: the shell prints.
 */
import type { AllowRule, Config } from '../config/types.js';
import { printable } from './query.js';
import { configRule, type Counts, type Draft, type DraftRule } from './suggest.js';

const COMMENT_COLUMN = 44;

/** A YAML scalar: plain when it cannot be misread, else a double-quoted (JSON) string, which YAML reads alike. */
function scalar(v: string | number | boolean): string {
  if (typeof v !== 'string') return String(v);
  return /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v) && !/^(true|false|null|yes|no|on|off|~|[0-9._-]+)$/i.test(v) ? v : JSON.stringify(v);
}

const flow = (xs: readonly (string | number)[]): string => `[${xs.map(scalar).join(', ')}]`;

function line(indent: number, text: string, comment?: string): string {
  const body = `${' '.repeat(indent)}${text}`;
  if (comment === undefined || comment === '') return body;
  // Comments are ours, but a count key (a path) came from the log: no line break may end the comment.
  return `${body.padEnd(COMMENT_COLUMN - 1)} # ${comment.replace(/[\r\n]/g, ' ')}`;
}

const tally = <K extends string | number>(m: Counts<K>, keys?: readonly K[]): string => (keys ?? [...m.keys()]).map((k) => `${k}: ${m.get(k) ?? 0}`).join(', ');

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function ruleYaml(r: DraftRule): string[] {
  const c = r.counts;
  const what = [c.conns > 0 ? plural(c.conns, 'connection') : '', c.requests > 0 ? plural(c.requests, 'request') : ''].filter((x) => x !== '').join(', ');
  const decided = [...c.decisions].map(([d, n]) => `${d} ${n}`).join(', ');
  const out = [line(6, `- host: ${scalar(r.host)}`, `${what} (${decided})`)];
  if (r.covers) out.push(`${' '.repeat(8)}# covers ${r.covers.join(', ')}`);
  out.push(line(8, `ports: ${flow(r.ports)}`, tally(c.ports, r.ports)));
  if (r.protocol !== undefined) out.push(line(8, `protocol: ${r.protocol}`));
  if (r.inject !== undefined) out.push(line(8, `inject: ${scalar(r.inject)}`, `${plural(c.credentials.get(r.inject) ?? 0, 'request')} injected`));
  if (r.methods !== undefined) out.push(line(8, `methods: ${flow(r.methods)}`, tally(c.methods, r.methods)));
  if (r.paths !== undefined) {
    out.push(line(8, 'paths:'));
    for (const p of r.paths) out.push(line(10, `- ${JSON.stringify(p)}`, String(c.paths.get(p) ?? 0)));
  }
  if (r.plainHttp !== undefined) out.push(line(8, 'plainHttp: true', 'plain HTTP requests, sent upstream as TLS'));
  for (const n of r.notes) out.push(`${' '.repeat(8)}# note: ${n.replace(/[\r\n]/g, ' ')}`);
  return out;
}

/** The drafted policies as a YAML `policies:` mapping, ready to replace the config's. */
export function renderYaml(drafts: readonly Draft[]): string {
  const out = ['# drafted by sandgate suggest from the audit log: review every rule before use', 'policies:'];
  if (drafts.length === 0) out[1] = 'policies: {}  # no egress lines in the input';
  for (const d of drafts) {
    out.push(line(2, `${scalar(d.policy)}:`, `sandbox ${d.sandbox}, ${plural(d.lines, 'line')}${d.first ? `, ${d.first} .. ${d.last}` : ''}`));
    out.push(line(4, 'mode: enforce'));
    out.push(d.rules.length === 0 ? line(4, 'allow: []') : line(4, 'allow:'));
    for (const r of d.rules) out.push(...ruleYaml(r));
    for (const [dst, n] of d.unnamed)
      out.push(`${' '.repeat(4)}# not drafted (no name: policy is by name): ${dst.replace(/[\r\n]/g, ' ')}, ${plural(n, 'time')}`);
  }
  return `${out.map(printable).join('\n')}\n`;
}

/* ---------------------------------- --diff ---------------------------------- */

type Comparable = {
  host: string;
  ports: readonly number[];
  protocol: string;
  inject?: string;
  methods?: readonly string[];
  paths?: readonly string[];
  plainHttp?: boolean;
};

const keyOf = (r: Comparable): string => `${r.protocol === 'tcp' ? 'tcp ' : ''}${r.host}`;

function fromDraft(r: DraftRule): Comparable {
  const c = configRule(r) as Comparable;
  return { ...c, protocol: r.protocol ?? 'tls' };
}

function fromConfig(r: AllowRule): Comparable {
  return {
    host: r.host,
    ports: r.ports,
    protocol: r.protocol,
    ...(r.inject !== undefined ? { inject: r.inject } : {}),
    ...(r.methods !== undefined ? { methods: r.methods } : {}),
    ...(r.paths !== undefined ? { paths: r.paths } : {}),
    ...(r.plainHttp === true ? { plainHttp: true } : {}),
  };
}

const shown = (v: readonly (string | number)[] | string | boolean | undefined, none: string): string =>
  v === undefined ? none : Array.isArray(v) ? `[${v.join(', ')}]` : String(v);

function sameList(a: readonly (string | number)[] | undefined, b: readonly (string | number)[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const sa = [...a].map(String).sort();
  const sb = [...b].map(String).sort();
  return sa.length === sb.length && sa.every((x, i) => x === sb[i]);
}

function changes(was: Comparable, now: Comparable): string[] {
  const out: string[] = [];
  if (!sameList(was.ports, now.ports)) out.push(`ports ${shown(was.ports, '')} -> ${shown(now.ports, '')}`);
  if (was.inject !== now.inject) out.push(`inject ${shown(was.inject, '(none)')} -> ${shown(now.inject, '(none)')}`);
  if (!sameList(was.methods, now.methods)) out.push(`methods ${shown(was.methods, '(any)')} -> ${shown(now.methods, '(any)')}`);
  if (!sameList(was.paths, now.paths)) out.push(`paths ${shown(was.paths, '(any)')} -> ${shown(now.paths, '(any)')}`);
  if ((was.plainHttp === true) !== (now.plainHttp === true)) out.push(`plainHttp ${was.plainHttp === true} -> ${now.plainHttp === true}`);
  return out;
}

/**
 * Each drafted policy against the policy its sandbox uses in `config` (or the policy of the same
 * name): `+` a rule the log needs that the config lacks, `-` a config rule no line used, `~` a
 * rule whose ports, credential, methods, paths or plainHttp differ, `=` the same.
 */
export function renderDiff(drafts: readonly Draft[], config: Config, file: string): string {
  const out: string[] = [];
  for (const d of drafts) {
    const name = config.sandboxes.find((s) => s.name === d.sandbox)?.policy ?? d.policy;
    const current = config.policies[name];
    out.push(`--- ${file} policies.${name}${current ? ` (mode ${current.mode})` : ' (absent)'}`);
    out.push(`+++ suggested for sandbox ${d.sandbox} from ${plural(d.lines, 'audit line')} (mode enforce)`);
    const was = new Map((current?.allow ?? []).map((r) => [keyOf(fromConfig(r)), fromConfig(r)]));
    const now = new Map(d.rules.map((r) => [keyOf(fromDraft(r)), { c: fromDraft(r), r }]));
    for (const [k, { c, r }] of now) {
      const w = was.get(k);
      const seen = [r.counts.conns > 0 ? plural(r.counts.conns, 'connection') : '', r.counts.requests > 0 ? plural(r.counts.requests, 'request') : '']
        .filter((x) => x !== '')
        .join(', ');
      if (!w)
        out.push(
          `+ ${k} ports ${shown(c.ports, '')}${c.inject ? ` inject ${c.inject}` : ''}${c.methods ? ` methods ${shown(c.methods, '')}` : ''}${c.paths ? ` paths ${shown(c.paths, '')}` : ''}  # ${seen}`,
        );
      else {
        const ch = changes(w, c);
        out.push(ch.length === 0 ? `= ${k}  # ${seen}` : `~ ${k}: ${ch.join('; ')}  # ${seen}`);
      }
    }
    for (const [k, w] of was) if (!now.has(k)) out.push(`- ${k} ports ${shown(w.ports, '')}  # no line in the log used it`);
    if ((current?.udp ?? []).length > 0) out.push(`  (${plural(current?.udp?.length ?? 0, 'udp rule')} not compared: suggest drafts TCP, TLS and HTTP only)`);
  }
  return `${out.map(printable).join('\n')}\n`;
}
