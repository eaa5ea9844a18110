// src/timeline.ts: accumulating a region's timeline across reads, the highest total of
// processes that ran together, and the chart.
import test from 'ava';

import type { RegionTimeline } from '../src/region.ts';
import { PointLog, bucketMax, concurrentPeak, nsToMs, renderChart, type Point, type Series } from '../src/timeline.ts';

function tl(points: Array<[number, number]>, next?: bigint): RegionTimeline {
  // [index, inuse]; ns = 1 ms per index
  return {
    index: BigUint64Array.from(points.map(([n]) => BigInt(n))),
    ns: BigUint64Array.from(points.map(([n]) => BigInt(n + 1) * 1_000_000n)),
    inuseBytes: BigInt64Array.from(points.map(([, v]) => BigInt(v))),
    allocBytes: BigUint64Array.from(points.map(([, v]) => BigInt(v))),
    rssBytes: BigUint64Array.from(points.map(() => 4096n)),
    next: next ?? BigInt((points.at(-1)?.[0] ?? -1) + 1),
  };
}

test('nsToMs keeps the sub-millisecond part of a present-day timestamp', (t) => {
  t.is(nsToMs(1_765_000_000_123_456_789n), 1_765_000_000_123.456_7 + 0.000_089);
  t.is(nsToMs(0n), 0);
});

test('a point log keeps points in order, ignores repeats and fills a gap when its point comes later', (t) => {
  const log = new PointLog();
  log.add(tl([[0, 10], [1, 20], [3, 40]], 2n)); // 2 was being written: next = 2
  t.is(log.next, 2n);
  log.add(tl([[2, 30], [3, 40], [4, 50]]));
  t.deepEqual(log.points.map((p) => p.inuseBytes), [10, 20, 30, 40, 50]);
  t.is(log.next, 5n);
  t.is(log.points[0]!.ms, 1);
});

test('past its cap a point log halves, keeping the higher point of each pair', (t) => {
  const log = new PointLog(16);
  const pts: Array<[number, number]> = [];
  for (let n = 0; n < 17; n++) pts.push([n, n === 9 ? 1000 : n]);
  log.add(tl(pts));
  t.true(log.points.length <= 16);
  t.is(Math.max(...log.points.map((p) => p.inuseBytes)), 1000, 'a spike survives thinning');
});

const pt = (ms: number, inuseBytes: number, rssBytes = 0): Point => ({ ms, inuseBytes, allocBytes: 0, rssBytes });

test('processes one after another: the run\'s peak is the largest one\'s, not their sum', (t) => {
  const series: Series[] = [0, 1, 2].map((k) => ({
    key: `p${k}`, startMs: 100 * k, endMs: 100 * k + 50,
    points: [pt(100 * k + 1, 10), pt(100 * k + 40, 0)],
    peak: { ms: 100 * k + 20, bytes: 100 + k },
  }));
  const cp = concurrentPeak(series);
  t.is(cp.bytes, 102);
  t.is(cp.ms, 220);
  t.is(cp.peakOf, 'p2');
  t.deepEqual([...cp.byKey], [['p2', 102]]);
});

test('processes together: a peak counts what the others held at their last point, and ended ones nothing', (t) => {
  const a: Series = { key: 'a', startMs: 0, endMs: Infinity, points: [pt(1, 50), pt(30, 60), pt(80, 5)], peak: { ms: 40, bytes: 70 } };
  const b: Series = { key: 'b', startMs: 0, endMs: 45, points: [pt(2, 30), pt(35, 40)], peak: { ms: 36, bytes: 45 } };
  const c: Series = { key: 'c', startMs: 50, endMs: Infinity, points: [pt(60, 20)], peak: { ms: 60, bytes: 20 } };
  const cp = concurrentPeak([a, b, c]);
  // at 40: a's peak 70 + b's last point 40 (b's own peak 45 at 36 held until its point... 45 then)
  t.is(cp.bytes, 70 + 45);
  t.is(cp.ms, 40);
  t.deepEqual(Object.fromEntries(cp.byKey), { a: 70, b: 45 });
  // b ended at 45: at c's peak (60) only a (70, held since 40) and c count
  const late = concurrentPeak([{ ...a, points: [pt(1, 50), pt(30, 60)], peak: { ms: 40, bytes: 70 } }, b,
    { ...c, peak: { ms: 60, bytes: 200 } }]);
  t.is(late.bytes, 270);
  t.deepEqual(Object.fromEntries(late.byKey), { a: 70, c: 200 });
});

test('an image that exec\'d is not summed with its successor at the same moment', (t) => {
  const before: Series = { key: 'x', startMs: 0, endMs: 10, points: [pt(1, 100)], peak: { ms: 1, bytes: 100 } };
  const after: Series = { key: 'y', startMs: 10, endMs: Infinity, points: [pt(10, 90)], peak: { ms: 10, bytes: 90 } };
  t.is(concurrentPeak([before, after]).bytes, 100);
});

test('buckets keep a 1 ms spike in its column, and the chart draws it with its scale', (t) => {
  const s: Series = {
    key: 's', startMs: 0, endMs: 1000,
    points: [pt(1, 10, 50), pt(500, 10, 60), pt(501.5, 10, 60)],
    peak: { ms: 500.5, bytes: 1000 },
  };
  const b = bucketMax([s], 0, 1000, 10);
  t.is(b.inuse[5], 1000);
  t.is(b.inuse[0], 10);
  t.is(b.inuse[9], 10);
  t.is(b.rss[5], 60);
  const lines = renderChart(b, 4, (v) => `${v}B`, (ms) => `${ms / 1000}s`);
  t.is(lines.length, 6);
  t.is(lines[0], '1000B ┤     █    ');
  t.is(lines[3], '    0 ┤     █    '); // 10 of 1000 rounds to nothing at 4 rows
  t.regex(lines[5]!, /^ {6} 0 +1s$/);
  t.deepEqual(renderChart(bucketMax([], 0, 10, 4), 3, String, String), []);
});
