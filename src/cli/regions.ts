// Finding and reading regions for the CLI: by path, or by pid in a directory.
import { readdir } from 'node:fs/promises';
import { basename, resolve } from 'node:path';

import { listRegions, readRegionAsync, type RegionSnapshot } from '../region.ts';
import { UsageError, describeError } from './common.ts';

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
    throw new UsageError(firstError ? `cannot read a region of pid ${spec}: ${firstError}` : `no region of pid ${spec} in ${dir}`);
  }
  const path = resolve(spec);
  try {
    return { path, snapshot: await readRegionAsync(path) };
  } catch (e) {
    throw new UsageError(`cannot read region ${describeError(e, path)}`);
  }
}

/** Every region file of dir that exists (exported for tests and `heaptap list`). */
export async function regionFiles(dir: string): Promise<string[]> {
  try {
    await readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new UsageError(`cannot read ${dir}: ${(e as Error).message}`);
  }
  return listRegions(dir);
}
