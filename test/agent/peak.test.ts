// The peak as the agent serves it: the library's high-water mark as a metric, the profile
// of in use at the peak, and the timeline as JSON, for a real process that made a 1 ms
// spike (which no poll would see).
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';

import type { AgentHandle } from '../../src/agent/agent.ts';
import { spawnGroup, within } from '../helpers/procs.ts';
import { decodeProfile, str } from '../../src/profile.ts';
import { exec, fixtures, get, inProcessAgent, preload, tempDir, until } from './helpers.ts';

interface Spike {
  pid: number;
  peak: number;
  spike: number;
}

async function runSpike(dir: string, env: Record<string, string> = {}): Promise<Spike> {
  const { stdout } = await exec(join(fixtures, 'spike'), ['--mib', '64', '--hold-us', '1000'], {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: preload, HEAPTAP_SAMPLE_RATE: '1', ...env },
    timeout: 60_000,
  });
  const m = /^truth peak_bytes=(\d+) spike_bytes=(\d+) pid=(\d+)$/m.exec(stdout);
  if (!m) throw new Error(`no truth line: ${stdout}`);
  return { peak: Number(m[1]), spike: Number(m[2]), pid: Number(m[3]) };
}

/** The spike run while an agent watches it: the agent opens a process's files only while
 * it runs (src/moduleFiles.ts), so it must see it alive before the spike is let go. */
async function watchedSpike(t: ExecutionContext, dir: string, agent: AgentHandle): Promise<Spike> {
  const child = spawnGroup(t, join(fixtures, 'spike'), ['--mib', '64', '--hold-us', '1000', '--ready'], {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: preload, HEAPTAP_SAMPLE_RATE: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  const exited = new Promise((r) => child.on('close', r));
  await until(() => lines.includes('ready'), 30_000, 'the spike ready');
  await until(async () => (await get(`${agent.url}/debug/pprof/heap?pid=${child.pid}&debug=1`)).text.includes('base_alloc'), 15_000, 'the running spike served, symbolized');
  child.stdin!.end('go\n');
  await within(exited, 60_000, 'the spike to exit');
  const m = /^truth peak_bytes=(\d+) spike_bytes=(\d+) pid=(\d+)$/m.exec(lines.join('\n'));
  if (!m) throw new Error(`no truth line: ${lines.join('\n')}`);
  const pid = Number(m[3]);
  await until(() => agent.source.processes().find((p) => p.pid === pid && !p.alive), 15_000, 'the agent to see the spike end');
  return { peak: Number(m[1]), spike: Number(m[2]), pid };
}

test('a 1 ms spike: heaptap_heap_peak_bytes, heap?peak=1 and the timeline give the library\'s peak, exact at rate 1', async (t) => {
  const { dir, cleanup } = await tempDir();
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    await cleanup();
  });
  const fx = await watchedSpike(t, dir, agent);

  // Prometheus: the literal name, exact at rate 1; the in-use now is what was left
  const metrics = (await get(`${agent.url}/metrics`)).text;
  const value = (name: string) => Number(new RegExp(`^${name}\\{pid="${fx.pid}",exe="spike",service="spike"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
  // The C library's few allocations before the spike are in the heap too: a few KiB.
  const peak = value('heaptap_heap_peak_bytes');
  t.true(peak >= fx.peak && peak <= fx.peak + 16384, `heaptap_heap_peak_bytes ${peak}, truth ${fx.peak}`);
  t.is(value('heaptap_heap_peak_inuse_bytes'), peak, 'the older name gives the library\'s peak too');
  t.true(value('heaptap_heap_inuse_bytes') < 1 << 20, 'the spike is gone at exit');

  // The profile at the peak: the spike, on its function, as allocated
  const r = await get(`${agent.url}/debug/pprof/heap?pid=${fx.pid}&peak=1`);
  t.is(r.status, 200, r.text);
  const p = await decodeProfile(r.body);
  const byFn = new Map<string, number>();
  for (const s of p.sample) {
    const loc = p.location.find((l) => l.id === s.locationId[0])!;
    const fn = loc.line[0] ? str(p, p.function.find((f) => f.id === loc.line[0]!.functionId)!.name) : '?';
    byFn.set(fn, (byFn.get(fn) ?? 0) + Number(s.value[3]));
  }
  t.is(byFn.get('spike_alloc'), fx.spike);
  t.is([...byFn.values()].reduce((a, b) => a + b, 0), peak, 'the peak profile totals the peak (one thread)');
  // without peak=1 the same process's in use is what it held at exit
  const now = await decodeProfile((await get(`${agent.url}/debug/pprof/heap?pid=${fx.pid}`)).body);
  t.false(now.sample.some((s) => Number(s.value[3]) >= fx.spike));
  const text = await get(`${agent.url}/debug/pprof/heap?pid=${fx.pid}&peak=1&debug=1`);
  t.regex(text.text, /in use at its peak/);
  t.regex(text.text, /spike_alloc/);

  // The timeline: points in time order, the peak with its time
  const tl = JSON.parse((await get(`${agent.url}/debug/heaptap/timeline?pid=${fx.pid}`)).text) as {
    pid: number; peak: { bytes: number; ms: number }; ms: number[]; inuse_bytes: number[]; rss_bytes: number[];
  };
  t.is(tl.pid, fx.pid);
  t.is(tl.peak.bytes, peak);
  t.true(tl.ms.length >= 2, `${tl.ms.length} points (the first sample and the exit make one each)`);
  t.true(tl.ms.every((ms, i) => i === 0 || ms >= tl.ms[i - 1]!), 'in time order');
  t.true(tl.inuse_bytes.every((v) => v <= peak));
  t.true(tl.peak.ms >= tl.ms[0]! && tl.peak.ms <= tl.ms.at(-1)!, 'the peak lies within the timeline');
  t.true(tl.rss_bytes.some((v) => v > 0), 'RSS recorded');
  const all = JSON.parse((await get(`${agent.url}/debug/heaptap/timeline`)).text) as Array<{ pid: number }>;
  t.deepEqual(all.map((x) => x.pid), [fx.pid]);

  // The index page names them
  const index = (await get(`${agent.url}/debug/pprof/`)).text;
  t.true(index.includes(`heap?pid=${fx.pid}&amp;peak=1`));
  t.true(index.includes('/debug/heaptap/timeline'));
});

test('peak=1 takes 0 or 1, goes with heap alone and without seconds', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fx = await runSpike(dir);
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    await cleanup();
  });
  await until(() => agent.source.processes().find((p) => p.pid === fx.pid), 15_000, 'the agent to serve the spike');
  for (const [q, re] of [
    [`heap?pid=${fx.pid}&peak=yes`, /bad peak 'yes'/],
    [`allocs?pid=${fx.pid}&peak=1`, /peak=1 goes with \/debug\/pprof\/heap only/],
    [`delta_heap?pid=${fx.pid}&peak=1`, /peak=1 goes with/],
    [`heap?pid=${fx.pid}&peak=1&seconds=1`, /peak=1 takes no seconds/],
  ] as const) {
    const r = await get(`${agent.url}/debug/pprof/${q}`);
    t.is(r.status, 400, q);
    t.regex(r.text, re, q);
  }
  t.is((await get(`${agent.url}/debug/pprof/heap?pid=${fx.pid}&peak=0`)).status, 200);
  t.is((await get(`${agent.url}/debug/heaptap/timeline?pid=999999999`)).status, 404);
});
