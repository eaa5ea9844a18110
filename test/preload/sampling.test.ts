// The library's sampling, end to end and statistically: fixture programs run under the
// built libheaptap.so at real rates (the library's own decision, intervals and weights, in
// many threads), the rate is changed while they run by `heaptap ctl` and by the agent's
// control endpoint, and every site's estimate is compared with the fixture's exact truth.
//
// The model the tolerances come from (preload/sampler.h): an allocation of s bytes at rate
// R is sampled with p = 1 - exp(-s/R), independently of every other allocation (sample
// points are a Poisson process on the byte stream), and stands for 1/p objects and s/p
// bytes. n allocations of s bytes thus give a Binomial(n, p) sample count, and estimates
// of bytes and objects with relative sd sqrt((1 - p) / (n p)). Every check allows 5.5 sd
// either way: a false failure of 3.8e-8 per check, under 1e-6 for all the checks of this
// file, were the seed random. HEAPTAP_SEED fixes it, so a run repeats (up to the order in
// which threads reach the library first).
import test, { type ExecutionContext } from 'ava';

import { get, inProcessAgent } from '../agent/helpers.ts';
import { heaptap } from '../helpers/heaptap.ts';
import { cleanup, perSite, regionsIn, runUnder, startUnder, truths, type SiteTotals, type Truth } from './run.ts';

const SIGMAS = 5.5;

interface Expect {
  /** bytes of each allocation at the site */
  size: number;
  /** the rate the site's allocations were made at */
  rate: number;
  /** bytes the estimate may fall short by, beyond chance (a rate change's lag, below) */
  lagBytes?: number;
}

/** Checks a site's estimated bytes, objects and raw sample count against the truth. */
function expectEstimate(t: ExecutionContext, name: string, got: SiteTotals | undefined, want: Truth['sites'][string], e: Expect): void {
  const n = want.alloc_objects!;
  const p = -Math.expm1(-e.size / e.rate);
  const truth = want.alloc_bytes;
  t.is(truth, n * e.size, `${name}: the fixture's truth is n blocks of ${e.size} B`);
  const lag = e.lagBytes ?? 0;
  const tol = SIGMAS * Math.sqrt((1 - p) / (n * p)) + lag / truth;
  const bytes = Number(got?.allocBytes ?? 0n);
  const objects = got?.allocObjects ?? 0;
  const samples = Number(got?.samples ?? 0n);
  const np = n * p;
  const tolSamples = SIGMAS * Math.sqrt(np * (1 - p)) + (lag / e.size) * p + 1;
  const at = `${name} at rate ${e.rate}`;
  t.true(Math.abs(bytes / truth - 1) < tol,
    `${at}: estimated ${bytes} B vs ${truth} B (${((bytes / truth - 1) * 100).toFixed(1)}%, tolerance ${(tol * 100).toFixed(1)}%)`);
  t.true(Math.abs(objects / n - 1) < tol, `${at}: estimated ${objects.toFixed(0)} objects vs ${n}`);
  t.true(Math.abs(samples - np) < tolSamples, `${at}: ${samples} samples, expected ${np.toFixed(0)} ± ${tolSamples.toFixed(0)}`);
}

test('a new thread\'s first allocation is sampled only when it reaches a sample point: thousands of short-lived threads at the default rate', async (t) => {
  // 4000 threads each allocate 16 blocks of 4 KiB (64 KiB, an eighth of the default mean
  // interval) and free them. Sampling every thread's first allocation would add about one
  // 512 KiB-weighted sample per thread: the estimate would be 9 times the truth.
  const r = await runUnder(['threads', '--threads', '4000', '--batch', '64'], { HEAPTAP_SEED: '20260214' });
  t.teardown(() => cleanup(r.dir));
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  t.is(snap!.header.sampleRate, 524288n, 'the default rate');
  const site = (await perSite(snap!, /^thread_site$/)).get('thread_site');
  expectEstimate(t, 'thread_site', site, truth!.sites.thread_site!, { size: 4096, rate: 524288 });
  t.is(site?.inuseBytes, 0n, 'every sampled block was freed, with the weight it was counted with');
});

test('estimates follow a rate changed mid-run by heaptap ctl and by the agent\'s control endpoint, in short-lived threads and in threads alive across the change', async (t) => {
  // Three phases, each with its own sites (ratephases): 4000 short-lived threads allocate
  // 16 blocks of 4 KiB each at fresh_i, and 4 workers alive throughout allocate 64 MiB each
  // in 24 KiB blocks at worker_i. Phase 0 runs at the start-up rate (512 KiB), phase 1 at
  // 16 KiB set by `heaptap ctl`, phase 2 at 128 KiB set through the agent. A rate that is
  // acknowledged but not applied shows in the sample counts; samples weighted with the
  // start-up rate show in the estimates (32 times too high in phase 1).
  const rates = [524288, 16384, 131072];
  const fx = await startUnder(['ratephases', '--phases', '3', '--threads', '4000', '--blocks', '16', '--workers', '4', '--worker-mib', '64', '--wait'],
    { HEAPTAP_SEED: '20260215' });
  const agent = await inProcessAgent(fx.dir);
  t.teardown(async () => {
    fx.kill();
    await agent.stop();
    await cleanup(fx.dir);
  });

  await fx.line(/^phase 0 done$/);
  const ctl = await heaptap(['ctl', String(fx.pid), 'rate', '16k', '--dir', fx.dir], { timeoutMs: 60_000 });
  t.is(ctl.code, 0, ctl.stderr);
  t.regex(ctl.stdout, /sampling rate set to 16384 bytes/);
  fx.send('go');

  await fx.line(/^phase 1 done$/);
  const seen = async () => agent.source.processes().find((p) => p.pid === fx.pid);
  for (const end = Date.now() + 15_000; !(await seen()) && Date.now() < end;) await new Promise((r) => setTimeout(r, 100));
  t.truthy(await seen(), 'the agent serves the fixture');
  const post = await get(`${agent.url}/debug/heaptap/control?pid=${fx.pid}&action=rate&bytes=131072`, { method: 'POST' });
  t.is(post.status, 200, post.text);
  fx.send('go');

  const r = await fx.done;
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(fx.dir);
  t.is(snap!.header.sampleRate, 524288n, 'the start-up rate stays in the header');
  t.is(snap!.header.rateNow, 131072n, 'the last rate set is the one in effect');
  const sites = await perSite(snap!, /^(fresh|worker)_\d$/);
  for (let i = 0; i < rates.length; i++) {
    expectEstimate(t, `fresh_${i}`, sites.get(`fresh_${i}`), truth!.sites[`fresh_${i}`]!, { size: 4096, rate: rates[i]! });
    // A thread alive across a change takes the new rate at its next sample point, where
    // the library redraws instead of sampling: what a worker allocates after the change
    // until then (the rest of an interval drawn at the old rate: Exp, mean R_old) is never
    // sampled. With W = 4 workers the estimate may fall short by (W + 5 sqrt(W)) R_old.
    const lagBytes = i === 0 ? 0 : (4 + 5 * 2) * rates[i - 1]!;
    expectEstimate(t, `worker_${i}`, sites.get(`worker_${i}`), truth!.sites[`worker_${i}`]!, { size: 24576, rate: rates[i]!, lagBytes });
  }
});
