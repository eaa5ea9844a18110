// What the profile-reading commands (top, snapshot, diff, export) accept: a pprof file
// (.pb.gz as heaptap run writes it, or as fetched from the agent's /debug/pprof/heap; gzipped
// or not), an http(s) URL that serves one, a pid (its newest region in the directory) or the
// path of a region file. A URL is fetched with $HEAPTAP_TOKEN as its bearer token when set.
import { open, readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Profile } from 'pprof-format';

import { buildProfileAsync, decodeProfile, type ProfileView } from '../profile.ts';
import { Symbolizer } from '../symbolize.ts';
import { UsageError, errnoText } from './common.ts';
import { resolveRegion } from './regions.ts';

export interface LoadedProfile {
  profile: Profile;
  /** how to name it in messages: "pid 123 /usr/bin/x", or the file or URL */
  what: string;
  /** the region's pid and executable, when it came from a region */
  pid?: number;
  exe?: string;
}

/** Whether the file starts like a pprof profile: gzip's magic, or a protobuf whose first
 * field is a Profile's (1 sample_type, 2 sample, ... 6 string_table, length-delimited). */
async function looksLikeProfile(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(2);
    const { bytesRead } = await fh.read(b, 0, 2, 0);
    if (bytesRead < 2) return false;
    if (b[0] === 0x1f && b[1] === 0x8b) return true;
    return /\.(pb|pprof|prof)$/.test(path) && [0x0a, 0x12, 0x1a, 0x22, 0x2a, 0x32].includes(b[0]!);
  } finally {
    await fh.close();
  }
}

async function decode(data: Uint8Array, what: string): Promise<Profile> {
  try {
    const p = await decodeProfile(data);
    if (!p.sampleType.length) throw new Error('no sample types');
    return p;
  } catch (e) {
    throw new UsageError(`${what}: not a pprof profile (${(e as Error).message})`);
  }
}

/** The profile a command argument names (see the file comment). Unreadable: a UsageError. */
export async function loadProfile(spec: string, dir: string, view: ProfileView = 'heap'): Promise<LoadedProfile> {
  if (/^https?:\/\//.test(spec)) {
    let res: Response;
    try {
      // an agent started with a token wants it on every request but /healthz and /readyz
      const token = process.env.HEAPTAP_TOKEN;
      res = await fetch(spec, { signal: AbortSignal.timeout(60_000), headers: token ? { Authorization: `Bearer ${token}` } : {} });
    } catch (e) {
      throw new UsageError(`cannot fetch ${spec}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
    }
    if (!res.ok) throw new UsageError(`cannot fetch ${spec}: HTTP ${res.status} ${(await res.text()).trim().split('\n')[0] ?? ''}`);
    return { profile: await decode(new Uint8Array(await res.arrayBuffer()), spec), what: spec };
  }
  if (!/^\d+$/.test(spec) && (await looksLikeProfile(resolve(spec)))) {
    let data: Buffer;
    try {
      data = await readFile(resolve(spec));
    } catch (e) {
      throw new UsageError(`cannot read ${spec}: ${errnoText(e)}`);
    }
    return { profile: await decode(data, spec), what: spec };
  }
  const { path, snapshot } = await resolveRegion(spec, dir);
  // A region written by this same user (an ended process's, typically) may name module
  // paths to open on this host: its writer could read them itself. Anyone else's region
  // is symbolized only through its live process (src/moduleFiles.ts).
  const owner = await stat(path).then((s) => s.uid, () => -1);
  const symbolizer = new Symbolizer({ trustRegionPaths: owner === process.geteuid?.() });
  const warnings: string[] = [];
  try {
    const profile = await buildProfileAsync([{ snapshot }], { view, symbolizer, onWarning: (m) => warnings.push(m) });
    for (const w of warnings) process.stderr.write(`heaptap: warning: ${w}\n`);
    return { profile, what: `${snapshot.header.pid} ${snapshot.header.exe}`, pid: snapshot.header.pid, exe: snapshot.header.exe };
  } finally {
    symbolizer.close();
  }
}
