// pprof heap profiles from region snapshots, shaped exactly as Go's runtime/pprof writes
// them (protomem.go; /work/shared/WIRE.md has the rules), so that go tool pprof, Pyroscope
// and Parca read them as heap profiles:
//   sample types  alloc_objects/count, alloc_space/bytes, inuse_objects/count, inuse_space/bytes
//   period type   space/bytes, period = the sampling rate in bytes
//   heap view     default_sample_type unset (consumers show the last type: inuse_space)
//   allocs view   default_sample_type = alloc_space
//   labels        pid (and exe in merged profiles): the same for a stack in every profile of
//                 its process, and no `bytes` label (see assemble())
// Values are the unsampled estimates the preload keeps (the region counters already hold
// 1/p-weighted objects and bytes); in-use is the reader's (src/region.ts RegionCounters:
// alloc - free per stack, clamped at 0).
//
// The builder has no CLI or HTTP concerns: it takes snapshots and a symbolizer and returns
// a pprof-format Profile; encodeProfile() gzips it. A symbolizer is any object with the
// shape of src/symbolize.ts's Symbolizer (tests pass a fake one).
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import {
  Function as PprofFunction,
  Label,
  Line,
  Location,
  Mapping,
  Profile,
  Sample,
  StringTable,
  ValueType,
} from 'pprof-format';

import { constants, objectsToNumber, type RegionModule, type RegionSnapshot, type RegionStacks } from './region.ts';
import type { SymbolizeResult } from './symbolize.ts';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export type ProfileView = 'heap' | 'allocs';

/** The sample types, in Go's order; index i is value i of every sample. */
export const SAMPLE_TYPES = [
  ['alloc_objects', 'count'],
  ['alloc_space', 'bytes'],
  ['inuse_objects', 'count'],
  ['inuse_space', 'bytes'],
] as const;
export type SampleTypeName = (typeof SAMPLE_TYPES)[number][0];

/** Function names of the synthetic frames heaptap adds so that users see what happened. */
export const OVERFLOW_FUNCTION = '[heaptap: stack table full]';
export const TRUNCATED_FUNCTION = '[heaptap: truncated]';
/** A counter whose stack record the caller did not supply (never for a whole snapshot). */
export const UNKNOWN_STACK_FUNCTION = '[heaptap: stack not read]';

/** What the builder needs of src/symbolize.ts's Symbolizer: addresses are runtime return
 * addresses as the region holds them (the symbolizer subtracts 1 and the load bias). */
export interface ProfileSymbolizer {
  symbolize(module: RegionModule, pid: number, addresses: readonly bigint[]): SymbolizeResult;
}
export interface AsyncProfileSymbolizer {
  symbolizeAsync(module: RegionModule, pid: number, addresses: readonly bigint[]): Promise<SymbolizeResult>;
  /** optional: free what open files hold, keeping what was resolved (Symbolizer does) */
  releaseFiles?(): void;
}

export interface ProfileInput {
  /** the region's counters, header and modules */
  snapshot: RegionSnapshot;
  /** an earlier snapshot of the same region: alloc_* become snapshot - base (clamped at
   * 0); inuse_* stay absolute (godeltaprof's convention for delta_heap) */
  base?: RegionSnapshot;
  /** stack records read earlier (readRegion with sinceStack), used besides
   * snapshot.stacks: an incremental reader passes what it accumulated */
  extraStacks?: readonly RegionStacks[];
}

export interface BuildOptions {
  view: ProfileView;
  /** without one, locations carry addresses only and every mapping says it has no
   * symbols, so that go tool pprof symbolizes them from the binaries itself */
  symbolizer?: ProfileSymbolizer;
  /** default: now */
  timeNanos?: bigint;
  /** default: for deltas, the span between the base's and the snapshot's latest sample
   * (heartbeat, coarse); otherwise unset */
  durationNanos?: bigint;
  /** string label `exe` (the executable's path) per sample; default: when there are
   * several inputs */
  exeLabel?: boolean;
  /** a module the symbolizer threw for (the profile keeps its addresses) */
  onWarning?: (message: string) => void;
}

export interface AsyncBuildOptions extends Omit<BuildOptions, 'symbolizer'> {
  symbolizer?: AsyncProfileSymbolizer;
}

/** Builds one profile from one or several regions (e.g. every process of a tree), with a
 * numeric label `pid` on every sample. Symbolizes synchronously. */
export function buildProfile(inputs: readonly ProfileInput[], opts: BuildOptions): Profile {
  const plan = planProfile(inputs, opts);
  const resolved = plan.requests.map((r) => resolveOne(r, opts, () => opts.symbolizer!.symbolize(r.module, r.pid, r.addresses)));
  return assemble(plan, resolved, opts);
}

/** buildProfile with the symbolizer's async API (the event loop stays free). */
export async function buildProfileAsync(inputs: readonly ProfileInput[], opts: AsyncBuildOptions): Promise<Profile> {
  const plan = planProfile(inputs, opts);
  const resolved: Resolved[] = [];
  // One module at a time: the symbolizer caches by build id, so the same library in
  // several processes is read once.
  for (const r of plan.requests) {
    let result: SymbolizeResult | Error;
    try {
      result = opts.symbolizer ? await opts.symbolizer.symbolizeAsync(r.module, r.pid, r.addresses) : noSymbols(r);
    } catch (e) {
      result = e instanceof Error ? e : new Error(String(e));
    }
    resolved.push(resolveOne(r, opts, () => { if (result instanceof Error) throw result; return result; }));
  }
  return assemble(plan, resolved, opts);
}

/** The gzipped protobuf, as served at /debug/pprof/heap and written to *.pb.gz. */
export async function encodeProfile(profile: Profile): Promise<Buffer> {
  return gzipAsync(await profile.encodeAsync());
}

/** Decodes a profile, gzipped or not. */
export async function decodeProfile(data: Uint8Array): Promise<Profile> {
  const raw = data[0] === 0x1f && data[1] === 0x8b ? await gunzipAsync(data) : data;
  return Profile.decode(raw);
}

/** The string a string-table index stands for. */
export function str(profile: Profile, index: number | bigint): string {
  return profile.stringTable.strings[Number(index)] ?? '';
}

// ---------------------------------------------------------------------------------------
// Step 1: values per stack, and the addresses to symbolize per (region, module).

interface Row {
  input: number;
  stackId: number;
  /** alloc_objects, alloc_space, inuse_objects, inuse_space */
  values: [number, number | bigint, number, number | bigint];
  /** frames innermost first; null for the overflow stack or a stack with no record */
  frames: BigUint64Array | null;
  truncated: boolean;
}

interface SymbolizeRequest {
  input: number;
  moduleIndex: number;
  module: RegionModule;
  pid: number;
  addresses: bigint[];
}

interface Plan {
  inputs: readonly ProfileInput[];
  rows: Row[];
  /** per input: module position in snapshot.modules for each frame address */
  frameModule: Map<bigint, number>[];
  requests: SymbolizeRequest[];
  period: bigint;
}

function planProfile(inputs: readonly ProfileInput[], opts: { view: ProfileView }): Plan {
  if (opts.view !== 'heap' && opts.view !== 'allocs') throw new TypeError(`unknown profile view '${String(opts.view)}'`);
  const rows: Row[] = [];
  const frameModule: Map<bigint, number>[] = [];
  const requests: SymbolizeRequest[] = [];
  inputs.forEach((inp, input) => {
    const snap = inp.snapshot;
    const stacks = stackLookup(inp);
    const base = inp.base ? baseLookup(inp.base) : null;
    const c = snap.counters;
    for (let i = 0; i < c.ids.length; i++) {
      const id = c.ids[i]!;
      const ao = c.allocObjects[i]!;
      const ab = c.allocBytes[i]!;
      const b = base?.get(id);
      const dao = b ? sub(ao, b.allocObjects) : ao;
      const dab = b ? sub(ab, b.allocBytes) : ab;
      // in use by the reader's one rule (counters.inuseBytes: alloc - free per stack,
      // clamped at 0), so a profile's total is the process's in use everywhere else
      const values: Row['values'] = [
        Math.round(objectsToNumber(dao)),
        num(dab),
        Math.round(objectsToNumber(c.inuseObjects[i]!)),
        num(c.inuseBytes[i]!),
      ];
      if (values.every((v) => v === 0 || v === 0n)) continue;
      const rec = id === constants.STACK_OVERFLOW ? undefined : stacks.get(id);
      rows.push({
        input,
        stackId: id,
        values,
        frames: rec?.frames ?? null,
        truncated: rec ? (rec.flags & constants.STACK_TRUNCATED) !== 0 : false,
      });
    }

    // Frames by module: a frame belongs to the module whose executable range holds it.
    // After a dlclose another library can take the same range; the loaded one wins (the
    // region does not say which instance an older stack saw).
    const mods = snap.modules
      .map((m, pos) => ({ m, pos }))
      .sort((a, b) => (a.m.state === 1 ? 0 : 1) - (b.m.state === 1 ? 0 : 1) || b.pos - a.pos);
    const where = new Map<bigint, number>();
    const perModule = new Map<number, bigint[]>();
    for (const row of rows) {
      if (row.input !== input || !row.frames) continue;
      for (const pc of row.frames) {
        if (where.has(pc)) continue;
        const hit = mods.find(({ m }) => pc >= m.start && pc < m.limit);
        const pos = hit ? hit.pos : -1;
        where.set(pc, pos);
        if (pos >= 0) {
          let list = perModule.get(pos);
          if (!list) perModule.set(pos, (list = []));
          list.push(pc);
        }
      }
    }
    frameModule.push(where);
    for (const [pos, addresses] of [...perModule].sort((a, b) => a[0] - b[0])) {
      requests.push({ input, moduleIndex: pos, module: snap.modules[pos]!, pid: snap.header.pid, addresses });
    }
  });
  return { inputs, rows, frameModule, requests, period: choosePeriod(inputs) };
}

interface StackRecord {
  frames: BigUint64Array;
  flags: number;
}

function stackLookup(inp: ProfileInput): Map<number, StackRecord> {
  const out = new Map<number, StackRecord>();
  for (const s of [...(inp.extraStacks ?? []), inp.snapshot.stacks]) {
    for (let i = 0; i < s.ids.length; i++) {
      const start = s.frameStart[i]!;
      out.set(s.ids[i]!, { frames: s.frames.subarray(start, start + s.depths[i]!), flags: s.flags[i]! });
    }
  }
  return out;
}

function baseLookup(base: RegionSnapshot): Map<number, { allocObjects: bigint; allocBytes: bigint }> {
  const out = new Map<number, { allocObjects: bigint; allocBytes: bigint }>();
  const c = base.counters;
  for (let i = 0; i < c.ids.length; i++) out.set(c.ids[i]!, { allocObjects: c.allocObjects[i]!, allocBytes: c.allocBytes[i]! });
  return out;
}

/** The period: the regions' sampling rate at start (header.sampleRate). Regions of one run
 * share it; if they differ, the most common one, ties going to the earliest input (the
 * root process). The period is informational: the values are already estimates. */
function choosePeriod(inputs: readonly ProfileInput[]): bigint {
  const count = new Map<bigint, number>();
  for (const i of inputs) count.set(i.snapshot.header.sampleRate, (count.get(i.snapshot.header.sampleRate) ?? 0) + 1);
  let best = inputs[0]?.snapshot.header.sampleRate ?? 0n;
  for (const [rate, n] of count) if (n > (count.get(best) ?? 0)) best = rate;
  return best;
}

const sub = (a: bigint, b: bigint): bigint => (a > b ? a - b : 0n);
const num = (v: bigint): number | bigint => (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);

// ---------------------------------------------------------------------------------------
// Step 2: symbolization, one call per (region, module) with that module's addresses.

interface Resolved {
  request: SymbolizeRequest;
  /** runtime return address -> frames, innermost (inlined) first */
  frames: Map<bigint, SymbolizeResult['frames'][number]>;
  hasFunctions: boolean;
  hasFilenames: boolean;
  hasLineNumbers: boolean;
  hasInlineFrames: boolean;
}

function noSymbols(r: SymbolizeRequest): SymbolizeResult {
  return {
    info: {
      path: r.module.path, buildId: r.module.buildId, found: false, hasFunctions: false, hasFilenames: false,
      hasLineNumbers: false, hasInlineFrames: false, debugFile: '', error: '',
    },
    frames: r.addresses.map(() => []),
  };
}

function resolveOne(r: SymbolizeRequest, opts: { symbolizer?: unknown; onWarning?: (m: string) => void }, run: () => SymbolizeResult): Resolved {
  let result: SymbolizeResult;
  try {
    result = opts.symbolizer ? run() : noSymbols(r);
  } catch (e) {
    opts.onWarning?.(`cannot symbolize ${r.module.path} (pid ${r.pid}): ${(e as Error).message}`);
    result = noSymbols(r);
  }
  const frames = new Map<bigint, SymbolizeResult['frames'][number]>();
  r.addresses.forEach((a, i) => frames.set(a, result.frames[i] ?? []));
  const info = result.info;
  return {
    request: r,
    frames,
    hasFunctions: info.hasFunctions,
    hasFilenames: info.hasFilenames,
    hasLineNumbers: info.hasLineNumbers,
    hasInlineFrames: info.hasInlineFrames,
  };
}

// ---------------------------------------------------------------------------------------
// Step 3: the profile.

function assemble(plan: Plan, resolved: Resolved[], opts: BuildOptions | AsyncBuildOptions): Profile {
  const strings = new StringTable(); // strings[0] = ''
  const s = (v: string) => strings.dedup(v);
  const inputs = plan.inputs;

  // Mappings: one per module of every region; the main executable of the first region
  // first (pprof takes mapping 1 as the main binary), then in region and module order.
  const mappings: Mapping[] = [];
  const mappingId = new Map<string, number>();
  const byRequest = new Map<string, Resolved>();
  for (const r of resolved) byRequest.set(`${r.request.input}:${r.request.moduleIndex}`, r);
  const addMapping = (input: number, pos: number) => {
    const key = `${input}:${pos}`;
    if (mappingId.has(key)) return;
    const m = inputs[input]!.snapshot.modules[pos]!;
    const r = byRequest.get(key);
    const id = mappings.length + 1;
    mappingId.set(key, id);
    mappings.push(new Mapping({
      id,
      memoryStart: m.start,
      memoryLimit: m.limit,
      fileOffset: m.fileOffset,
      filename: s(m.path),
      buildId: s(m.buildId),
      hasFunctions: r?.hasFunctions ?? false,
      hasFilenames: r?.hasFilenames ?? false,
      hasLineNumbers: r?.hasLineNumbers ?? false,
      hasInlineFrames: r?.hasInlineFrames ?? false,
    }));
  };
  const main0 = inputs[0]?.snapshot.modules.findIndex((m) => (m.flags & constants.MODULE_MAIN) !== 0) ?? -1;
  if (main0 >= 0) addMapping(0, main0);
  inputs.forEach((inp, input) => inp.snapshot.modules.forEach((_, pos) => addMapping(input, pos)));

  // Functions, deduplicated by (name, system name, file, start line).
  const functions: PprofFunction[] = [];
  const functionId = new Map<string, number>();
  const fn = (name: string, systemName: string, filename: string, startLine: number): number => {
    const key = `${name}\0${systemName}\0${filename}\0${startLine}`;
    let id = functionId.get(key);
    if (id === undefined) {
      id = functions.length + 1;
      functionId.set(key, id);
      functions.push(new PprofFunction({ id, name: s(name), systemName: s(systemName), filename: s(filename), startLine }));
    }
    return id;
  };

  // Locations: one per (region, return address); address = return address - 1 (inside
  // the call instruction, the address the symbolizer looked up), inlined frames folded
  // in, innermost first. Frames in no module keep their address and mapping 0.
  const locations: Location[] = [];
  const locationId = new Map<string, number>();
  const synthetic = (name: string): number => {
    const key = `synthetic:${name}`;
    let id = locationId.get(key);
    if (id === undefined) {
      id = locations.length + 1;
      locationId.set(key, id);
      locations.push(new Location({ id, mappingId: 0, address: 0, line: [new Line({ functionId: fn(name, name, '', 0) })] }));
    }
    return id;
  };
  const location = (input: number, pc: bigint): number => {
    const key = `${input}:${pc}`;
    let id = locationId.get(key);
    if (id !== undefined) return id;
    id = locations.length + 1;
    locationId.set(key, id);
    const pos = plan.frameModule[input]!.get(pc) ?? -1;
    const r = pos >= 0 ? byRequest.get(`${input}:${pos}`) : undefined;
    const lines = (r?.frames.get(pc) ?? []).map((f) => new Line({
      functionId: fn(f.function, f.systemName || f.function, f.file, f.startLine),
      line: f.line,
    }));
    locations.push(new Location({
      id,
      mappingId: pos >= 0 ? mappingId.get(`${input}:${pos}`)! : 0,
      address: pc > 0n ? pc - 1n : 0n,
      line: lines,
    }));
    return id;
  };

  const exeLabel = opts.exeLabel ?? inputs.length > 1;
  const samples: Sample[] = [];
  for (const row of plan.rows) {
    const header = inputs[row.input]!.snapshot.header;
    let locs: number[];
    if (row.stackId === constants.STACK_OVERFLOW) locs = [synthetic(OVERFLOW_FUNCTION)];
    else if (!row.frames) locs = [synthetic(UNKNOWN_STACK_FUNCTION)];
    else {
      locs = Array.from(row.frames, (pc) => location(row.input, pc));
      if (row.truncated || locs.length === 0) locs.push(synthetic(TRUNCATED_FUNCTION));
    }
    // The labels of a stack never change between profiles of the same process: pid, and exe
    // in merged profiles. No `bytes` label: Go's is the object size of a bucket keyed by
    // (stack, size), fixed for the bucket; the region keys counters by stack only, so the
    // nearest figure would be an average that drifts, and consumers that match samples by
    // stack and labels to subtract cumulative profiles (Alloy's pyroscope.scrape) would
    // match nothing (docs/exporters.md, "Labels").
    const label: Label[] = [new Label({ key: s('pid'), num: header.pid })];
    if (exeLabel) label.push(new Label({ key: s('exe'), str: s(header.exe) }));
    samples.push(new Sample({ locationId: locs, value: [...row.values], label }));
  }

  const comment: number[] = [];
  for (const inp of inputs) {
    const h = inp.snapshot.header;
    const lost = constants.dropReasons
      .map((name, i) => [name, h.drops[i] ?? 0n] as const)
      .filter(([name, n]) => n > 0n && name !== 'recursion' && name !== 'paused' && name !== 'truncated');
    if (lost.length) comment.push(s(`heaptap: pid ${h.pid} drops: ${lost.map(([k, n]) => `${k}=${n}`).join(' ')}`));
  }

  const timeNanos = opts.timeNanos ?? BigInt(Date.now()) * 1_000_000n;
  let durationNanos = opts.durationNanos ?? 0n;
  if (opts.durationNanos === undefined) {
    for (const inp of inputs) {
      if (!inp.base) continue;
      const d = inp.snapshot.header.heartbeatNs - inp.base.header.heartbeatNs;
      if (d > durationNanos) durationNanos = d;
    }
  }

  const sampleType = SAMPLE_TYPES.map(([type, unit]) => new ValueType({ type: s(type), unit: s(unit) }));
  const profile = new Profile({
    sampleType,
    sample: samples,
    mapping: mappings,
    location: locations,
    function: functions,
    stringTable: strings,
    timeNanos,
    durationNanos,
    periodType: new ValueType({ type: s('space'), unit: s('bytes') }),
    period: plan.period,
    comment,
    defaultSampleType: opts.view === 'allocs' ? s('alloc_space') : 0,
  });
  return profile;
}
