// The processes the agent watches: one per region file in the directory. Identity is the
// file (its name carries pid and a unique start stamp), never the pid alone, so a reused
// pid is a new process.
//
// Life of a region:
//   seen     a scan finds the file (every --poll, and at once on an inotify event)
//   live     re-read every poll: counters in full, stack records only from the last
//            snapshot's stacks.next on (they never change once READY)
//   ended    a read says no writer holds it (exited, or killed with -9): one more read
//            after that (so nothing written just before death is missed) is the final
//            snapshot; onEnd listeners run once with it
//   removed  --retention after the end (for a region already dead when the agent
//            starts: after its exit time, else its last heartbeat or mtime), the file is
//            unlinked and the process forgotten.
//
// A hostile neighbour (issue 10): a region is input from another container. A read that
// fails because of what the file is (not a region, a layout it cannot use, more data than
// HEAPTAP_MAX_REGION_BYTES, or shrinking under the reader three reads in a row) puts the
// region in quarantine: said once, and not read again until the file changes (inode, size
// or mtime). A region whose read takes longer than slowReadMs is left to finish on its own
// and skipped until it has: the scan goes on, so the other regions stay fresh.
// Counters in a region only grow and are never reset, so an agent that starts late or
// restarts loses nothing: it reads the same cumulative totals.
import { watch, type FSWatcher } from 'node:fs';
import { lstat, readFile, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';

import type { HeapProcess } from './types.ts';
import type { Logger } from './log.ts';
import { StackStore } from './stackStore.ts';
import { PointLog, nsToMs } from '../timeline.ts';
import { describeEnd, endOf, oomCounterOf, oomKills, type EndReason, type OomCounter, type ProcessEnd } from '../ends.ts';
import {
  constants,
  dropsByReason,
  isRegionError,
  listRegions,
  objectsToNumber,
  readRegionAsync,
  type RegionSnapshot,
} from '../region.ts';

export type ReadRegion = (path: string, sinceStack: number, sincePoint?: bigint) => Promise<RegionSnapshot>;

export interface WatcherOptions {
  dir: string;
  pollMs: number;
  retentionMs: number;
  log: Logger;
  /** region reads in flight at once (they run on the libuv pool, which zlib also uses) */
  readConcurrency?: number;
  /** tests: replace the addon's reader */
  readRegion?: ReadRegion;
  /** tests: /proc root */
  procRoot?: string;
  /** tests: the cgroup file system's root (/sys/fs/cgroup) */
  cgroupRoot?: string;
  /** a read taking longer than this no longer holds up the scan (ms; 2000) */
  slowReadMs?: number;
  /** delete a region file as soon as its process has ended and been read for the last
   * time, and keep the process (heaptap run: thousands of short processes must not fill
   * /dev/shm, and the report at the end needs them all; with retentionMs Infinity) */
  unlinkEnded?: boolean;
  now?: () => number;
}

export type Phase = 'live' | 'ended';

const EXITED = constants.stateNames.indexOf('exited');

/** What the agent knows about one region. `snapshot` is the last read without its stack
 * records (only `stacks.next` is kept); `stacks` holds every record read, and each one's
 * frames until the symbol tables have turned them into locations. */
export class Tracked {
  readonly key: string;
  readonly path: string;
  snapshot: RegionSnapshot | null = null;
  readonly stacks = new StackStore();
  phase: Phase = 'live';
  /** ms since the epoch when the process ended (drives retention) */
  endedAtMs = 0;
  /** bumps on every read: caches keyed on it know when counters changed */
  version = 0;
  info: HeapProcess | null = null;
  residentBytes: number | null = null;
  peakInuseBytes = 0;
  /** its timeline (HT_FEATURE_TIMELINE), accumulated over reads: 8192 points at most,
   * thinned keeping the higher of each pair */
  readonly timeline = new PointLog(8192);
  /** its memory cgroup's OOM-kill counter (undefined: not looked up yet) and its value at
   * the last poll that found the process running */
  oom: OomCounter | null | undefined = undefined;
  oomCount: number | null = null;
  /** when the count was seen to go up while the process still looked alive (ms), else 0:
   * the kill may be this process's own, still dying (see readResident) */
  oomRiseMs = 0;
  /** how it ended, once it has */
  end: ProcessEnd | null = null;
  /** reads of this region are serialized through this chain */
  private chain: Promise<unknown> = Promise.resolve();
  /** reads queued or under way (the scan may have stopped waiting for one) */
  reading = 0;
  /** in quarantine: the file's signature (fileSig) when it was put there, else null */
  quarantine: string | null = null;
  /** reads in a row that found the file shrinking under them */
  changedRuns = 0;

  /** the region file's owner when it was found */
  fileUid = -1;

  constructor(key: string, path: string) {
    this.key = key;
    this.path = path;
  }

  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => {});
    return run;
  }
}

const NO_STACKS: RegionSnapshot['stacks'] = {
  ids: new Uint32Array(0),
  depths: new Uint32Array(0),
  flags: new Uint32Array(0),
  frameStart: new Uint32Array(0),
  frames: new BigUint64Array(0),
  next: 0,
};

const NO_POINTS: RegionSnapshot['timeline'] = {
  index: new BigUint64Array(0), ns: new BigUint64Array(0), inuseBytes: new BigInt64Array(0),
  allocBytes: new BigUint64Array(0), rssBytes: new BigUint64Array(0), next: 0n,
};

/** Sums of one snapshot's counters, as numbers (bytes exact below 2^53). In use is the
 * reader's (RegionSnapshot.inuseBytes: per stack alloc - free clamped at 0, summed), the
 * same figure a profile of the process totals. */
export function totals(snap: RegionSnapshot): {
  inuseBytes: number; inuseObjects: number; allocatedBytes: number; allocatedObjects: number;
  freedBytes: number; samples: number;
} {
  const c = snap.counters;
  let ab = 0n, fb = 0n, ao = 0n, sm = 0n;
  for (let i = 0; i < c.ids.length; i++) {
    ab += c.allocBytes[i]!;
    fb += c.freeBytes[i]!;
    ao += c.allocObjects[i]!;
    sm += c.samples[i]!;
  }
  return {
    inuseBytes: Number(snap.inuseBytes),
    inuseObjects: objectsToNumber(snap.inuseObjects),
    allocatedBytes: Number(ab),
    allocatedObjects: objectsToNumber(ao),
    freedBytes: Number(fb),
    samples: Number(sm),
  };
}

export function exeName(exe: string, pid: number): string {
  return basename(exe) || `pid-${pid}`;
}

export class Watcher {
  private readonly opts: Required<Omit<WatcherOptions, 'readRegion' | 'procRoot' | 'cgroupRoot' | 'now' | 'unlinkEnded'>> & {
    readRegion: ReadRegion; procRoot: string; cgroupRoot: string; now: () => number; unlinkEnded: boolean;
  };
  private readonly tracked = new Map<string, Tracked>();
  /** files that failed to read for good, by name: the (mtime, size) they had */
  private readonly bad = new Map<string, string>();
  /** region files refused (refusal below), by name: the owner, mode and inode they had */
  private readonly refused = new Map<string, string>();
  private readonly endListeners = new Set<(p: Tracked) => void>();
  private readonly seenListeners = new Set<(p: Tracked) => void>();
  private readonly stackListeners = new Set<(p: Tracked) => void>();
  private readonly readListeners = new Set<(p: Tracked, snap: RegionSnapshot) => void>();
  private timer: NodeJS.Timeout | null = null;
  private fsWatcher: FSWatcher | null = null;
  private scanning: Promise<void> | null = null;
  private rescan = false;
  private stopped = false;
  private readyResolve!: () => void;
  /** resolves after the first complete scan */
  readonly ready: Promise<void>;
  isReady = false;
  /** the directory did not exist at the last scan */
  dirMissing = false;
  scans = 0;
  lastScanMs = 0;
  readErrors = 0;
  /** processes that ended, by how (src/ends.ts) */
  readonly ends: Record<EndReason, number> = { exited: 0, exec: 0, oom_kill: 0, signal: 0, no_exit: 0, removed: 0 };

  constructor(opts: WatcherOptions) {
    this.opts = {
      readConcurrency: 2,
      slowReadMs: 2000,
      readRegion: (p, s, pt) => readRegionAsync(p, s, pt),
      procRoot: '/proc',
      cgroupRoot: '/sys/fs/cgroup',
      unlinkEnded: false,
      now: () => Date.now(),
      ...opts,
    };
    this.ready = new Promise((r) => (this.readyResolve = r));
  }

  /** Starts scanning: the first scan now, then every pollMs, and on directory events. */
  start(): void {
    this.stopped = false;
    const loop = async () => {
      if (this.stopped) return;
      await this.scan();
      if (!this.stopped) this.timer = setTimeout(loop, this.opts.pollMs);
    };
    void loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.fsWatcher?.close();
    this.fsWatcher = null;
    await this.scanning;
  }

  get dir(): string {
    return this.opts.dir;
  }

  all(): Tracked[] {
    return [...this.tracked.values()];
  }

  get(key: string): Tracked | undefined {
    return this.tracked.get(key);
  }

  onEnd(fn: (p: Tracked) => void): () => void {
    this.endListeners.add(fn);
    return () => this.endListeners.delete(fn);
  }

  /** fn(p) after a read that brought p new stack records. */
  onStacks(fn: (p: Tracked) => void): () => void {
    this.stackListeners.add(fn);
    return () => this.stackListeners.delete(fn);
  }

  /** fn(p, snapshot) after every read of p (the snapshot as read, before it is trimmed). */
  onRead(fn: (p: Tracked, snap: RegionSnapshot) => void): () => void {
    this.readListeners.add(fn);
    return () => this.readListeners.delete(fn);
  }

  onSeen(fn: (p: Tracked) => void): () => void {
    this.seenListeners.add(fn);
    return () => this.seenListeners.delete(fn);
  }

  /** One scan, or joins the one under way (and asks for another after it: a file may have
   * appeared after it listed the directory). */
  scan(): Promise<void> {
    if (this.scanning) {
      this.rescan = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      try {
        do {
          this.rescan = false;
          await this.scanOnce();
        } while (this.rescan && !this.stopped);
      } finally {
        this.scanning = null;
      }
    })();
    return this.scanning;
  }

  /** Reads a live process now (the latest counters) and returns it. */
  async refresh(key: string): Promise<Tracked | undefined> {
    const p = this.tracked.get(key);
    if (!p) return undefined;
    if (p.phase === 'live') await this.read(p);
    return this.tracked.get(key) ?? p;
  }

  private async scanOnce(): Promise<void> {
    const t0 = performance.now();
    const { dir, log } = this.opts;
    this.ensureFsWatch();
    let paths: string[];
    try {
      paths = await listRegions(dir);
      log.reset('dir');
    } catch (e) {
      log.once('dir', 'warn', 'cannot list the region directory', { dir, error: (e as Error).message });
      paths = [];
    }
    // A directory that is not there (listRegions finds nothing in it) is said once, and
    // again when it appears: the first profiled process makes it, or --dir is mistyped.
    const missing = paths.length === 0 && (await stat(dir).then(() => false, (e: NodeJS.ErrnoException) => e.code === 'ENOENT'));
    if (missing && !this.dirMissing) {
      log.warn('the region directory does not exist: nothing to serve until a profiled process makes it (is --dir right?)', { dir });
    } else if (!missing && this.dirMissing) {
      log.info('the region directory appeared', { dir });
    }
    this.dirMissing = missing;
    const names = new Set(paths.map((p) => basename(p)));

    // Files that went away under us (removed by hand, or by another agent).
    for (const p of this.tracked.values()) {
      if (names.has(p.key)) continue;
      if (p.phase === 'ended' && this.opts.unlinkEnded) continue; // we removed it
      if (p.phase === 'live') this.end(p, this.opts.now(), { reason: 'removed' });
      this.forget(p, 'file gone');
    }
    for (const name of [...this.bad.keys()]) if (!names.has(name)) this.bad.delete(name);
    for (const name of [...this.refused.keys()]) if (!names.has(name)) this.refused.delete(name);

    const work: Tracked[] = [];
    for (const path of paths) {
      const key = basename(path);
      const known = this.tracked.get(key);
      if (known) {
        if (known.phase !== 'live' || known.reading > 0) continue; // a slow read: not waited for again
        if (known.quarantine !== null) {
          if ((await fileSig(known.path)) === known.quarantine) continue;
          known.quarantine = null;
        }
        work.push(known);
        continue;
      }
      if (this.bad.has(key)) {
        const sig = await fileSig(path);
        if (sig === this.bad.get(key)) continue;
        this.bad.delete(key);
      }
      const st = await lstat(path).catch(() => null);
      if (!st) continue;
      const ident = `${st.uid}:${st.mode}:${st.ino}`;
      if (this.refused.get(key) === ident) continue;
      this.refused.delete(key);
      const why = fileRefusal(st);
      if (why) {
        this.refuse(key, path, ident, why, { mode: (st.mode & 0o7777).toString(8).padStart(4, '0'), uid: st.uid });
        continue;
      }
      const p = new Tracked(key, path);
      p.fileUid = st.uid;
      this.tracked.set(key, p);
      work.push(p);
    }
    await this.eachLimited(work, (p) => this.readBounded(p));
    if (this.stopped) return;
    await this.eachLimited(work.filter((p) => p.phase === 'live' && this.tracked.has(p.key)), (p) => this.readResident(p));
    await this.expire();
    this.scans++;
    this.lastScanMs = performance.now() - t0;
    if (!this.isReady) {
      this.isReady = true;
      this.readyResolve();
    }
  }

  private async eachLimited<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
    let i = 0;
    const worker = async () => {
      while (i < items.length && !this.stopped) await fn(items[i++]!);
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.readConcurrency, items.length) }, worker));
  }

  /** read(p), waited for at most slowReadMs: a region that takes longer (a hostile one can
   * keep the reader retrying) goes on in the background, and scans skip it until it ends. */
  private readBounded(p: Tracked): Promise<void> {
    const run = this.read(p);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.opts.log.once(`slow:${p.key}`, 'warn', 'region read is slow: not waited for (the other regions are read on)', {
          region: p.key, after_ms: this.opts.slowReadMs,
        });
        resolve();
      }, this.opts.slowReadMs);
      timer.unref();
    });
    return Promise.race([run, late]).finally(() => clearTimeout(timer));
  }

  private read(p: Tracked): Promise<void> {
    p.reading++;
    return p.serialize(async () => {
      if (p.phase !== 'live' || !this.tracked.has(p.key)) return;
      const first = p.snapshot === null;
      let snap: RegionSnapshot;
      try {
        snap = await this.opts.readRegion(p.path, p.stacks.next, p.timeline.next);
      } catch (e) {
        await this.readFailed(p, e);
        return;
      }
      if (first && snap.alive) {
        const why = await this.ownerRefusal(p, snap.header.pid);
        if (why) {
          this.forget(p, 'refused');
          const st = await lstat(p.path).catch(() => null);
          this.refuse(p.key, p.path, st ? `${st.uid}:${st.mode}:${st.ino}` : '', why, { pid: snap.header.pid, uid: p.fileUid });
          return;
        }
      }
      p.changedRuns = 0;
      this.apply(p, snap);
      if (first) this.seen(p);
      if (!snap.alive) {
        // The writer is gone. This read may have taken the counters just before it died;
        // one more, now that nothing writes, is complete.
        try {
          this.apply(p, await this.opts.readRegion(p.path, p.stacks.next, p.timeline.next));
        } catch {
          // keep what the first read got
        }
        this.end(p, first ? await this.exitTime(p) : this.opts.now(), await this.howEnded(p, snap.header.state === EXITED));
      }
    }).finally(() => {
      p.reading--;
    });
  }

  private apply(p: Tracked, snap: RegionSnapshot): void {
    p.stacks.append(snap.stacks);
    const fresh = snap.stacks.ids.length > 0;
    if (snap.timeline) p.timeline.add(snap.timeline);
    // The records now live in p.stacks and the points in p.timeline: the snapshot keeps
    // counters, header and modules, so that neither it nor the delta baselines taken from
    // it hold a second copy.
    p.snapshot = { ...snap, stacks: fresh ? { ...NO_STACKS, next: snap.stacks.next } : snap.stacks, timeline: NO_POINTS };
    if (fresh) for (const fn of this.stackListeners) fn(p);
    for (const fn of this.readListeners) fn(p, snap);
    p.version++;
    const h = snap.header;
    const t = totals(snap);
    // The library's high-water mark (HT_FEATURE_PEAK: every sampled event, however
    // short); without it, the highest in use the agent's reads saw.
    const lib = snap.peak && snap.peak.ns > 0n ? snap.peak : null;
    if (t.inuseBytes > p.peakInuseBytes) p.peakInuseBytes = t.inuseBytes;
    if (lib && Number(lib.bytes) > p.peakInuseBytes) p.peakInuseBytes = Number(lib.bytes);
    const drops: Record<string, number> = {};
    for (const [k, v] of Object.entries(dropsByReason(h))) drops[k] = Number(v);
    const exe = exeName(h.exe, h.pid);
    p.info = {
      key: p.key,
      pid: h.pid,
      ppid: h.ppid,
      exe: h.exe,
      exeName: exe,
      service: h.service || exe,
      startMs: Number(h.startNs / 1_000_000n),
      alive: snap.alive && p.phase === 'live',
      exited: h.state === EXITED,
      sampleRate: Number(h.rateNow || h.sampleRate),
      paused: h.pausedNow !== 0,
      ...t,
      peakInuseBytes: p.peakInuseBytes,
      peakBytes: lib ? Number(lib.bytes) : null,
      peakMs: lib ? nsToMs(lib.ns) : null,
      residentBytes: snap.alive ? p.residentBytes : null,
      end: p.info?.end ?? null,
      drops,
    };
    if (snap.malformed > 0) {
      this.opts.log.once(`malformed:${p.key}`, 'warn', 'region has inconsistent entries (skipped)', {
        region: p.key, pid: h.pid, count: snap.malformed, first: snap.firstMalformed,
      });
    }
  }

  private refuse(key: string, path: string, ident: string, why: string, fields: Record<string, unknown>): void {
    this.refused.set(key, ident);
    this.opts.log.warn(`region refused: ${why}`, { region: key, path, ...fields });
  }

  /** Why the region of a running process is not believed, or ''. Its file must belong to
   * root, to the agent's own user, or to one of the process's user ids (real, effective,
   * saved, file system: a process that starts as root and drops to a user keeps the
   * root-owned region it made first). Anyone else could write a region naming another
   * user's process, and the agent would serve made-up data as that process's and open
   * the files that process maps on their behalf. A process already gone is not checked
   * (nothing of it is opened: src/modules.ts). */
  private async ownerRefusal(p: Tracked, pid: number): Promise<string> {
    if (p.fileUid < 0 || p.fileUid === 0 || p.fileUid === process.geteuid?.()) return '';
    let status: string;
    try {
      status = await readFile(join(this.opts.procRoot, String(pid), 'status'), 'utf8');
    } catch {
      return '';
    }
    const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    if (!m) return '';
    if (m.slice(1).map(Number).includes(p.fileUid)) return '';
    return `its file belongs to uid ${p.fileUid}, process ${pid} runs as uid ${m[1]}`;
  }

  private seen(p: Tracked): void {
    const i = p.info!;
    this.opts.log.info('process seen', { pid: i.pid, exe: i.exeName, service: i.service, region: p.key, alive: i.alive });
    for (const fn of this.seenListeners) fn(p);
  }

  private async readFailed(p: Tracked, e: unknown): Promise<void> {
    const { log } = this.opts;
    this.readErrors++;
    const code = isRegionError(e) ? e.code : 'ERR';
    if (code === 'ENOENT') {
      if (p.phase === 'live' && p.snapshot) this.end(p, this.opts.now(), { reason: 'removed' });
      this.forget(p, 'file gone');
      return;
    }
    const alive = isRegionError(e) ? e.alive : undefined;
    if ((code === 'ERR_HEAPTAP_NOT_READY' || code === 'ERR_HEAPTAP_BUSY') && alive !== false) {
      return; // a writer is setting up or folding: next poll
    }
    // Shrinking under the reader once can be a writer's accident; three reads in a row is
    // a writer that keeps doing it.
    if (code === 'ERR_HEAPTAP_CHANGED' && ++p.changedRuns < 3) return;
    if (p.snapshot && QUARANTINE.has(code)) {
      // It read before: keep serving the last good snapshot, and leave the file alone
      // until it changes.
      p.quarantine = (await fileSig(p.path)) ?? '';
      p.changedRuns = 0;
      log.once(`read:${p.key}:${code}`, 'warn', 'region quarantined: not read again until the file changes (keeping the last snapshot)', {
        region: p.key, code, error: (e as Error).message,
      });
      return;
    }
    if (p.snapshot) {
      // It read before: keep serving the last good snapshot. A writer that died in the
      // middle of a fold leaves the region unreadable for good, so that is the final one.
      if (alive === false) {
        this.end(p, this.opts.now(), await this.howEnded(p, p.snapshot.header.state === EXITED));
        return;
      }
      log.once(`read:${p.key}:${code}`, 'warn', 'cannot read region (keeping the last snapshot)', {
        region: p.key, code, error: (e as Error).message,
      });
      return;
    }
    // Never read: nothing to serve. Left alone until the file changes; a dead one that
    // never became readable is removed after retention like any ended process.
    log.once(`read:${p.key}:${code}`, 'warn', 'cannot read region', { region: p.key, code, error: (e as Error).message });
    this.tracked.delete(p.key);
    if (alive === false) {
      const sig = await fileSig(p.path);
      const mtime = sig ? Number(sig.split(':')[0]) : 0;
      if (mtime + this.opts.retentionMs <= this.opts.now()) await this.unlink(p, 'unreadable, no writer');
      else this.bad.set(p.key, sig ?? '');
    } else {
      this.bad.set(p.key, (await fileSig(p.path)) ?? '');
    }
  }

  /** When a region found dead ended: its exit time, else its last heartbeat or mtime. */
  private async exitTime(p: Tracked): Promise<number> {
    const h = p.snapshot!.header;
    if (h.exitNs > 0n) return Number(h.exitNs / 1_000_000n);
    const sig = await fileSig(p.path);
    const mtime = sig ? Number(sig.split(':')[0]) : 0;
    return Math.max(Number(h.heartbeatNs / 1_000_000n), mtime) || this.opts.now();
  }

  /** How p ended (src/ends.ts): the region, /proc and its memory cgroup. */
  private howEnded(p: Tracked, exited: boolean): Promise<ProcessEnd> {
    const h = p.snapshot!.header;
    return endOf({
      exited, pid: h.pid, startTicks: h.procStartTicks, oom: p.oom ?? null, oomBefore: p.oomCount, procRoot: this.opts.procRoot,
    });
  }

  private end(p: Tracked, atMs: number, e: ProcessEnd): void {
    if (p.phase === 'ended') return;
    p.phase = 'ended';
    p.endedAtMs = atMs;
    p.residentBytes = null;
    p.end = e;
    this.ends[e.reason]++;
    const how = describeEnd(e);
    if (p.info) p.info = { ...p.info, alive: false, residentBytes: null, end: { ...e, text: how } };
    const i = p.info;
    const log = e.reason === 'oom_kill' || e.reason === 'signal' ? this.opts.log.warn.bind(this.opts.log) : this.opts.log.info.bind(this.opts.log);
    log('process ended', {
      pid: i?.pid, exe: i?.exeName, region: p.key, why: how, reason: e.reason, code: e.code, signal: e.signal,
      inuse_bytes: i?.inuseBytes, peak_bytes: i?.peakBytes ?? undefined,
      remove_in_s: Math.max(0, Math.round((atMs + this.opts.retentionMs - this.opts.now()) / 1000)),
    });
    if (this.opts.unlinkEnded && e.reason !== 'removed') void unlink(p.path).catch(() => {});
    if (!p.info) return;
    for (const fn of this.endListeners) {
      try {
        fn(p);
      } catch (e) {
        this.opts.log.once('end-listener', 'error', 'a process-end listener threw', { error: (e as Error).message });
      }
    }
  }

  private async expire(): Promise<void> {
    const now = this.opts.now();
    for (const p of [...this.tracked.values()]) {
      if (p.phase !== 'ended' || p.endedAtMs + this.opts.retentionMs > now) continue;
      await this.unlink(p, 'retention over');
      this.forget(p, 'retention over');
    }
  }

  private async unlink(p: Tracked, why: string): Promise<void> {
    try {
      await unlink(p.path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        this.opts.log.once(`unlink:${code}`, 'warn', 'cannot remove region file', { region: p.key, path: p.path, error: (e as Error).message });
      }
    }
    this.opts.log.info('region removed', { pid: p.info?.pid, region: p.key, why });
  }

  private forget(p: Tracked, _why: string): void {
    this.tracked.delete(p.key);
  }

  /** VmRSS of a live process, checking that the pid is still the region's process: its
   * /proc start time must match the one the region recorded. */
  private async readResident(p: Tracked): Promise<void> {
    const h = p.snapshot?.header;
    if (!h || !p.info) return;
    const root = this.opts.procRoot;
    let rss: number | null = null;
    try {
      const stat = await readFile(join(root, String(h.pid), 'stat'), 'utf8');
      // Fields after the parenthesized command; starttime is field 22 (index 19 here).
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const start = BigInt(fields[19] ?? '0');
      if (h.procStartTicks === 0n || start === h.procStartTicks) {
        const status = await readFile(join(root, String(h.pid), 'status'), 'utf8');
        const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
        if (m) rss = Number(m[1]) * 1024;
      }
    } catch {
      rss = null; // not visible from here (no shared pid namespace) or gone
    }
    p.residentBytes = rss;
    if (p.phase === 'live') p.info = { ...p.info, residentBytes: rss };
    // The memory cgroup's OOM-kill count while it runs: if it has gone up when the process
    // is found gone without exiting, the OOM killer ended it.
    if (rss !== null) {
      if (p.oom === undefined) p.oom = await oomCounterOf(h.pid, root, this.opts.cgroupRoot);
      if (p.oom) {
        const n = await oomKills(p.oom);
        // A process the OOM killer has chosen can still look alive for a while (its
        // region locked, its /proc entry there) while it dies, on a busy machine for
        // several polls: a count that went up is taken as the new baseline only once the
        // process has lived on for 3 s after it (then the kill was another process's).
        const now = this.opts.now();
        if (p.oomCount === null || n === null || n <= p.oomCount) {
          p.oomCount = n;
          p.oomRiseMs = 0;
        } else if (!p.oomRiseMs) {
          p.oomRiseMs = now;
        } else if (now - p.oomRiseMs >= 3000) {
          p.oomCount = n;
          p.oomRiseMs = 0;
        }
      }
    }
  }

  private ensureFsWatch(): void {
    if (this.fsWatcher || this.stopped) return;
    try {
      // inotify on the directory: a new region is read at once rather than at the next
      // poll. Without it (the directory does not exist yet) polling still finds it.
      this.fsWatcher = watch(this.opts.dir, { persistent: false }, (_event, name) => {
        if (name && String(name).endsWith(constants.REGION_SUFFIX) && !this.tracked.has(String(name))) {
          setTimeout(() => void this.scan(), 20).unref();
        }
      });
      this.fsWatcher.on('error', () => {
        this.fsWatcher?.close();
        this.fsWatcher = null;
      });
    } catch {
      this.fsWatcher = null;
    }
  }
}

/** Why a file in the region directory is not read, or '': anything but a regular file,
 * and a file that group or others may write (they could rewrite what the agent reads and
 * the control area; the library never makes one: HEAPTAP_FILE_MODE with such bits is
 * ignored). */
export function fileRefusal(st: { mode: number; isFile(): boolean }): string {
  if (!st.isFile()) return 'not a regular file';
  if (st.mode & 0o022) return `mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')} lets group or others write it`;
  return '';
}

/** Errors that say what the file is (not what happened to a system call): a region that
 * gives one is not read again until it changes. */
const QUARANTINE = new Set(['ERR_HEAPTAP_FORMAT', 'ERR_HEAPTAP_VERSION', 'ERR_HEAPTAP_LIMIT', 'ERR_HEAPTAP_CHANGED', 'ERR_HEAPTAP_NOMEM']);

/** What identifies a file's content for quarantine: mtime (ms, first: exitTime reads it),
 * size, inode. */
async function fileSig(path: string): Promise<string | null> {
  try {
    const s = await stat(path);
    return `${Math.round(s.mtimeMs)}:${s.size}:${s.ino}`;
  } catch {
    return null;
  }
}
