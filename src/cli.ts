// The heaptap command line: `heaptap run -- <command>`, the region inspectors, the agent. Run as
// `node src/cli.ts ...` (./heaptap does that) or through bin/heaptap.js (npx heaptap).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { execAgent } from './cli/agentExec.ts';
import { EXIT_USAGE, UsageError } from './cli/common.ts';
import { DIFF_USAGE, EXPORT_USAGE, LIST_USAGE, RUN_USAGE, SNAPSHOT_USAGE, TOP_USAGE, USAGE } from './cli/usage.ts';

// Subcommands are imported when used: they load the native addon; help for run, list,
// snapshot, top, diff and export does not (agent and ctl keep their help beside their code).
const COMMANDS: Record<string, { usage: () => Promise<string>; run: (args: string[]) => Promise<number> }> = {
  run: { usage: async () => RUN_USAGE, run: async (a) => (await import('./cli/run.ts')).runCommand(a) },
  list: { usage: async () => LIST_USAGE, run: async (a) => (await import('./cli/inspect.ts')).listCommand(a) },
  snapshot: { usage: async () => SNAPSHOT_USAGE, run: async (a) => (await import('./cli/inspect.ts')).snapshotCommand(a) },
  top: { usage: async () => TOP_USAGE, run: async (a) => (await import('./cli/inspect.ts')).topCommand(a) },
  diff: { usage: async () => DIFF_USAGE, run: async (a) => (await import('./cli/inspect.ts')).diffCommand(a) },
  export: { usage: async () => EXPORT_USAGE, run: async (a) => (await import('./cli/inspect.ts')).exportCommand(a) },
  agent: {
    usage: async () => (await import('./cli/agent.ts')).AGENT_USAGE,
    run: async (a) => (await import('./cli/agent.ts')).agentCommand(a),
  },
  report: {
    usage: async () => (await import('./cli/report.ts')).REPORT_USAGE,
    run: async (a) => (await import('./cli/report.ts')).reportCommand(a),
  },
  ctl: {
    usage: async () => (await import('./cli/ctl.ts')).CTL_USAGE,
    run: async (a) => (await import('./cli/ctl.ts')).ctlCommand(a),
  },
};

/** Runs heaptap with argv (without node and the script) and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined) {
      process.stderr.write(USAGE);
      return EXIT_USAGE;
    }
    if (cmd === '-h' || cmd === '--help') {
      process.stdout.write(USAGE);
      return 0;
    }
    if (cmd === 'help') {
      const sub = rest[0];
      if (sub === undefined) process.stdout.write(USAGE);
      else if (Object.hasOwn(COMMANDS, sub)) process.stdout.write(await COMMANDS[sub]!.usage());
      else throw new UsageError(`help: unknown command '${sub}'`);
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!command) throw new UsageError(cmd.startsWith('-') ? `unknown option '${cmd}' (see heaptap --help)` : `unknown command '${cmd}' (see heaptap --help)`);
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`heaptap: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

/** Runs main and exits the process with its code (flushing stdout and stderr first). */
export async function runMain(argv: string[]): Promise<void> {
  // The agent's process starts again with its malloc settings (src/cli/agentExec.ts); only
  // here, in heaptap's own process, never when main() is called from another program.
  if (argv[0] === 'agent') execAgent();
  // `heaptap list | head`: a reader that went away is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  let code: number;
  try {
    code = await main(argv);
  } catch (e) {
    // The addon not built (or not loadable) is a setup problem: say so in one line.
    // A system call that failed (a file that cannot be written, a full disk) is said in one
    // line; anything else is a bug in heaptap, and its stack says where.
    const sys = e as NodeJS.ErrnoException;
    const msg = e instanceof Error && e.message.startsWith('cannot load the heaptap addon')
      ? `${e.message}: ${(e.cause as Error | undefined)?.message ?? ''}`
      : typeof sys?.code === 'string' && typeof sys.syscall === 'string' ? sys.message
      : (e as Error)?.stack ?? String(e);
    process.stderr.write(`heaptap: ${msg}\n`);
    code = 1;
  }
  process.exitCode = code;
  // Let pending stdout/stderr writes drain, then leave even if a handle is still open.
  await new Promise<void>((res) => process.stdout.write('', () => process.stderr.write('', () => res())));
  process.exit(code);
}

function isEntry(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === 'boolean') return meta.main;
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) void runMain(process.argv.slice(2));
