// Which file to open for a module of a profiled process: the one place that decides it
// (src/symbolize.ts asks here for every module; the addon opens only what this returns and
// checks the open descriptor again).
//
// A region is written by the profiled process, so a module path in it is only a claim: a
// hostile neighbour can write a region naming /etc/shadow and have an agent running as root
// open it. The file is therefore found from the process, not from the region: the file
// mapping of /proc/<pid>/maps that covers the module's start address gives its path and
// its device and inode, and a file is opened only through /proc/<pid>/root/<that path>,
// that path itself or /proc/<pid>/map_files/<range>, and only if stat() of it shows that
// device and inode (the addon checks the descriptor once more after open).
// The region's path is never opened on the host, and a module the process does not map
// (or a process that is gone) opens nothing.
//
// trustRegionPath (heaptap run, which started the process itself, whose final profile is
// symbolized after it exits; heaptap snapshot of a region of its own user): when the live
// process gives no file (it is gone, or does not map one there), the region's path.
import { readFileSync, statSync } from 'node:fs';

import { constants, type RegionModule } from './region.ts';

/** One file-backed mapping of /proc/<pid>/maps. */
export interface MapEntry {
  start: bigint;
  end: bigint;
  /** the range as /proc/<pid>/map_files names it ("55d0c0a00000-55d0c0a21000") */
  range: string;
  major: number;
  minor: number;
  inode: bigint;
  /** as the process sees it; " (deleted)" removed, deleted set */
  path: string;
  deleted: boolean;
}

export interface ModuleCandidate {
  /** the path to open */
  path: string;
  /** "major:minor:inode" the opened file must have, '' when unchecked (trusted fallback) */
  identity: string;
}

export interface ModuleFiles {
  /** files to try, in order; empty with error set when there is none */
  candidates: ModuleCandidate[];
  /** the module's path as the process sees it (its mapping's; else the region's) */
  origPath: string;
  error: string;
}

export interface ResolveOptions {
  /** when the live process gives no file (gone, pid 0, nothing mapped there), the
   * region's own path on this host */
  trustRegionPath?: boolean;
  /** /proc (tests) */
  procRoot?: string;
  /** maps read this recently are reused, ms; 1000 */
  mapsMaxAgeMs?: number;
}

/** Parses /proc/<pid>/maps text into its file-backed mappings. */
export function parseMaps(text: string): MapEntry[] {
  const out: MapEntry[] = [];
  for (const line of text.split('\n')) {
    // start-end perms offset major:minor inode   path
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s+(\/.*)$/.exec(line);
    if (!m || m[5] === '0') continue;
    let path = m[6]!;
    const deleted = path.endsWith(' (deleted)');
    if (deleted) path = path.slice(0, -' (deleted)'.length);
    out.push({
      // map_files names have no leading zeros, unlike maps ("401000-479000")
      start: BigInt('0x' + m[1]!), end: BigInt('0x' + m[2]!), range: `${BigInt('0x' + m[1]!).toString(16)}-${BigInt('0x' + m[2]!).toString(16)}`,
      major: parseInt(m[3]!, 16), minor: parseInt(m[4]!, 16), inode: BigInt(m[5]!), path, deleted,
    });
  }
  return out;
}

function identityOf(e: MapEntry): string {
  return `${e.major}:${e.minor}:${e.inode}`;
}

/** stat() of path as "major:minor:inode", null if it cannot be statted. */
function statIdentity(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true, throwIfNoEntry: false });
    if (!st || !st.isFile()) return null;
    // dev_t as glibc encodes it (gnu_dev_major / gnu_dev_minor).
    const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
    const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
    return `${major}:${minor}:${st.ino}`;
  } catch {
    return null;
  }
}

interface CachedMaps {
  at: number;
  entries: MapEntry[] | null;
}

/** Resolves module paths for pids, keeping each process's maps for a moment (a profile
 * asks for every module of a process at once). */
export class ModuleResolver {
  readonly #maps = new Map<number, CachedMaps>();
  readonly #procRoot: string;
  readonly #maxAgeMs: number;
  readonly #trust: boolean;

  constructor(opts: ResolveOptions = {}) {
    this.#procRoot = opts.procRoot ?? '/proc';
    this.#maxAgeMs = opts.mapsMaxAgeMs ?? 1000;
    this.#trust = opts.trustRegionPath ?? false;
  }

  #readMaps(pid: number, fresh: boolean): MapEntry[] | null {
    const now = Date.now();
    const c = this.#maps.get(pid);
    if (c && !fresh && now - c.at < this.#maxAgeMs) return c.entries;
    let entries: MapEntry[] | null;
    try {
      entries = parseMaps(readFileSync(`${this.#procRoot}/${pid}/maps`, 'utf8'));
    } catch {
      entries = null;
    }
    this.#maps.delete(pid);
    this.#maps.set(pid, { at: now, entries });
    while (this.#maps.size > 64) this.#maps.delete(this.#maps.keys().next().value as number);
    return entries;
  }

  /** The files to try for module of process pid (see the header). */
  resolve(module: RegionModule, pid: number): ModuleFiles {
    if (module.flags & constants.MODULE_VDSO || module.path === '') return { candidates: [], origPath: module.path, error: '' };
    const alive = Number.isInteger(pid) && pid > 0;
    let maps = alive ? this.#readMaps(pid, false) : null;
    let e = maps?.find((x) => x.start <= module.start && module.start < x.end);
    if (maps && !e) {
      // loaded since the maps were read (dlopen)?
      maps = this.#readMaps(pid, true);
      e = maps?.find((x) => x.start <= module.start && module.start < x.end);
    }
    // Trusted: what the process maps first; the region's path when that finds nothing.
    const trusted = (): ModuleFiles | null =>
      !this.#trust ? null
        : module.path.startsWith('/') ? { candidates: [{ path: module.path, identity: '' }], origPath: module.path, error: '' }
        : { candidates: [], origPath: module.path, error: `${module.path}: not an absolute path` };
    if (!maps) {
      return trusted() ?? {
        candidates: [], origPath: module.path,
        error: alive ? `process ${pid} is gone or its maps are unreadable: ${module.path} is not opened by the region's word`
          : `${module.path}: no process to find it in`,
      };
    }
    if (!e) return trusted() ?? { candidates: [], origPath: module.path, error: `process ${pid} maps no file at 0x${module.start.toString(16)}, where its region puts ${module.path}: not opened` };
    const want = identityOf(e);
    const candidates: ModuleCandidate[] = [];
    // The path under the process's root first (its directory is where .gnu_debuglink
    // files are looked for); the path itself (maps shows it from our root: a chrooted
    // process's file is under its root's path here); then map_files (a deleted or
    // replaced file; needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). Each only if it is
    // the very file mapped.
    const paths = e.deleted ? [] : [`${this.#procRoot}/${pid}/root${e.path}`, e.path];
    for (const path of [...paths, `${this.#procRoot}/${pid}/map_files/${e.range}`]) {
      if (statIdentity(path) === want) candidates.push({ path, identity: want });
    }
    if (candidates.length === 0) {
      return trusted() ?? { candidates, origPath: e.path, error: `${e.path}: no path to the file process ${pid} maps (device ${e.major}:${e.minor}, inode ${e.inode}) could be checked` };
    }
    return { candidates, origPath: e.path, error: '' };
  }
}
