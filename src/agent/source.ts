// HeapSource over the watched regions: what the HTTP server, /metrics and the exporters
// read. Processes come from the Watcher's latest snapshots (no file reads); profiles and
// sites are symbolized through one shared symbolizer, which caches by module build id.
import { basename } from 'node:path';
import type { Profile } from 'pprof-format';

import {
  buildProfileAsync,
  OVERFLOW_FUNCTION,
  TRUNCATED_FUNCTION,
  UNKNOWN_STACK_FUNCTION,
  type AsyncProfileSymbolizer,
  type ProfileInput,
} from '../profile.ts';
import { constants, type RegionModule, type RegionSnapshot } from '../region.ts';
import type { Logger } from './log.ts';
import type { Tracked, Watcher } from './processes.ts';
import { subtractProfiles } from './subtract.ts';
import type { HeapProcess, HeapSite, HeapSource } from './types.ts';

export type View = 'heap' | 'allocs' | 'delta';

export interface SourceOptions {
  symbolizer?: AsyncProfileSymbolizer;
  log: Logger;
  /** delta_heap consumers remembered at once (least recently used go first) */
  maxConsumers?: number;
  /** a consumer not seen for this long is forgotten, ms */
  consumerIdleMs?: number;
}

/** Leaf frames that only pass an allocation on: a site is the first frame past them (as
 * pprof's allocRx does for tcmalloc heap profiles). */
const ALLOCATOR_FRAME = /^((__)?(libc_)?(malloc|calloc|realloc|free|valloc|pvalloc|memalign|posix_memalign|aligned_alloc|reallocarray)|(__)?strn?dup|operator new(\[\])?(\(.*\))?|(std::|__gnu_cxx::)(__)?(new_)?allocator(_traits)?<.*>::allocate(\(.*\))?)$/;

/** How deep a site search looks for a named frame before falling back to an address. */
const SITE_DEPTH = 6;

interface SiteCache {
  version: number;
  n: number;
  sites: HeapSite[];
}

interface Consumer {
  lastUsed: number;
  /** per process key: the snapshot the previous delta ended at */
  bases: Map<string, RegionSnapshot>;
}

export class AgentSource implements HeapSource {
  readonly watcher: Watcher;
  private readonly opts: Required<Omit<SourceOptions, 'symbolizer'>> & { symbolizer?: AsyncProfileSymbolizer };
  private readonly siteCache = new Map<string, SiteCache>();
  /** per process key: frame name by return address ('' = none found) */
  private readonly names = new Map<string, Map<bigint, string>>();
  private readonly consumers = new Map<string, Consumer>();

  constructor(watcher: Watcher, opts: SourceOptions) {
    this.watcher = watcher;
    this.opts = { maxConsumers: 64, consumerIdleMs: 3_600_000, ...opts };
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

  async profile(key: string, view: View, consumer = ''): Promise<Profile> {
    return this.profileOf([key], view, consumer);
  }

  /** One profile of several processes (merged: every sample has pid and exe labels). */
  async profileOf(keys: readonly string[], view: View, consumer = ''): Promise<Profile> {
    const tracked = keys.map((k) => this.need(k));
    const inputs: ProfileInput[] = [];
    let bases: Map<string, RegionSnapshot> | undefined;
    if (view === 'delta') bases = this.consumer(consumer).bases;
    // Everything is taken synchronously here: a process forgotten while the build awaits
    // still builds from what it had.
    for (const p of tracked) {
      const input = p.profileInput();
      if (!input) continue;
      const base = bases?.get(p.key);
      inputs.push(base ? { ...input, base } : input);
      bases?.set(p.key, input.snapshot);
    }
    return this.build(inputs, view === 'allocs' ? 'allocs' : 'heap', tracked.length > 1);
  }

  /** Go's ?seconds=N: every value is p1 - p0 over the interval (in-use may be negative).
   * Reads the regions now and again after the wait, rather than use the last poll. */
  async deltaOver(keys: readonly string[], view: 'heap' | 'allocs', ms: number, signal?: AbortSignal): Promise<Profile> {
    const before = await this.freshInputs(keys);
    await sleep(ms, signal);
    const after = await this.freshInputs(keys);
    const merged = keys.length > 1;
    // Stacks only accumulate, so the later stack set serves both ends.
    const p0Inputs: ProfileInput[] = [];
    const p1Inputs: ProfileInput[] = [];
    for (const [key, b] of before) {
      const a = after.get(key) ?? b;
      p1Inputs.push(a);
      p0Inputs.push({ ...b, extraStacks: a.extraStacks });
    }
    const p1 = await this.build(p1Inputs, view, merged);
    const p0 = await this.build(p0Inputs, view, merged);
    const out = subtractProfiles(p1, p0);
    out.durationNanos = BigInt(ms) * 1_000_000n;
    return out;
  }

  async topSites(key: string, n: number): Promise<HeapSite[]> {
    const p = this.need(key);
    const cached = this.siteCache.get(key);
    if (cached && cached.version === p.version && cached.n >= n) return cached.sites.slice(0, n);
    const snap = p.snapshot;
    if (!snap) return [];
    const version = p.version;
    const c = snap.counters;
    // In-use bytes per stack, then per site name.
    const rows: { id: number; inuse: number; frames: BigUint64Array | undefined }[] = [];
    for (let i = 0; i < c.ids.length; i++) {
      const inuse = c.allocBytes[i]! - c.freeBytes[i]!;
      if (inuse <= 0n) continue;
      const id = c.ids[i]!;
      rows.push({ id, inuse: Number(inuse), frames: id === constants.STACK_OVERFLOW ? undefined : p.stacks.framesOf(id) });
    }
    const names = await this.frameNames(p, snap.modules, rows);
    const bySite = new Map<string, number>();
    for (const r of rows) {
      const site = this.siteName(r.id, r.frames, names, snap.modules, p);
      bySite.set(site, (bySite.get(site) ?? 0) + r.inuse);
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
    for (const key of [...this.names.keys()]) if (!this.watcher.get(key)) this.names.delete(key);
    const now = Date.now();
    for (const [id, c] of this.consumers) {
      if (now - c.lastUsed > this.opts.consumerIdleMs) this.consumers.delete(id);
      else for (const key of [...c.bases.keys()]) if (!this.watcher.get(key)) c.bases.delete(key);
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
      c = { lastUsed: 0, bases: new Map() };
      while (this.consumers.size >= this.opts.maxConsumers) this.consumers.delete(this.consumers.keys().next().value!);
    }
    c.lastUsed = Date.now();
    this.consumers.set(id, c);
    return c;
  }

  private async freshInputs(keys: readonly string[]): Promise<Map<string, ProfileInput>> {
    const out = new Map<string, ProfileInput>();
    for (const k of keys) {
      const p = await this.watcher.refresh(k);
      const input = p?.profileInput();
      if (input) out.set(k, input);
    }
    return out;
  }

  private build(inputs: ProfileInput[], view: 'heap' | 'allocs', merged: boolean): Promise<Profile> {
    return buildProfileAsync(inputs, {
      view,
      symbolizer: this.opts.symbolizer,
      exeLabel: merged,
      onWarning: (m) => this.opts.log.once(`symbolize:${m}`, 'warn', m),
    });
  }

  /** Names of the frames site search needs: innermost first, deeper only for stacks whose
   * inner frames have no name or are allocator entry points. */
  private async frameNames(p: Tracked, modules: RegionModule[], rows: { frames: BigUint64Array | undefined }[]): Promise<Map<bigint, string>> {
    let names = this.names.get(p.key);
    if (!names) this.names.set(p.key, (names = new Map()));
    for (let depth = 0; depth < SITE_DEPTH; depth++) {
      const want = new Set<bigint>();
      for (const r of rows) {
        if (!r.frames || depth >= r.frames.length) continue;
        // Is a frame above this depth already a site?
        let done = false;
        for (let d = 0; d < depth; d++) {
          const nm = names.get(r.frames[d]!);
          if (nm && !ALLOCATOR_FRAME.test(nm)) {
            done = true;
            break;
          }
        }
        if (done) continue;
        const pc = r.frames[depth]!;
        if (!names.has(pc)) want.add(pc);
      }
      if (want.size === 0) {
        if (depth > 0) break;
        continue;
      }
      await this.symbolize(p, modules, [...want], names);
    }
    return names;
  }

  private async symbolize(p: Tracked, modules: RegionModule[], pcs: bigint[], names: Map<bigint, string>): Promise<void> {
    const byModule = new Map<number, bigint[]>();
    for (const pc of pcs) {
      const pos = moduleOf(modules, pc);
      if (pos < 0) {
        names.set(pc, '');
        continue;
      }
      let list = byModule.get(pos);
      if (!list) byModule.set(pos, (list = []));
      list.push(pc);
    }
    const sym = this.opts.symbolizer;
    for (const [pos, list] of byModule) {
      let frames: { function: string }[][] = [];
      if (sym) {
        try {
          frames = (await sym.symbolizeAsync(modules[pos]!, p.info?.pid ?? 0, list)).frames;
        } catch (e) {
          this.opts.log.once(`symbolize:${modules[pos]!.path}`, 'warn', 'cannot symbolize module', { module: modules[pos]!.path, error: (e as Error).message });
        }
      }
      list.forEach((pc, i) => {
        const f = frames[i];
        // Inlined frames come innermost first: the innermost is the function the
        // allocation call is written in.
        names.set(pc, f && f.length > 0 ? f[0]!.function : '');
      });
    }
  }

  private siteName(id: number, frames: BigUint64Array | undefined, names: Map<bigint, string>, modules: RegionModule[], p: Tracked): string {
    if (id === constants.STACK_OVERFLOW) return OVERFLOW_FUNCTION;
    if (!frames) return UNKNOWN_STACK_FUNCTION;
    if (frames.length === 0) return TRUNCATED_FUNCTION;
    let fallback = '';
    for (let d = 0; d < Math.min(frames.length, SITE_DEPTH); d++) {
      const nm = names.get(frames[d]!);
      if (!nm) continue;
      if (!ALLOCATOR_FRAME.test(nm)) return nm;
      fallback ||= nm;
    }
    if (fallback) return fallback;
    // No name within reach: the innermost frame as module+offset (stable across runs of
    // one build, unlike the address).
    const pc = frames[0]!;
    const pos = moduleOf(modules, pc);
    if (pos < 0) return `0x${pc.toString(16)}`;
    const m = modules[pos]!;
    void p;
    return `${basename(m.path)}+0x${(pc - 1n - m.loadBias).toString(16)}`;
  }
}

export class NotFound extends Error {
  override name = 'NotFound';
}

/** The module whose range holds pc: a loaded one before an unloaded one that had the same
 * range; -1 if none. */
function moduleOf(modules: RegionModule[], pc: bigint): number {
  let hit = -1;
  for (let i = 0; i < modules.length; i++) {
    const m = modules[i]!;
    if (pc < m.start || pc >= m.limit) continue;
    if (m.state === 1) return i;
    if (hit < 0) hit = i;
  }
  return hit;
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
