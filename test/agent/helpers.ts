// Shared by the agent's tests: fixtures under the preload, the agent in this process or as
// `heaptap agent` in a child, HTTP fetches, and the real peers (go, prometheus).
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { parseAgentArgs } from '../../src/agent/config.ts';
import { createLogger, type Logger } from '../../src/agent/log.ts';
import type { Exporter } from '../../src/agent/types.ts';
import { Symbolizer } from '../../src/symbolize.ts';
import { bound, execGroup, killGroup, spawnGroup, within, type Teardown } from '../helpers/procs.ts';

export { until } from '../helpers/procs.ts';
/** execFile's promise form, in a process group that a timeout (default 5 min) kills */
export const exec = execGroup;
export const root = resolve(import.meta.dirname, '../..');
export const preload = join(root, 'preload/build/libheaptap.so');
export const fixtures = join(root, 'test/fixtures/build');
export const node = process.execPath;
export const cli = join(root, 'src/cli.ts');

/** A fresh region directory on tmpfs (as in production), removed by cleanup. */
export async function tempDir(prefix = 'heaptap-agent-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const parent = existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = await mkdtemp(join(parent, prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

let tickerBuilt: Promise<string> | undefined;
/** test/agent/fixtures/ticker.c, built once (into a temp name, then renamed: two test
 * processes may build it at once). */
export function tickerPath(): Promise<string> {
  tickerBuilt ??= (async () => {
    const outDir = join(root, 'test/agent/build');
    mkdirSync(outDir, { recursive: true });
    const out = join(outDir, 'ticker');
    const tmp = `${out}.${process.pid}`;
    await exec('cc', ['-std=gnu11', '-O2', '-g', '-Wall', '-o', tmp, join(root, 'test/agent/fixtures/ticker.c')]);
    renameSync(tmp, out);
    return out;
  })();
  return tickerBuilt;
}

export interface Fixture {
  child: ChildProcess;
  pid: number;
  /** lines printed so far */
  stdout: string[];
  /** resolves when it exits */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** closes its stdin (ticker and churn --hold then exit normally) */
  finish(): Promise<void>;
  kill(sig?: NodeJS.Signals): void;
}

/** Starts a program under the preload with HEAPTAP_DIR=dir and waits for its "ready" line.
 * Its process group is killed when t ends (or, without t, when the test file is done), and
 * at once if it is not ready in time. */
export async function startFixture(cmd: string[], dir: string, env: Record<string, string> = {}, t: Teardown | null = null): Promise<Fixture> {
  const [bin, ...args] = cmd;
  const child = spawnGroup(t, bin!, args, {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: preload, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const stdout: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  const ready = new Promise<void>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      stdout.push(l);
      if (l.startsWith('ready')) res();
    });
    child.on('exit', (code, signal) => rej(new Error(`${bin} exited (${code ?? signal}) before it was ready`)));
    const limit = bound(30_000);
    setTimeout(() => rej(new Error(`${bin} not ready after ${limit} ms`)), limit).unref();
  });
  await ready.catch((e) => {
    killGroup(child);
    throw e;
  });
  return {
    child,
    pid: child.pid!,
    stdout,
    exited,
    async finish() {
      child.stdin!.end();
      await exited;
    },
    kill(sig: NodeJS.Signals = 'SIGKILL') {
      killGroup(child, sig);
    },
  };
}

export async function startTicker(dir: string, opts: { keepKib?: number; periodUs?: number; burst?: number; env?: Record<string, string>; t?: Teardown } = {}): Promise<Fixture> {
  const bin = await tickerPath();
  return startFixture(
    [bin, '--keep-kib', String(opts.keepKib ?? 64), '--period-us', String(opts.periodUs ?? 2000), '--burst', String(opts.burst ?? 1)],
    dir,
    { HEAPTAP_SAMPLE_RATE: '1', ...opts.env },
    opts.t ?? null,
  );
}

/** An agent in this process, listening on a free loopback port. */
export async function inProcessAgent(
  dir: string,
  args: string[] = [],
  opts: { exporters?: Exporter[]; log?: Logger; symbolize?: boolean } = {},
): Promise<AgentHandle> {
  const { config } = parseAgentArgs(['--dir', dir, '--listen', '127.0.0.1:0', '--poll', '200ms', ...args], {});
  const lines: string[] = [];
  const log = opts.log ?? createLogger({ format: 'json', write: (l) => lines.push(l) });
  const symbolizer = opts.symbolize === false ? undefined : new Symbolizer();
  const agent = await startAgent(config, { log, symbolizer, exporters: opts.exporters ?? [] });
  await agent.source.watcher.ready;
  return agent;
}

export interface ChildAgent {
  child: ChildProcess;
  url: string;
  /** JSON log lines so far */
  logs: Record<string, unknown>[];
  stop(): Promise<number | null>;
  waitLog(pred: (l: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
}

/** `heaptap agent` as a child process (node src/cli.ts agent), JSON logs, free port. Killed
 * when t ends (or, without t, when the test file is done), and at once if it does not
 * start listening. */
export async function spawnAgent(dir: string, args: string[] = [], env: Record<string, string> = {}, t: Teardown | null = null): Promise<ChildAgent> {
  const child = spawnGroup(t, node, [cli, 'agent', '--dir', dir, '--listen', '127.0.0.1:0', '--log-format', 'json', ...args], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; res: (l: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr += line + '\n';
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line);
    } catch {
      return;
    }
    logs.push(obj);
    for (const w of [...waiters]) {
      if (w.pred(obj)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.res(obj);
      }
    }
  });
  // 'close': after the exit and the last log line (under load they arrive later).
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  /** waits for a log line; ms is the limit on an idle machine, scaled by bound() */
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, ms = 20_000) => {
    const hit = logs.find(pred);
    if (hit) return Promise.resolve(hit);
    const limit = bound(ms);
    return new Promise<Record<string, unknown>>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`agent log line not seen in ${limit} ms; stderr:\n${stderr}`)), limit);
      waiters.push({ pred, res: (l) => (clearTimeout(timer), res(l)) });
      void exited.then((code) => rej(new Error(`agent exited (${code}); stderr:\n${stderr}`)));
    });
  };
  const listening = await waitLog((l) => l.msg === 'listening').catch((e) => {
    killGroup(child);
    throw e;
  });
  return {
    child,
    url: String(listening.url),
    logs,
    waitLog,
    /** SIGTERM and its exit code; an agent that has not exited within bound(20 s) is
     * killed and the wait fails */
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return within(exited, 20_000, 'the agent to exit after SIGTERM').catch((e) => {
        killGroup(child);
        throw e;
      });
    },
  };
}

export interface Got {
  status: number;
  headers: Headers;
  body: Buffer;
  text: string;
  ms: number;
}

export async function get(url: string, init: RequestInit = {}): Promise<Got> {
  const t0 = performance.now();
  const res = await fetch(url, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString('utf8'), ms: performance.now() - t0 };
}

/** go on PATH or /usr/local/go/bin/go; a missing go is a failure, not a skip. */
export function goBinary(): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/local/go/bin']) {
    if (dir && existsSync(join(dir, 'go'))) return join(dir, 'go');
  }
  throw new Error('go is not installed (needed for go tool pprof): install Go (/usr/local/go/bin/go or on PATH)');
}
