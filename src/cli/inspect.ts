// heaptap list | snapshot | top | diff | export: the regions in a directory, read as they
// are now, and pprof profiles (files, URLs) read back.
import { stat, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { encodeProfile, str, type ProfileView } from '../profile.ts';
import { constants, readRegionAsync } from '../region.ts';
import type { SampleTypeName } from '../profile.ts';
import { UsageError, describeError, displayPath, errnoText, parse, parseInteger, regionDir, unwritableDir } from './common.ts';
import { callgrind, foldedStacks } from './export.ts';
import { loadProfile } from './profiles.ts';
import { regionFiles } from './regions.ts';
import { SAMPLE_TYPE_NAMES, diffTable, formatDiffTable, formatTopTable, siteTable } from './top.ts';
import { DIFF_USAGE, EXPORT_USAGE, LIST_USAGE, SNAPSHOT_USAGE, TOP_USAGE } from './usage.ts';

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

export async function listCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('list', args, {
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(LIST_USAGE);
    return 0;
  }
  if (positionals.length) throw new UsageError(`list: unexpected argument '${positionals[0]}' (see heaptap list --help)`);
  const dir = regionDir(values.dir);
  const rows: string[][] = [['PID', 'STATE', 'SAMPLES', 'DROPS', 'EXECUTABLE', 'REGION']];
  for (const path of await regionFiles(dir, 'list')) {
    try {
      const s = await readRegionAsync(path);
      let samples = 0n;
      for (const n of s.counters.samples) samples += n;
      let drops = 0n;
      for (let i = 0; i < constants.DROP_COUNT; i++) drops += s.header.drops[i] ?? 0n;
      const state = s.alive ? 'running' : s.header.state === 2 ? 'exited' : 'gone';
      rows.push([String(s.header.pid), state, String(samples), String(drops), s.header.exe, path]);
    } catch (e) {
      const pid = /^(\d+)-/.exec(path.slice(path.lastIndexOf('/') + 1))?.[1] ?? '?';
      rows.push([pid, 'unreadable', '-', '-', describeError(e).replace(`${path}: `, ''), path]);
    }
  }
  if (rows.length === 1) {
    process.stderr.write(`heaptap: no regions in ${dir}\n`);
    return 0;
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) process.stdout.write(r.map((v, c) => (c === r.length - 1 ? v : pad(v, widths[c]!))).join('  ') + '\n');
  return 0;
}

export async function snapshotCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('snapshot', args, {
    output: { type: 'string', short: 'o' },
    view: { type: 'string' },
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(SNAPSHOT_USAGE);
    return 0;
  }
  const view = (values.view ?? 'heap') as ProfileView;
  if (view !== 'heap' && view !== 'allocs') throw new UsageError(`snapshot: --view '${values.view}' is not heap or allocs`);
  if (positionals.length !== 1) throw new UsageError('snapshot: give one <pid|region|profile> (see heaptap snapshot --help)');
  // Where it goes is checked first: a bad -o is a usage error, before any work. -o DIR (an
  // existing directory) puts the file there under its usual name.
  const given = values.output !== undefined && values.output !== '-' ? resolve(values.output) : undefined;
  const intoDir = given === undefined || (await stat(given).then((st) => st.isDirectory(), () => false));
  if (values.output !== '-') {
    const where = intoDir ? given ?? process.cwd() : dirname(given!);
    const why = await unwritableDir(where);
    if (why) throw new UsageError(`snapshot: -o ${values.output ?? '(default)'}: ${where}: ${why}`);
  }
  const { profile, what, pid, exe } = await loadProfile(positionals[0]!, regionDir(values.dir), view);
  // a profile read back gets the view's default sample type, as one built from a region
  if (pid === undefined) profile.defaultSampleType = view === 'allocs' ? profile.stringTable.dedup('alloc_space') : 0;
  const data = await encodeProfile(profile);
  if (values.output === '-') {
    await new Promise<void>((res, rej) => process.stdout.write(data, (e) => (e ? rej(e) : res())));
    return 0;
  }
  const out = intoDir ? resolve(given ?? '.', `heaptap.${pid ?? 'profile'}.${view}.pb.gz`) : given!;
  try {
    await writeFile(out, data);
  } catch (e) {
    process.stderr.write(`heaptap: snapshot: cannot write ${out}: ${errnoText(e)}\n`);
    return 1;
  }
  process.stderr.write(`heaptap: wrote ${displayPath(out)} (${profile.sample.length} stacks, ${pid !== undefined ? `pid ${pid}, ${exe}` : `from ${what}`})\n`);
  return 0;
}

export async function topCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('top', args, {
    'sample-index': { type: 'string' },
    nodes: { type: 'string', short: 'n' },
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(TOP_USAGE);
    return 0;
  }
  const index = (values['sample-index'] ?? 'inuse_space') as SampleTypeName;
  if (!SAMPLE_TYPE_NAMES.includes(index)) throw new UsageError(`top: --sample-index '${index}' is not one of ${SAMPLE_TYPE_NAMES.join(', ')}`);
  const n = values.nodes !== undefined ? parseInteger('top: --nodes', values.nodes, 1, 1_000_000) : 20;
  if (positionals.length !== 1) throw new UsageError('top: give one <pid|region|profile> (see heaptap top --help)');
  const { profile, what, pid } = await loadProfile(positionals[0]!, regionDir(values.dir), 'heap');
  process.stdout.write(pid !== undefined ? `Process: ${what}\n` : `Profile: ${what}\n`);
  process.stdout.write(formatTopTable(siteTable(profile, index), n));
  return 0;
}

export async function diffCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('diff', args, {
    'sample-index': { type: 'string' },
    nodes: { type: 'string', short: 'n' },
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(DIFF_USAGE);
    return 0;
  }
  const index = (values['sample-index'] ?? 'inuse_space') as SampleTypeName;
  if (!SAMPLE_TYPE_NAMES.includes(index)) throw new UsageError(`diff: --sample-index '${index}' is not one of ${SAMPLE_TYPE_NAMES.join(', ')}`);
  const n = values.nodes !== undefined ? parseInteger('diff: --nodes', values.nodes, 1, 1_000_000) : 20;
  if (positionals.length !== 2) throw new UsageError('diff: give OLD and NEW, each a profile file, URL, pid or region (see heaptap diff --help)');
  const dir = regionDir(values.dir);
  const a = await loadProfile(positionals[0]!, dir);
  const b = await loadProfile(positionals[1]!, dir);
  for (const [p, w] of [[a, 'OLD'], [b, 'NEW']] as const) {
    if (!p.profile.sampleType.some((t) => str(p.profile, t.type) === index)) throw new UsageError(`diff: ${w} ${p.what} has no sample type ${index}`);
  }
  process.stdout.write(`Old: ${a.what}\nNew: ${b.what}\n`);
  process.stdout.write(formatDiffTable(diffTable(a.profile, b.profile, index), index, n));
  return 0;
}

export async function exportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('export', args, {
    format: { type: 'string', short: 'f' },
    output: { type: 'string', short: 'o' },
    type: { type: 'string' },
    'full-names': { type: 'boolean' },
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(EXPORT_USAGE);
    return 0;
  }
  const format = values.format;
  if (format !== 'folded' && format !== 'callgrind') {
    throw new UsageError(format === undefined ? 'export: give --format folded or --format callgrind (see heaptap export --help)' : `export: --format '${format}' is not folded or callgrind`);
  }
  if (positionals.length !== 1) throw new UsageError('export: give one <profile|pid|region> (see heaptap export --help)');
  const out = values.output !== undefined && values.output !== '-' ? resolve(values.output) : undefined;
  if (out) {
    const why = await unwritableDir(dirname(out));
    if (why) throw new UsageError(`export: -o ${values.output}: ${dirname(out)}: ${why}`);
  }
  const { profile } = await loadProfile(positionals[0]!, regionDir(values.dir));
  const names = profile.sampleType.map((t) => str(profile, t.type));
  const type = values.type ?? (names.includes('inuse_space') ? 'inuse_space' : names[names.length - 1]!);
  const vi = names.indexOf(type);
  if (vi < 0) throw new UsageError(`export: --type '${type}' is not in the profile (it has ${names.join(', ')})`);
  const text = format === 'folded' ? foldedStacks(profile, vi, values['full-names'] ?? false) : callgrind(profile, vi, positionals[0]!);
  if (!out) {
    await new Promise<void>((res, rej) => process.stdout.write(text, (e) => (e ? rej(e) : res())));
    return 0;
  }
  try {
    await writeFile(out, text);
  } catch (e) {
    process.stderr.write(`heaptap: export: cannot write ${out}: ${errnoText(e)}\n`);
    return 1;
  }
  process.stderr.write(`heaptap: wrote ${displayPath(out)} (${format}, ${type})\n`);
  return 0;
}
