// `heaptap agent`: the long-running sidecar (src/agent/). Runs until SIGINT or SIGTERM,
// then stops the watcher, flushes the exporters and exits 0. Bad settings: one line on
// stderr and exit code 2 (a UsageError, as every subcommand reports them).
import { readdir } from 'node:fs/promises';
import v8 from 'node:v8';

import { startAgent } from '../agent/agent.ts';
import { ConfigError, parseAgentArgs } from '../agent/config.ts';
import { createLogger } from '../agent/log.ts';
import { Symbolizer } from '../symbolize.ts';
import { UsageError, errnoText } from './common.ts';

import { AGENT_USAGE } from '../agent/usage.ts';

export { AGENT_USAGE };

export async function agentCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseAgentArgs(args);
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(`agent: ${e.message} (see heaptap agent --help)`);
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(AGENT_USAGE);
    return 0;
  }
  const config = parsed.config;
  // A --dir that exists but cannot be watched is a usage error; one that does not exist yet
  // is not (the first profiled process makes it): the watcher logs a warning instead.
  try {
    await readdir(config.dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new UsageError(`agent: --dir ${config.dir}: ${code === 'ENOTDIR' ? 'not a directory' : errnoText(e)}`);
  }
  // A sidecar should stay small: V8's memory-saving mode and 1 MB semi-spaces keep its
  // heap near what it uses (about 150 MB less RSS with 100 processes, see
  // bench/RESULTS.md), for a little more time in scavenges.
  v8.setFlagsFromString('--max-semi-space-size=1');
  v8.setFlagsFromString('--optimize-for-size');
  const log = createLogger({ format: config.logFormat, level: config.logLevel });
  const symbolizer = new Symbolizer();
  // Signal handlers go in before anything starts: a SIGTERM that arrives while the
  // exporters are still being created (after "listening" is logged) must stop the agent
  // cleanly, not kill it with Node's default action.
  let signalled: NodeJS.Signals | null = null;
  let onStop: ((code: number) => void) | null = null;
  let agent: Awaited<ReturnType<typeof startAgent>> | null = null;
  const stopAgent = (a: NonNullable<typeof agent>, sig: NodeJS.Signals) => {
    log.info('stopping', { signal: sig });
    a.stop().then(() => onStop?.(0), () => onStop?.(1));
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      // A second signal: do not wait for the exporters.
      onStop?.(1);
      return;
    }
    signalled = sig;
    if (agent) stopAgent(agent, sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const done = new Promise<number>((resolve) => (onStop = resolve));
  try {
    agent = await startAgent(config, { log, symbolizer });
  } catch (e) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const err = e as NodeJS.ErrnoException;
    symbolizer.close();
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') {
      throw new UsageError(`agent: cannot listen on ${config.host}:${config.port}: ${err.code}`);
    }
    throw e;
  }
  if (signalled) stopAgent(agent, signalled);
  return done;
}
