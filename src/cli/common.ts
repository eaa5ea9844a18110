// What the heaptap subcommands share: usage errors (exit code 2), option parsing, sizes
// and durations as the preload reads them, and number formatting. Nothing here loads the
// addon, so that usage errors and --help work without it.
import { mkdir, open, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in how heaptap was called, or an input it cannot read: one line, exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export const EXIT_USAGE = 2;

/** How the user runs heaptap, for the commands a summary suggests: `./heaptap` (the
 * checkout's launcher says so in HEAPTAP_COMMAND, taken out of the environment here so the
 * profiled program does not inherit it), else `heaptap`. */
export const SELF_COMMAND = ((): string => {
  const c = process.env.HEAPTAP_COMMAND;
  delete process.env.HEAPTAP_COMMAND;
  return c && /^[\w./+-]+$/.test(c) ? c : 'heaptap';
})();

/** Where the preload writes regions unless HEAPTAP_DIR says otherwise. */
export const DEFAULT_REGION_DIR = '/dev/shm/heaptap';

export function regionDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag || env.HEAPTAP_DIR || DEFAULT_REGION_DIR);
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs in strict mode, its errors turned into UsageErrors naming the
 * subcommand. */
export function parse<O extends Options>(command: string, args: string[], options: O, positionals = true) {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true });
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, '').replace(/\.$/, '');
    throw new UsageError(`${command}: ${msg} (see heaptap ${command} --help)`);
  }
}

/** A byte count as the preload reads HEAPTAP_SAMPLE_RATE: a whole number with an optional
 * binary k/m/g suffix (512k = 524288; "KiB", "kb" also accepted). */
export function parseSize(what: string, s: string, min = 1, max = 2 ** 40): number {
  const m = /^(\d+)(?:([kmg])i?b?)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`${what} '${s}' is not a whole number of bytes (like 1, 4096, 512k, 1m)`);
  const shift = { '': 0, k: 10, m: 20, g: 30 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g'];
  const v = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new UsageError(`${what} '${s}' is out of range [${min}, ${max}]`);
  return v;
}

export function parseInteger(what: string, s: string, min: number, max: number): number {
  if (!/^\d+$/.test(s.trim())) throw new UsageError(`${what} '${s}' is not a whole number`);
  const v = Number(s);
  if (v < min || v > max) throw new UsageError(`${what} '${s}' is out of range [${min}, ${max}]`);
  return v;
}

/** A duration in milliseconds: "100", "100ms", "0.5s", "2s". */
export function parseMillis(what: string, s: string, min: number, max: number): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(s.trim());
  if (!m) throw new UsageError(`${what} '${s}' is not a duration (like 100, 100ms, 0.5s)`);
  const v = Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  if (v < min || v > max) throw new UsageError(`${what} '${s}' is out of range [${min} ms, ${max} ms]`);
  return v;
}

/** An errno error as "ENOENT: no such file or directory" (without Node's ", mkdir '/x'"). */
export function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return typeof err?.code === 'string' ? err.message.replace(/, \w+ '.*'$/s, '') : String((e as Error)?.message ?? e);
}

/** Why a file cannot be made in dir ("does not exist", "not a directory", ...), or null when
 * it can: a real file is created and removed (access() says yes to root on /proc and other
 * places that refuse files). */
export async function unwritableDir(dir: string): Promise<string | null> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : errnoText(e);
  }
  if (!st.isDirectory()) return 'not a directory';
  const probe = join(dir, `.heaptap-probe-${process.pid}`);
  try {
    await (await open(probe, 'wx')).close();
    await unlink(probe);
    return null;
  } catch (e) {
    return `refuses new files (${errnoText(e)})`;
  }
}

/** Makes dir if it is missing and its parent exists (one level: a mistyped path must not
 * leave a chain of new directories behind, and Node's recursive mkdir never returns on
 * some paths, like /proc/x), then checks that files can be made in it. Problems are
 * UsageErrors: "<what> <dir>: <why>". */
export async function ensureOutputDir(what: string, dir: string): Promise<void> {
  try {
    await mkdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && (await stat(dirname(dir)).then(() => false, () => true))) {
      throw new UsageError(`${what} ${dir}: ${dirname(dir)} does not exist (only the last directory is made)`);
    }
    if (code !== 'EEXIST') throw new UsageError(`${what} ${dir}: cannot make the directory: ${errnoText(e)}`);
  }
  const why = await unwritableDir(dir);
  if (why) throw new UsageError(`${what} ${dir}: ${why}`);
}

/** A region error as one line: "<path>: <what> (<code>)". */
export function describeError(e: unknown, path?: string): string {
  const r = e as { code?: unknown; path?: unknown; message?: unknown };
  if (e instanceof Error && typeof r.code === 'string' && typeof r.path === 'string') {
    // a RegionError (src/region.ts): checked by shape, so that this file needs no addon
    const msg = e.message.startsWith(r.path) ? e.message : `${r.path}: ${e.message}`;
    return `${msg} (${r.code})`;
  }
  const msg = e instanceof Error ? e.message : String(e);
  return path && !msg.includes(path) ? `${path}: ${msg}` : msg;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB"; exact below 1 KiB. */
export function formatBytes(n: number | bigint, sep = ' '): string {
  let v = Number(n);
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = u === 0 ? 0 : Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${v.toFixed(digits)}${sep}${UNITS[u]}`;
}

/** 1234567 -> "1,234,567". */
export function formatCount(n: number | bigint): string {
  return Math.round(Number(n)).toLocaleString('en-US');
}

export function formatSeconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : ms < 600_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** A path as the user would type it: relative when under the current directory. */
export function displayPath(p: string, cwd = process.cwd()): string {
  const abs = resolve(p);
  if (abs.startsWith(cwd + '/')) return abs.slice(cwd.length + 1);
  return abs;
}
