// Typed access to heaptap region files (proto/heaptap_region.h) through the native addon.
// The types below describe exactly what src/addon/addon.cc returns; the functions are thin:
// no caching, no policy. Counter values are raw (objects in fixed point, HT_OBJ_ONE per
// object); use objectsToNumber() to convert.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { native } from './native.ts';

/** One table of the region, as the header describes it (validated against the file). */
export interface Section {
  offset: number;
  bytes: number;
  capacity: number;
  entryBytes: number;
}

/** struct ht_header. Identity and geometry come from the copy validated at open; the live
 * words (state ... drops) are loaded after the snapshot's counters and stacks. uint64 fields
 * are bigint except fileBytes and section offsets/sizes, which are validated below 4 GiB. */
export interface RegionHeader {
  magic: bigint;
  version: number;
  headerBytes: number;
  fileBytes: number;
  flags: number;
  arch: number;
  modules: Section;
  paths: Section;
  stackIndex: Section;
  stacks: Section;
  frames: Section;
  shared: Section;
  slabs: Section;
  slabEntries: number;
  maxDepth: number;
  pid: number;
  ppid: number;
  startNs: bigint;
  procStartTicks: bigint;
  sampleRate: bigint;
  seed: bigint;
  unwinder: number;
  exe: string;
  cmdline: string;
  service: string;
  state: number;
  pausedNow: number;
  exitNs: bigint;
  heartbeatNs: bigint;
  rateNow: bigint;
  seq: bigint;
  stacksUsed: number;
  modulesUsed: number;
  framesUsed: bigint;
  pathsUsed: bigint;
  threadsSeen: bigint;
  slabFolds: bigint;
  /** HT_DROP_SLOTS events counters; index i is constants.dropReasons[i] (for i < DROP_COUNT). */
  drops: BigUint64Array;
  /** HT_FEATURE_* bits: what the writer keeps beyond layout 1.0 (0: a writer from before
   * features existed; everything below is then 0 and the sections empty) */
  features: number;
  /** FEATURE_PEAK: the writer's process-wide estimate of bytes in use now (signed) */
  inuseBytes: bigint;
  /** FEATURE_PEAK: estimated bytes allocated, cumulative */
  allocBytes: bigint;
  /** FEATURE_PEAK: the high-water mark of inuseBytes, its time (CLOCK_REALTIME ns) and
   * generation, read with counters.peakBytes (see RegionSnapshot.peak) */
  peakBytes: bigint;
  peakNs: bigint;
  peakGen: bigint;
  /** FEATURE_TIMELINE: points claimed so far (point n is in slot n % timeline.capacity) */
  timelineNext: bigint;
  timeline: Section;
  sharedPeak: Section;
}

/** struct ht_control, as the sidecar last wrote it. */
export interface RegionControl {
  paused: number;
  rate: bigint;
  seq: bigint;
}

/** A published module entry (state LOADED or UNLOADED). */
export interface RegionModule {
  index: number;
  state: number;
  flags: number;
  path: string;
  loadBias: bigint;
  start: bigint;
  limit: bigint;
  fileOffset: bigint;
  loadNs: bigint;
  unloadNs: bigint;
  /** lowercase hex of the NT_GNU_BUILD_ID bytes, '' if none */
  buildId: string;
}

/** Stack records with id in [sinceStack, next) that are READY and not DUPLICATE. Frames of
 * record i: frames.subarray(frameStart[i], frameStart[i] + depths[i]), innermost first. */
export interface RegionStacks {
  ids: Uint32Array;
  depths: Uint32Array;
  flags: Uint32Array;
  frameStart: Uint32Array;
  frames: BigUint64Array;
  /** pass as sinceStack next time: the first id not yet READY, else stacks_used */
  next: number;
}

/** Per-stack totals over slabs and the shared table, only stacks with a non-zero counter,
 * ids ascending. Every id has a READY record with id < header.stacksUsed.
 *
 * In use is computed by the reader, by one rule for every consumer (profiles, metrics,
 * summaries): a stack's alloc - free summed over its rows, clamped at 0; a process's in
 * use is the sum over its stacks (RegionSnapshot.inuseBytes), so that a profile's total
 * and the metric agree. peak* are each stack's in use at the peak (FEATURE_PEAK; zeros
 * without it). */
export interface RegionCounters {
  ids: Uint32Array;
  allocObjects: BigUint64Array;
  allocBytes: BigUint64Array;
  freeObjects: BigUint64Array;
  freeBytes: BigUint64Array;
  samples: BigUint64Array;
  inuseObjects: BigUint64Array;
  inuseBytes: BigUint64Array;
  peakObjects: BigUint64Array;
  peakBytes: BigUint64Array;
}

/** The high-water mark of the writer's in-use estimate (FEATURE_PEAK), read in the same
 * pass as counters.peakBytes. */
export interface RegionPeak {
  bytes: bigint;
  /** CLOCK_REALTIME ns when it was reached (0n: no peak yet) */
  ns: bigint;
  gen: bigint;
  /** false: the peak kept moving while the snapshot was taken (a heap that grows at every
   * sample); the per-stack values are then approximate */
  settled: boolean;
  /** sum of counters.peakBytes: the peak profile's total (equal to bytes for a single
   * thread; other threads' events at the moment of a peak may fall on either side) */
  stackBytes: bigint;
}

/** Timeline points (FEATURE_TIMELINE) from sincePoint on, in order; each was read whole. */
export interface RegionTimeline {
  /** point numbers (n), ascending */
  index: BigUint64Array;
  /** CLOCK_REALTIME ns */
  ns: BigUint64Array;
  inuseBytes: BigInt64Array;
  allocBytes: BigUint64Array;
  /** resident memory of the process then, bytes (0: unknown) */
  rssBytes: BigUint64Array;
  /** pass as sincePoint next time (points from it on may come again: dedupe by index) */
  next: bigint;
}

export interface RegionSnapshot {
  header: RegionHeader;
  control: RegionControl;
  /** a writer holds the region's flock (the process image that made it still runs) */
  alive: boolean;
  modules: RegionModule[];
  stacks: RegionStacks;
  counters: RegionCounters;
  /** in use (sum of counters.inuseBytes / inuseObjects, objects in fixed point) */
  inuseBytes: bigint;
  inuseObjects: bigint;
  /** null without FEATURE_PEAK */
  peak: RegionPeak | null;
  timeline: RegionTimeline;
  /** snapshot attempts redone because a slab fold was under way, or the peak moved while
   * its rows were read (at most constants.PEAK_ATTEMPTS of those) */
  retries: number;
  /** records, rows or entries skipped as inconsistent; 0 for a well-behaved writer */
  malformed: number;
  /** what the first skipped item was, '' if none */
  firstMalformed: string;
}

export interface ControlUpdate {
  paused?: boolean;
  /** new mean sampling interval in bytes; 0 keeps the current one */
  rate?: number | bigint;
}

export type DropReason =
  | 'stacks_full'
  | 'frames_full'
  | 'slab_full'
  | 'no_slab'
  | 'live_full'
  | 'recursion'
  | 'truncated'
  | 'bootstrap'
  | 'modules_full'
  | 'reserve_failed'
  | 'paused'
  | 'busy';

export interface RegionConstants {
  readonly LAYOUT_VERSION: number;
  readonly MAGIC: bigint;
  readonly HEADER_BYTES: number;
  readonly CONTROL_OFFSET: number;
  readonly SECTION_ALIGN: number;
  readonly REGION_SUFFIX: string;
  readonly OBJ_SHIFT: number;
  readonly OBJ_ONE: number;
  readonly STACK_NONE: number;
  readonly STACK_OVERFLOW: number;
  readonly STACK_FIRST: number;
  readonly STACK_READY: number;
  readonly STACK_TRUNCATED: number;
  readonly STACK_DUPLICATE: number;
  readonly STACK_SYNTHETIC: number;
  readonly FLAG_EXACT: number;
  readonly FLAG_FORK_CHILD: number;
  readonly FEATURE_PEAK: number;
  readonly FEATURE_TIMELINE: number;
  readonly PEAK_ATTEMPTS: number;
  readonly MODULE_MAIN: number;
  readonly MODULE_VDSO: number;
  readonly MODULE_SELF: number;
  readonly DROP_COUNT: number;
  readonly DROP_SLOTS: number;
  readonly MAX_FILE_BYTES: number;
  readonly MAX_DEPTH: number;
  readonly MAX_ATTEMPTS: number;
  readonly HOST_ARCH: number;
  /** index i names HT_DROP_* value i */
  readonly dropReasons: readonly DropReason[];
  /** index i names HT_STATE_* value i: init, running, exited */
  readonly stateNames: readonly string[];
  /** index i names HT_MODULE_* state i: empty, loaded, unloaded */
  readonly moduleStateNames: readonly string[];
  /** index i names HT_UNWIND_* value i (0: unknown) */
  readonly unwinderNames: readonly string[];
}

/** Offsets and sizes as the C compiler lays out proto/heaptap_region.h. */
export interface RegionLayout {
  sizes: {
    header: number;
    control: number;
    section: number;
    module: number;
    stack: number;
    counters: number;
    slabHeader: number;
    slabEntry: number;
    peak: number;
    timelinePoint: number;
  };
  header: Record<string, number>;
  module: Record<string, number>;
  control: { paused: number; rate: number; seq: number };
}

/** Errors thrown by readRegion/writeControl: the message starts with the path. code is
 * ERR_HEAPTAP_FORMAT, _VERSION, _NOT_READY (state INIT), _BUSY (fold kept going), _NOMEM,
 * _CHANGED (the file shrank while it was read: its writer truncated it), _LIMIT (the file
 * holds more data than HEAPTAP_MAX_REGION_BYTES, 1 GiB by default), _IO, or an errno name
 * (ENOENT, ELOOP, EISDIR, EACCES...) for a failed system call. */
export interface RegionError extends Error {
  code: string;
  path: string;
  errno?: number;
  /** with ERR_HEAPTAP_NOT_READY and ERR_HEAPTAP_BUSY: whether a writer still holds the
   * region. false means it died while setting up or in the middle of a slab fold, and the
   * region will stay unreadable. */
  alive?: boolean;
}

export const constants: RegionConstants = native.constants;
export const layout: RegionLayout = native.layout;
export const OBJ_ONE = constants.OBJ_ONE;

/** Reads one consistent snapshot of the region at path. Stack records are returned from
 * sinceStack on (pass the previous snapshot's stacks.next to read only new ones), timeline
 * points from sincePoint on (pass timeline.next). */
export function readRegion(path: string, sinceStack = 0, sincePoint: number | bigint = 0): RegionSnapshot {
  return native.readRegion(path, sinceStack, sincePoint);
}

/** readRegion on the libuv thread pool: it may sleep between retries during a slab fold. */
export function readRegionAsync(path: string, sinceStack = 0, sincePoint: number | bigint = 0): Promise<RegionSnapshot> {
  return native.readRegionAsync(path, sinceStack, sincePoint);
}

/** Writes the control area of the region at path (only the given fields) and bumps its seq. */
export function writeControl(path: string, control: ControlUpdate): void {
  native.writeControl(path, control);
}

/** The distinct values of `frames` (first appearance first) and, per frame, the position of
 * its value among them: what symbolizing each return address once needs, done in C. */
export function dedupeFrames(frames: BigUint64Array): { unique: BigUint64Array; index: Uint32Array } {
  return native.dedupeFrames(frames);
}

/** Returns the C heap's free pages to the kernel (malloc_trim): after symbolizing, whose
 * libdw tables are freed in bulk. */
export function trimNativeMemory(): void {
  native.trimMemory();
}

/** gzip of `data` (libdeflate, level 1..12, default 1), off the event loop; `data` must not
 * change until it resolves. */
export function gzipBuffer(data: Uint8Array, level = 1): Promise<Buffer> {
  return native.gzipAsync(data, level);
}

/** What encodeSamples reads: one process's counters (and a delta's base), its stacks'
 * location lists, and the profile's string and location indices it needs. */
export interface EncodeSamplesArgs {
  /** in use is taken from inuseObjects / inuseBytes (the reader's rule, or each stack's
   * in use at the peak for a peak profile) */
  counters: Pick<RegionSnapshot['counters'], 'ids' | 'allocObjects' | 'allocBytes' | 'freeObjects' | 'freeBytes' | 'inuseObjects' | 'inuseBytes'>;
  base?: Pick<RegionSnapshot['counters'], 'ids' | 'allocObjects' | 'allocBytes' | 'freeObjects' | 'freeBytes' | 'inuseObjects' | 'inuseBytes'>;
  /** in-use values become snapshot - base too (Go's ?seconds=N) */
  fullDelta: boolean;
  /** per stack id: its location ids as packed varints, packed[packedStart .. +packedLen);
   * packedLen 0: no location list (the stack's record was not read) */
  packed: Uint8Array;
  packedStart: Uint32Array;
  packedLen: Uint32Array;
  /** added to every location id (this process's offset in a merged profile) */
  locBase: number;
  /** location ids (before locBase) of the overflow and unknown-stack markers; 0 if unused */
  overflowLoc: number;
  unknownLoc: number;
  /** string indices of the label keys; exeStr the exe path's */
  pidKey: number;
  pid: number;
  exeLabel: boolean;
  exeKey: number;
  exeStr: number;
}

/** The sample records (pprof Profile field 2) of one process, as protobuf bytes: the
 * agent's hot loop, in C (src/addon/encode.cc states the values and labels). */
export function encodeSamples(args: EncodeSamplesArgs): Uint8Array {
  return native.encodeSamples(args);
}

export function isRegionError(e: unknown): e is RegionError {
  return e instanceof Error && typeof (e as Partial<RegionError>).code === 'string' &&
    typeof (e as Partial<RegionError>).path === 'string';
}

/** Full paths of the *.heaptap regular files in dir, sorted by name; [] if dir does not
 * exist (the preload makes it on first use). */
export async function listRegions(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return entries
    .filter((d) => d.isFile() && d.name.endsWith(constants.REGION_SUFFIX))
    .map((d) => d.name)
    .sort()
    .map((name) => join(dir, name));
}

const OBJ_FRACTION = (1n << BigInt(constants.OBJ_SHIFT)) - 1n;

/** A fixed-point object count (HT_OBJ_ONE per object) as a number of objects. Exact for
 * counts below 2^53 objects; the fraction comes from the unsampling estimate. */
export function objectsToNumber(fixed: bigint): number {
  const whole = Number(fixed >> BigInt(constants.OBJ_SHIFT));
  return whole + Number(fixed & OBJ_FRACTION) / OBJ_ONE;
}

/** objectsToNumber over a whole column (allocObjects or freeObjects). */
export function objectsToNumbers(fixed: BigUint64Array): Float64Array {
  const out = new Float64Array(fixed.length);
  for (let i = 0; i < fixed.length; i++) out[i] = objectsToNumber(fixed[i]!);
  return out;
}

/** The frames of record i of a RegionStacks, innermost first (a view, not a copy). */
export function stackFrames(stacks: RegionStacks, i: number): BigUint64Array {
  const start = stacks.frameStart[i]!;
  return stacks.frames.subarray(start, start + stacks.depths[i]!);
}

/** hdr.drops by name, for the DROP_COUNT defined reasons. */
export function dropsByReason(header: RegionHeader): Record<DropReason, bigint> {
  const out = {} as Record<DropReason, bigint>;
  constants.dropReasons.forEach((name, i) => {
    out[name] = header.drops[i] ?? 0n;
  });
  return out;
}
