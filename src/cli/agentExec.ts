// `heaptap agent` starts itself again, once, in the same process (execve: same pid, same
// stdio, same parent), with what a long-running sidecar needs set before Node.js starts:
//
// - MALLOC_ARENA_MAX=2. glibc gives each thread that allocates a malloc arena of its own,
//   up to 8 per core; the agent's threads (the libuv pool's region reads, symbolization and
//   gzip, V8's) each keep theirs with its own free pages and fragments: about 10 MB of
//   the agent's peak with 100 processes (bench/RESULTS.md). glibc fixes the limit at the
//   first thread's first allocation, before any JavaScript runs, so mallopt from the
//   agent is too late.
//
// Only the agent's own process gets it: the variable is taken out of process.env again
// in the new process (glibc has read it by then), so nothing the agent starts inherits it,
// and `heaptap run` never sets it (the profiled program sees the user's environment). A
// MALLOC_ARENA_MAX the user set is left as it is. Without process.execve (Node.js before
// 23.11) or where it is refused, the agent runs as it was started.
import { isMainThread } from 'node:worker_threads';

/** Set in the new process's environment: the names of the variables the re-exec added
 * (comma-separated), to be taken out again. */
export const AGENT_EXEC_MARK = 'HEAPTAP_AGENT_EXEC';

/** The variables the agent's process starts with, if the user did not set them. */
export const AGENT_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** In the re-executed agent (env has the mark): takes the mark and the variables it names
 * out of env and returns true. Otherwise returns false. */
export function takeAgentExecMark(env: NodeJS.ProcessEnv = process.env): boolean {
  const mark = env[AGENT_EXEC_MARK];
  if (mark === undefined) return false;
  delete env[AGENT_EXEC_MARK];
  for (const name of mark.split(',')) if (Object.hasOwn(AGENT_ENV, name)) delete env[name];
  return true;
}

/** The environment the agent's process is re-executed with. */
export function agentExecEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const added = Object.keys(AGENT_ENV).filter((k) => env[k] === undefined);
  const out: NodeJS.ProcessEnv = { ...env };
  for (const k of added) out[k] = AGENT_ENV[k];
  out[AGENT_EXEC_MARK] = added.join(',');
  return out;
}

/** Re-executes this process as the agent with agentExecEnv (does not return), unless it is
 * the re-executed one already (then cleans its environment) or cannot. */
export function execAgent(): void {
  if (takeAgentExecMark()) return;
  const execve = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
  if (typeof execve !== 'function' || !isMainThread || process.platform !== 'linux' || !process.argv[1]) return;
  try {
    execve.call(process, process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], agentExecEnv(process.env));
  } catch {
    // Refused (the permission model, a seccomp filter): run as started.
  }
}
