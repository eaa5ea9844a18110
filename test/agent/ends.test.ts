// How a process ended, as the agent tells it: a normal exit, an exec, SIGKILL, and the OOM
// killer under a real memory limit (a cgroup made for the test) where the machine allows
// one; the reason goes to the process, the log and heaptap_process_ends_total.
import { join } from 'node:path';
import test from 'ava';

import { fixtures, get, inProcessAgent, startFixture, tempDir, until } from './helpers.ts';
import { createLogger } from '../../src/agent/log.ts';
import { memoryCgroup } from '../helpers/cgroup.ts';

function logsOf(lines: string[]): Array<Record<string, unknown>> {
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('exit, exec and SIGKILL are told apart, logged and counted by reason', async (t) => {
  const { dir, cleanup } = await tempDir();
  const lines: string[] = [];
  const agent = await inProcessAgent(dir, [], { log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
  t.teardown(async () => {
    await agent.stop();
    await cleanup();
  });
  const spike = join(fixtures, 'spike');
  const env = { HEAPTAP_SAMPLE_RATE: '1' };
  // exits normally after its spike
  const a = await startFixture([spike, '--mib', '1', '--ready'], dir, env, t);
  // a shell (profiled: it allocates) that execs the fixture: the shell's image ends by exec
  const b = await startFixture(['sh', '-c', `exec ${spike} --mib 1 --ready`], dir, env, t);
  const c = await startFixture([spike, '--mib', '1', '--ready'], dir, env, t);
  await until(() => [a, b, c].every((f) => agent.source.processes().some((p) => p.pid === f.pid && p.alive && p.exeName === 'spike')), 15_000, 'three running');
  await a.finish();
  c.kill('SIGKILL');
  await c.exited;
  await b.finish();
  // the shell's image is the one of b's pid that is not spike (dash, bash...)
  const endOf = (pid: number, exe: string) => agent.source.processes().find((p) => p.pid === pid && (exe === 'shell' ? p.exeName !== 'spike' : p.exeName === exe))?.end;
  await until(() => endOf(a.pid, 'spike') && endOf(c.pid, 'spike') && endOf(b.pid, 'spike') && endOf(b.pid, 'shell'), 15_000, 'the ends')
    .catch((e) => { t.log(JSON.stringify(agent.source.processes().map((p) => [p.pid, p.exeName, p.alive, p.end]))); throw e; });
  t.is(agent.source.processes().length, 4, 'a region each: three spikes and the shell');
  t.is(endOf(a.pid, 'spike')!.reason, 'exited');
  t.is(endOf(b.pid, 'shell')!.reason, 'exec');
  t.is(endOf(b.pid, 'spike')!.reason, 'exited');
  // SIGKILL: told as such if the agent catches the zombie before its parent reaps it,
  // else an end without exit() (a signal or _exit(), which cannot be told apart)
  const killed = endOf(c.pid, 'spike')!;
  if (killed.reason === 'signal') t.is(killed.signal, 'SIGKILL');
  else {
    t.is(killed.reason, 'no_exit');
    t.regex(killed.text, /without exit\(\)/);
  }
  const metrics = (await get(`${agent.url}/metrics`)).text;
  t.regex(metrics, /^heaptap_process_ends_total\{reason="exited"\} 2$/m);
  t.regex(metrics, /^heaptap_process_ends_total\{reason="exec"\} 1$/m);
  t.regex(metrics, new RegExp(`^heaptap_process_ends_total\\{reason="${killed.reason}"\\} 1$`, 'm'));
  t.regex(metrics, /^heaptap_process_ends_total\{reason="oom_kill"\} 0$/m);
  const ended = logsOf(lines).filter((l) => l.msg === 'process ended');
  t.deepEqual(ended.filter((l) => l.pid === c.pid).map((l) => l.reason), [killed.reason]);
});

test('a process the OOM killer ends (a real memory limit where the machine allows one, else SIGKILL) is reported as such', async (t) => {
  const { dir, cleanup } = await tempDir();
  const lines: string[] = [];
  const agent = await inProcessAgent(dir, [], { log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
  const cg = await memoryCgroup(64 << 20);
  t.teardown(async () => {
    await agent.stop();
    if (typeof cg !== 'string') await cg.remove().catch(() => {});
    await cleanup();
  });
  const spike = join(fixtures, 'spike');
  // The fixture joins the cgroup before it allocates, waits until the agent has seen it
  // run, then writes 256 MiB: over a 64 MiB limit the OOM killer ends it.
  const join_ = typeof cg === 'string' ? '' : `echo $$ > ${cg.procs}; `;
  const fx = await startFixture(['sh', '-c', `${join_}exec ${spike} --mib 256 --touch --ready`], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  const tracked = () => agent.source.watcher.all().find((p) => p.info?.pid === fx.pid && p.info.exeName === 'spike');
  // running, and its cgroup's OOM-kill count read while it runs
  await until(() => tracked()?.info?.alive && tracked()!.oomCount !== null, 15_000, 'the agent to see it run');
  if (typeof cg === 'string') {
    t.log(`no real memory limit (${cg}): SIGKILL instead, which the agent cannot tell from a signal or _exit()`);
    fx.kill('SIGKILL');
  } else {
    t.log(`real memory limit: ${cg.kind} = 64 MiB`);
    fx.child.stdin!.write('go\n');
  }
  const { signal } = await fx.exited;
  t.is(signal, 'SIGKILL');
  await until(() => tracked()?.info?.end, 15_000, 'its end');
  const end = tracked()!.info!.end!;
  const want = typeof cg === 'string' ? 'no_exit' : 'oom_kill';
  t.is(end.reason, want);
  if (want === 'oom_kill') t.is(end.text, 'killed by the OOM killer');
  const metrics = (await get(`${agent.url}/metrics`)).text;
  t.regex(metrics, new RegExp(`^heaptap_process_ends_total\\{reason="${want}"\\} 1$`, 'm'));
  const log = logsOf(lines).find((l) => l.msg === 'process ended' && l.pid === fx.pid && l.exe === 'spike');
  t.is(log?.reason, want);
  if (want === 'oom_kill') t.is(log?.level, 'warn');
  // its last moments are in the region: the peak holds what it had written when killed
  t.true((tracked()!.info!.peakBytes ?? 0) > 32 << 20, `peak ${tracked()!.info!.peakBytes}`);
});
