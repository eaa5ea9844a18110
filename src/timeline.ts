// The heap over time, from the regions' timelines (HT_FEATURE_TIMELINE) and peaks
// (HT_FEATURE_PEAK): what `heaptap run` and the agent both use.
//
// A process's in-use estimate changes only at its sampled events, and the writer keeps, in
// its region, the highest value it reached (with its time) and a point (time, in use,
// allocated, RSS) at most every 10 ms. PointLog accumulates one process's points across
// reads (the ring holds the last 4096). concurrentPeak() finds the highest total of the
// processes that ran together; bucketMax() and renderChart() draw it.
import type { RegionSnapshot, RegionTimeline } from './region.ts';

export interface Point {
  /** ms since the epoch (CLOCK_REALTIME; float, sub-ms kept) */
  ms: number;
  inuseBytes: number;
  allocBytes: number;
  /** 0 when the writer could not read it */
  rssBytes: number;
}

export function nsToMs(ns: bigint): number {
  // whole ms exactly, then the fraction: Number(ns) alone loses ~256 ns at today's epoch
  return Number(ns / 1_000_000n) + Number(ns % 1_000_000n) / 1e6;
}

/** One process's timeline, accumulated over reads (readRegion's sincePoint = next). Points
 * are kept in index order; past `cap` points every other pair is merged into the one with
 * more in use (so a spike is never thinned away; the times get coarser). */
export class PointLog {
  readonly points: Point[] = [];
  private readonly indices: bigint[] = [];
  /** pass as sincePoint on the next read */
  next = 0n;
  private readonly cap: number;

  constructor(cap = 65536) {
    this.cap = Math.max(16, cap);
  }

  /** Adds a read's points; repeats (points past a gap come again) are ignored. */
  add(tl: RegionTimeline): void {
    const n = tl.index.length;
    for (let i = 0; i < n; i++) {
      const idx = tl.index[i]!;
      const p: Point = {
        ms: nsToMs(tl.ns[i]!),
        inuseBytes: Number(tl.inuseBytes[i]!),
        allocBytes: Number(tl.allocBytes[i]!),
        rssBytes: Number(tl.rssBytes[i]!),
      };
      const last = this.indices.length - 1;
      if (last < 0 || idx > this.indices[last]!) {
        this.indices.push(idx);
        this.points.push(p);
        continue;
      }
      // a gap filled in later: its place by index, unless it is there already
      let lo = 0, hi = this.indices.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.indices[mid]! < idx) lo = mid + 1;
        else hi = mid;
      }
      if (this.indices[lo] === idx) continue;
      this.indices.splice(lo, 0, idx);
      this.points.splice(lo, 0, p);
    }
    if (tl.next > this.next) this.next = tl.next;
    if (this.points.length > this.cap) this.thin();
  }

  private thin(): void {
    const pts = this.points, idx = this.indices;
    let k = 0;
    for (let i = 0; i < pts.length; i += 2) {
      const j = i + 1 < pts.length && pts[i + 1]!.inuseBytes > pts[i]!.inuseBytes ? i + 1 : i;
      pts[k] = pts[j]!;
      idx[k] = idx[j]!;
      k++;
    }
    pts.length = k;
    idx.length = k;
  }
}

/** What the sweep needs of one process image. */
export interface Series {
  key: string;
  /** when it started and ended (ms since the epoch); endMs Infinity while it runs */
  startMs: number;
  endMs: number;
  /** its in-use samples, in time order (timeline points, or polls without a timeline) */
  points: readonly Point[];
  /** its own high-water mark and when (null: no peak data) */
  peak: { ms: number; bytes: number } | null;
}

/** Start, end and peak of a process image from its latest snapshot. The end is its exit
 * time, else (killed, or exec'd into a new image) the last thing it recorded. */
export function seriesOf(key: string, snap: RegionSnapshot, points: readonly Point[]): Series {
  const h = snap.header;
  const startMs = nsToMs(h.startNs);
  const peak = snap.peak && snap.peak.ns > 0n ? { ms: nsToMs(snap.peak.ns), bytes: Number(snap.peak.bytes) } : null;
  let endMs = Infinity;
  if (!snap.alive) {
    endMs = h.exitNs > 0n ? nsToMs(h.exitNs) : Math.max(nsToMs(h.heartbeatNs), points.at(-1)?.ms ?? 0, peak?.ms ?? 0, startMs);
  }
  return { key, startMs, endMs, points, peak };
}

interface Event {
  ms: number;
  /** 0: the process ended; 1: a sample; 2: its own peak */
  kind: 0 | 1 | 2;
  proc: number;
  inuse: number;
  rss: number;
}

function events(series: readonly Series[]): Event[] {
  const ev: Event[] = [];
  series.forEach((s, proc) => {
    let rss = 0;
    const add = (ms: number, kind: 1 | 2, inuse: number, r: number) => {
      if (ms > s.endMs) return;
      ev.push({ ms, kind, proc, inuse: Math.max(0, inuse), rss: r });
    };
    let peakDone = !s.peak;
    for (const p of s.points) {
      if (!peakDone && s.peak!.ms <= p.ms) {
        add(s.peak!.ms, 2, s.peak!.bytes, rss);
        peakDone = true;
      }
      if (p.rssBytes > 0) rss = p.rssBytes;
      add(p.ms, 1, p.inuseBytes, rss);
    }
    if (!peakDone) add(s.peak!.ms, 2, s.peak!.bytes, rss);
    if (Number.isFinite(s.endMs)) ev.push({ ms: s.endMs, kind: 0, proc, inuse: 0, rss: 0 });
  });
  // By time; at one moment ends first (an image that exec'd is not summed with the next
  // one), then samples in the order given (stable sort).
  ev.sort((a, b) => a.ms - b.ms || (a.kind === 0 ? 0 : 1) - (b.kind === 0 ? 0 : 1));
  return ev;
}

export interface ConcurrentPeak {
  /** the highest total (bytes) and when (ms since the epoch); bytes 0 and ms NaN if none */
  bytes: number;
  ms: number;
  /** each process's estimate at that moment (keys of the series that held something) */
  byKey: Map<string, number>;
  /** the process whose own peak made that moment, if one did */
  peakOf: string | null;
}

/** The highest total in use of processes alive together. Each process's in use is held
 * from one sample to the next (a step function: it changes only at sampled events, and a
 * point or its peak records its value then) and is 0 after it ended; the total is
 * evaluated after every sample of every process. It is exact at the moments the samples
 * record (every process's own peak among them); between a process's points its value is
 * not known, so what the others held at the very moment of one's peak is their last point. */
export function concurrentPeak(series: readonly Series[]): ConcurrentPeak {
  const ev = events(series);
  const cur = new Float64Array(series.length);
  let total = 0;
  let best = -1, bestMs = NaN, bestAt: Float64Array | null = null, bestPeakOf: string | null = null;
  for (const e of ev) {
    total += e.inuse - cur[e.proc]!;
    cur[e.proc] = e.inuse;
    if (e.kind !== 0 && total > best) {
      best = total;
      bestMs = e.ms;
      bestAt = cur.slice();
      bestPeakOf = e.kind === 2 ? series[e.proc]!.key : null;
    }
  }
  const byKey = new Map<string, number>();
  if (bestAt) series.forEach((s, k) => { if (bestAt![k]! > 0) byKey.set(s.key, bestAt![k]!); });
  return { bytes: Math.max(0, best), ms: bestMs, byKey, peakOf: bestPeakOf };
}

export interface Buckets {
  fromMs: number;
  toMs: number;
  /** per column: the highest total in use and RSS within it */
  inuse: Float64Array;
  rss: Float64Array;
}

/** The highest total in use and RSS of the processes in each of `columns` equal spans of
 * [fromMs, toMs] (a 1 ms spike shows in its column). */
export function bucketMax(series: readonly Series[], fromMs: number, toMs: number, columns: number): Buckets {
  const inuse = new Float64Array(columns), rss = new Float64Array(columns);
  const span = Math.max(toMs - fromMs, 1e-9);
  const col = (ms: number) => Math.min(columns - 1, Math.floor(((ms - fromMs) / span) * columns));
  const cur = new Float64Array(series.length), curRss = new Float64Array(series.length);
  let total = 0, totalRss = 0, c = 0;
  const hold = (k: number) => {
    inuse[k] = Math.max(inuse[k]!, total);
    rss[k] = Math.max(rss[k]!, totalRss);
  };
  for (const e of events(series)) {
    const inRange = e.ms >= fromMs && e.ms <= toMs;
    const k = inRange ? col(e.ms) : -1;
    if (inRange) {
      for (; c < k; c++) hold(c); // what was held through the columns before it
      hold(k);
    }
    total += e.inuse - cur[e.proc]!;
    cur[e.proc] = e.inuse;
    totalRss += e.rss - curRss[e.proc]!;
    curRss[e.proc] = e.rss;
    if (inRange) hold(k);
    if (e.ms > toMs) break;
  }
  for (; c < columns; c++) hold(c);
  return { fromMs, toMs, inuse, rss };
}

/** A small chart: in use as '█', RSS above it as '░' (each column's highest), the scale on
 * the left, the time under it. `fmt` formats a byte count, `fmtTime` a span in ms. */
export function renderChart(b: Buckets, rows: number, fmt: (bytes: number) => string, fmtTime: (ms: number) => string): string[] {
  const cols = b.inuse.length;
  let top = 0;
  for (let c = 0; c < cols; c++) top = Math.max(top, b.inuse[c]!, b.rss[c]!);
  if (top <= 0) return [];
  const label = fmt(top);
  const pad = label.length;
  const height = (v: number) => Math.round((v / top) * rows * 2) / 2; // half rows
  const out: string[] = [];
  for (let r = rows - 1; r >= 0; r--) {
    let line = '';
    for (let c = 0; c < cols; c++) {
      const hi = height(b.inuse[c]!), hr = height(b.rss[c]!);
      if (hi >= r + 1) line += '█';
      else if (hi >= r + 0.5) line += '▄';
      else if (hr >= r + 0.5) line += '░';
      else line += ' ';
    }
    const y = r === rows - 1 ? label : r === 0 ? '0'.padStart(pad) : '';
    out.push(`${y.padStart(pad)} ┤${line}`);
  }
  const end = fmtTime(b.toMs - b.fromMs);
  out.push(`${' '.repeat(pad)} └${'─'.repeat(cols)}`);
  out.push(`${' '.repeat(pad)}  0${' '.repeat(Math.max(1, cols - 1 - end.length))}${end}`);
  return out;
}
