// Region snapshots made by hand, and a fake symbolizer, for tests of the profile builder
// (the shapes are src/region.ts's and src/symbolize.ts's).
import type { ProfileSymbolizer } from '../../src/profile.ts';
import { constants, type RegionModule, type RegionSnapshot } from '../../src/region.ts';

export const ONE = BigInt(constants.OBJ_ONE);

export interface FakeStack {
  id: number;
  frames: bigint[];
  flags?: number;
  /** objects and bytes allocated and freed (whole objects) */
  alloc: [number, number];
  free?: [number, number];
  /** objects and bytes in use at the peak (whole objects); default none */
  peak?: [number, number];
}

/** The counters of a hand-made snapshot with the columns the reader derives (in use per
 * stack: alloc - free clamped at 0). */
export function counters(c: Pick<RegionSnapshot['counters'], 'ids' | 'allocObjects' | 'allocBytes' | 'freeObjects' | 'freeBytes' | 'samples'> & Partial<RegionSnapshot['counters']>): RegionSnapshot['counters'] {
  const sub = (a: BigUint64Array, b: BigUint64Array) => BigUint64Array.from(a, (v, i) => (v > b[i]! ? v - b[i]! : 0n));
  return {
    inuseObjects: sub(c.allocObjects, c.freeObjects),
    inuseBytes: sub(c.allocBytes, c.freeBytes),
    peakObjects: new BigUint64Array(c.ids.length),
    peakBytes: new BigUint64Array(c.ids.length),
    ...c,
  };
}

export function module(index: number, path: string, start: bigint, limit: bigint, flags = 0): RegionModule {
  return {
    index, state: 1, flags, path, loadBias: start - 0x1000n, start, limit, fileOffset: 0x1000n,
    loadNs: 0n, unloadNs: 0n, buildId: `${index}`.padStart(40, 'b'),
  };
}

export const MAIN = module(0, '/bin/app', 0x400000n, 0x500000n, constants.MODULE_MAIN);
export const LIBC = module(1, '/lib/libc.so.6', 0x7f0000000000n, 0x7f0000100000n);

export function snapshot(pid: number, stacks: FakeStack[], opts: { rate?: bigint; modules?: RegionModule[]; heartbeat?: bigint } = {}): RegionSnapshot {
  const real = stacks.filter((s) => s.id !== constants.STACK_OVERFLOW);
  const frames: bigint[] = [];
  const frameStart: number[] = [];
  for (const s of real) {
    frameStart.push(frames.length);
    frames.push(...s.frames);
  }
  const sorted = [...stacks].sort((a, b) => a.id - b.id);
  return {
    header: {
      pid, ppid: 1, exe: `/bin/app${pid}`, sampleRate: opts.rate ?? 524288n, heartbeatNs: opts.heartbeat ?? 0n,
      drops: new BigUint64Array(constants.DROP_SLOTS), state: 1,
    } as unknown as RegionSnapshot['header'],
    control: { paused: 0, rate: 0n, seq: 0n },
    alive: true,
    modules: opts.modules ?? [MAIN, LIBC],
    stacks: {
      ids: Uint32Array.from(real.map((s) => s.id)),
      depths: Uint32Array.from(real.map((s) => s.frames.length)),
      flags: Uint32Array.from(real.map((s) => constants.STACK_READY | (s.flags ?? 0))),
      frameStart: Uint32Array.from(frameStart),
      frames: BigUint64Array.from(frames),
      next: 1000,
    },
    counters: counters({
      ids: Uint32Array.from(sorted.map((s) => s.id)),
      allocObjects: BigUint64Array.from(sorted.map((s) => BigInt(s.alloc[0]) * ONE)),
      allocBytes: BigUint64Array.from(sorted.map((s) => BigInt(s.alloc[1]))),
      freeObjects: BigUint64Array.from(sorted.map((s) => BigInt(s.free?.[0] ?? 0) * ONE)),
      freeBytes: BigUint64Array.from(sorted.map((s) => BigInt(s.free?.[1] ?? 0))),
      samples: BigUint64Array.from(sorted.map((s) => BigInt(s.alloc[0]))),
      peakObjects: BigUint64Array.from(sorted.map((s) => BigInt(s.peak?.[0] ?? 0) * ONE)),
      peakBytes: BigUint64Array.from(sorted.map((s) => BigInt(s.peak?.[1] ?? 0))),
    }),
    inuseBytes: sorted.reduce((a, s) => a + BigInt(Math.max(0, s.alloc[1] - (s.free?.[1] ?? 0))), 0n),
    inuseObjects: sorted.reduce((a, s) => a + BigInt(Math.max(0, s.alloc[0] - (s.free?.[0] ?? 0))) * ONE, 0n),
    peak: null,
    timeline: {
      index: new BigUint64Array(0), ns: new BigUint64Array(0), inuseBytes: new BigInt64Array(0),
      allocBytes: new BigUint64Array(0), rssBytes: new BigUint64Array(0), next: 0n,
    },
    retries: 0,
    malformed: 0,
    firstMalformed: '',
  };
}

/** Names a frame fn_<hex of return address>, in main only; libc has functions but no
 * files; an address ending in 0x77 gets an inlined frame. Records every call. */
export function fakeSymbolizer(): ProfileSymbolizer & { calls: Array<{ path: string; pid: number; addresses: bigint[] }> } {
  const calls: Array<{ path: string; pid: number; addresses: bigint[] }> = [];
  return {
    calls,
    symbolize(m, pid, addresses) {
      calls.push({ path: m.path, pid, addresses: [...addresses] });
      const isMain = m.path === '/bin/app';
      return {
        info: {
          path: m.path, buildId: m.buildId, found: true, hasFunctions: true, hasFilenames: isMain,
          hasLineNumbers: isMain, hasInlineFrames: isMain, debugFile: '', error: '',
        },
        frames: [...addresses].map((a) => {
          const f = { function: `fn_${a.toString(16)}`, systemName: `_Z${a.toString(16)}`, file: isMain ? 'app.c' : '', line: isMain ? 10 : 0, startLine: isMain ? 5 : 0 };
          return (a & 0xffn) === 0x77n ? [{ ...f, function: 'inlined_leaf', systemName: 'inlined_leaf', line: 3, startLine: 1 }, f] : [f];
        }),
      };
    },
  };
}

