// HeapSource over the watched regions: what the HTTP server, /metrics and the exporters
// read. Processes come from the Watcher's latest snapshots (no file reads); profiles and
// sites are symbolized through one shared symbolizer, which caches by module build id.
import { basename } from 'node:path';
import { Profile } from 'pprof-format';

import { OVERFLOW_FUNCTION, UNKNOWN_STACK_FUNCTION, type AsyncProfileSymbolizer } from '../profile.ts';
import { constants, trimNativeMemory, type RegionSnapshot } from '../region.ts';
import { siteOf, type StackFrame } from '../sites.ts';
import type { Logger } from './log.ts';
import { encodeHeapProfile, gzipProfile, SymbolTables, type EncodeInput } from './pprof.ts';
import type { Tracked, Watcher } from './processes.ts';
import type { HeapProcess, HeapSite, HeapSource } from './types.ts';

/** heap, allocs, delta: as HeapSource says; peak: heap with each stack's in use at the
 * process's own peak (HT_FEATURE_PEAK), alloc_* as now. */
export type View = 'heap' | 'allocs' | 'delta' | 'peak';

/** A snapshot whose in use is each stack's in use at the process's own peak. */
export function atPeak(s: RegionSnapshot): RegionSnapshot {
  return { ...s, counters: { ...s.counters, inuseBytes: s.counters.peakBytes, inuseObjects: s.counters.peakObjects } };
}

export interface SourceOptions {
  symbolizer?: AsyncProfileSymbolizer;
  log: Logger;
  /** after this long without a background build, the symbolizer's open files are
   * closed and the C heap trimmed (ms; 2 s, doubled up to releaseFilesMaxMs while builds
   * keep coming back soon after a release: see ReleaseTimer) */
  releaseFilesAfterMs?: number;
  /** the longest wait before the files are closed (ms; 30 s) */
  releaseFilesMaxMs?: number;
  /** delta_heap consumers remembered at once (least recently used go first) */
  maxConsumers?: number;
  /** a consumer not seen for this long is forgotten, ms */
  consumerIdleMs?: number;
}

/** How many locations a site search looks at (C++ standard-library plumbing, not inlined at
 * -O0, takes ten frames between operator new and the caller: std::map<…>::operator[] ->
 * _M_emplace_hint_unique -> _M_create_node -> ... -> allocate). */
const SITE_DEPTH = 24;

/** /debug/heaptap/timeline's JSON for one process: a point at most every 10 ms (the
 * library's), the oldest thinned past 8192 (the higher of each pair kept). */
export interface ProcessTimeline {
  pid: number;
  region: string;
  exe: string;
  alive: boolean;
  peak: { bytes: number; ms: number | null } | null;
  ms: number[];
  inuse_bytes: number[];
  alloc_bytes: number[];
  rss_bytes: number[];
}

interface SiteCache {
  version: number;
  n: number;
  sites: HeapSite[];
}

interface Consumer {
  lastUsed: number;
  /** per process key: the snapshot the previous delta ended at */
  bases: Map<string, RegionSnapshot>;
  /** per process key: the base before the previous delta (undefined: there was none), until
   * settleDelta; kept only for a consumer that asked (trackDelta): a push exporter */
  previous: Map<string, RegionSnapshot | undefined>;
  track: boolean;
}

/** When to close the symbolizer's files once the background builds are done. The files'
 * libdw tables are most of what symbolizing holds in memory (tens of MB for libc with its
 * separate debug file), and reopening them costs CPU (about 150 ms for that libc): wait
 * minMs after the builds drain; if builds come back less than maxMs after a release (the
 * files were closed too soon: a process still finding new stacks every few seconds), wait
 * twice as long the next time, up to maxMs; builds that stay away maxMs or longer bring the
 * wait back to minMs. Reopening is so at most one per maxMs once the wait has grown, as
 * with a fixed maxMs, while a quiet agent lets go of the tables after minMs. */
export class ReleaseTimer {
  /** the wait the next idle() schedules (ms) */
  delayMs: number;
  private timer: NodeJS.Timeout | null = null;
  /** when release last ran (0: not since the last busy()) */
  private releasedAt = 0;

  private readonly release: () => void;
  private readonly minMs: number;
  private readonly maxMs: number;
  private readonly now: () => number;

  constructor(release: () => void, minMs: number, maxMs: number, now: () => number = Date.now) {
    this.release = release;
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.now = now;
    this.delayMs = minMs;
  }

  /** Builds are queued: no release until they are done. */
  busy(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.releasedAt === 0) return;
    this.delayMs = this.now() - this.releasedAt < this.maxMs ? Math.min(this.maxMs, this.delayMs * 2) : this.minMs;
    this.releasedAt = 0;
  }

  /** The queued builds are done: release after the current wait. */
  idle(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.releasedAt = this.now();
      this.release();
    }, this.delayMs);
    this.timer.unref();
  }
}

export class AgentSource implements HeapSource {
  readonly watcher: Watcher;
  private readonly opts: Required<Omit<SourceOptions, 'symbolizer'>> & { symbolizer?: AsyncProfileSymbolizer };
  private readonly siteCache = new Map<string, SiteCache>();
  /** per process key: its locations, functions and strings (pprof.ts) */
  private readonly tables = new Map<string, SymbolTables>();
  private readonly consumers = new Map<string, Consumer>();

  /** Background table builds, one process at a time. */
  private building: Promise<void> = Promise.resolve();
  private readonly pending = new Set<string>();

  constructor(watcher: Watcher, opts: SourceOptions) {
    this.watcher = watcher;
    this.opts = { maxConsumers: 64, consumerIdleMs: 3_600_000, releaseFilesAfterMs: 2_000, releaseFilesMaxMs: 30_000, ...opts };
    this.release = new ReleaseTimer(() => {
      this.opts.symbolizer?.releaseFiles?.();
      trimNativeMemory();
    }, this.opts.releaseFilesAfterMs, Math.max(this.opts.releaseFilesAfterMs, this.opts.releaseFilesMaxMs));
    // Symbol tables are built as stacks arrive, not when a profile is first asked for:
    // symbolizing a big process's first stacks takes a second or more, which a request
    // (or a scrape of top sites) would otherwise wait for. Builds queue one process at a
    // time (they share the symbolizer), each yielding to the event loop as it goes; a
    // request that comes first joins the build for its process.
    watcher.onStacks((p) => this.prebuild(p));
  }

  private prebuild(p: Tracked): void {
    if (this.pending.has(p.key)) return;
    this.pending.add(p.key);
    this.release.busy();
    const queued = this.building.then(async () => {
      this.pending.delete(p.key);
      const snap = p.snapshot;
      if (!snap || this.watcher.get(p.key) !== p) return;
      try {
        await this.tablesOf(p).update(p.stacks, snap.modules, snap.header.pid, this.opts.symbolizer, this.warn);
      } catch (e) {
        this.opts.log.once(`prebuild:${p.key}`, 'warn', 'cannot build symbol tables', { pid: snap.header.pid, error: (e as Error).message });
      }
    });
    this.building = queued;
    // Once builds have stopped for a while (a process's stacks settle soon after it
    // starts), the symbolizer's libdw tables are freed and the C heap trimmed: they are
    // most of what symbolizing costs in memory, and known addresses stay cached.
    void queued.then(() => {
      if (this.building !== queued || this.pending.size > 0) return;
      // What the builds allocated and freed (region reads, symbolizer results, on the
      // thread pool's malloc arenas) goes back to the kernel now, not at the release.
      trimNativeMemory();
      this.release.idle();
    });
  }

  private readonly release: ReleaseTimer;

  /** Resolves when the background builds queued so far are done (tests, benchmarks). */
  idle(): Promise<void> {
    return this.building;
  }

  processes(): HeapProcess[] {
    const out: HeapProcess[] = [];
    for (const p of this.watcher.all()) if (p.info) out.push(p.info);
    return out;
  }

  onProcessEnd(listener: (p: HeapProcess) => void): () => void {
    return this.watcher.onEnd((p) => listener(p.info!));
  }

  /** Processes a request without ?pid picks: the live ones, else (none live) all retained
   * ones. */
  defaultProcesses(): HeapProcess[] {
    const all = this.processes();
    const live = all.filter((p) => p.alive);
    return live.length > 0 ? live : all;
  }

  /** The process with this pid: the live one if any, else the most recently started. */
  byPid(pid: number): HeapProcess | undefined {
    const matches = this.processes().filter((p) => p.pid === pid);
    return matches.find((p) => p.alive) ?? matches.sort((a, b) => b.startMs - a.startMs)[0];
  }

  /** HeapSource.encodedProfile: the bytes the HTTP endpoints serve (before gzip). */
  encodedProfile(key: string, view: View, consumer = ''): Promise<Uint8Array> {
    return this.profileBytes([key], view, consumer);
  }

  /** The same, decoded (tests, and callers that want pprof-format's objects). */
  async profile(key: string, view: View, consumer = ''): Promise<Profile> {
    return Profile.decode(await this.encodedProfile(key, view, consumer));
  }

  /** One profile of one or several processes (merged: every sample has pid and exe
   * labels), as raw protobuf; gzipProfile() makes the served form. */
  async profileBytes(keys: readonly string[], view: View, consumer = ''): Promise<Uint8Array> {
    const tracked = keys.map((k) => this.need(k));
    const c = view === 'delta' ? this.consumer(consumer) : undefined;
    const bases = c?.bases;
    // The snapshots and the delta baselines are taken synchronously, now: a process
    // forgotten while symbols are looked up still builds from what it had.
    const inputs: { p: Tracked; snapshot: RegionSnapshot; base?: RegionSnapshot }[] = [];
    for (const p of tracked) {
      if (!p.snapshot) continue;
      if (view === 'peak') {
        // each process at its own peak; one whose writer keeps no peak is left out
        if (p.snapshot.peak) inputs.push({ p, snapshot: atPeak(p.snapshot) });
        continue;
      }
      const base = bases?.get(p.key);
      inputs.push({ p, snapshot: p.snapshot, base });
      if (c) {
        if (c.track) c.previous.set(p.key, base);
        c.bases.set(p.key, p.snapshot);
      }
    }
    if (view === 'peak' && inputs.length === 0) {
      throw new NotFound(`no peak data: ${keys.length === 1 ? 'the region of this process was' : 'the regions of these processes were'} made by a heaptap library older than the peak (HT_FEATURE_PEAK)`);
    }
    return this.encode(inputs, { view: view === 'allocs' ? 'allocs' : 'heap', exeLabel: keys.length > 1 });
  }

  /** HeapSource.primeDelta: the consumer's baseline of this process becomes its snapshot now. */
  primeDelta(key: string, consumer: string): boolean {
    const p = this.watcher.get(key);
    if (!p?.snapshot) return false;
    const c = this.consumer(consumer);
    c.previous.delete(key);
    c.bases.set(key, p.snapshot);
    return true;
  }

  /** HeapSource.trackDelta: keep what settleDelta needs for this consumer. */
  trackDelta(consumer: string): void {
    this.consumer(consumer).track = true;
  }

  /** HeapSource.settleDelta: the consumer's last delta of this process was delivered (its
   * earlier baseline is let go) or not (the earlier baseline comes back). */
  settleDelta(key: string, consumer: string, delivered: boolean): boolean {
    const c = this.consumers.get(consumer);
    if (!c || !c.previous.has(key)) return false;
    const before = c.previous.get(key);
    c.previous.delete(key);
    if (delivered) return true;
    if (before) c.bases.set(key, before);
    else c.bases.delete(key);
    return true;
  }

  /** Go's ?seconds=N: every value is p1 - p0 over the interval (in-use may be negative).
   * Reads the regions now and again after the wait, rather than use the last poll. */
  async deltaBytes(keys: readonly string[], view: 'heap' | 'allocs', ms: number, signal?: AbortSignal): Promise<Uint8Array> {
    const before = new Map<string, RegionSnapshot>();
    for (const k of keys) {
      const p = await this.watcher.refresh(k);
      if (p?.snapshot) before.set(k, p.snapshot);
    }
    await sleep(ms, signal);
    const inputs: { p: Tracked; snapshot: RegionSnapshot; base?: RegionSnapshot }[] = [];
    for (const [k, base] of before) {
      const p = (await this.watcher.refresh(k)) ?? this.watcher.get(k);
      if (p?.snapshot) inputs.push({ p, snapshot: p.snapshot, base });
    }
    return this.encode(inputs, { view, exeLabel: keys.length > 1, fullDelta: true, durationNanos: BigInt(ms) * 1_000_000n });
  }

  /** p1 - p0 of one process since `base`, an earlier snapshot of it (the /ui growth view). */
  async growthBytes(key: string, base: RegionSnapshot): Promise<Uint8Array> {
    const p = this.need(key);
    if (!p.snapshot) throw new NotFound(`no process ${key}`);
    return this.encode([{ p, snapshot: p.snapshot, base }], { view: 'heap', exeLabel: false, fullDelta: true });
  }

  /** The served form: gzipped at BestSpeed, as Go writes profiles. */
  gzip(raw: Uint8Array): Promise<Buffer> {
    return gzipProfile(raw);
  }

  private async encode(
    inputs: { p: Tracked; snapshot: RegionSnapshot; base?: RegionSnapshot }[],
    opts: { view: 'heap' | 'allocs'; exeLabel: boolean; fullDelta?: boolean; durationNanos?: bigint },
  ): Promise<Uint8Array> {
    const enc: EncodeInput[] = [];
    for (const { p, snapshot, base } of inputs) {
      const tables = this.tablesOf(p);
      await tables.update(p.stacks, snapshot.modules, snapshot.header.pid, this.opts.symbolizer, this.warn);
      enc.push({ snapshot, tables, base });
    }
    return encodeHeapProfile(enc, opts);
  }

  private readonly warn = (m: string) => this.opts.log.once(`symbolize:${m}`, 'warn', m);

  /** A process's timeline as columns (ms since the epoch, bytes), and its own peak. */
  timeline(key: string): ProcessTimeline {
    const p = this.need(key);
    const pts = p.timeline.points;
    const info = p.info!;
    return {
      pid: info.pid, region: key, exe: info.exe, alive: info.alive,
      peak: info.peakBytes !== null ? { bytes: info.peakBytes, ms: info.peakMs } : null,
      ms: pts.map((x) => x.ms),
      inuse_bytes: pts.map((x) => x.inuseBytes),
      alloc_bytes: pts.map((x) => x.allocBytes),
      rss_bytes: pts.map((x) => x.rssBytes),
    };
  }

  private tablesOf(p: Tracked): SymbolTables {
    let t = this.tables.get(p.key);
    if (!t) this.tables.set(p.key, (t = new SymbolTables()));
    return t;
  }

  async topSites(key: string, n: number): Promise<HeapSite[]> {
    const p = this.need(key);
    const cached = this.siteCache.get(key);
    if (cached && cached.version === p.version && cached.n >= n) return cached.sites.slice(0, n);
    const snap = p.snapshot;
    if (!snap) return [];
    const version = p.version;
    const tables = this.tablesOf(p);
    await tables.update(p.stacks, snap.modules, snap.header.pid, this.opts.symbolizer, this.warn);
    const c = snap.counters;
    const bySite = new Map<string, number>();
    for (let i = 0; i < c.ids.length; i++) {
      const inuse = c.inuseBytes[i]!; // the reader's rule (RegionCounters)
      if (inuse === 0n) continue;
      const site = this.siteName(c.ids[i]!, tables);
      bySite.set(site, (bySite.get(site) ?? 0) + Number(inuse));
    }
    const sites = [...bySite].map(([fn, inuseBytes]) => ({ function: fn, inuseBytes }))
      .sort((a, b) => b.inuseBytes - a.inuseBytes || (a.function < b.function ? -1 : 1))
      .slice(0, Math.max(n, 0));
    if (this.watcher.get(key)) this.siteCache.set(key, { version, n, sites });
    return sites.slice(0, n);
  }

  /** Drops caches of processes the watcher forgot (called after each scan). */
  prune(): void {
    for (const key of [...this.siteCache.keys()]) if (!this.watcher.get(key)) this.siteCache.delete(key);
    for (const key of [...this.tables.keys()]) if (!this.watcher.get(key)) this.tables.delete(key);
    const now = Date.now();
    for (const [id, c] of this.consumers) {
      if (now - c.lastUsed > this.opts.consumerIdleMs) this.consumers.delete(id);
      else {
        for (const key of [...c.bases.keys()]) if (!this.watcher.get(key)) c.bases.delete(key);
        for (const key of [...c.previous.keys()]) if (!this.watcher.get(key)) c.previous.delete(key);
      }
    }
  }

  private need(key: string): Tracked {
    const p = this.watcher.get(key);
    if (!p || !p.info) throw new NotFound(`no process ${key}`);
    return p;
  }

  private consumer(id: string): Consumer {
    let c = this.consumers.get(id);
    if (c) {
      // Most recently used last, so the first one is the one to evict.
      this.consumers.delete(id);
    } else {
      c = { lastUsed: 0, bases: new Map(), previous: new Map(), track: false };
      while (this.consumers.size >= this.opts.maxConsumers) this.consumers.delete(this.consumers.keys().next().value!);
    }
    c.lastUsed = Date.now();
    this.consumers.set(id, c);
    return c;
  }





  /** A stack's site (src/sites.ts, short name) within SITE_DEPTH locations. */
  private siteName(id: number, t: SymbolTables): string {
    if (id === constants.STACK_OVERFLOW) return OVERFLOW_FUNCTION;
    const locs = t.locationsOf(id);
    if (!locs) return UNKNOWN_STACK_FUNCTION;
    const frames: StackFrame[] = [];
    for (let d = 0; d < Math.min(locs.length, SITE_DEPTH); d++) {
      const loc = locs[d]! - 1;
      const mapping = t.locMapping.data[loc]!;
      const m = mapping ? t.mappings[mapping - 1]!.module : undefined;
      const module = m ? basename(m.path) : undefined;
      const names = t.functionName(locs[d]!).filter(Boolean);
      if (names.length) for (const name of names) frames.push({ name, module });
      else {
        const address = BigInt(t.locAddress.data[loc]!);
        frames.push({ name: '', module, offset: m ? address - m.loadBias : address });
      }
    }
    return siteOf(frames).short;
  }
}

export class NotFound extends Error {
  override name = 'NotFound';
}


function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Error('aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
