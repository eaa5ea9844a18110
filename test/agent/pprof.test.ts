// go tool pprof, a consumer nobody here wrote, against the agent's live endpoints: it must
// fetch and read each one without a warning and show the fixture's functions.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';

import { exec, goBinary, inProcessAgent, startTicker, tempDir, until } from './helpers.ts';

async function pprof(args: string[], home: string): Promise<{ stdout: string; stderr: string }> {
  const go = goBinary();
  // Its own temp directory: pprof saves every fetched profile under $PPROF_TMPDIR. The
  // Go build cache stays the usual one: since Go 1.25 `go tool pprof` is built on first
  // use and cached there.
  return exec(go, ['tool', 'pprof', ...args], {
    env: { ...process.env, PPROF_TMPDIR: home, GOTOOLCHAIN: 'local' },
    maxBuffer: 16 << 20,
    timeout: 60_000,
  });
}

test.before('go tool pprof is there (built on first use)', async () => {
  await exec(goBinary(), ['tool', 'pprof', '-h'], { timeout: 280_000 }).catch((e) => {
    // -h exits 2 after printing its usage; only a failure to build or run matters.
    if (!/usage:/.test(String(e.stderr) + String(e.stdout))) throw new Error(`go tool pprof does not run: ${e.stderr || e.message}`);
  });
});

/** stderr lines that are not pprof's ordinary progress messages. */
function warnings(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !/^(Fetching profile over HTTP from|Saved profile in|Please wait\.\.\. \(\d+s\))/.test(l.trim()));
}

test('go tool pprof reads heap, allocs, seconds=2 and delta_heap from the live agent', async (t) => {
  const { dir, cleanup } = await tempDir();
  const home = await mkdtemp(join(tmpdir(), 'heaptap-pprof-'));
  const fx = await startTicker(dir, { keepKib: 64, periodUs: 1000, burst: 4, t });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    fx.kill();
    await cleanup();
    await rm(home, { recursive: true, force: true });
  });
  await until(() => agent.source.processes().length === 1, 5000, 'the ticker');
  const base = `${agent.url}/debug/pprof`;
  const cases: [string, string[], RegExp][] = [
    ['heap', ['-top', '-sample_index=inuse_space', `${base}/heap`], /Type: inuse_space[\s\S]*site_keep/],
    ['allocs', ['-top', `${base}/allocs`], /Type: alloc_space[\s\S]*site_(tick|keep)/],
    ['heap?seconds=2', ['-top', '-sample_index=alloc_space', '-seconds', '2', `${base}/heap`], /Duration: 2s[\s\S]*site_tick/],
    ['delta_heap', ['-top', '-sample_index=inuse_space', `${base}/delta_heap`], /site_keep/],
    ['delta_heap again', ['-top', '-sample_index=alloc_space', `${base}/delta_heap`], /site_tick/],
    ['heap by pid, traces', ['-traces', `${base}/heap?pid=${fx.pid}`], /site_keep\n\s+main/],
  ];
  const samples = () => agent.source.processes()[0]?.samples ?? 0;
  let seen = 0;
  for (const [name, args, expect] of cases) {
    // A delta holds what the agent's polls saw between two calls: wait for one that saw
    // new samples, else two calls inside one poll interval rightly give an empty delta.
    if (name === 'delta_heap again') await until(() => samples() > seen, 5000, 'a poll with new samples');
    const { stdout, stderr } = await pprof(args, home);
    seen = samples();
    t.deepEqual(warnings(stderr), [], `${name}: no warnings`);
    t.regex(stdout, expect, name);
  }
  // The seconds delta holds only what the ticker did during those 2 s: site_keep's blocks
  // were allocated before, so they are not in it.
  const { stdout } = await pprof(['-top', '-sample_index=alloc_space', '-seconds', '1', `${base}/heap`], home);
  t.notRegex(stdout, /site_keep/);
});
