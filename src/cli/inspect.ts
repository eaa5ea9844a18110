// heaptap list | snapshot | top: the regions in a directory, read as they are now.
import { stat, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { buildProfileAsync, encodeProfile, type ProfileView } from '../profile.ts';
import { constants, readRegionAsync } from '../region.ts';
import type { SampleTypeName } from '../profile.ts';
import { Symbolizer } from '../symbolize.ts';
import { UsageError, describeError, displayPath, errnoText, parse, parseInteger, regionDir, unwritableDir } from './common.ts';
import { regionFiles, resolveRegion } from './regions.ts';
import { SAMPLE_TYPE_NAMES, formatTopTable, siteTable } from './top.ts';
import { LIST_USAGE, SNAPSHOT_USAGE, TOP_USAGE } from './usage.ts';

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

async function profileOf(spec: string, dir: string, view: ProfileView) {
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
    return { path, snapshot, profile };
  } finally {
    symbolizer.close();
  }
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
  if (positionals.length !== 1) throw new UsageError('snapshot: give one <pid|region> (see heaptap snapshot --help)');
  // Where it goes is checked first: a bad -o is a usage error, before any work. -o DIR (an
  // existing directory) puts the file there under its usual name.
  const given = values.output !== undefined && values.output !== '-' ? resolve(values.output) : undefined;
  const intoDir = given === undefined || (await stat(given).then((st) => st.isDirectory(), () => false));
  if (values.output !== '-') {
    const where = intoDir ? given ?? process.cwd() : dirname(given!);
    const why = await unwritableDir(where);
    if (why) throw new UsageError(`snapshot: -o ${values.output ?? '(default)'}: ${where}: ${why}`);
  }
  const { snapshot, profile } = await profileOf(positionals[0]!, regionDir(values.dir), view);
  const data = await encodeProfile(profile);
  if (values.output === '-') {
    await new Promise<void>((res, rej) => process.stdout.write(data, (e) => (e ? rej(e) : res())));
    return 0;
  }
  const out = intoDir ? resolve(given ?? '.', `heaptap.${snapshot.header.pid}.${view}.pb.gz`) : given!;
  try {
    await writeFile(out, data);
  } catch (e) {
    process.stderr.write(`heaptap: snapshot: cannot write ${out}: ${errnoText(e)}\n`);
    return 1;
  }
  process.stderr.write(`heaptap: wrote ${displayPath(out)} (${profile.sample.length} stacks, pid ${snapshot.header.pid}, ${snapshot.header.exe})\n`);
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
  if (positionals.length !== 1) throw new UsageError('top: give one <pid|region> (see heaptap top --help)');
  const { snapshot, profile } = await profileOf(positionals[0]!, regionDir(values.dir), 'heap');
  process.stdout.write(`Process: ${snapshot.header.pid} ${snapshot.header.exe}\n`);
  process.stdout.write(formatTopTable(siteTable(profile, index), n));
  return 0;
}
