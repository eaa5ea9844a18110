// Finding and reading regions for the CLI: by path, or by pid in a directory.
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, resolve } from 'node:path';

import { listRegions, readRegionAsync, type RegionSnapshot } from '../region.ts';
import { UsageError, describeError, errnoText } from './common.ts';

/** Reads a region named by path, or by pid (the newest region of that pid in dir, by the
 * time it was made: after an exec a pid has several). Unreadable: a UsageError. */
export async function resolveRegion(spec: string, dir: string): Promise<{ path: string; snapshot: RegionSnapshot }> {
  if (/^\d+$/.test(spec)) {
    const paths = (await listRegions(dir)).filter((p) => basename(p).startsWith(`${spec}-`));
    let best: { path: string; snapshot: RegionSnapshot } | undefined;
    let firstError = '';
    for (const path of paths) {
      try {
        const snapshot = await readRegionAsync(path);
        if (snapshot.header.pid !== Number(spec)) continue;
        if (!best || snapshot.header.startNs > best.snapshot.header.startNs) best = { path, snapshot };
      } catch (e) {
        firstError ||= describeError(e);
      }
    }
    if (best) return best;
    if (firstError) throw new UsageError(`cannot read a region of pid ${spec}: ${firstError}`);
    throw new UsageError(`no region of pid ${spec} in ${dir}${existsSync(dir) ? '' : ` (${dir} does not exist)`}`);
  }
  const path = resolve(spec);
  try {
    return { path, snapshot: await readRegionAsync(path) };
  } catch (e) {
    throw new UsageError(`cannot read region ${describeError(e, path)}`);
  }
}

/** Every region file of dir (exported for tests and `heaptap list`); a directory that is
 * missing or unreadable is a UsageError. */
export async function regionFiles(dir: string, what: string): Promise<string[]> {
  try {
    await readdir(dir);
  } catch (e) {
    // A directory that is not there is a mistyped --dir or HEAPTAP_DIR as often as one that
    // no profiled process has made yet: either way there is nothing to list, and saying
    // "no regions" with exit 0 would hide the typo.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`${what}: ${dir} does not exist (no process profiled into it yet, or a mistyped --dir / HEAPTAP_DIR?)`);
    throw new UsageError(`${what}: cannot read ${dir}: ${errnoText(e)}`);
  }
  return listRegions(dir);
}
