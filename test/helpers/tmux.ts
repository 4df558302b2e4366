/**
 * A program in a detached tmux session of fixed size, for tests of terminal UIs (`sandgate top`):
 * keys go in with send-keys, the screen comes back as text with capture-pane. Each session has
 * its own tmux server (-L, a per-test socket name), so nothing is shared with other tests or with
 * a tmux the operator runs.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Screen {
  /** The pane's text now (no colours; `escapes`: with its SGR colour sequences). */
  capture(escapes?: boolean): Promise<string>;
  /** Polls the screen until `pred` holds; a hang detector, not a timing assertion. */
  until(pred: (screen: string) => boolean, what: string, ms?: number): Promise<string>;
  /** tmux key names or literal text: keys('p'), keys('Escape'), literal('evil'). */
  keys(...keys: string[]): Promise<void>;
  literal(text: string): Promise<void>;
  /** The program's exit status once it ended (undefined while it runs). */
  exitCode(): number | undefined;
  untilExit(what: string, ms?: number): Promise<number>;
  kill(): Promise<void>;
}

let counter = 0;

/** Starts `argv` (no shell interpretation of its words) in a width x height pane; `dir` holds its exit status. */
export async function startInTmux(argv: readonly string[], dir: string, width = 160, height = 40): Promise<Screen> {
  const server = `sg-${process.pid}-${++counter}`;
  const status = join(dir, `${server}.exit`);
  // tmux runs the command through sh -c: every word quoted, then the status written to a file.
  const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
  const tmux = (...args: string[]) => run('tmux', ['-L', server, '-f', '/dev/null', ...args], { env: { ...process.env, TERM: 'xterm-256color' } });
  await tmux('new-session', '-d', '-s', 'main', '-x', String(width), '-y', String(height), `${quoted}; echo $? > '${status}'`);
  const exitCode = (): number | undefined => (existsSync(status) ? Number(readFileSync(status, 'utf8').trim()) : undefined);
  const wait = async <T>(get: () => Promise<T | undefined>, what: string, ms: number, last: () => Promise<string>): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await get();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`hang detector: ${what} not seen within ${ms} ms; screen:\n${await last()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const capture = async (escapes = false): Promise<string> => {
    try {
      return (await tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'main')).stdout;
    } catch {
      return '(no pane: the program ended)';
    }
  };
  return {
    capture,
    until(pred, what, ms = 20_000) {
      return wait(
        async () => {
          const s = await capture();
          return pred(s) ? s : undefined;
        },
        what,
        ms,
        () => capture(),
      );
    },
    async keys(...keys) {
      await tmux('send-keys', '-t', 'main', ...keys);
    },
    async literal(text) {
      await tmux('send-keys', '-t', 'main', '-l', text);
    },
    exitCode,
    untilExit(what, ms = 10_000) {
      return wait(
        async () => exitCode(),
        what,
        ms,
        () => capture(),
      );
    },
    async kill() {
      await tmux('kill-server').catch(() => undefined);
    },
  };
}
