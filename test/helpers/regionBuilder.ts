// Builds synthetic region files byte by byte, following proto/heaptap_region.h, for tests
// of the reader. The offsets below are written out by hand from the header (not taken from
// the addon) so that the builder is an independent second reading of the layout; a test
// checks them against the addon's own offsetof table.
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MAGIC = 0x0050415450414548n;
export const LAYOUT_VERSION = 1;
export const HEADER_BYTES = 8192;
export const CONTROL_OFFSET = 4096;
export const PAGE = 4096;
export const OBJ_ONE = 65536n;

export const STACK_OVERFLOW = 1;
export const STACK_FIRST = 2;
export const STACK_READY = 1 << 0;
export const STACK_TRUNCATED = 1 << 1;
export const STACK_DUPLICATE = 1 << 2;
export const STACK_SYNTHETIC = 1 << 3;

export const STATE_INIT = 0;
export const STATE_RUNNING = 1;
export const STATE_EXITED = 2;

export const SLAB_FREE = 0;
export const SLAB_ACTIVE = 1;
export const SLAB_RETIRED = 2;
export const SLAB_FOLDING = 3;

export const MODULE_LOADED = 1;
export const MODULE_UNLOADED = 2;
export const MODULE_MAIN = 1 << 0;
export const MODULE_VDSO = 1 << 1;

export const DROP_SLOTS = 16;

export const SIZES = {
  header: 1744,
  control: 64,
  section: 24,
  module: 104,
  stack: 24,
  counters: 40,
  slabHeader: 64,
  slabEntry: 48,
  peak: 24,
  timelinePoint: 32,
} as const;

export const FEATURE_PEAK = 1 << 0;
export const FEATURE_TIMELINE = 1 << 1;

/** Byte offsets of struct ht_header's fields. */
export const HDR = {
  magic: 0,
  version: 8,
  headerBytes: 12,
  fileBytes: 16,
  flags: 24,
  arch: 28,
  modules: 32,
  paths: 56,
  stackIndex: 80,
  stacks: 104,
  frames: 128,
  shared: 152,
  slabs: 176,
  slabEntries: 200,
  maxDepth: 204,
  pid: 208,
  ppid: 212,
  startNs: 216,
  procStartTicks: 224,
  sampleRate: 232,
  seed: 240,
  unwinder: 248,
  exe: 256,
  cmdline: 768,
  service: 1280,
  state: 1408,
  pausedNow: 1412,
  exitNs: 1416,
  heartbeatNs: 1424,
  rateNow: 1432,
  seq: 1440,
  stacksUsed: 1448,
  modulesUsed: 1452,
  framesUsed: 1456,
  pathsUsed: 1464,
  threadsSeen: 1472,
  slabFolds: 1480,
  drops: 1488,
  slabsUsed: 1616,
  features: 1620,
  inuseBytes: 1624,
  allocBytes: 1632,
  peakBytes: 1640,
  peakNs: 1648,
  peakGen: 1656,
  timeline: 1664,
  timelineNext: 1688,
  sharedPeak: 1696,
} as const;

/** Within struct ht_section. */
export const SEC = { offset: 0, bytes: 8, capacity: 16, entryBytes: 20 } as const;

/** Within struct ht_module. */
export const MOD = {
  state: 0,
  flags: 4,
  pathOff: 8,
  pathLen: 12,
  loadBias: 16,
  start: 24,
  limit: 32,
  fileOffset: 40,
  loadNs: 48,
  unloadNs: 56,
  buildIdLen: 64,
  buildId: 72,
} as const;

/** Within struct ht_stack. */
export const STK = { hash: 0, frameOff: 8, depth: 16, flags: 20 } as const;

/** Within struct ht_control. */
export const CTL = { paused: 0, rate: 8, seq: 16 } as const;

export type SectionName =
  | 'modules'
  | 'paths'
  | 'stackIndex'
  | 'stacks'
  | 'frames'
  | 'shared'
  | 'slabs'
  | 'timeline'
  | 'sharedPeak';

/** The sections of layout 1.0 (every region has them). */
export const SECTION_NAMES: readonly SectionName[] = [
  'modules',
  'paths',
  'stackIndex',
  'stacks',
  'frames',
  'shared',
  'slabs',
];

/** The sections a feature bit adds, after the others. */
export const FEATURE_SECTIONS: readonly SectionName[] = ['timeline', 'sharedPeak'];

export interface Counters {
  allocObjects: bigint;
  allocBytes: bigint;
  freeObjects: bigint;
  freeBytes: bigint;
  samples: bigint;
}

export const ZERO: Counters = {
  allocObjects: 0n,
  allocBytes: 0n,
  freeObjects: 0n,
  freeBytes: 0n,
  samples: 0n,
};

export interface StackSpec {
  frames: bigint[];
  /** default READY */
  flags?: number;
  hash?: bigint;
}

export interface ModuleSpec {
  path: string;
  state?: number;
  flags?: number;
  loadBias?: bigint;
  start?: bigint;
  limit?: bigint;
  fileOffset?: bigint;
  loadNs?: bigint;
  unloadNs?: bigint;
  buildId?: number[];
}

/** struct ht_peak of a row: what it held at peak generation `gen`. */
export interface PeakRow {
  gen: bigint;
  bytes: bigint;
  objects: bigint;
}

export interface CountSpec {
  stackId: number;
  counters: Partial<Counters>;
  /** the row's struct ht_peak (regions with FEATURE_PEAK); default all zero */
  peak?: PeakRow;
}

export interface TimelinePointSpec {
  /** point number n; it lands in slot n % capacity */
  n: number;
  ns: bigint;
  inuseBytes: bigint;
  allocBytes: bigint;
  rssBytes: bigint;
}

export interface SlabSpec {
  state: number;
  tid?: number;
  entries: CountSpec[];
}

export interface RegionSpec {
  capacities?: Partial<Record<SectionName, number>>;
  slabEntries?: number;
  maxDepth?: number;
  /** ids STACK_FIRST, STACK_FIRST + 1, ... in order; id 1 (overflow) is always made */
  stacks?: StackSpec[];
  modules?: ModuleSpec[];
  slabs?: SlabSpec[];
  shared?: CountSpec[];
  /** hdr.features (default 0: a writer from before features existed) */
  features?: number;
  /** FEATURE_PEAK header words */
  peak?: { inuseBytes?: bigint; allocBytes?: bigint; peakBytes?: bigint; peakNs?: bigint; peakGen?: bigint };
  /** FEATURE_TIMELINE: the ring (capacity default 8) and timeline_next (default one past
   * the highest point given) */
  timeline?: { capacity?: number; next?: bigint; points: TimelinePointSpec[] };
  header?: {
    flags?: number;
    pid?: number;
    ppid?: number;
    startNs?: bigint;
    procStartTicks?: bigint;
    sampleRate?: bigint;
    seed?: bigint;
    unwinder?: number;
    exe?: string;
    cmdline?: string;
    service?: string;
    state?: number;
    pausedNow?: number;
    exitNs?: bigint;
    heartbeatNs?: bigint;
    rateNow?: bigint;
    seq?: bigint;
    threadsSeen?: bigint;
    slabFolds?: bigint;
    drops?: bigint[];
  };
}

export interface SectionLayout {
  offset: number;
  bytes: number;
  capacity: number;
  entryBytes: number;
}

export interface BuiltRegion {
  buf: Buffer;
  sections: Record<SectionName, SectionLayout>;
  slabEntries: number;
  /** stack id -> sum over ACTIVE/RETIRED slabs and the shared table */
  expected: Map<number, Counters>;
  /** stack id -> in use at the peak (bytes, fixed-point objects) by the rule of
   * proto/heaptap_region.h, summed over rows and clamped at 0 (FEATURE_PEAK) */
  expectedPeak: Map<number, { bytes: bigint; objects: bigint }>;
  /** ids of the stacks made from spec.stacks, in order */
  stackIds: number[];
}

const DEFAULT_CAPACITY: Record<SectionName, number> = {
  modules: 8,
  paths: 4096,
  stackIndex: 64,
  stacks: 64,
  frames: 512,
  shared: 64,
  slabs: 4,
  timeline: 8,
  sharedPeak: 64,
};

export function hostArch(): number {
  return process.arch === 'arm64' ? 183 : 62;
}

/** ht_slab_slot() of the header. */
export function slabSlot(stackId: number, slabEntries: number): number {
  return (Math.imul(stackId, 0x9e3779b1) >>> 7) & (slabEntries - 1);
}

export function addCounters(a: Counters, b: Partial<Counters>): Counters {
  return {
    allocObjects: a.allocObjects + (b.allocObjects ?? 0n),
    allocBytes: a.allocBytes + (b.allocBytes ?? 0n),
    freeObjects: a.freeObjects + (b.freeObjects ?? 0n),
    freeBytes: a.freeBytes + (b.freeBytes ?? 0n),
    samples: a.samples + (b.samples ?? 0n),
  };
}

function roundUp(n: number): number {
  return Math.ceil(n / PAGE) * PAGE;
}

function writeSection(v: DataView, at: number, s: SectionLayout): void {
  v.setBigUint64(at + SEC.offset, BigInt(s.offset), true);
  v.setBigUint64(at + SEC.bytes, BigInt(s.bytes), true);
  v.setUint32(at + SEC.capacity, s.capacity, true);
  v.setUint32(at + SEC.entryBytes, s.entryBytes, true);
}

function writeString(buf: Buffer, at: number, size: number, s: string): void {
  // Truncated to size - 1 bytes; the rest of the field stays zero (so NUL-terminated).
  const bytes = Buffer.from(s, 'utf8').subarray(0, size - 1);
  bytes.copy(buf, at);
}

function fnv(frames: bigint[]): bigint {
  let h = 0xcbf29ce484222325n;
  for (const f of frames) h = ((h ^ f) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h | 1n;
}

/** Builds a complete, valid region (state RUNNING by default) from spec. */
export function buildRegion(spec: RegionSpec = {}): BuiltRegion {
  const slabEntries = spec.slabEntries ?? 16;
  const features = spec.features ?? 0;
  const withPeak = (features & FEATURE_PEAK) !== 0;
  const withTimeline = (features & FEATURE_TIMELINE) !== 0;
  const entryBytes: Record<SectionName, number> = {
    modules: SIZES.module,
    paths: 1,
    stackIndex: 4,
    stacks: SIZES.stack,
    frames: 8,
    shared: SIZES.counters,
    // with FEATURE_PEAK each entry has a struct ht_peak after all the entries
    slabs: SIZES.slabHeader + slabEntries * (SIZES.slabEntry + (withPeak ? SIZES.peak : 0)),
    timeline: SIZES.timelinePoint,
    sharedPeak: SIZES.peak,
  };
  const sections = {} as Record<SectionName, SectionLayout>;
  let at = HEADER_BYTES;
  const present = [...SECTION_NAMES];
  if (withTimeline) present.push('timeline');
  if (withPeak) present.push('sharedPeak');
  for (const name of [...SECTION_NAMES, ...FEATURE_SECTIONS]) {
    if (!present.includes(name)) {
      sections[name] = { offset: 0, bytes: 0, capacity: 0, entryBytes: 0 };
      continue;
    }
    const capacity = name === 'timeline' ? spec.timeline?.capacity ?? DEFAULT_CAPACITY.timeline
      : name === 'sharedPeak' ? spec.capacities?.sharedPeak ?? spec.capacities?.shared ?? DEFAULT_CAPACITY.shared
      : spec.capacities?.[name] ?? DEFAULT_CAPACITY[name];
    const bytes = roundUp(Math.max(1, capacity * entryBytes[name]));
    sections[name] = { offset: at, bytes, capacity, entryBytes: entryBytes[name] };
    at += bytes;
  }
  const fileBytes = at;
  const buf = Buffer.alloc(fileBytes);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const h = spec.header ?? {};

  v.setBigUint64(HDR.magic, MAGIC, true);
  v.setUint32(HDR.version, LAYOUT_VERSION, true);
  v.setUint32(HDR.headerBytes, HEADER_BYTES, true);
  v.setBigUint64(HDR.fileBytes, BigInt(fileBytes), true);
  v.setUint32(HDR.flags, h.flags ?? 0, true);
  v.setUint32(HDR.arch, hostArch(), true);
  for (const name of SECTION_NAMES) writeSection(v, HDR[name], sections[name]);
  v.setUint32(HDR.features, features, true);
  if (withPeak) writeSection(v, HDR.sharedPeak, sections.sharedPeak);
  if (withTimeline) writeSection(v, HDR.timeline, sections.timeline);
  const pk = spec.peak ?? {};
  v.setBigInt64(HDR.inuseBytes, pk.inuseBytes ?? 0n, true);
  v.setBigUint64(HDR.allocBytes, pk.allocBytes ?? 0n, true);
  v.setBigUint64(HDR.peakBytes, pk.peakBytes ?? 0n, true);
  v.setBigUint64(HDR.peakNs, pk.peakNs ?? 0n, true);
  v.setBigUint64(HDR.peakGen, pk.peakGen ?? 0n, true);
  v.setUint32(HDR.slabEntries, slabEntries, true);
  v.setUint32(HDR.maxDepth, spec.maxDepth ?? 64, true);
  v.setInt32(HDR.pid, h.pid ?? 4242, true);
  v.setInt32(HDR.ppid, h.ppid ?? 1, true);
  v.setBigUint64(HDR.startNs, h.startNs ?? 1_700_000_000_000_000_000n, true);
  v.setBigUint64(HDR.procStartTicks, h.procStartTicks ?? 12345n, true);
  v.setBigUint64(HDR.sampleRate, h.sampleRate ?? 524288n, true);
  v.setBigUint64(HDR.seed, h.seed ?? 0xfeedfacecafebeefn, true);
  v.setUint32(HDR.unwinder, h.unwinder ?? 1, true);
  writeString(buf, HDR.exe, 512, h.exe ?? '/usr/bin/example');
  writeString(buf, HDR.cmdline, 512, h.cmdline ?? 'example --flag');
  writeString(buf, HDR.service, 128, h.service ?? 'example');
  v.setUint32(HDR.state, h.state ?? STATE_RUNNING, true);
  v.setUint32(HDR.pausedNow, h.pausedNow ?? 0, true);
  v.setBigUint64(HDR.exitNs, h.exitNs ?? 0n, true);
  v.setBigUint64(HDR.heartbeatNs, h.heartbeatNs ?? 1_700_000_001_000_000_000n, true);
  v.setBigUint64(HDR.rateNow, h.rateNow ?? h.sampleRate ?? 524288n, true);
  v.setBigUint64(HDR.seq, h.seq ?? 0n, true);
  v.setBigUint64(HDR.threadsSeen, h.threadsSeen ?? 0n, true);
  v.setBigUint64(HDR.slabFolds, h.slabFolds ?? 0n, true);
  (h.drops ?? []).forEach((d, i) => v.setBigUint64(HDR.drops + 8 * i, d, true));

  // Stacks: id 1 is the synthetic overflow stack; spec.stacks get ids 2, 3, ...
  const st = sections.stacks;
  const stackAt = (id: number) => st.offset + id * SIZES.stack;
  v.setBigUint64(stackAt(STACK_OVERFLOW) + STK.hash, 1n, true);
  v.setUint32(stackAt(STACK_OVERFLOW) + STK.flags, STACK_READY | STACK_SYNTHETIC, true);
  let framesUsed = 0;
  const stackIds: number[] = [];
  const index = sections.stackIndex;
  (spec.stacks ?? []).forEach((s, i) => {
    const id = STACK_FIRST + i;
    const rec = stackAt(id);
    const hash = s.hash ?? fnv(s.frames);
    v.setBigUint64(rec + STK.hash, hash, true);
    v.setBigUint64(rec + STK.frameOff, BigInt(framesUsed), true);
    v.setUint32(rec + STK.depth, s.frames.length, true);
    v.setUint32(rec + STK.flags, s.flags ?? STACK_READY, true);
    s.frames.forEach((f, k) => v.setBigUint64(sections.frames.offset + 8 * (framesUsed + k), f, true));
    framesUsed += s.frames.length;
    stackIds.push(id);
    if (!((s.flags ?? STACK_READY) & STACK_DUPLICATE)) {
      for (let p = 0; p < index.capacity; p++) {
        const slot = Number((hash + BigInt(p)) & BigInt(index.capacity - 1));
        if (v.getUint32(index.offset + 4 * slot, true) === 0) {
          v.setUint32(index.offset + 4 * slot, id, true);
          break;
        }
      }
    }
  });
  v.setUint32(HDR.stacksUsed, STACK_FIRST + (spec.stacks?.length ?? 0), true);
  v.setBigUint64(HDR.framesUsed, BigInt(framesUsed), true);

  // Modules and the path pool.
  let pathsUsed = 0;
  (spec.modules ?? []).forEach((m, i) => {
    const e = sections.modules.offset + i * SIZES.module;
    const path = Buffer.from(m.path, 'utf8');
    path.copy(buf, sections.paths.offset + pathsUsed);
    buf[sections.paths.offset + pathsUsed + path.length] = 0;
    v.setUint32(e + MOD.state, m.state ?? MODULE_LOADED, true);
    v.setUint32(e + MOD.flags, m.flags ?? 0, true);
    v.setUint32(e + MOD.pathOff, pathsUsed, true);
    v.setUint32(e + MOD.pathLen, path.length, true);
    v.setBigUint64(e + MOD.loadBias, m.loadBias ?? 0n, true);
    v.setBigUint64(e + MOD.start, m.start ?? 0x400000n, true);
    v.setBigUint64(e + MOD.limit, m.limit ?? 0x500000n, true);
    v.setBigUint64(e + MOD.fileOffset, m.fileOffset ?? 0n, true);
    v.setBigUint64(e + MOD.loadNs, m.loadNs ?? 1_700_000_000_500_000_000n, true);
    v.setBigUint64(e + MOD.unloadNs, m.unloadNs ?? 0n, true);
    const bid = m.buildId ?? [];
    v.setUint32(e + MOD.buildIdLen, bid.length, true);
    bid.forEach((b, k) => buf.writeUInt8(b, e + MOD.buildId + k));
    pathsUsed += path.length + 1;
  });
  v.setUint32(HDR.modulesUsed, spec.modules?.length ?? 0, true);
  v.setBigUint64(HDR.pathsUsed, BigInt(pathsUsed), true);

  const expected = new Map<number, Counters>();
  const expect = (id: number, c: Partial<Counters>) =>
    expected.set(id, addCounters(expected.get(id) ?? ZERO, c));
  // In use at the peak, per row: the row's ht_peak if its gen is the header's, else what
  // the row holds (proto/heaptap_region.h); summed per stack, clamped at 0 at the end.
  const gen = pk.peakGen ?? 0n;
  const peakSum = new Map<number, { bytes: bigint; objects: bigint }>();
  const expectPeak = (id: number, c: Partial<Counters>, row?: PeakRow) => {
    const r = row ?? { gen: 0n, bytes: 0n, objects: 0n };
    const mine = r.gen === gen ? { bytes: r.bytes, objects: r.objects }
      : { bytes: (c.allocBytes ?? 0n) - (c.freeBytes ?? 0n), objects: (c.allocObjects ?? 0n) - (c.freeObjects ?? 0n) };
    const prev = peakSum.get(id) ?? { bytes: 0n, objects: 0n };
    peakSum.set(id, { bytes: prev.bytes + mine.bytes, objects: prev.objects + mine.objects });
  };
  const writePeak = (at: number, row?: PeakRow) => {
    if (!row) return;
    v.setBigUint64(at, row.gen, true);
    v.setBigInt64(at + 8, row.bytes, true);
    v.setBigInt64(at + 16, row.objects, true);
  };
  const writeCounters = (at: number, c: Partial<Counters>) => {
    v.setBigUint64(at, c.allocObjects ?? 0n, true);
    v.setBigUint64(at + 8, c.allocBytes ?? 0n, true);
    v.setBigUint64(at + 16, c.freeObjects ?? 0n, true);
    v.setBigUint64(at + 24, c.freeBytes ?? 0n, true);
    v.setBigUint64(at + 32, c.samples ?? 0n, true);
  };

  // Slabs: entries placed by the header's probe sequence.
  (spec.slabs ?? []).forEach((s, i) => {
    const base = sections.slabs.offset + i * sections.slabs.entryBytes;
    v.setUint32(base, s.state, true);
    v.setUint32(base + 4, s.tid ?? 1000 + i, true);
    v.setUint32(base + 8, s.entries.length, true);
    for (const { stackId, counters, peak } of s.entries) {
      let slot = slabSlot(stackId, slabEntries);
      for (let p = 0; ; p++, slot = (slot + 1) & (slabEntries - 1)) {
        if (p === slabEntries) throw new Error(`slab ${i} is full`);
        const e = base + SIZES.slabHeader + slot * SIZES.slabEntry;
        if (v.getUint32(e, true) !== 0) continue;
        v.setUint32(e, stackId, true);
        writeCounters(e + 8, counters);
        if (withPeak) writePeak(base + SIZES.slabHeader + slabEntries * SIZES.slabEntry + slot * SIZES.peak, peak);
        break;
      }
      if (s.state === SLAB_ACTIVE || s.state === SLAB_RETIRED) {
        expect(stackId, counters);
        expectPeak(stackId, counters, peak);
      }
    }
  });

  // The shared table, by stack id (several specs for one id add up; the last peak given
  // for a row is its ht_peak).
  const sharedPeak = new Map<number, PeakRow | undefined>();
  for (const { stackId, counters, peak } of spec.shared ?? []) {
    if (peak || !sharedPeak.has(stackId)) sharedPeak.set(stackId, peak ?? sharedPeak.get(stackId));
    const at = sections.shared.offset + stackId * SIZES.counters;
    const prev: Counters = {
      allocObjects: v.getBigUint64(at, true),
      allocBytes: v.getBigUint64(at + 8, true),
      freeObjects: v.getBigUint64(at + 16, true),
      freeBytes: v.getBigUint64(at + 24, true),
      samples: v.getBigUint64(at + 32, true),
    };
    writeCounters(at, addCounters(prev, counters));
    expect(stackId, counters);
  }
  for (const [stackId, peak] of sharedPeak) {
    const at = sections.shared.offset + stackId * SIZES.counters;
    const row: Counters = {
      allocObjects: v.getBigUint64(at, true),
      allocBytes: v.getBigUint64(at + 8, true),
      freeObjects: v.getBigUint64(at + 16, true),
      freeBytes: v.getBigUint64(at + 24, true),
      samples: v.getBigUint64(at + 32, true),
    };
    expectPeak(stackId, row, peak);
    if (withPeak) writePeak(sections.sharedPeak.offset + stackId * SIZES.peak, peak);
  }

  // The timeline ring.
  if (withTimeline && spec.timeline) {
    const tl = sections.timeline;
    let next = 0n;
    for (const p of spec.timeline.points) {
      const at = tl.offset + (p.n % tl.capacity) * SIZES.timelinePoint;
      v.setBigUint64(at, p.ns, true);
      v.setBigInt64(at + 8, p.inuseBytes, true);
      v.setBigUint64(at + 16, p.allocBytes, true);
      v.setBigUint64(at + 24, p.rssBytes, true);
      if (BigInt(p.n) + 1n > next) next = BigInt(p.n) + 1n;
    }
    v.setBigUint64(HDR.timelineNext, spec.timeline.next ?? next, true);
  }

  const sorted = new Map([...expected].sort((a, b) => a[0] - b[0]));
  const expectedPeak = new Map<number, { bytes: bigint; objects: bigint }>();
  if (withPeak) {
    for (const id of sorted.keys()) {
      const p = peakSum.get(id) ?? { bytes: 0n, objects: 0n };
      expectedPeak.set(id, { bytes: p.bytes > 0n ? p.bytes : 0n, objects: p.objects > 0n ? p.objects : 0n });
    }
  }
  return { buf, sections, slabEntries, expected: sorted, expectedPeak, stackIds };
}

/** Offset of a section's descriptor field in the header, for hostile edits. */
export function sectionField(name: SectionName, field: keyof typeof SEC): number {
  return HDR[name] + SEC[field];
}

/** A temporary directory, removed by the returned cleanup. On tmpfs (/dev/shm) when there
 * is one, as regions are in production; it also keeps thousands of rewrites off the disk. */
export function tempDir(prefix = 'heaptap-test-'): { dir: string; cleanup: () => void } {
  let parent = tmpdir();
  try {
    accessSync('/dev/shm', constants.W_OK);
    parent = '/dev/shm';
  } catch {
    // no tmpfs: the system temp directory will do
  }
  const dir = mkdtempSync(join(parent, prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeRegion(dir: string, name: string, buf: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, buf);
  return path;
}

/** A small region with a bit of everything, used as the base of many tests. */
export function sampleSpec(): RegionSpec {
  return {
    stacks: [
      { frames: [0x401000n, 0x402000n, 0x403000n] },
      { frames: [0x401100n], flags: STACK_READY | STACK_TRUNCATED },
      { frames: [0x7f0000001000n, 0x401234n] },
      { frames: [0x401000n, 0x402000n, 0x403000n], flags: STACK_READY | STACK_DUPLICATE },
    ],
    modules: [
      {
        path: '/usr/bin/example',
        flags: MODULE_MAIN,
        loadBias: 0n,
        start: 0x401000n,
        limit: 0x480000n,
        fileOffset: 0x1000n,
        buildId: [0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
      },
      { path: '/usr/lib/x86_64-linux-gnu/libc.so.6', state: MODULE_UNLOADED, unloadNs: 1_700_000_002_000_000_000n,
        start: 0x7f0000000000n, limit: 0x7f0000100000n, loadBias: 0x7f0000000000n },
    ],
    slabs: [
      {
        state: SLAB_ACTIVE,
        entries: [
          { stackId: 2, counters: { allocObjects: 3n * OBJ_ONE, allocBytes: 300n, samples: 3n } },
          { stackId: 3, counters: { allocObjects: OBJ_ONE / 2n, allocBytes: 17n, freeObjects: 1n, freeBytes: 5n, samples: 1n } },
        ],
      },
      {
        state: SLAB_RETIRED,
        entries: [
          { stackId: 2, counters: { allocObjects: 1n * OBJ_ONE, allocBytes: 100n, freeObjects: OBJ_ONE, freeBytes: 100n, samples: 1n } },
          { stackId: 4, counters: { allocObjects: 7n, allocBytes: 7000n, samples: 7n } },
        ],
      },
      {
        state: SLAB_FREE,
        entries: [{ stackId: 2, counters: { allocObjects: 999n, allocBytes: 999n, samples: 999n } }],
      },
    ],
    shared: [
      { stackId: 2, counters: { allocObjects: 10n * OBJ_ONE, allocBytes: 1000n, samples: 10n } },
      { stackId: 1, counters: { allocObjects: 2n * OBJ_ONE, allocBytes: 64n, samples: 2n } },
    ],
    header: {
      drops: [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n],
      service: 'checkout',
      exe: '/usr/bin/example',
      cmdline: 'example --port 8080',
    },
  };
}
