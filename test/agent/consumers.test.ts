// What real consumers compute from the agent's profiles, applied to a real profiled process:
// Grafana Alloy's pyroscope.scrape subtracts consecutive /debug/pprof/allocs scrapes itself
// (test/helpers/alloyDelta.ts restates its rule from its source), and Pyroscope stores what
// arrives as the allocations of the interval. Sampling rate 1: every allocation counted,
// so the figures are exact.
import { join } from 'node:path';

import test from 'ava';
import type { Profile } from 'pprof-format';

import { decodeProfile, str } from '../../src/profile.ts';
import { AlloyDelta } from '../helpers/alloyDelta.ts';
import { allocsAt, siteIn, step } from '../helpers/stepper.ts';
import { fixtures, get, inProcessAgent, startFixture, tempDir } from './helpers.ts';

test('Alloy\'s delta of two /allocs scrapes is exactly what was allocated between them (a drifting bytes label made it the whole history)', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fx = await startFixture([join(fixtures, 'stepper')], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    fx.kill();
    await cleanup();
  });
  const url = `${agent.url}/debug/pprof/allocs?pid=${fx.pid}`;
  const scrape = (bytes: number) => allocsAt(agent.url, fx.pid, bytes);

  // 100-byte objects, then 3000-byte ones at the same stack: the stack's average object
  // size moves (100 -> 1067), which a `bytes` label would have carried into its identity.
  await step(fx, 'a 100 10');
  const first = await scrape(1000);
  await step(fx, 'a 3000 5');
  const second = await scrape(16_000);

  t.deepEqual(siteIn(second, 'site_step').labels, siteIn(first, 'site_step').labels, 'the same labels on the same stack in both scrapes');
  t.deepEqual(siteIn(second, 'site_step').labels, [`pid=${fx.pid}`]);

  const alloy = new AlloyDelta();
  t.is(alloy.next(first), null, 'Alloy drops the first scrape');
  const delta = alloy.next(second)!;
  const sum = (i: number) => delta.reduce((a, s) => a + s.values[i]!, 0);
  t.is(sum(1), 5 * 3000, 'alloc_space: the 5 blocks of 3000 bytes, nothing before them');
  t.is(sum(0), 5, 'alloc_objects');
  t.is(delta.filter((s) => s.values[1] !== 0).length, 1, 'one stack allocated in between');
  // In use stays absolute in Alloy's output (it subtracts alloc_* only).
  t.is(delta.find((s) => s.values[1] !== 0)!.values[3], 16_000);

  // A third scrape with nothing allocated in between: no allocations at all.
  const third = await decodeProfile((await get(url)).body);
  t.is(alloy.next(third)!.reduce((a, s) => a + s.values[1]!, 0), 0, 'nothing allocated, nothing reported');
});

// Through Alloy's profile.godeltaprof_memory, /debug/pprof/delta_heap reaches Pyroscope as
// a `memory` profile whose alloc_* are already deltas; Pyroscope keeps them as the
// allocations of the interval only when the series says __delta__="false" (Alloy's
// godeltaprof appender sets it; Pyroscope's ingester otherwise subtracts consecutive
// profiles itself, pkg/phlaredb/head.go Ingest and delta.go: first profile dropped, any stack lower than
// before taken as a reset and the profile's alloc samples dropped). What Pyroscope then
// relies on from us: the sample types and period type that make the series
// memory:alloc_objects:count:space:bytes and memory:alloc_space:bytes:space:bytes, and
// alloc values that are the allocations since the scraper's previous call: never negative,
// never counted in two calls, none missing.
test('delta_heap: consecutive calls of one scraper add up to exactly what was allocated, as Pyroscope\'s alloc series', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fx = await startFixture([join(fixtures, 'stepper')], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    fx.kill();
    await cleanup();
  });
  const delta = (consumer: string) => get(`${agent.url}/debug/pprof/delta_heap?pid=${fx.pid}&consumer=${consumer}`).then((r) => decodeProfile(r.body));
  const seen = (bytes: number) => allocsAt(agent.url, fx.pid, bytes);
  const sum = (p: Profile, i: number) => p.sample.reduce((a, s) => a + Number(s.value[i]), 0);

  await step(fx, 'a 100 10');
  const c0 = sum(await seen(1000), 1);
  const d0 = await delta('alloy');
  const series = d0.sampleType.map((st) => `memory:${str(d0, st.type)}:${str(d0, st.unit)}:${str(d0, d0.periodType!.type)}:${str(d0, d0.periodType!.unit)}`);
  t.deepEqual(series, ['memory:alloc_objects:count:space:bytes', 'memory:alloc_space:bytes:space:bytes',
    'memory:inuse_objects:count:space:bytes', 'memory:inuse_space:bytes:space:bytes']);
  t.is(Number(d0.defaultSampleType), 0, 'no default type, as godeltaprof writes it');
  t.is(sum(d0, 1), c0, 'a scraper\'s first call: everything since the process started, as godeltaprof\'s first profile');

  await step(fx, 'a 3000 5');
  await seen(16_000);
  const head = await get(`${agent.url}/debug/pprof/delta_heap?pid=${fx.pid}&consumer=alloy`, { method: 'HEAD' });
  t.is(head.status, 200);
  const d1 = await delta('alloy');
  const d2 = await delta('alloy');
  const other = await delta('another-scraper');
  t.is(sum(d1, 1), 15_000, 'the next call (a HEAD between takes nothing): just the 5 blocks of 3000 bytes');
  t.is(sum(d1, 0), 5);
  t.is(siteIn(d1, 'site_step').bytes, 15_000);
  t.is(sum(d2, 1), 0, 'nothing allocated since: nothing, not the same again');
  t.true([d0, d1, d2].every((p) => p.sample.every((s) => s.value.every((v) => Number(v) >= 0))), 'no negative value');
  t.is(sum(d1, 3), sum(d0, 3) + 15_000, 'in use absolute in every call');
  t.is(sum(other, 1), c0 + 15_000, 'another scraper has its own baseline');
});
