// The agent's smaller parts on their own: the incremental stack store, the logger,
// control validation, the token check, and the Prometheus collectors over a fake
// HeapSource (test/exporters/fake-source.ts).
import test from 'ava';

import { parseControl, ControlError } from '../../src/agent/control.ts';
import { createLogger } from '../../src/agent/log.ts';
import { createMetrics } from '../../src/agent/metrics.ts';
import { StackStore } from '../../src/agent/stackStore.ts';
import { tokenMatches } from '../../src/agent/http.ts';
import { FakeHeapSource, fakeProcess } from '../exporters/fake-source.ts';
import type { RegionStacks } from '../../src/region.ts';

function stacks(next: number, recs: [number, bigint[]][]): RegionStacks {
  const frames: bigint[] = [];
  const frameStart: number[] = [];
  for (const [, f] of recs) {
    frameStart.push(frames.length);
    frames.push(...f);
  }
  return {
    ids: Uint32Array.from(recs.map((r) => r[0])),
    depths: Uint32Array.from(recs.map((r) => r[1].length)),
    flags: Uint32Array.from(recs.map(() => 1)),
    frameStart: Uint32Array.from(frameStart),
    frames: BigUint64Array.from(frames),
    next,
  };
}

test('the stack store appends reads, keeps earlier views valid across growth, and ignores repeats', (t) => {
  const s = new StackStore();
  s.append(stacks(4, [[2, [1n, 2n]], [3, [3n]]]));
  const early = s.pending();
  t.is(s.next, 4);
  for (let i = 0; i < 200; i++) s.append(stacks(5 + i, [[4 + i, [BigInt(100 + i), 7n, 8n]]]));
  s.append(stacks(5, [[2, [9n, 9n]]])); // already known: ignored, and next never goes back
  t.is(s.size, 202);
  t.is(s.next, 204);
  t.deepEqual([...s.framesOf(2)!], [1n, 2n]);
  t.deepEqual([...s.framesOf(150)!], [246n, 7n, 8n]);
  t.is(s.framesOf(1), undefined);
  t.is(s.framesOf(99999), undefined);
  t.deepEqual([...early.ids], [2, 3], 'a view taken before growth is unchanged');
  t.deepEqual([...early.frames], [1n, 2n, 3n]);
  const v = s.pending();
  t.is(v.first, 0);
  t.is(v.ids.length, 202);
  t.is(v.frames.length, 3 + 200 * 3);
});

test('the stack store frees released frames and keeps the rest addressable', (t) => {
  const s = new StackStore();
  s.append(stacks(4, [[2, [1n, 2n]], [3, [3n]]]));
  const before = s.pending();
  s.release(1); // stack 2's frames go; stack 3's move to the front
  t.deepEqual([...before.frames], [1n, 2n, 3n], 'a view taken before the release is unchanged');
  t.is(s.framesOf(2), undefined);
  t.true(s.has(2));
  t.deepEqual([...s.framesOf(3)!], [3n]);
  s.append(stacks(6, [[4, [4n, 5n, 6n]], [5, []]]));
  let p = s.pending();
  t.is(p.first, 1);
  t.deepEqual([...p.ids], [3, 4, 5]);
  const framesOfPending = [...p.ids].map((_, i) => [...p.frames.subarray(p.frameStart[i]!, p.frameStart[i]! + p.depths[i]!)]);
  t.deepEqual(framesOfPending, [[3n], [4n, 5n, 6n], []]);
  s.release(99); // everything: no frames held, ids remembered, repeats still ignored
  p = s.pending();
  t.is(p.ids.length, 0);
  t.is(p.frames.length, 0);
  t.is(s.framesOf(4), undefined);
  s.append(stacks(7, [[4, [9n]], [6, [7n]]]));
  t.deepEqual([...s.pending().ids], [6]);
  t.is(s.size, 5);
  t.true(s.bytes < 4096, `bytes held after releasing everything: ${s.bytes}`);
});

test('the logger writes one line per event, as text or JSON, and once() logs a kind once', (t) => {
  const lines: string[] = [];
  const now = () => new Date('2026-01-02T03:04:05.000Z');
  const text = createLogger({ write: (l) => lines.push(l), now });
  text.info('process seen', { pid: 7, exe: 'a b', n: undefined });
  text.warn('multi\nline message');
  text.debug('hidden');
  t.deepEqual(lines, ['2026-01-02T03:04:05.000Z info  process seen pid=7 exe="a b"', '2026-01-02T03:04:05.000Z warn  multi line message']);
  lines.length = 0;
  const json = createLogger({ format: 'json', write: (l) => lines.push(l), now });
  t.true(json.once('k', 'error', 'exporter down', { exporter: 'x' }));
  t.false(json.once('k', 'error', 'exporter down'));
  json.reset('k');
  t.true(json.once('k', 'error', 'exporter down'));
  t.is(lines.length, 2);
  t.deepEqual(JSON.parse(lines[0]!), { time: '2026-01-02T03:04:05.000Z', level: 'error', msg: 'exporter down', exporter: 'x' });
});

test('control actions are validated before anything is written', (t) => {
  t.deepEqual(parseControl('pause'), { action: 'pause' });
  t.deepEqual(parseControl('rate', '512k'), { action: 'rate', bytes: 524288 });
  t.deepEqual(parseControl('rate', '1'), { action: 'rate', bytes: 1 });
  for (const [a, b] of [['rate', undefined], ['rate', '0'], ['rate', '2t'], ['rate', String(2 ** 41)], ['pause', '5'], ['stop', undefined], [undefined, undefined]]) {
    t.throws(() => parseControl(a, b), { instanceOf: ControlError }, `${a} ${b}`);
  }
});

test('the bearer token is checked whole and only in the Bearer scheme', (t) => {
  t.true(tokenMatches('Bearer abc', 'abc'));
  t.true(tokenMatches('bearer abc', 'abc'));
  for (const h of [undefined, '', 'abc', 'Bearer ', 'Bearer ab', 'Bearer abcd', 'Basic abc', 'Bearer abc def']) t.false(tokenMatches(h, 'abc'), String(h));
});

test('metrics: per-process gauges and counters at scrape time, sites capped at N per process', async (t) => {
  const a = fakeProcess({ pid: 10, service: 'api', residentBytes: 100, inuseBytes: 150 });
  const b = fakeProcess({ pid: 11, alive: false, residentBytes: null });
  const source = new FakeHeapSource([
    { process: a, stacks: Array.from({ length: 30 }, (_, i) => ({ frames: [`f${i}`], allocObjects: 1, allocBytes: 10, inuseObjects: 1, inuseBytes: 1000 - i })) },
    { process: b, stacks: [] },
  ]);
  const reg = createMetrics({ source, topSites: 5, version: '9.9.9', defaultMetrics: false });
  const text = await reg.metrics();
  t.regex(text, /^# TYPE heaptap_heap_allocated_bytes_total counter$/m);
  t.regex(text, /^# TYPE heaptap_heap_inuse_bytes gauge$/m);
  t.regex(text, /^heaptap_heap_inuse_bytes\{pid="10",exe="api-server",service="api"\} 150$/m);
  t.regex(text, /^heaptap_process_resident_memory_bytes\{pid="10",exe="api-server",service="api"\} 100$/m);
  t.notRegex(text, /^heaptap_process_resident_memory_bytes\{pid="11"/m, 'no series when resident memory is unknown');
  t.regex(text, /^heaptap_unattributed_resident_bytes\{pid="10",exe="api-server",service="api"\} 0$/m, 'never below zero');
  t.regex(text, /^heaptap_process_alive\{pid="11",exe="api-server",service="api-server"\} 0$/m);
  t.regex(text, /^heaptap_samples_dropped_total\{pid="10",exe="api-server",service="api",reason="live_full"\} 3$/m);
  t.regex(text, /^heaptap_build_info\{version="9.9.9",nodejs_version="[\d.]+"\} 1$/m);
  const sites = text.split('\n').filter((l) => l.startsWith('heaptap_site_inuse_bytes{pid="10"'));
  t.is(sites.length, 5);
  t.regex(sites[0]!, /function="f0"\} 1000$/);
  // Values follow the source at every scrape; a process that is gone has no series.
  source.set({ ...a, inuseBytes: 7 });
  source.end(b.key);
  const again = await reg.metrics();
  t.regex(again, /^heaptap_heap_inuse_bytes\{pid="10",exe="api-server",service="api"\} 7$/m);
  t.notRegex(again, /pid="11"/);
});
