// In-memory test doubles for the exporters, as the OpenTelemetry SDK ships
// InMemoryMetricExporter: a HeapSource whose processes and profiles a test sets, and a
// builder of Go-convention heap profiles with known functions and values. No regions,
// no addon, no symbolizer. Test code: it lives here, not in src/, and is not shipped;
// real-regions.test.ts runs the same exporters on the agent's real HeapSource.
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

import type { HeapProcess, HeapSite, HeapSource } from '../../src/agent/types.ts';

/** Values of one stack, in Go's sample-type order, cumulative (as the region counts). */
export interface FakeStack {
  /** function names, innermost first */
  frames: readonly string[];
  allocObjects: number;
  allocBytes: number;
  inuseObjects: number;
  inuseBytes: number;
  /** in use at the process's peak (the 'peak' view); default inuseBytes */
  peakBytes?: number;
}

export interface FakeProfileSpec {
  stacks: readonly FakeStack[];
  /** sampling rate in bytes (period); default 524288 */
  period?: number;
  pid?: number;
  exe?: string;
  /** default: now */
  timeNanos?: bigint;
  durationNanos?: bigint;
  defaultSampleType?: 'alloc_space';
}

export const HEAP_SAMPLE_TYPES = [
  ['alloc_objects', 'count'],
  ['alloc_space', 'bytes'],
  ['inuse_objects', 'count'],
  ['inuse_space', 'bytes'],
] as const;

/** A pprof heap profile as Go writes one (WIRE.md): four sample types, period type
 * space/bytes, one mapping for the executable, one location per frame, labels `pid` and
 * `bytes` (average object size) on every sample. */
export function heapProfile(spec: FakeProfileSpec): Profile {
  const st = new StringTable();
  const s = (x: string) => st.dedup(x);
  const exe = spec.exe ?? '/usr/bin/app';
  const mapping = new Mapping({
    id: 1, memoryStart: 0x400000, memoryLimit: 0x800000, fileOffset: 0, filename: s(exe),
    buildId: s('4f2b6c0e9a1d3e5f'), hasFunctions: true, hasFilenames: true, hasLineNumbers: true,
  });
  const functions = new Map<string, PprofFunction>();
  const locations = new Map<string, Location>();
  let address = 0x401000;
  const location = (name: string): Location => {
    let loc = locations.get(name);
    if (!loc) {
      let fn = functions.get(name);
      if (!fn) {
        fn = new PprofFunction({ id: functions.size + 1, name: s(name), systemName: s(name), filename: s(`src/${name}.c`), startLine: 10 * (functions.size + 1) });
        functions.set(name, fn);
      }
      address += 0x40;
      loc = new Location({ id: locations.size + 1, mappingId: 1, address, line: [new Line({ functionId: fn.id, line: Number(fn.startLine) + 3 })] });
      locations.set(name, loc);
    }
    return loc;
  };
  const pidKey = s('pid');
  const exeKey = s('exe');
  const exeStr = s(exe);
  const samples = spec.stacks.map((stack) => new Sample({
    locationId: stack.frames.map((f) => location(f).id),
    value: [stack.allocObjects, stack.allocBytes, stack.inuseObjects, stack.inuseBytes],
    label: [
      new Label({ key: pidKey, num: spec.pid ?? 1234 }),
      // as the agent labels merged profiles; no `bytes` label (src/profile.ts)
      new Label({ key: exeKey, str: exeStr }),
    ],
  }));
  const sampleType = HEAP_SAMPLE_TYPES.map(([t, u]) => new ValueType({ type: s(t), unit: s(u) }));
  const periodType = new ValueType({ type: s('space'), unit: s('bytes') });
  return new Profile({
    sampleType,
    sample: samples,
    mapping: [mapping],
    location: [...locations.values()],
    function: [...functions.values()],
    stringTable: st,
    timeNanos: spec.timeNanos ?? BigInt(Date.now()) * 1_000_000n,
    durationNanos: spec.durationNanos ?? 0,
    periodType,
    period: spec.period ?? 524288,
    defaultSampleType: spec.defaultSampleType ? s(spec.defaultSampleType) : 0,
  });
}

/** A process with plausible figures; override what the test cares about. */
export function fakeProcess(over: Partial<HeapProcess> & { pid: number }): HeapProcess {
  const exe = over.exe ?? '/usr/local/bin/api-server';
  const exeName = over.exeName ?? exe.slice(exe.lastIndexOf('/') + 1);
  return {
    key: `${over.pid}-0001.heaptap`,
    ppid: 1,
    exe,
    exeName,
    service: exeName,
    startMs: Date.now() - 60_000,
    alive: true,
    exited: false,
    sampleRate: 524288,
    paused: false,
    inuseBytes: 48 << 20,
    inuseObjects: 120_000,
    allocatedBytes: 900 << 20,
    allocatedObjects: 3_000_000,
    freedBytes: (900 << 20) - (48 << 20),
    peakInuseBytes: 64 << 20,
    peakBytes: 64 << 20,
    peakMs: Date.now() - 30_000,
    end: null,
    residentBytes: 80 << 20,
    samples: 1800,
    drops: { stacks_full: 0, frames_full: 0, slab_full: 0, no_slab: 0, live_full: 3, recursion: 0 },
    ...over,
  };
}

export interface ProfileCall {
  key: string;
  view: 'heap' | 'allocs' | 'delta' | 'peak';
  consumer: string | undefined;
}

/** A HeapSource over fixed data. 'delta' subtracts, per consumer, the alloc_* values of the
 * previous 'delta' call (inuse_* stay absolute), as the agent does. */
export class FakeHeapSource implements HeapSource {
  #procs = new Map<string, HeapProcess>();
  #stacks = new Map<string, FakeStack[]>();
  #last = new Map<string, Map<string, [number, number]>>();
  #listeners = new Set<(p: HeapProcess) => void>();
  /** every encodedProfile() call, in order */
  readonly calls: ProfileCall[] = [];
  /** make encodedProfile() fail for these keys (an agent that cannot read a region) */
  readonly failing = new Set<string>();
  /** encodedProfile() waits this long first (a slow symbolizer) */
  delayMs = 0;

  constructor(entries: ReadonlyArray<{ process: HeapProcess; stacks: FakeStack[] }> = []) {
    for (const e of entries) this.set(e.process, e.stacks);
  }

  set(p: HeapProcess, stacks?: FakeStack[]): void {
    this.#procs.set(p.key, p);
    if (stacks) this.#stacks.set(p.key, stacks);
  }

  /** Ends a process: marks it, calls the onProcessEnd listeners, then forgets it (the
   * profile stays readable during the listeners, as in the agent). */
  end(key: string, exited = true): void {
    const p = this.#procs.get(key);
    if (!p) return;
    const ended = { ...p, alive: false, exited, residentBytes: null, end: p.end ?? (exited ? { reason: 'exited', text: 'exited' } : { reason: 'no_exit', text: 'ended without exit()' }) };
    this.#procs.set(key, ended);
    for (const l of this.#listeners) l(ended);
    this.#procs.delete(key);
    // The stacks stay, so an encodedProfile() call the listener started still resolves.
  }

  processes(): HeapProcess[] {
    return [...this.#procs.values()];
  }

  async topSites(key: string, n: number): Promise<HeapSite[]> {
    const stacks = this.#stacks.get(key) ?? [];
    return [...stacks]
      .sort((a, b) => b.inuseBytes - a.inuseBytes)
      .slice(0, n)
      .map((s) => ({ function: s.frames[0] ?? '?', inuseBytes: s.inuseBytes }));
  }

  async encodedProfile(key: string, view: 'heap' | 'allocs' | 'delta' | 'peak', consumer?: string): Promise<Uint8Array> {
    this.calls.push({ key, view, consumer });
    const stacks = this.#stacks.get(key);
    const pid = this.#procs.get(key)?.pid ?? Number.parseInt(key, 10);
    const exe = this.#procs.get(key)?.exe;
    // Take the delta baseline now, synchronously, as the agent snapshots at call time.
    let out = stacks ? stacks.map((s) => ({ ...s })) : undefined;
    if (out && view === 'delta') {
      const id = `${key}\0${consumer ?? ''}`;
      const prev = this.#last.get(id) ?? new Map<string, [number, number]>();
      const next = new Map<string, [number, number]>();
      out = out.map((s) => {
        const k = s.frames.join(';');
        const [po, pb] = prev.get(k) ?? [0, 0];
        next.set(k, [s.allocObjects, s.allocBytes]);
        return { ...s, allocObjects: Math.max(0, s.allocObjects - po), allocBytes: Math.max(0, s.allocBytes - pb) };
      });
      this.#last.set(id, next);
    }
    // the peak view: each stack's in use at the process's peak, where the test set one
    if (out && view === 'peak') out = out.map((s) => ({ ...s, inuseBytes: s.peakBytes ?? s.inuseBytes }));
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failing.has(key)) throw new Error(`cannot read region ${key}`);
    if (!out) throw new Error(`no such process: ${key}`);
    return heapProfile({ stacks: out, pid, exe, defaultSampleType: view === 'allocs' ? 'alloc_space' : undefined }).encode();
  }

  onProcessEnd(listener: (p: HeapProcess) => void): () => void {
    this.#listeners.add(listener);
    return () => { this.#listeners.delete(listener); };
  }

  /** listeners currently subscribed (tests check exporters unsubscribe on stop) */
  get listenerCount(): number {
    return this.#listeners.size;
  }

  /** The stack with these frames of a process, to change in place. */
  stackOf(key: string, frames: readonly string[]): FakeStack | undefined {
    return this.#stacks.get(key)?.find((x) => x.frames.join(';') === frames.join(';'));
  }

  /** Advances a process's counters: more allocations on a stack (cumulative grows). */
  allocate(key: string, frames: readonly string[], objects: number, bytes: number, keep = 0): void {
    const stacks = this.#stacks.get(key) ?? [];
    let s = stacks.find((x) => x.frames.join(';') === frames.join(';'));
    if (!s) {
      s = { frames, allocObjects: 0, allocBytes: 0, inuseObjects: 0, inuseBytes: 0 };
      stacks.push(s);
      this.#stacks.set(key, stacks);
    }
    s.allocObjects += objects;
    s.allocBytes += bytes;
    s.inuseObjects += Math.round(objects * keep);
    s.inuseBytes += Math.round(bytes * keep);
  }
}
