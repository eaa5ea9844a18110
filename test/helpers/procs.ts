// What a test that starts a process or waits for something uses, so that a failing test
// never hangs the suite and a busy machine does not fail a correct test:
//
// - spawnGroup(): a child in its own process group, tracked. killGroup() ends the group
//   (the child and whatever it started). Given the test (t), the group is killed when the
//   test ends, on every path; in any case it is killed when the test file is done. AVA
//   waits for a worker's event loop to empty, so one child left running with open pipes
//   (an agent whose test failed before it killed it) used to keep the suite waiting for
//   30 minutes.
// - bound(ms): a time limit for a wait, given as what is generous on an idle machine (many
//   times the normal), stretched by how busy the machine is now. Far below a real hang
//   (minutes), far above the normal on a machine at load 20 on 2 cores.
// - within(): a promise with such a limit; until(): polling with one.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { isMainThread } from 'node:worker_threads';

/** How much slower the work of a test runs than on an idle machine: the larger of the
 * 1-minute load average per core now (it counts this suite's own workers too) and, measured
 * once when this module loads, how much longer than its CPU time a fixed loop took (with
 * more runnable threads than cores, the scheduler stretches it by about their ratio). At
 * least 1; at most 10 (HEAPTAP_TEST_SLOWDOWN=N sets it). */
export function slowdown(): number {
  const fixed = Number(process.env.HEAPTAP_TEST_SLOWDOWN);
  if (fixed > 0) return fixed;
  const load = loadavg()[0]! / availableParallelism();
  return Math.min(10, Math.max(1, atStart, load));
}

function stretch(): number {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let x = 0;
  for (let i = 0; i < 4e6; i++) x += Math.sqrt(i); // about 10 ms of CPU
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  if (x < 0) throw new Error('unreachable');
  return wall / Math.max(1, (cpu.user + cpu.system) / 1000);
}
const atStart = stretch();

/** A time limit of ms on an idle machine, scaled by slowdown(). A bound is a failure when
 * reached, so the base must already be many times what the wait normally takes. */
export function bound(ms: number): number {
  return Math.round(ms * slowdown());
}

/** p, or a rejection naming `what` after bound(ms). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const limit = bound(ms);
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out after ${limit} ms waiting for ${what}`)), limit);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls fn (every stepMs) until it returns a truthy value; fails after bound(ms). */
export async function until<T>(fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, ms = 15_000, what = 'condition', stepMs = 100): Promise<T> {
  const limit = bound(ms);
  const end = Date.now() + limit;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${limit} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

const live = new Set<ChildProcess>();

/** Ends the child's process group (the child and what it started) with sig. Once the child
 * has exited its group is not signalled again: spawnGroup killed what was left of it then,
 * and after that its number may belong to someone else's group (pid_max is 32768 here, on
 * a machine shared with other work). */
export function killGroup(child: ChildProcess, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch { /* gone */ }
  }
}

/** The part of AVA's ExecutionContext this needs. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** spawn() in a new process group (detached), tracked: with t, killGroup() at the end of
 * the test; without, at the latest when the test file is done. */
export function spawnGroup(t: Teardown | null, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { ...opts, detached: true });
  live.add(child);
  // What the child started dies with it: while any of them is left the group's number
  // cannot be reused, so it is still this group that is killed.
  child.once('exit', () => {
    live.delete(child);
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch { /* nothing left */ }
    }
  });
  t?.teardown(() => killGroup(child));
  return child;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions extends SpawnOptions {
  /** limit on an idle machine, scaled by bound() (default 5 min) */
  timeout?: number;
  maxBuffer?: number;
  /** standard input */
  input?: string | Buffer;
}

/** Like util.promisify(execFile) (resolves { stdout, stderr }; rejects with an Error that has
 * code, signal, killed, stdout and stderr), but the command runs in its own process group
 * and a timeout kills the group: execFile kills only the child and then waits for the pipes,
 * which a grandchild still holds. */
export function execGroup(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  const { timeout = 300_000, maxBuffer = 64 << 20, input, ...spawnOpts } = opts;
  return new Promise((res, rej) => {
    const child = spawnGroup(null, cmd, args, { ...spawnOpts, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let killed = false;
    const kill = () => {
      killed = true;
      killGroup(child);
    };
    const collect = (into: Buffer[]) => (d: Buffer) => {
      into.push(d);
      if ((size += d.length) > maxBuffer) kill();
    };
    child.stdout!.on('data', collect(out));
    child.stderr!.on('data', collect(err));
    if (input !== undefined) child.stdin!.end(input);
    const limit = bound(timeout);
    const timer = setTimeout(kill, limit);
    child.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0 && !killed) return res({ stdout, stderr });
      const why = killed ? `killed after ${size > maxBuffer ? 'too much output' : `${limit} ms`}` : signal ? `killed by ${signal}` : `exit code ${code}`;
      rej(Object.assign(new Error(`Command failed (${why}): ${cmd} ${args.join(' ')}\n${stderr}`), { code, signal, killed, stdout, stderr }));
    });
  });
}

/** Kills every tracked group whose leader still runs (the test file is done, or its worker
 * exits): a test left it behind. */
function reap(): void {
  for (const child of live) {
    process.stderr.write(`test helper: killing ${child.spawnfile} (pid ${child.pid}), left running by a test\n`);
    killGroup(child);
  }
  live.clear();
}
process.once('exit', reap);
// Only inside an AVA worker (a child process with an IPC channel, or a worker thread):
// elsewhere (bench/, or a test's own child such as test/helpers/hostileCorpus.ts) importing
// 'ava' ends the process.
if (typeof process.send === 'function' || !isMainThread) {
  (await import('ava')).registerCompletionHandler(reap);
}
