// How a process image ended, from what a reader that is not its parent can see: the
// region (a normal exit marks it EXITED), /proc (an exec keeps the pid and its start
// time), and the memory cgroup's OOM-kill counter (memory.events in cgroup v2,
// memory.oom_control in v1), read while the process ran and again when it was found gone.
// heaptap run, the root's parent, adds the exit code or signal it got from waitpid.
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';

/** exited: exit() or a return from main (the library marked the region); exec: the image
 * was replaced (same pid, same start time, a new region); oom_kill: it ended without
 * exiting while its memory cgroup's OOM-kill count went up; signal: a signal ended it and
 * the exit status says which (heaptap run's command, or a process seen as a zombie);
 * no_exit: it ended without exit() otherwise: a signal (SIGKILL, a crash) or _exit(),
 * which a reader that is not its parent cannot tell apart; removed: its region file was
 * deleted under the reader. */
export type EndReason = 'exited' | 'exec' | 'oom_kill' | 'signal' | 'no_exit' | 'removed';
export const END_REASONS: readonly EndReason[] = ['exited', 'exec', 'oom_kill', 'signal', 'no_exit', 'removed'];

export interface ProcessEnd {
  reason: EndReason;
  /** the exit code, when the exit status was seen (exited) */
  code?: number;
  /** the signal's name, when the exit status was seen (signal, oom_kill: SIGKILL) */
  signal?: string;
}

/** Where a process's memory cgroup keeps its OOM-kill count, or null (no memory
 * controller visible). */
export interface OomCounter {
  file: string;
  /** v2 memory.events "oom_kill N"; v1 memory.oom_control "oom_kill N" (kernel 4.13+) */
  version: 1 | 2;
}

/** The memory cgroup of pid, from /proc/<pid>/cgroup: the v1 hierarchy that has the
 * memory controller, else the v2 one (at cgroupRoot, or cgroupRoot/unified in a hybrid
 * layout), whichever has a file to read. */
export async function oomCounterOf(pid: number, procRoot = '/proc', cgroupRoot = '/sys/fs/cgroup'): Promise<OomCounter | null> {
  let text: string;
  try {
    text = await readFile(join(procRoot, String(pid), 'cgroup'), 'utf8');
  } catch {
    return null;
  }
  const candidates: OomCounter[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line);
    if (!m) continue;
    const [, id, controllers, path] = m;
    if (id === '0' && controllers === '') {
      candidates.push({ file: join(cgroupRoot, path!, 'memory.events'), version: 2 });
      candidates.push({ file: join(cgroupRoot, 'unified', path!, 'memory.events'), version: 2 });
    } else if (controllers!.split(',').includes('memory')) {
      candidates.unshift({ file: join(cgroupRoot, 'memory', path!, 'memory.oom_control'), version: 1 });
    }
  }
  for (const c of candidates) if ((await oomKills(c)) !== null) return c;
  return null;
}

/** The OOM-kill count of a cgroup now, or null (gone, unreadable, or no such line). */
export async function oomKills(c: OomCounter): Promise<number | null> {
  try {
    const m = /^oom_kill (\d+)$/m.exec(await readFile(c.file, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** What /proc/<pid>/stat says of pid now, if it is still the process that started at
 * startTicks: running on (an exec replaced the image), or a zombie with its exit status
 * (field 52, as waitpid reports it). */
async function procState(pid: number, startTicks: bigint, procRoot: string): Promise<{ zombie: boolean; status: number } | null> {
  if (startTicks === 0n) return null;
  try {
    const stat = await readFile(join(procRoot, String(pid), 'stat'), 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (BigInt(fields[19] ?? '0') !== startTicks) return null;
    return { zombie: fields[0] === 'Z', status: Number(fields[49] ?? 0) };
  } catch {
    return null;
  }
}

/** A wait status (as waitpid gives it) as an end: a code or a signal's name. */
export function fromWaitStatus(status: number): ProcessEnd {
  const sig = status & 0x7f;
  if (sig === 0) return { reason: 'exited', code: (status >> 8) & 0xff };
  return { reason: 'signal', signal: signalName(sig) };
}

export function signalName(n: number): string {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name;
  return `signal ${n}`;
}

/** What a reader decides at the end: a normal exit if the region says so; an exec if the
 * pid runs on with the same start time; the exit status if the process is still a zombie;
 * the OOM killer if its cgroup's count went up since it was last read while the process
 * ran; else no_exit. */
export async function endOf(opts: {
  exited: boolean;
  pid: number;
  startTicks: bigint;
  oom: OomCounter | null;
  /** the count when last read while the process ran (null: never read) */
  oomBefore: number | null;
  procRoot?: string;
}): Promise<ProcessEnd> {
  const st = await procState(opts.pid, opts.startTicks, opts.procRoot ?? '/proc');
  if (st && !st.zombie) return { reason: 'exec' };
  const seen = st?.zombie ? fromWaitStatus(st.status) : null;
  if (opts.exited) return seen?.reason === 'exited' ? seen : { reason: 'exited' };
  let oom = false;
  if (opts.oom && opts.oomBefore !== null) {
    const now = await oomKills(opts.oom);
    oom = now !== null && now > opts.oomBefore;
  }
  if (oom) return { reason: 'oom_kill', signal: seen?.signal ?? 'SIGKILL' };
  if (seen) return seen.reason === 'exited' ? { reason: 'no_exit', code: seen.code } : seen;
  return { reason: 'no_exit' };
}

/** One line for logs and summaries: "exited with code 3", "killed by the OOM killer"... */
export function describeEnd(e: ProcessEnd): string {
  switch (e.reason) {
    case 'exited': return e.code !== undefined ? `exited with code ${e.code}` : 'exited';
    case 'exec': return 'replaced by exec';
    case 'oom_kill': return 'killed by the OOM killer';
    case 'signal': return `killed by ${e.signal}`;
    case 'no_exit': return e.code !== undefined ? `ended by _exit(${e.code})` : 'ended without exit() (a signal, SIGKILL included, or _exit())';
    case 'removed': return 'its region was removed';
  }
}
