// Symbolization of the return addresses in region stacks: function names (C++ demangled),
// file, line and inlined frames from ELF/DWARF, through the addon's libdwfl-based
// Symbolizer (src/addon/symbolize.cc). docs/symbolization.md explains how files and debug
// info are found, what is cached and the limits.
//
// This file holds the address arithmetic (runtime return address -> ELF virtual address)
// and a per-module cache of resolved
// addresses, so that repeated snapshots and a thousand processes of one binary cost one
// file load and one lookup per distinct address. Which file a module is (never a path a
// region names, for the agent) is decided in src/moduleFiles.ts.
import { statSync } from 'node:fs';

import { ModuleResolver } from './moduleFiles.ts';
import { native } from './native.ts';
import { constants, type RegionModule } from './region.ts';

/** One frame of an address, innermost first. Shared between results: treat as read-only. */
export interface SymFrame {
  /** demangled where the name is a C++ (Itanium ABI) mangled name */
  function: string;
  /** the raw (linkage) name; equal to function for C */
  systemName: string;
  /** '' when unknown (no DWARF line info) */
  file: string;
  /** 0 when unknown */
  line: number;
  /** DW_AT_decl_line of the function, 0 when unknown */
  startLine: number;
}

export interface ModuleSymbolInfo {
  /** the file actually used ('' if none) */
  path: string;
  /** the region's build id (hex) */
  buildId: string;
  /** an object file matching the module was opened */
  found: boolean;
  /** at least one address got a function name (so far, for this module) */
  hasFunctions: boolean;
  hasFilenames: boolean;
  hasLineNumbers: boolean;
  /** addresses were resolved through DWARF scopes, so inlined calls are expanded into
   * frames (true even when none of the addresses so far happened to be inlined code) */
  hasInlineFrames: boolean;
  /** separate debug file used, '' if none */
  debugFile: string;
  /** why not found / not usable, '' if fine. With found=true it says the debug info could
   * not be read (the ELF symbol table is still used). */
  error: string;
}

/** frames[i] for addresses[i], innermost first; [] where nothing is known. */
export interface SymbolizeResult {
  info: ModuleSymbolInfo;
  frames: SymFrame[][];
}

export interface SymbolizerOptions {
  /** directories searched for <dir>/.build-id/xx/yyyy.debug and
   * <dir>/<module's directory>/<.gnu_debuglink name>; default ['/usr/lib/debug'] */
  debugDirs?: string[];
  /** module files kept open, and modules whose resolved addresses are kept (LRU); 256 */
  maxModules?: number;
  /** resolved addresses kept per module before that module's cache is dropped; 2^20 */
  maxAddressesPerModule?: number;
  /** a module that could not be opened is tried again after this long; 30 s */
  retryFailedAfterMs?: number;
  /** when the live process gives no file for a module (it is gone, pid 0, or it maps
   * nothing there), open the path its region names, on this host. Only for regions this
   * program trusts: `heaptap run` (it started the processes and symbolizes their final
   * profiles after they exited), `heaptap snapshot|top` of a region of the same user, and
   * tests of files of their own. Off (the agent), a module is opened only as the live
   * process maps it (src/moduleFiles.ts). */
  trustRegionPaths?: boolean;
}

/** What the addon's Symbolizer.resolve returns: frames as rows of string-table indices. */
export interface NativeSymbols {
  path: string;
  debugFile: string;
  error: string;
  /** the build id of the file opened (or of the mismatching one), hex */
  fileBuildId: string;
  found: boolean;
  /** this call opened the file (a cold load) */
  loaded: boolean;
  hasDwarf: boolean;
  hasFunctions: boolean;
  hasFilenames: boolean;
  hasLineNumbers: boolean;
  hasInlineFrames: boolean;
  strings: string[];
  /** distinct frames, 5 ints each: function, systemName, file (indices into strings),
   * line, startLine */
  frames: Int32Array;
  /** address i's frames are list[starts[i]] .. list[starts[i+1] - 1], innermost first */
  starts: Uint32Array;
  /** indices of distinct frames */
  list: Uint32Array;
}

export interface NativeSymbolizer {
  /** identities[i]: "major:minor:inode" candidates[i] must be once open ('' = unchecked) */
  resolve(candidates: string[], origPath: string, buildId: string, addrs: BigUint64Array, identities?: string[]): NativeSymbols;
  resolveAsync(
    candidates: string[],
    origPath: string,
    buildId: string,
    addrs: BigUint64Array,
    identities?: string[],
  ): Promise<NativeSymbols>;
  stats(): { modulesLoaded: number; moduleHits: number; modulesOpen: number };
  close(): void;
  closeFiles(): void;
}

export interface NativeSymbolizerConstructor {
  new (opts: { debugDirs: string[]; maxModules?: number }): NativeSymbolizer;
}

export const DEFAULT_DEBUG_DIRS: readonly string[] = ['/usr/lib/debug'];

const MASK64 = (1n << 64n) - 1n;
const EMPTY: SymFrame[] = Object.freeze([]) as unknown as SymFrame[];

interface Entry {
  key: string;
  info: ModuleSymbolInfo;
  /** resolved ELF addresses (addrKey) */
  addrs: Map<number | bigint, SymFrame[]>;
  /** one instance of each name and file string resolved from this module: every call
   * returns new strings, and long C++ names repeated across calls and processes add up */
  names: Map<string, string>;
  /** Date.now() of the failure, for entries of modules that could not be opened */
  failedAt: number;
}

interface Plan {
  /** cache key; '' when the module is not to be looked up (vDSO, no path) */
  key: string;
  candidates: string[];
  /** per candidate, the "major:minor:inode" it must be */
  identities: string[];
  origPath: string;
  info?: ModuleSymbolInfo;
  /** no file may be opened now (the process is gone), but addresses resolved before
   * under this key are answered, and new ones from the file still open for the build id
   * (opened and checked for a live process earlier; nothing is opened: no candidates) */
  cachedOnly?: boolean;
}

function emptyInfo(buildId: string, error = ''): ModuleSymbolInfo {
  return {
    path: '',
    buildId,
    found: false,
    hasFunctions: false,
    hasFilenames: false,
    hasLineNumbers: false,
    hasInlineFrames: false,
    debugFile: '',
    error,
  };
}

/** Map key of an address: a number where exact (much faster to hash than a bigint). */
function addrKey(a: bigint): number | bigint {
  return a <= MAX_SAFE ? Number(a) : a;
}
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The ELF virtual addresses of runtime return addresses: pc - 1 (inside the call
 * instruction, so the line is the call's) minus the module's load bias, modulo 2^64. */
export function elfAddresses(
  module: RegionModule,
  addresses: readonly bigint[] | BigUint64Array,
): BigUint64Array {
  const out = new BigUint64Array(addresses.length);
  const bias = module.loadBias;
  for (let i = 0; i < addresses.length; i++) out[i] = (addresses[i]! - 1n - bias) & MASK64;
  return out;
}

/** Files to try for a module of process pid: see src/moduleFiles.ts (never the region's
 * path on this host unless trustRegionPaths and the process is gone). */
export function candidatePaths(module: RegionModule, pid: number, opts: { trustRegionPaths?: boolean } = {}): string[] {
  return new ModuleResolver({ trustRegionPath: opts.trustRegionPaths ?? false }).resolve(module, pid).candidates.map((c) => c.path);
}

export class Symbolizer {
  readonly #native: NativeSymbolizer;
  readonly #entries = new Map<string, Entry>();
  readonly #maxModules: number;
  readonly #maxAddresses: number;
  readonly #retryMs: number;
  readonly #resolver: ModuleResolver;
  #cacheHits = 0;
  #resolved = 0;
  #closed = false;

  constructor(opts: SymbolizerOptions = {}) {
    const debugDirs = [...(opts.debugDirs ?? DEFAULT_DEBUG_DIRS)];
    this.#maxModules = opts.maxModules ?? 256;
    this.#maxAddresses = opts.maxAddressesPerModule ?? 1 << 20;
    this.#retryMs = opts.retryFailedAfterMs ?? 30_000;
    this.#resolver = new ModuleResolver({ trustRegionPath: opts.trustRegionPaths ?? false });
    this.#native = new native.Symbolizer({ debugDirs, maxModules: this.#maxModules });
  }

  /** Frames for runtime return addresses of one module of process pid (the class
   * subtracts 1 and the load bias). Never throws for unreadable or hostile files: the
   * reason is in info.error and the frames are empty. */
  symbolize(
    module: RegionModule,
    pid: number,
    addresses: readonly bigint[] | BigUint64Array,
  ): SymbolizeResult {
    this.#checkOpen();
    const plan = this.#plan(module, pid);
    if (plan.info) return { info: plan.info, frames: addresses.length ? Array.from(addresses, () => EMPTY) : [] };
    const vaddrs = elfAddresses(module, addresses);
    const entry = this.#entries.get(plan.key);
    const misses = this.#misses(entry, vaddrs);
    if (misses === null) return this.#answer(entry!, vaddrs);
    const res = this.#native.resolve(plan.candidates, plan.origPath, module.buildId, misses, plan.identities);
    if (plan.cachedOnly && !res.found) return this.#answer(entry!, vaddrs);
    return this.#answer(this.#merge(plan, module, misses, res), vaddrs);
  }

  /** symbolize on the libuv thread pool (large batches, cold loads of big debug files). */
  async symbolizeAsync(
    module: RegionModule,
    pid: number,
    addresses: readonly bigint[] | BigUint64Array,
  ): Promise<SymbolizeResult> {
    this.#checkOpen();
    const plan = this.#plan(module, pid);
    if (plan.info) return { info: plan.info, frames: addresses.length ? Array.from(addresses, () => EMPTY) : [] };
    const vaddrs = elfAddresses(module, addresses);
    const misses = this.#misses(this.#entries.get(plan.key), vaddrs);
    if (misses === null) return this.#answer(this.#entries.get(plan.key)!, vaddrs);
    const res = await this.#native.resolveAsync(plan.candidates, plan.origPath, module.buildId, misses, plan.identities);
    this.#checkOpen();
    if (plan.cachedOnly && !res.found) return this.#answer(this.#entries.get(plan.key) ?? this.#put0(plan.key, module), vaddrs);
    return this.#answer(this.#merge(plan, module, misses, res), vaddrs);
  }

  /** modulesLoaded: module files opened (cold loads); cacheHits: addresses answered from
   * the address cache; addressesResolved: distinct addresses looked up in a file. */
  stats(): { modulesLoaded: number; cacheHits: number; addressesResolved: number } {
    return {
      modulesLoaded: this.#native.stats().modulesLoaded,
      cacheHits: this.#cacheHits,
      addressesResolved: this.#resolved,
    };
  }

  /** Closes the open module files and frees their libdw tables (tens of MB for a big
   * library with DWARF), keeping the resolved addresses: known addresses are still
   * answered from the cache, and a new one reopens its file. For a long-running sidecar
   * between bursts of new stacks; follow it with region.ts's trimNativeMemory() to give
   * the pages back to the kernel. */
  releaseFiles(): void {
    if (!this.#closed) this.#native.closeFiles();
  }

  /** Closes every open file and drops the caches; later symbolize calls throw. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    this.#entries.clear();
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error('the symbolizer is closed');
  }

  #plan(module: RegionModule, pid: number): Plan {
    if (module.flags & constants.MODULE_VDSO || module.path === '') {
      return { key: '', candidates: [], identities: [], origPath: module.path, info: emptyInfo(module.buildId) };
    }
    const files = this.#resolver.resolve(module, pid);
    const candidates = files.candidates.map((c) => c.path);
    const identities = files.candidates.map((c) => c.identity);
    if (candidates.length === 0) {
      // Nothing may be opened now; what was resolved for this build id before still answers.
      const known = module.buildId !== '' ? this.#entries.get('b:' + module.buildId) : undefined;
      if (known && known.failedAt === 0) {
        this.#touch(known);
        return { key: known.key, candidates, identities, origPath: files.origPath, cachedOnly: true };
      }
      const error = files.error || `${module.path}: not an absolute path`;
      return { key: '', candidates, identities, origPath: files.origPath, info: emptyInfo(module.buildId, error) };
    }
    let key = '';
    if (module.buildId !== '') {
      key = 'b:' + module.buildId;
    } else {
      for (const p of candidates) {
        let st;
        try {
          st = statSync(p, { bigint: true, throwIfNoEntry: false });
        } catch {
          st = undefined;
        }
        if (st && st.isFile()) {
          key = `f:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
          break;
        }
      }
      if (key === '') key = 'p:' + module.path;
    }
    const e = this.#entries.get(key) ?? this.#entries.get(this.#failKey(key, candidates));
    if (e && e.failedAt !== 0) {
      if (Date.now() - e.failedAt < this.#retryMs) return { key, candidates, identities, origPath: files.origPath, info: e.info };
      this.#entries.delete(this.#failKey(key, candidates));
    }
    return { key, candidates, identities, origPath: files.origPath };
  }

  #failKey(key: string, candidates: string[]): string {
    return 'x:' + key + '\0' + candidates.join('\0');
  }

  /** The distinct addresses not cached yet (null if none), touching the entry's LRU slot. */
  #misses(entry: Entry | undefined, vaddrs: BigUint64Array): BigUint64Array | null {
    if (entry) {
      this.#touch(entry);
      const seen = new Set<bigint>();
      let hits = 0;
      for (const a of vaddrs) {
        if (entry.addrs.has(addrKey(a))) hits++;
        else seen.add(a);
      }
      this.#cacheHits += hits;
      return seen.size === 0 ? null : BigUint64Array.from(seen);
    }
    return BigUint64Array.from(new Set(vaddrs));
  }

  #touch(entry: Entry): void {
    this.#entries.delete(entry.key);
    this.#entries.set(entry.key, entry);
  }

  #merge(plan: Plan, module: RegionModule, misses: BigUint64Array, res: NativeSymbols): Entry {
    if (!res.found) {
      const key = this.#failKey(plan.key, plan.candidates);
      const entry: Entry = { key, info: emptyInfo(module.buildId, res.error), addrs: new Map(), names: new Map(), failedAt: Date.now() };
      this.#put(entry);
      return entry;
    }
    let entry = this.#entries.get(plan.key);
    if (!entry || entry.failedAt !== 0) {
      entry = { key: plan.key, info: emptyInfo(module.buildId), addrs: new Map(), names: new Map(), failedAt: 0 };
      this.#put(entry);
    }
    const info = entry.info;
    info.found = true;
    info.path = res.path;
    info.debugFile = res.debugFile;
    info.error = res.error;
    info.hasFunctions ||= res.hasFunctions;
    info.hasFilenames ||= res.hasFilenames;
    info.hasLineNumbers ||= res.hasLineNumbers;
    info.hasInlineFrames ||= res.hasInlineFrames;
    if (entry.addrs.size + misses.length > this.#maxAddresses) {
      entry.addrs.clear();
      entry.names.clear();
    }
    const names = entry.names;
    const s = res.strings.map((str) => {
      const known = names.get(str);
      if (known !== undefined) return known;
      names.set(str, str);
      return str;
    });
    const { frames: rows, starts, list } = res;
    const distinct: SymFrame[] = new Array(rows.length / 5);
    for (let f = 0, r = 0; r < rows.length; f++, r += 5) {
      distinct[f] = {
        function: s[rows[r]!]!,
        systemName: s[rows[r + 1]!]!,
        file: s[rows[r + 2]!]!,
        line: rows[r + 3]!,
        startLine: rows[r + 4]!,
      };
    }
    for (let i = 0; i < misses.length; i++) {
      const from = starts[i]!;
      const to = starts[i + 1]!;
      let frames = EMPTY;
      if (to > from) {
        frames = new Array<SymFrame>(to - from);
        for (let k = from; k < to; k++) frames[k - from] = distinct[list[k]!]!;
      }
      entry.addrs.set(addrKey(misses[i]!), frames);
    }
    this.#resolved += misses.length;
    return entry;
  }

  /** An empty entry (an entry dropped while an async lookup ran). */
  #put0(key: string, module: RegionModule): Entry {
    const entry: Entry = { key, info: emptyInfo(module.buildId), addrs: new Map(), names: new Map(), failedAt: 0 };
    this.#put(entry);
    return entry;
  }

  #put(entry: Entry): void {
    this.#entries.delete(entry.key);
    this.#entries.set(entry.key, entry);
    while (this.#entries.size > this.#maxModules) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  #answer(entry: Entry, vaddrs: BigUint64Array): SymbolizeResult {
    const frames = new Array<SymFrame[]>(vaddrs.length);
    for (let i = 0; i < vaddrs.length; i++) frames[i] = entry.addrs.get(addrKey(vaddrs[i]!)) ?? EMPTY;
    return { info: { ...entry.info }, frames };
  }
}
