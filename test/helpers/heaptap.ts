// Running the heaptap command line (src/cli.ts, as ./heaptap does) and `go tool pprof`
// from tests, and reading the truth the fixtures print.
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';

import { bound, killGroup, spawnGroup } from './procs.ts';

export const root = resolve(import.meta.dirname, '../..');
export const cliPath = join(root, 'src/cli.ts');
export const fixtures = join(root, 'test/fixtures/build');

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOpts {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** limit on an idle machine (default 2 min), scaled by bound() */
  timeoutMs?: number;
  /** called with the heaptap process once it runs (to send it signals) */
  onSpawn?: (child: import('node:child_process').ChildProcess) => void;
}

/** Runs `node src/cli.ts <args>` with the Node running the tests; output collected. */
export function heaptap(args: string[], opts: RunOpts = {}): Promise<Result> {
  return new Promise((res, rej) => {
    // Its own process group: on a timeout the command and anything it started go too (a
    // leftover would hold the output pipes open, or keep making regions).
    const child = spawnGroup(null, process.execPath, [cliPath, ...args], {
      cwd: opts.cwd ?? root,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => killGroup(child), bound(opts.timeoutMs ?? 120_000));
    child.on('error', rej);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ code, signal, stdout, stderr });
    });
    opts.onSpawn?.(child);
  });
}

export async function tempDir(prefix = 'heaptap-cli-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** The two profiles `heaptap run` wrote in dir: [heap, peak]. */
export async function profilesIn(dir: string): Promise<{ heap: string; peak: string; pid: number }> {
  const names = await readdir(dir);
  const heap = names.find((n) => /^heaptap\.\d+\.heap\.pb\.gz$/.test(n));
  const peak = names.find((n) => /^heaptap\.\d+\.peak\.pb\.gz$/.test(n));
  if (!heap || !peak) throw new Error(`no heaptap profiles in ${dir}: ${names.join(', ')}`);
  return { heap: join(dir, heap), peak: join(dir, peak), pid: Number(/\d+/.exec(heap)![0]) };
}

let goPath: string | undefined;

/** The go command: on PATH, else /usr/local/go/bin/go. Missing Go is a test failure
 * (scripts/setup-tests.sh installs it), never a skip. */
export function findGo(): string {
  if (goPath) return goPath;
  const candidates = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'go')), '/usr/local/go/bin/go'];
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return (goPath = c);
    } catch { /* next */ }
  }
  throw new Error('go is not installed (looked on PATH and at /usr/local/go/bin/go): run scripts/setup-tests.sh, ' +
    'which installs Debian\'s golang-go; these tests read profiles with `go tool pprof` and cannot run without it');
}

/** `go tool pprof <args>`; symbolization is local (the fixtures' binaries are here). */
export function pprof(args: string[], cwd = root): Promise<Result> {
  const go = findGo();
  return new Promise((res) => {
    execFile(go, ['tool', 'pprof', ...args], {
      cwd,
      maxBuffer: 64 << 20,
      // No symbolization server: a profile from a file is symbolized from local binaries.
      env: { ...process.env, PPROF_TMPDIR: tmpdir() },
      timeout: 300_000,
    }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
      res({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

export interface TopRow {
  flat: number;
  cum: number;
  name: string;
}

/** Parses `go tool pprof -top` output with raw units (-unit=B or counts): name -> row. */
export function parseTop(out: string): Map<string, TopRow> {
  const rows = new Map<string, TopRow>();
  const num = (s: string) => {
    const m = /^(-?[\d.]+)([a-zA-Z]*)$/.exec(s);
    if (!m) return NaN;
    const mult: Record<string, number> = { '': 1, B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
    return Number(m[1]) * (mult[m[2]!] ?? NaN);
  };
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+\S+%\s+\S+%\s+(\S+)\s+\S+%\s+(.+)$/.exec(line);
    if (!m) continue;
    rows.set(m[3]!.trim(), { flat: num(m[1]!), cum: num(m[2]!), name: m[3]!.trim() });
  }
  return rows;
}

/** The JSON lines a fixture prints. */
export interface Truth {
  pid: number;
  role?: string;
  lib?: string;
  sites: Record<string, { alloc_bytes: number; alloc_objects?: number; inuse_bytes: number }>;
}

export function truths(stdout: string): Truth[] {
  return stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Truth);
}
