// Readers for bench/accuracy.ts: each profiler's output turned into the same per-site
// totals, with one attribution rule for all of them.
//
// The rule: a sample (or heaptrack's allocation, or massif's tree path) belongs to the
// innermost frame of its stack that has a function name and is not an allocator function:
// not allocator or standard-library plumbing as src/sites.ts lists it for every heaptap
// output (malloc and its siblings, operator new, strdup, std::, the wrappers that only pass
// a size on: libiberty's xmalloc in gcc, redis's zmalloc, CPython's PyMem_/PyObject_...). Frames without a name (static functions of a stripped
// binary: cc1, python3.11 and redis-server keep only their dynamic symbols) are passed over
// too, so such an allocation counts under its innermost named caller. Every tool here reads
// the same ELF symbols, so this passes over the same frames for all of them.
//
//   heaptap          its pprof (src/profile.ts decodes it): values already unsampled
//   tcmalloc         its HEAPPROFILE dump, turned into a pprof by `go tool pprof -proto`
//                    (gperftools' own google-pprof symbolizes the innermost return address
//                    as it is, not the call before it, and so names the inlined function
//                    after the call: churn's `touch` instead of the site)
//   jemalloc         `jeprof --collapsed` (go tool pprof does not read jemalloc's heap_v2
//                    dumps): jeprof's symbolization and unsampling, in bytes
//   heaptrack        its interpreted trace (.zst): exact, summed here per allocation
//   massif           the peak snapshot's tree in massif.out
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

import { decodeProfile, str } from '../src/profile.ts';
import { isAllocatorFrame } from '../src/sites.ts';

/** Per-site figures; a profiler that does not report one leaves it undefined. */
export interface Site {
  allocBytes: number;
  allocObjects: number;
  inuseBytes?: number;
}
export type Sites = Map<string, Site>;

/** Where an allocation with no named non-allocator frame goes. */
export const NO_SITE = '[no named frame]';

/** A function name as every tool is compared by: demangled, without the parameter list,
 * a trailing " const", a symbol version (@@GLIBC_2.2.5) or jeprof's <address> suffix. */
export function normalizeName(name: string): string {
  let s = name.trim().replace(/<[0-9a-f]{8,}>$/, '').replace(/@@?[A-Za-z0-9_.]+$/, '');
  s = s.replace(/ const$/, '');
  // The last balanced (...) at the end is the parameter list ("operator()" keeps its own).
  if (s.endsWith(')')) {
    let depth = 0;
    for (let i = s.length - 1; i >= 0; i--) {
      if (s[i] === ')') depth++;
      else if (s[i] === '(' && --depth === 0) {
        if (i > 0 && !s.slice(0, i).endsWith('operator')) s = s.slice(0, i);
        break;
      }
    }
  }
  return s.replace(/\[abi:[^\]]*\]$/, '');
}

/** Allocator or standard-library plumbing: src/sites.ts's one list, the one heaptap's own
 * outputs use (the module too: frames in libheaptap, libjemalloc, libtcmalloc and
 * heaptrack's preload are the profiler's or the allocator's own). */
export function isAllocator(name: string, module?: string): boolean {
  return isAllocatorFrame(name, module);
}

/** The site of a stack given innermost first, as [name or undefined, module] pairs. */
export function siteOf(frames: Iterable<readonly [string | undefined, string | undefined]>): string {
  for (const [raw, module] of frames) {
    if (!raw) continue;
    const name = normalizeName(raw);
    if (name && name !== '??' && !isAllocator(name, module)) return name;
  }
  return NO_SITE;
}

function add(sites: Sites, site: string, allocBytes: number, allocObjects: number, inuseBytes?: number): void {
  const s = sites.get(site) ?? { allocBytes: 0, allocObjects: 0 };
  s.allocBytes += allocBytes;
  s.allocObjects += allocObjects;
  if (inuseBytes !== undefined) s.inuseBytes = (s.inuseBytes ?? 0) + inuseBytes;
  sites.set(site, s);
}

export function totalOf(sites: Sites, key: 'allocBytes' | 'inuseBytes'): number {
  let t = 0;
  for (const s of sites.values()) t += s[key] ?? 0;
  return t;
}

// ---- heaptap (and any pprof heap profile) ---------------------------------------------------

/** A pprof heap profile (heaptap run's heap or peak profile, or go tool pprof's rendering
 * of tcmalloc's): alloc_space and inuse_space per site. Locations list their inlined
 * functions innermost first (pprof's order); a location with no line has no name. */
export async function readPprof(file: string): Promise<Sites> {
  const p = await decodeProfile(await readFile(file));
  const types = p.sampleType.map((t) => str(p, t.type));
  const ix = (t: string) => {
    const i = types.indexOf(t);
    if (i < 0) throw new Error(`${file}: no ${t} sample type (has ${types.join(', ')})`);
    return i;
  };
  const [ao, ab, ib] = [ix('alloc_objects'), ix('alloc_space'), ix('inuse_space')];
  const fnName = new Map(p.function.map((f) => [Number(f.id), str(p, f.name)]));
  const mapFile = new Map(p.mapping.map((m) => [Number(m.id), str(p, m.filename)]));
  const frames = new Map<number, Array<[string | undefined, string | undefined]>>();
  for (const l of p.location) {
    const module = mapFile.get(Number(l.mappingId));
    frames.set(Number(l.id), l.line.length ? l.line.map((ln) => [fnName.get(Number(ln.functionId)), module]) : [[undefined, module]]);
  }
  const sites: Sites = new Map();
  for (const s of p.sample) {
    const site = siteOf(s.locationId.flatMap((id) => frames.get(Number(id)) ?? []));
    add(sites, site, Number(s.value[ab]), Number(s.value[ao]), Number(s.value[ib]));
  }
  return sites;
}

// ---- heaptrack ---------------------------------------------------------------------------

/** Demangles C++ names with binutils' c++filt (one process for all of them). */
async function demangle(names: string[]): Promise<Map<string, string>> {
  const mangled = [...new Set(names.filter((n) => n.startsWith('_Z')))];
  const out = new Map<string, string>();
  if (!mangled.length) return out;
  const child = spawn('c++filt', [], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin.end(mangled.join('\n') + '\n');
  let text = '';
  for await (const chunk of child.stdout) text += chunk;
  const lines = text.split('\n');
  mangled.forEach((m, i) => out.set(m, lines[i] || m));
  return out;
}

export interface HeaptrackResult {
  sites: Sites;
  /** Allocations and deallocations read; deallocations of memory allocated before the
   * trace started are not in it. */
  allocations: number;
}

/** heaptrack's interpreted trace (`heaptrack -o FILE` writes FILE.zst): exact bytes and
 * allocations per site, and what was still allocated at the end. The format, as
 * heaptrack_interpret 1.4 writes it (numbers in hex, indices into earlier lines):
 *   s LEN STRING                  string table, 1-based
 *   i IP MODULE [FN FILE LINE]... an instruction pointer and its frames, innermost
 *                                 (inlined) first; no FN: no symbol
 *   t IP PARENT                   trace node, 1-based (PARENT 0: the root)
 *   a SIZE TRACE                  allocation info, 0-based
 *   + INFO / - INFO               one allocation / deallocation of that info
 * heaptrack_print has no "bytes allocated" cost (its flame graph offers allocations,
 * temporary, leaked and peak), so the totals are summed from the events here. */
export async function readHeaptrack(file: string): Promise<HeaptrackResult> {
  const child = spawn('zstd', ['-dcq', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
  const strings: string[] = [''];
  const ips: Array<{ module: number; fns: number[] }> = [{ module: 0, fns: [] }];
  const traces: Array<[number, number]> = [[0, 0]];
  const infoSize: number[] = [];
  const infoTrace: number[] = [];
  const allocs: number[] = [];
  const frees: number[] = [];
  let allocations = 0;
  for await (const line of rl) {
    const c = line.charCodeAt(0);
    if (c === 43 /* + */) {
      allocs[parseInt(line.slice(2), 16)]!++;
      allocations++;
    } else if (c === 45 /* - */) {
      frees[parseInt(line.slice(2), 16)]!++;
    } else if (c === 115 /* s */) {
      const sp = line.indexOf(' ', 2);
      strings.push(line.slice(sp + 1, sp + 1 + parseInt(line.slice(2, sp), 16)));
    } else if (c === 105 /* i */) {
      const f = line.split(' ');
      const fns: number[] = [];
      for (let k = 3; k < f.length; k += 3) fns.push(parseInt(f[k]!, 16));
      ips.push({ module: parseInt(f[2]!, 16), fns });
    } else if (c === 116 /* t */) {
      const f = line.split(' ');
      traces.push([parseInt(f[1]!, 16), parseInt(f[2]!, 16)]);
    } else if (c === 97 /* a */) {
      const f = line.split(' ');
      infoSize.push(parseInt(f[1]!, 16));
      infoTrace.push(parseInt(f[2]!, 16));
      allocs.push(0);
      frees.push(0);
    }
  }
  const code = await new Promise<number | null>((res) => child.on('close', res));
  if (code !== 0) throw new Error(`zstd -dc ${file}: exit status ${code}`);
  if (!infoSize.length) throw new Error(`${file}: no allocations in the trace`);
  const names = await demangle(strings);
  const siteOfTrace = new Map<number, string>();
  const sites: Sites = new Map();
  for (let a = 0; a < infoSize.length; a++) {
    if (!allocs[a]) continue;
    const t = infoTrace[a]!;
    let site = siteOfTrace.get(t);
    if (site === undefined) {
      const frames: Array<[string | undefined, string | undefined]> = [];
      for (let n = t; n > 0; n = traces[n]![1]) {
        const ip = ips[traces[n]![0]]!;
        const module = strings[ip.module];
        if (!ip.fns.length) frames.push([undefined, module]);
        for (const fn of ip.fns) frames.push([fn ? names.get(strings[fn]!) ?? strings[fn] : undefined, module]);
      }
      siteOfTrace.set(t, (site = siteOf(frames)));
    }
    const live = Math.max(0, allocs[a]! - frees[a]!);
    add(sites, site, infoSize[a]! * allocs[a]!, allocs[a]!, infoSize[a]! * live);
  }
  return { sites, allocations };
}

// ---- jemalloc (through jeprof) -------------------------------------------------------------

/** `jeprof --collapsed` output: "root;...;leaf VALUE" lines, values in bytes (unsampled by
 * jeprof), allocator frames already cut by jeprof's own list; the same rule as everywhere
 * else is applied on top. */
export function readCollapsed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(.*) (\d+)$/.exec(line);
    if (!m) continue;
    const frames = m[1]!.split(';').reverse().map((f) => [f, undefined] as const);
    const site = siteOf(frames);
    out.set(site, (out.get(site) ?? 0) + Number(m[2]));
  }
  return out;
}

// ---- massif ------------------------------------------------------------------------------

export interface MassifPeak {
  /** useful heap bytes at the peak (mem_heap_B: what the program asked for) */
  heapBytes: number;
  /** allocator overhead at the peak (mem_heap_extra_B), not counted by heaptap */
  extraBytes: number;
  /** instructions executed when the peak was taken (massif's default time unit) */
  time: number;
  sites: Map<string, number>;
}

/** The peak snapshot of a massif.out file, its tree folded to sites with the same rule.
 * Tree lines are " nK: BYTES 0xADDR: fn (file:line)", one space of indentation per level;
 * the root is the allocation functions and each level below is the callers of the one
 * above. A node whose function is an allocator (or unnamed) passes its bytes down to its
 * callers; what its listed callers do not account for (massif's "below threshold"
 * entries) stays with the nearest site above, or NO_SITE. */
export function readMassifPeak(text: string, file = 'massif.out'): MassifPeak {
  const snaps = text.split(/^snapshot=\d+\n/m).slice(1);
  const peak = snaps.find((s) => /^heap_tree=peak$/m.test(s));
  if (!peak) throw new Error(`${file}: no peak snapshot (heap_tree=peak)`);
  const num = (k: string) => Number(new RegExp(`^${k}=(\\d+)$`, 'm').exec(peak)?.[1] ?? NaN);
  interface Node { depth: number; bytes: number; name?: string; module?: string; kids: Node[] }
  const root: Node = { depth: -1, bytes: 0, kids: [] };
  const stack: Node[] = [root];
  for (const line of peak.split('\n')) {
    const m = /^( *)n\d+: (\d+) (.*)$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length;
    const rest = m[3]!;
    const fr = /^0x[0-9A-Fa-f]+: (.*?)(?: \((?:in (.*)|[^()]*:\d+)\))?$/.exec(rest);
    const node: Node = { depth, bytes: Number(m[2]), kids: [] };
    if (fr && fr[1] !== '???') {
      node.name = fr[1];
      node.module = fr[2];
    }
    while (stack.length && stack[stack.length - 1]!.depth >= depth) stack.pop();
    stack[stack.length - 1]!.kids.push(node);
    stack.push(node);
  }
  const sites = new Map<string, number>();
  const put = (site: string, b: number) => b > 0 && sites.set(site, (sites.get(site) ?? 0) + b);
  // The top node (massif's "(heap allocation functions)") is an allocator by definition.
  const walk = (n: Node) => {
    const name = n.name ? normalizeName(n.name) : undefined;
    if (name && !isAllocator(name, n.module)) return put(name, n.bytes);
    let rest = n.bytes;
    for (const k of n.kids) {
      walk(k);
      rest -= k.bytes;
    }
    put(NO_SITE, rest);
  };
  for (const top of root.kids) walk(top);
  return { heapBytes: num('mem_heap_B'), extraBytes: num('mem_heap_extra_B'), time: num('time'), sites };
}
