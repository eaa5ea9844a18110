// The agent's HTTP endpoints against real fixtures under the preload: selection by pid,
// the merged default, text output, errors as net/http/pprof sends them, the token, and
// control round trips.
import test from 'ava';

import { decodeProfile, str } from '../../src/profile.ts';
import type { Profile } from 'pprof-format';
import { get, inProcessAgent, startTicker, tempDir, until } from './helpers.ts';

function labelsOf(p: Profile): { pids: Set<number>; exes: Set<string> } {
  const pids = new Set<number>();
  const exes = new Set<string>();
  for (const s of p.sample) {
    for (const l of s.label) {
      const k = str(p, l.key);
      if (k === 'pid') pids.add(Number(l.num));
      if (k === 'exe') exes.add(str(p, l.str));
    }
  }
  return { pids, exes };
}

function functionNames(p: Profile): Set<string> {
  return new Set(p.function.map((f) => str(p, f.name)));
}

test('serves heap, allocs and delta_heap as Go does, by pid and merged by default', async (t) => {
  const { dir, cleanup } = await tempDir();
  const a = await startTicker(dir, { keepKib: 32, t });
  const b = await startTicker(dir, { keepKib: 16, t });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    a.kill();
    b.kill();
    await cleanup();
  });
  await until(() => agent.source.processes().filter((p) => p.alive).length === 2, 5000, 'two processes');

  // Merged default: both pids on the samples, exe labels on each.
  const heap = await get(`${agent.url}/debug/pprof/heap`);
  t.is(heap.status, 200);
  t.is(heap.headers.get('content-type'), 'application/octet-stream');
  t.is(heap.headers.get('content-disposition'), 'attachment; filename="heap"');
  const merged = await decodeProfile(heap.body);
  const { pids, exes } = labelsOf(merged);
  t.deepEqual([...pids].sort(), [a.pid, b.pid].sort());
  t.deepEqual([...exes].map((e) => e.split('/').pop()), ['ticker']);
  t.true(merged.sample.every((s) => s.label.some((l) => str(merged, l.key) === 'exe')), 'every sample has an exe label');
  t.true(functionNames(merged).has('site_keep'));
  t.is(Number(merged.defaultSampleType), 0, '/heap leaves default_sample_type unset');
  t.deepEqual(merged.sampleType.map((v) => `${str(merged, v.type)}/${str(merged, v.unit)}`),
    ['alloc_objects/count', 'alloc_space/bytes', 'inuse_objects/count', 'inuse_space/bytes']);

  // One process by pid.
  const one = await decodeProfile((await get(`${agent.url}/debug/pprof/heap?pid=${a.pid}&gc=1`)).body);
  t.deepEqual([...labelsOf(one).pids], [a.pid]);
  const keep = one.sample.filter((s) => s.locationId.length > 0)
    .reduce((sum, s) => sum + Number(s.value[3]), 0);
  t.true(keep >= 32 * 1024, `in use ${keep} covers the 32 KiB kept`);

  const allocs = await get(`${agent.url}/debug/pprof/allocs?pid=${b.pid}`);
  t.is(allocs.headers.get('content-disposition'), 'attachment; filename="allocs"');
  const ap = await decodeProfile(allocs.body);
  t.is(str(ap, ap.defaultSampleType), 'alloc_space');

  // delta_heap: the first call of a consumer is cumulative; the next one holds only what
  // was allocated since (the kept blocks were allocated before either call).
  const siteAlloc = (p: Profile, site: string) => {
    const fnIds = new Set(p.function.filter((f) => str(p, f.name) === site).map((f) => Number(f.id)));
    const locIds = new Set(p.location.filter((l) => l.line.some((ln) => fnIds.has(Number(ln.functionId)))).map((l) => Number(l.id)));
    return p.sample.filter((x) => x.locationId.some((id) => locIds.has(Number(id)))).reduce((sum, x) => sum + Number(x.value[1]), 0);
  };
  const d1 = await decodeProfile((await get(`${agent.url}/debug/pprof/delta_heap?pid=${a.pid}&consumer=t1`)).body);
  // Until the agent has read new samples of the ticker (a fixed sleep is too short on a busy
  // machine).
  const samplesOfA = () => agent.source.processes().find((p) => p.pid === a.pid)?.samples ?? 0;
  const seen = samplesOfA();
  await until(() => samplesOfA() > seen, 5000, 'new samples of the ticker');
  const d2 = await decodeProfile((await get(`${agent.url}/debug/pprof/delta_heap?pid=${a.pid}&consumer=t1`)).body);
  const alloc = (p: Profile) => p.sample.reduce((s, x) => s + Number(x.value[1]), 0);
  const inuse = (p: Profile) => p.sample.reduce((s, x) => s + Number(x.value[3]), 0);
  t.true(siteAlloc(d1, 'site_keep') >= 32 * 1024, 'first call: cumulative');
  t.is(siteAlloc(d2, 'site_keep'), 0, 'second call: nothing allocated by site_keep since');
  t.true(siteAlloc(d2, 'site_tick') > 0, 'the ticker allocated in between');
  t.true(inuse(d2) >= 32 * 1024, 'in-use stays absolute in delta_heap');
  // Another consumer starts from zero: its first delta is cumulative.
  const other = await decodeProfile((await get(`${agent.url}/debug/pprof/delta_heap?pid=${a.pid}&consumer=t2`)).body);
  t.true(alloc(other) >= alloc(d1));
});

test('seconds=N returns p1 - p0 over the interval and rejects bad values with 400', async (t) => {
  const { dir, cleanup } = await tempDir();
  const a = await startTicker(dir, { keepKib: 8, periodUs: 1000, t });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    a.kill();
    await cleanup();
  });
  await until(() => agent.source.processes().length === 1, 5000, 'the ticker');
  const t0 = performance.now();
  const r = await get(`${agent.url}/debug/pprof/heap?seconds=1`);
  t.true(performance.now() - t0 >= 1000);
  t.is(r.status, 200);
  const p = await decodeProfile(r.body);
  t.is(Number(p.durationNanos), 1e9);
  // Only site_tick allocated during the second; the kept blocks are not in the delta.
  const bySite = new Map<string, number>();
  const fnById = new Map(p.function.map((f) => [Number(f.id), str(p, f.name)]));
  const locById = new Map(p.location.map((l) => [Number(l.id), l]));
  for (const s of p.sample) {
    const names = s.locationId.flatMap((id) => locById.get(Number(id))!.line.map((ln) => fnById.get(Number(ln.functionId))));
    const site = names.find((n) => n === 'site_tick' || n === 'site_keep') ?? 'other';
    bySite.set(site, (bySite.get(site) ?? 0) + Number(s.value[1]));
  }
  t.true((bySite.get('site_tick') ?? 0) >= 256 * 100, `site_tick allocated ${bySite.get('site_tick')} in 1 s`);
  t.is(bySite.get('site_keep') ?? 0, 0);

  for (const bad of ['0', '-1', 'x', '1.5', '100000']) {
    const e = await get(`${agent.url}/debug/pprof/heap?seconds=${bad}`);
    t.is(e.status, 400, `seconds=${bad}`);
    t.is(e.headers.get('x-go-pprof'), '1');
    t.regex(e.headers.get('content-type') ?? '', /^text\/plain/);
  }
  t.is((await get(`${agent.url}/debug/pprof/delta_heap?seconds=2`)).status, 400);
});

test('debug=1 gives a text table with totals; errors are text/plain with X-Go-Pprof', async (t) => {
  const { dir, cleanup } = await tempDir();
  const a = await startTicker(dir, { keepKib: 40, t });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    a.kill();
    await cleanup();
  });
  await until(() => agent.source.processes().length === 1, 5000, 'the ticker');
  const text = await get(`${agent.url}/debug/pprof/heap?debug=1`);
  t.is(text.status, 200);
  t.regex(text.headers.get('content-type') ?? '', /^text\/plain/);
  t.regex(text.text, new RegExp(`pid ${a.pid} ticker`));
  t.regex(text.text, /in use\s+\d/);
  t.regex(text.text, /inuse_space\s+inuse_objects\s+alloc_space\s+alloc_objects\s+site/);
  t.regex(text.text, /40\.\d+ KiB\s+40\s+40\.\d+ KiB\s+40\s+site_keep/);

  const index = await get(`${agent.url}/debug/pprof/`);
  t.regex(index.headers.get('content-type') ?? '', /^text\/html/);
  t.true(index.text.includes(`heap?pid=${a.pid}`));
  t.true(index.text.includes('delta_heap'));

  for (const [path, status] of [
    ['/debug/pprof/heap?pid=999999999', 404],
    ['/debug/pprof/heap?pid=abc', 400],
    ['/debug/pprof/goroutine', 404],
    ['/nope', 404],
  ] as const) {
    const r = await get(`${agent.url}${path}`);
    t.is(r.status, status, path);
    t.is(r.headers.get('x-go-pprof'), '1', path);
    t.regex(r.headers.get('content-type') ?? '', /^text\/plain/, path);
  }
  t.is((await get(`${agent.url}/debug/pprof/heap`, { method: 'POST' })).status, 405);
});

test('with a token every endpoint but the health checks wants the bearer token', async (t) => {
  const { dir, cleanup } = await tempDir();
  const agent = await inProcessAgent(dir, ['--token', 's3cret']);
  t.teardown(async () => {
    await agent.stop();
    await cleanup();
  });
  t.is((await get(`${agent.url}/healthz`)).status, 200);
  t.is((await get(`${agent.url}/readyz`)).status, 200);
  for (const path of ['/metrics', '/debug/pprof/', '/debug/pprof/heap', '/debug/heaptap/processes']) {
    const no = await get(`${agent.url}${path}`);
    t.is(no.status, 401, path);
    t.regex(no.headers.get('www-authenticate') ?? '', /^Bearer/);
    t.is((await get(`${agent.url}${path}`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    t.is((await get(`${agent.url}${path}`, { headers: { authorization: 'Bearer s3cret-but-longer' } })).status, 401);
    t.is((await get(`${agent.url}${path}`, { headers: { authorization: 's3cret' } })).status, 401);
  }
  t.is((await get(`${agent.url}/metrics`, { headers: { authorization: 'Bearer s3cret' } })).status, 200);
  t.is((await get(`${agent.url}/debug/heaptap/control?pid=1&action=pause`, { method: 'POST' })).status, 401);
  // No process yet: a clear 404, once authenticated.
  const none = await get(`${agent.url}/debug/pprof/heap`, { headers: { authorization: 'Bearer s3cret' } });
  t.is(none.status, 404);
  t.regex(none.text, /no heaptap process/);
});

test('control: pause stops the samples, resume starts them again, rate changes the interval', async (t) => {
  const { dir, cleanup } = await tempDir();
  const a = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    a.kill();
    await cleanup();
  });
  const proc = () => agent.source.processes().find((p) => p.pid === a.pid);
  await until(() => proc(), 5000, 'the ticker');
  const post = (q: string, body?: string, type?: string) =>
    get(`${agent.url}/debug/heaptap/control?${q}`, { method: 'POST', body, headers: type ? { 'content-type': type } : {} });

  const r = await post(`pid=${a.pid}&action=pause`);
  t.is(r.status, 200, r.text);
  t.like(JSON.parse(r.text), { pid: a.pid, action: 'pause' });
  await until(() => proc()?.paused, 5000, 'paused');
  await new Promise((res) => setTimeout(res, 400));
  const s1 = proc()!.samples;
  await new Promise((res) => setTimeout(res, 800));
  const s2 = proc()!.samples;
  t.is(s2, s1, 'no samples while paused');
  t.true((proc()!.drops.paused ?? 0) > 0, 'skipped samples are counted as paused drops');

  t.is((await post('', `pid=${a.pid}&action=resume`, 'application/x-www-form-urlencoded')).status, 200);
  await until(() => proc() && !proc()!.paused && proc()!.samples > s2, 5000, 'samples growing again');

  t.is((await post('', JSON.stringify({ pid: a.pid, action: 'rate', bytes: 4096 }), 'application/json')).status, 200);
  await until(() => proc()?.sampleRate === 4096, 5000, 'rate 4096');

  t.is((await post(`pid=${a.pid}&action=rate`)).status, 400);
  t.is((await post(`pid=${a.pid}&action=rate&bytes=0`)).status, 400);
  t.is((await post(`pid=${a.pid}&action=explode`)).status, 400);
  t.is((await post('action=pause')).status, 400);
  t.is((await post('pid=999999999&action=pause')).status, 404);
  t.is((await get(`${agent.url}/debug/heaptap/control?pid=${a.pid}&action=pause`)).status, 405);
});
