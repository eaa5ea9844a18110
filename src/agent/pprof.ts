// The agent's pprof encoder: Go heap profiles (WIRE.md), written straight to protobuf from
// per-process tables that live as long as the process is watched.
//
// Why not src/profile.ts's buildProfile for every request: a region's stack records never
// change once READY, so what a profile needs besides the counters (locations, functions,
// strings, each stack's location ids) can be built once per stack and kept. A request then
// only walks the counters and writes varints (in C: src/addon/encode.cc), for 100k stacks
// tens of ms, where building pprof-format objects anew takes seconds and hundreds of MB. The output follows
// src/profile.ts exactly (same sample types, values, labels, mappings, locations,
// synthetic frames, comments); test/agent/pprof-equivalence.test.ts checks the two agree.
//
// Tables per process (SymbolTables): strings (index 0 ""), functions deduplicated by
// (name, system name, file, start line), locations by return address (address = pc - 1,
// symbolized frames innermost first as lines), mappings by module, and per stack id its
// location ids. Symbolization happens once per new return address, on the symbolizer's
// async API (module by module, as profile.ts does).
import {
  OVERFLOW_FUNCTION,
  SAMPLE_TYPES,
  TRUNCATED_FUNCTION,
  UNKNOWN_STACK_FUNCTION,
  type AsyncProfileSymbolizer,
} from '../profile.ts';
import { constants, dedupeFrames, encodeSamples, gzipBuffer, type RegionModule, type RegionSnapshot } from '../region.ts';
import type { StackStore } from './stackStore.ts';

const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

// ---------------------------------------------------------------------------------------
// A protobuf writer over one growable buffer.

class Writer {
  buf: Uint8Array;
  pos = 0;
  constructor(size = 1 << 16) {
    this.buf = new Uint8Array(size);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.pos));
    this.buf = b;
  }

  /** A non-negative integer below 2^53. */
  uvarint(v: number): void {
    this.ensure(10);
    const buf = this.buf;
    let p = this.pos;
    if (v < 0x80) {
      buf[p] = v;
      this.pos = p + 1;
      return;
    }
    if (v < 0x80000000) {
      while (v >= 0x80) {
        buf[p++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      buf[p++] = v;
      this.pos = p;
      return;
    }
    while (v >= 0x80) {
      buf[p++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[p++] = v;
    this.pos = p;
  }

  /** An int64: negatives as their 64-bit two's complement (ten bytes), as protobuf does. */
  varint(v: number | bigint): void {
    if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER) return this.uvarint(v);
    let b = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (b >= 0x80n) {
      this.buf[this.pos++] = Number(b & 0x7fn) | 0x80;
      b >>= 7n;
    }
    this.buf[this.pos++] = Number(b);
  }

  tag(field: number, wire: number): void {
    this.uvarint((field << 3) | wire);
  }

  /** field = v, omitted when 0 (proto3 default). */
  field(field: number, v: number | bigint): void {
    if (v === 0 || v === 0n) return;
    this.tag(field, 0);
    this.varint(v);
  }

  bool(field: number, v: boolean): void {
    if (v) this.field(field, 1);
  }

  string(field: number, s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.tag(field, 2);
    this.uvarint(bytes.length);
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** A length-delimited field whose content `body` writes: room for the length is left
   * first and the content moved if its varint turns out longer than guessed. */
  message(field: number, body: () => void): void {
    const at = this.begin(field);
    body();
    this.end(at);
  }

  /** begin(field) ... end(at): message() without a closure, for hot loops. */
  begin(field: number): number {
    this.tag(field, 2);
    const lenAt = this.pos;
    this.ensure(1);
    this.pos += 1;
    return lenAt;
  }

  end(lenAt: number): void {
    const start = lenAt + 1;
    const len = this.pos - start;
    const lenBytes = len < 0x80 ? 1 : len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5;
    if (lenBytes > 1) {
      this.ensure(lenBytes - 1);
      this.buf.copyWithin(start + lenBytes - 1, start, this.pos);
      this.pos += lenBytes - 1;
    }
    let v = len;
    let p = lenAt;
    while (v >= 0x80) {
      this.buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[p] = v;
  }

  raw(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /** Shrinks the buffer to what is written (room to grow again is made as needed). */
  trim(): void {
    if (this.buf.length > this.pos) this.buf = this.buf.slice(0, Math.max(this.pos, 16));
  }
}

// ---------------------------------------------------------------------------------------
// Per-process tables.

interface MappingInfo {
  module: RegionModule;
  hasFunctions: boolean;
  hasFilenames: boolean;
  hasLineNumbers: boolean;
  hasInlineFrames: boolean;
}

/** Growable Uint32/Int32/Float64 columns. */
class Column<T extends Uint32Array | Int32Array | Float64Array> {
  data: T;
  length = 0;
  private readonly make: (n: number) => T;
  constructor(make: (n: number) => T, cap = 64) {
    this.make = make;
    this.data = make(cap);
  }
  push(v: number): number {
    if (this.length === this.data.length) {
      const d = this.make(this.data.length * 2);
      d.set(this.data as never);
      this.data = d;
    }
    this.data[this.length] = v;
    return this.length++;
  }
}

/** Return address -> location id, open addressing over the address's two 32-bit halves
 * (a Map keyed by doubles this large boxes and hashes every key: ten times slower). */
class PcTable {
  private lo = new Uint32Array(1024);
  private hi = new Uint32Array(1024);
  private val = new Int32Array(1024);
  private used = new Uint8Array(1024);
  private count = 0;

  private slot(lo: number, hi: number): number {
    const mask = this.val.length - 1;
    let i = (Math.imul(lo ^ Math.imul(hi, 0x27d4eb2d), 0x9e3779b1) >>> 0) & mask;
    while (this.used[i] && (this.lo[i] !== lo || this.hi[i] !== hi)) i = (i + 1) & mask;
    return i;
  }

  /** The value, or 0 when absent (location ids start at 1). */
  get(lo: number, hi: number): number {
    const i = this.slot(lo, hi);
    return this.used[i] ? this.val[i]! : 0;
  }

  set(lo: number, hi: number, v: number): void {
    if ((this.count + 1) * 2 > this.val.length) this.grow();
    const i = this.slot(lo, hi);
    if (!this.used[i]) {
      this.used[i] = 1;
      this.lo[i] = lo;
      this.hi[i] = hi;
      this.count++;
    }
    this.val[i] = v;
  }

  private grow(): void {
    const { lo, hi, val, used } = this;
    const cap = val.length * 2;
    this.lo = new Uint32Array(cap);
    this.hi = new Uint32Array(cap);
    this.val = new Int32Array(cap);
    this.used = new Uint8Array(cap);
    this.count = 0;
    for (let i = 0; i < used.length; i++) if (used[i]) this.set(lo[i]!, hi[i]!, val[i]!);
  }
}

export class SymbolTables {
  readonly strings: string[] = [''];
  private readonly stringIndex = new Map<string, number>([['', 0]]);
  /** functions: id i+1 at index i */
  readonly fnName = new Column((n) => new Uint32Array(n));
  readonly fnSystem = new Column((n) => new Uint32Array(n));
  readonly fnFile = new Column((n) => new Uint32Array(n));
  readonly fnStartLine = new Column((n) => new Float64Array(n));
  /** function id by name index (the first function of that name) */
  private readonly fnByName = new Map<number, number>();
  /** further functions of a name already taken, by "name,system,file,startLine" indices */
  private readonly fnOther = new Map<string, number>();
  /** locations: id i+1 at index i; mapping is an index into `mappings` + 1, 0 = none */
  readonly locMapping = new Column((n) => new Uint32Array(n));
  readonly locAddress = new Column((n) => new Float64Array(n));
  readonly locLineStart = new Column((n) => new Uint32Array(n));
  readonly locLineCount = new Column((n) => new Uint32Array(n));
  readonly lineFn = new Column((n) => new Uint32Array(n));
  readonly lineNo = new Column((n) => new Float64Array(n));
  private readonly locByPc = new PcTable();
  private readonly synthetic = new Map<string, number>();
  /** per module index (RegionModule.index): position in mappings */
  private readonly mappingOf = new Map<number, number>();
  readonly mappings: MappingInfo[] = [];
  /** per stack id: its location ids as packed varints, packed[packedStart .. +packedLen)
   * (what a sample's location_id field holds when this process comes first in a
   * profile); packedLen 0 = not built (a built stack has at least one location) */
  private packedStart = new Uint32Array(64);
  private packedLen = new Uint32Array(64);
  readonly packed = new Writer(1 << 12);
  private chain: Promise<unknown> = Promise.resolve();

  str(s: string): number {
    let i = this.stringIndex.get(s);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(s);
      this.stringIndex.set(s, i);
    }
    return i;
  }

  /** The function id for these fields. Keyed by the interned name's index, with the other
   * fields compared: no key string is built per function (with a hundred processes of a
   * C++ binary, keys joining demangled and mangled names took tens of MB). */
  fn(name: string, systemName: string, file: string, startLine: number): number {
    const n = this.str(name);
    const sys = this.str(systemName);
    const f = this.str(file);
    const same = (id: number) => this.fnSystem.data[id - 1] === sys && this.fnFile.data[id - 1] === f && this.fnStartLine.data[id - 1] === startLine;
    const first = this.fnByName.get(n);
    if (first !== undefined && same(first)) return first;
    // Another function of the same name (a static function in two files, overloads of
    // one C++ name with the same demangled text): the rare case gets a composite key.
    const key = first === undefined ? '' : `${n},${sys},${f},${startLine}`;
    if (first !== undefined) {
      const other = this.fnOther.get(key);
      if (other !== undefined) return other;
    }
    this.fnName.push(n);
    this.fnSystem.push(sys);
    this.fnFile.push(f);
    const id = this.fnStartLine.push(startLine) + 1;
    if (first === undefined) this.fnByName.set(n, id);
    else this.fnOther.set(key, id);
    return id;
  }

  /** A location with one line of a synthetic function (heaptap's own markers). */
  syntheticLocation(name: string): number {
    let id = this.synthetic.get(name);
    if (id === undefined) {
      id = this.addLocation(0, 0, [[this.fn(name, name, '', 0), 0]]);
      this.synthetic.set(name, id);
    }
    return id;
  }

  private addLocation(mapping: number, address: number, lines: [number, number][]): number {
    this.locMapping.push(mapping);
    this.locLineStart.push(this.lineFn.length);
    this.locLineCount.push(lines.length);
    for (const [f, l] of lines) {
      this.lineFn.push(f);
      this.lineNo.push(l);
    }
    return this.locAddress.push(address) + 1;
  }

  mapping(m: RegionModule): number {
    let pos = this.mappingOf.get(m.index);
    if (pos === undefined) {
      pos = this.mappings.length;
      this.mappings.push({ module: m, hasFunctions: false, hasFilenames: false, hasLineNumbers: false, hasInlineFrames: false });
      this.mappingOf.set(m.index, pos);
    } else {
      this.mappings[pos]!.module = m; // state may have changed (unloaded)
    }
    return pos;
  }

  /** Location ids of stack `id`, innermost first; undefined when not built yet. */
  locationsOf(id: number): Uint32Array | undefined {
    if (!this.has(id)) return undefined;
    const out: number[] = [];
    const buf = this.packed.buf;
    const end = this.packedStart[id]! + this.packedLen[id]!;
    let v = 0;
    let shift = 0;
    for (let p = this.packedStart[id]!; p < end; p++) {
      const b = buf[p]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        out.push(v);
        v = 0;
        shift = 0;
      } else shift += 7;
    }
    return Uint32Array.from(out);
  }

  /** The first line's function name of a location ('' if none). */
  functionName(loc: number): string[] {
    const i = loc - 1;
    const out: string[] = [];
    const start = this.locLineStart.data[i]!;
    for (let k = 0; k < this.locLineCount.data[i]!; k++) out.push(this.strings[this.fnName.data[this.lineFn.data[start + k]! - 1]!]!);
    return out;
  }

  /** Builds location lists for the stacks appended to the store since the last call,
   * symbolizing the return addresses not seen before. Serialized per process. */
  update(stacks: StackStore, modules: RegionModule[], pid: number, symbolizer: AsyncProfileSymbolizer | undefined, warn: (m: string) => void): Promise<void> {
    const run = this.chain.then(() => this.updateNow(stacks, modules, pid, symbolizer, warn));
    this.chain = run.catch(() => {});
    return run;
  }

  private async updateNow(stacks: StackStore, modules: RegionModule[], pid: number, symbolizer: AsyncProfileSymbolizer | undefined, warn: (m: string) => void): Promise<void> {
    for (const m of modules) this.mapping(m);
    const view = stacks.pending();
    const from = 0;
    const to = view.ids.length;
    if (to === 0) return;
    // The new stacks' frames are contiguous in the store. A region of 100k stacks has
    // over a million frames but a few thousand distinct return addresses: dedupeFrames
    // (C) finds them, and only those are looked up and symbolized here.
    const firstFrame = view.frameStart[from] ?? 0;
    const lastFrame = view.frameStart[to - 1]! + view.depths[to - 1]!;
    const { unique, index } = dedupeFrames(view.frames.subarray(firstFrame, lastFrame));
    // Return addresses as numbers (user-space addresses are below 2^47, so exact), read
    // through a 32-bit view: no BigInt per address.
    const uw = new Uint32Array(unique.buffer, unique.byteOffset, unique.length * 2);
    const locOf = new Uint32Array(unique.length); // location id per distinct address
    // Modules: loaded ones first, then by position from the end (profile.ts's rule: after a
    // dlclose another library can take the range; the loaded one wins).
    const order = modules.map((m, pos) => ({ start: Number(m.start), limit: Number(m.limit), loaded: m.state === 1, pos }))
      .sort((a, b) => (a.loaded ? 0 : 1) - (b.loaded ? 0 : 1) || b.pos - a.pos);
    const moduleOf = (pc: number): number => {
      for (const o of order) if (pc >= o.start && pc < o.limit) return o.pos;
      return -1;
    };
    const wanted = new Map<number, number[]>(); // module position -> positions in unique
    const pcOf = (u: number) => uw[2 * u + 1]! * 4294967296 + uw[2 * u]!;
    const setLoc = (u: number, id: number) => {
      locOf[u] = id;
      this.locByPc.set(uw[2 * u]!, uw[2 * u + 1]!, id);
    };
    for (let u = 0; u < unique.length; u++) {
      const known = this.locByPc.get(uw[2 * u]!, uw[2 * u + 1]!);
      if (known !== 0) {
        locOf[u] = known;
        continue;
      }
      const pc = pcOf(u);
      const pos = moduleOf(pc);
      if (pos < 0) setLoc(u, this.addLocation(0, pc > 0 ? pc - 1 : 0, []));
      else {
        let list = wanted.get(pos);
        if (!list) wanted.set(pos, (list = []));
        list.push(u);
      }
    }
    for (const [pos, us] of [...wanted].sort((a, b) => a[0] - b[0])) {
      const m = modules[pos]!;
      let frames: { function: string; systemName: string; file: string; line: number; startLine: number }[][] = [];
      if (symbolizer) {
        try {
          const res = await symbolizer.symbolizeAsync(m, pid, us.map((u) => BigInt(pcOf(u))));
          frames = res.frames;
          const mi = this.mappings[this.mapping(m)]!;
          mi.hasFunctions = res.info.hasFunctions;
          mi.hasFilenames = res.info.hasFilenames;
          mi.hasLineNumbers = res.info.hasLineNumbers;
          mi.hasInlineFrames = res.info.hasInlineFrames;
        } catch (e) {
          warn(`cannot symbolize ${m.path} (pid ${pid}): ${(e as Error).message}`);
        }
      }
      const mapping = this.mapping(m) + 1;
      for (let i = 0; i < us.length; i++) {
        const fr = frames[i] ?? [];
        const lines: [number, number][] = [];
        for (const f of fr) lines.push([this.fn(f.function, f.systemName || f.function, f.file, f.startLine), f.line]);
        setLoc(us[i]!, this.addLocation(mapping, pcOf(us[i]!) - 1, lines));
      }
    }
    // Location lists by stack id, and the same as packed varints (what a sample's
    // location_id field holds when this process comes first in a profile).
    let maxId = 0;
    for (let i = from; i < to; i++) if (view.ids[i]! > maxId) maxId = view.ids[i]!;
    this.growStacks(maxId);
    let truncated = 0; // made only when a stack needs it, as profile.ts does
    for (let i = from; i < to; i++) {
      if ((view.flags[i]! & constants.STACK_TRUNCATED) !== 0 || view.depths[i] === 0) {
        truncated = this.syntheticLocation(TRUNCATED_FUNCTION);
        break;
      }
    }
    const entries = lastFrame - firstFrame + to - from;
    const pk = this.packed;
    pk.ensure(uvarintSize(this.locAddress.length + 1) * entries);
    for (let i = from; i < to; i++) {
      if ((i - from) % 8192 === 8191) await yieldLoop();
      const id = view.ids[i]!;
      const start = view.frameStart[i]! - firstFrame;
      const depth = view.depths[i]!;
      const buf = pk.buf;
      let p = pk.pos;
      this.packedStart[id] = p;
      for (let k = start; k < start + depth; k++) p = putVar(buf, p, locOf[index[k]!]!);
      if ((view.flags[i]! & constants.STACK_TRUNCATED) !== 0 || depth === 0) p = putVar(buf, p, truncated);
      this.packedLen[id] = p - this.packedStart[id]!;
      pk.pos = p;
    }
    // Only what is used is kept (the buffer doubled as it grew).
    pk.trim();
    // The location lists now stand for these stacks: the store can let their frames go.
    stacks.release(view.first + to);
  }

  /** Makes the per-stack arrays long enough for stack id `max`. */
  private growStacks(max: number): void {
    if (max < this.packedStart.length) return;
    let cap = this.packedStart.length;
    while (cap <= max) cap *= 2;
    const grow = (a: Uint32Array) => {
      const b = new Uint32Array(cap);
      b.set(a);
      return b;
    };
    this.packedStart = grow(this.packedStart);
    this.packedLen = grow(this.packedLen);
  }

  /** The per-stack arrays encodeSamples (src/addon/encode.cc) reads. */
  sampleArgs(): { packed: Uint8Array; packedStart: Uint32Array; packedLen: Uint32Array } {
    return {
      packed: this.packed.buf.subarray(0, this.packed.pos),
      packedStart: this.packedStart,
      packedLen: this.packedLen,
    };
  }

  /** Whether stack `id` has its location list. */
  has(id: number): boolean {
    return id < this.packedLen.length && this.packedLen[id]! > 0;
  }
}

// ---------------------------------------------------------------------------------------
// Encoding.

export interface EncodeInput {
  snapshot: RegionSnapshot;
  tables: SymbolTables;
  /** alloc_* become snapshot - base (at least 0); or, with fullDelta, every value
   * becomes snapshot - base (in-use may be negative: Go's ?seconds=N) */
  base?: RegionSnapshot;
}

export interface EncodeOptions {
  view: 'heap' | 'allocs';
  /** string label exe per sample (merged profiles) */
  exeLabel: boolean;
  fullDelta?: boolean;
  timeNanos?: bigint;
  durationNanos?: bigint;
}

/** Writes a non-negative integer below 2^53 at buf[p] (room already ensured); returns the
 * position after it. */
function putVar(buf: Uint8Array, p: number, v: number): number {
  while (v >= 0x80000000) {
    buf[p++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  while (v >= 0x80) {
    buf[p++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[p++] = v;
  return p;
}

function uvarintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v > 0) {
    n++;
    v = Math.floor(v / 0x80);
  }
  return n;
}

/** The profile as raw protobuf (not gzipped). Synchronous: the tables cannot change
 * while it runs. */
export function encodeHeapProfile(inputs: readonly EncodeInput[], opts: EncodeOptions): Uint8Array {
  // One buffer of about the size the profile will take (growing a 10 MB buffer by doubling
  // allocates twice that and makes V8 collect for the external memory).
  let estimate = 1 << 16;
  for (const inp of inputs) {
    const t = inp.tables;
    estimate += inp.snapshot.counters.ids.length * 48 + t.packed.pos * 2 + t.locAddress.length * 24 +
      t.lineFn.length * 8 + t.fnName.length * 16;
    for (const str of t.strings) estimate += str.length + 4;
  }
  const w = new Writer(estimate);
  // The synthetic locations this profile needs are made first, so that no table grows
  // once the id offsets below are fixed.
  const overflowLoc: number[] = [];
  const unknownLoc: number[] = [];
  for (const inp of inputs) {
    const ids = inp.snapshot.counters.ids;
    let overflow = 0;
    let unknown = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === constants.STACK_OVERFLOW) overflow ||= inp.tables.syntheticLocation(OVERFLOW_FUNCTION);
      else if (!inp.tables.has(id)) unknown ||= inp.tables.syntheticLocation(UNKNOWN_STACK_FUNCTION);
    }
    overflowLoc.push(overflow);
    unknownLoc.push(unknown);
  }
  // Strings: the profile's own (sample types, label keys, exe paths, mapping paths and
  // build ids, comments) first, then the inputs' (below); index 0 stays "".
  const global: string[] = [''];
  const gstr = new Map<string, number>([['', 0]]);
  const g = (str: string) => {
    let i = gstr.get(str);
    if (i === undefined) {
      i = global.length;
      global.push(str);
      gstr.set(str, i);
    }
    return i;
  };
  const typeIdx = SAMPLE_TYPES.map(([t, u]) => [g(t), g(u)] as const);
  const spaceIdx = g('space');
  const bytesIdx = g('bytes');
  const pidKey = g('pid');
  const exeKey = opts.exeLabel ? g('exe') : 0;
  const allocSpace = g('alloc_space');
  const exeStr = inputs.map((i) => (opts.exeLabel ? g(i.snapshot.header.exe) : 0));
  for (const inp of inputs) {
    for (const m of inp.tables.mappings) {
      g(m.module.path);
      g(m.module.buildId);
    }
  }
  const comments: number[] = [];
  for (const inp of inputs) {
    const h = inp.snapshot.header;
    const lost = constants.dropReasons
      .map((name, i) => [name, h.drops[i] ?? 0n] as const)
      .filter(([name, n]) => n > 0n && name !== 'recursion' && name !== 'paused' && name !== 'truncated');
    if (lost.length) comments.push(g(`heaptap: pid ${h.pid} drops: ${lost.map(([k, n]) => `${k}=${n}`).join(' ')}`));
  }
  // Strings and functions: one table each for the whole profile. Each input's own strings
  // and functions map into them, so what many processes share (libc's names, one binary
  // run a hundred times) is written once, not once per process.
  const strMap: Uint32Array[] = inputs.map((inp) => {
    const own = inp.tables.strings;
    const m = new Uint32Array(own.length);
    for (let i = 1; i < own.length; i++) m[i] = g(own[i]!);
    return m;
  });
  const fnName: number[] = [];
  const fnSys: number[] = [];
  const fnFile: number[] = [];
  const fnStart: number[] = [];
  const fnByName = new Map<number, number>();
  const fnOther = new Map<string, number>();
  const fnMap: Uint32Array[] = inputs.map((inp, input) => {
    const t = inp.tables;
    const sm = strMap[input]!;
    const m = new Uint32Array(t.fnName.length + 1);
    for (let i = 0; i < t.fnName.length; i++) {
      const n = sm[t.fnName.data[i]!]!, sys = sm[t.fnSystem.data[i]!]!, f = sm[t.fnFile.data[i]!]!;
      const start = t.fnStartLine.data[i]!;
      const first = fnByName.get(n);
      let id = first !== undefined && fnSys[first - 1] === sys && fnFile[first - 1] === f && fnStart[first - 1] === start ? first : undefined;
      let key = '';
      if (id === undefined && first !== undefined) id = fnOther.get((key = `${n},${sys},${f},${start}`));
      if (id === undefined) {
        id = fnName.push(n);
        fnSys.push(sys);
        fnFile.push(f);
        fnStart.push(start);
        if (first === undefined) fnByName.set(n, id);
        else fnOther.set(key, id);
      }
      m[i + 1] = id;
    }
    return m;
  });
  const locBase: number[] = [];
  const mapBase: number[] = [];
  let lN = 0;
  let mN = 0;
  for (const inp of inputs) {
    locBase.push(lN);
    mapBase.push(mN);
    lN += inp.tables.locAddress.length;
    mN += inp.tables.mappings.length;
  }

  // sample_type = 1
  for (const [t, u] of typeIdx) w.message(1, () => { w.field(1, t); w.field(2, u); });

  // sample = 2: the hot loop, in C (src/addon/encode.cc, which states the values and
  // labels; they are src/profile.ts's, as test/agent/pprof-equivalence.test.ts checks).
  inputs.forEach((inp, input) => {
    const t = inp.tables;
    const bytes = encodeSamples({
      counters: inp.snapshot.counters,
      base: inp.base?.counters,
      fullDelta: opts.fullDelta === true,
      ...t.sampleArgs(),
      locBase: locBase[input]!,
      overflowLoc: overflowLoc[input]!,
      unknownLoc: unknownLoc[input]!,
      pidKey,
      pid: inp.snapshot.header.pid,
      exeLabel: opts.exeLabel,
      exeKey,
      exeStr: exeStr[input]!,
    });
    w.raw(bytes);
  });

  // mapping = 3: the first input's main executable first (pprof takes the first mapping as
  // the main binary).
  const mapOrder: [number, number][] = [];
  inputs.forEach((inp, input) => inp.tables.mappings.forEach((_, pos) => mapOrder.push([input, pos])));
  const mainAt = mapOrder.findIndex(([input, pos]) => input === 0 && (inputs[0]!.tables.mappings[pos]!.module.flags & constants.MODULE_MAIN) !== 0);
  if (mainAt > 0) mapOrder.unshift(...mapOrder.splice(mainAt, 1));
  for (const [input, pos] of mapOrder) {
    const mi = inputs[input]!.tables.mappings[pos]!;
    const m = mi.module;
    w.message(3, () => {
      w.field(1, mapBase[input]! + pos + 1);
      w.field(2, m.start);
      w.field(3, m.limit);
      w.field(4, m.fileOffset);
      w.field(5, g(m.path));
      w.field(6, g(m.buildId));
      w.bool(7, mi.hasFunctions);
      w.bool(8, mi.hasFilenames);
      w.bool(9, mi.hasLineNumbers);
      w.bool(10, mi.hasInlineFrames);
    });
  }

  // location = 4
  inputs.forEach((inp, input) => {
    const t = inp.tables;
    const fm = fnMap[input]!;
    for (let i = 0; i < t.locAddress.length; i++) {
      const at = w.begin(4);
      w.field(1, locBase[input]! + i + 1);
      const m = t.locMapping.data[i]!;
      if (m) w.field(2, mapBase[input]! + m);
      w.field(3, t.locAddress.data[i]!);
      const start = t.locLineStart.data[i]!;
      for (let k = 0; k < t.locLineCount.data[i]!; k++) {
        const lat = w.begin(4);
        w.field(1, fm[t.lineFn.data[start + k]!]!);
        w.field(2, t.lineNo.data[start + k]!);
        w.end(lat);
      }
      w.end(at);
    }
  });
  // function = 5
  for (let i = 0; i < fnName.length; i++) {
    const at = w.begin(5);
    w.field(1, i + 1);
    w.field(2, fnName[i]!);
    w.field(3, fnSys[i]!);
    w.field(4, fnFile[i]!);
    w.field(5, fnStart[i]!);
    w.end(at);
  }
  // string_table = 6 (every entry, "" included: the index is the position)
  for (const str of global) w.string(6, str);
  // time_nanos = 9, duration_nanos = 10, period_type = 11, period = 12, comment = 13,
  // default_sample_type = 14
  w.field(9, opts.timeNanos ?? BigInt(Date.now()) * 1_000_000n);
  let duration = opts.durationNanos ?? 0n;
  if (opts.durationNanos === undefined) {
    for (const inp of inputs) {
      if (!inp.base) continue;
      const d = inp.snapshot.header.heartbeatNs - inp.base.header.heartbeatNs;
      if (d > duration) duration = d;
    }
  }
  w.field(10, duration);
  w.message(11, () => { w.field(1, spaceIdx); w.field(2, bytesIdx); });
  w.field(12, choosePeriod(inputs));
  if (comments.length) w.message(13, () => { for (const c of comments) w.varint(c); });
  if (opts.view === 'allocs') w.field(14, allocSpace);
  const out = w.bytes();
  ENCODED.add(out.buffer);
  return out;
}

/** encodeHeapProfile's results not freed yet: each has its buffer to itself. */
const ENCODED = new WeakSet<ArrayBufferLike>();

/** Frees the memory of an encodeHeapProfile result now rather than at V8's next collection,
 * which can be several requests later (a merged profile of 100 processes of 1k stacks is
 * about 7 MB, in a buffer sized by the estimate above): for a caller done with it, as the
 * HTTP handler is once it has gzipped it. raw is empty afterwards. Bytes that are not an
 * encodeHeapProfile result are left alone. */
export function freeEncoded(raw: Uint8Array): void {
  const buf = raw.buffer;
  if (!ENCODED.delete(buf)) return;
  // Detaching drops V8's only reference to the backing store, which is freed at once.
  (buf as ArrayBuffer & { transfer?: (n: number) => ArrayBuffer }).transfer?.(0);
}

/** The period: the regions' sampling rate at start; the most common one when they differ,
 * ties to the earliest input (profile.ts's rule). */
function choosePeriod(inputs: readonly EncodeInput[]): bigint {
  const count = new Map<bigint, number>();
  for (const i of inputs) count.set(i.snapshot.header.sampleRate, (count.get(i.snapshot.header.sampleRate) ?? 0) + 1);
  let best = inputs[0]?.snapshot.header.sampleRate ?? 0n;
  for (const [rate, n] of count) if (n > (count.get(best) ?? 0)) best = rate;
  return best;
}

/** gzip at BestSpeed (level 1), as Go's runtime/pprof writes profiles (proto.go), with
 * libdeflate: half zlib's time on a large profile, and a slightly smaller result. */
export function gzipProfile(raw: Uint8Array): Promise<Buffer> {
  return gzipBuffer(raw, 1);
}
