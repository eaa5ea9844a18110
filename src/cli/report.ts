// heaptap report PROFILE.pb.gz [--peak FILE] [--base OLDER.pb.gz] [-o FILE]: one
// self-contained HTML page (src/report/) from heaptap profiles. Needs no addon.
import { readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Profile } from 'pprof-format';

import { decodeProfile } from '../profile.ts';
import { reportHtml } from '../report/html.ts';
import type { ReportData } from '../report/model.ts';
import { reportFromProfiles } from '../report/profiles.ts';
import { loadProfile } from './profiles.ts';
import { UsageError, displayPath, regionDir, errnoText, formatBytes, formatCount, formatSeconds, parse, unwritableDir } from './common.ts';

export const REPORT_USAGE = `Usage: heaptap report PROFILE [--peak FILE] [--base OLDER] [-o FILE]

Writes one HTML page about a heaptap heap profile (from heaptap run, snapshot, or the
agent's /debug/pprof/heap): the heap in use and resident over time with the peak marked
(when the profile carries its timeline: heaptap run's do), a flame graph switchable
between bytes allocated, in use at the end, in use at the peak (with --peak) and objects
(click to zoom, search to highlight), and the top sites with their call paths. The page
is self-contained: open it from disk in any browser, offline.

PROFILE (and --peak, --base) is a .pb.gz file, an http(s) URL of one (the agent's
/debug/pprof/heap, or ?peak=1), or a pid or region file in the region directory.

Options:
  --peak FILE          the peak profile of the same run (heaptap.<pid>.peak.pb.gz)
  --base FILE          an older profile of the same program: the page lists the sites
                       whose in use grew since it, largest growth first
  -o, --output FILE    where to write it (default: PROFILE with .pb.gz replaced by .html;
                       heaptap.<pid>.html for a pid, heaptap-report.html for a URL)
  --dir DIR            the region directory, for a pid (default: $HEAPTAP_DIR or /dev/shm/heaptap)
  -h, --help           this text

heaptap run writes heaptap.<pid>.html itself, beside its profiles.
`;

/** A profile the way top, diff and export take one: an http(s) URL (the agent's
 * /debug/pprof/heap), a pid or region (read now), or a file. */
async function load(what: string, path: string, dir: string): Promise<Profile> {
  if (/^https?:\/\//.test(path) || /^\d+$/.test(path) || /\.heaptap$/.test(path)) {
    try {
      return (await loadProfile(path, dir)).profile;
    } catch (e) {
      throw new UsageError(`report: ${what} ${(e as Error).message}`);
    }
  }
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (e) {
    throw new UsageError(`report: ${what} ${path}: ${errnoText(e)}`);
  }
  try {
    return await decodeProfile(data);
  } catch (e) {
    throw new UsageError(`report: ${what} ${path} is not a pprof profile (${(e as Error).message})`);
  }
}

/** The facts under a report's title: totals of its views, the peak. */
export function reportFacts(data: ReportData): string[] {
  const out: string[] = [];
  const total = (id: string) => data.views.find((v) => v.id === id)?.total;
  const ab = total('alloc_space'), ao = total('alloc_objects'), iu = total('inuse_space');
  const peak = data.timeline?.peak;
  if (peak) out.push(`peak in use ${formatBytes(Math.round(peak.bytes))} at ${formatSeconds(Math.max(0, peak.t))}`);
  else if (total('peak_space') !== undefined) out.push(`in use at the peak ${formatBytes(total('peak_space')!)}`);
  if (ab !== undefined) out.push(`allocated ${formatBytes(ab)}${ao !== undefined ? ` in ${formatCount(ao)} objects` : ''}`);
  if (iu !== undefined) out.push(`in use at the end ${formatBytes(iu)}`);
  return out;
}

export async function reportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('report', args, {
    peak: { type: 'string' },
    base: { type: 'string' },
    output: { type: 'string', short: 'o' },
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(REPORT_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('report: give one PROFILE.pb.gz (see heaptap report --help)');
  const file = positionals[0]!;
  const dir = regionDir(values.dir);
  const remote = /^https?:\/\//.test(file) || /^\d+$/.test(file);
  const out = resolve(values.output ?? (remote ? (/^\d+$/.test(file) ? `heaptap.${file}.html` : 'heaptap-report.html') : /\.pb(\.gz)?$/.test(file) ? file.replace(/\.pb(\.gz)?$/, '.html') : `${file}.html`));
  const why = await unwritableDir(dirname(out));
  if (why) throw new UsageError(`report: -o ${out}: ${dirname(out)} ${why}`);
  const heap = await load('profile', file, dir);
  const peak = values.peak !== undefined ? await load('--peak', values.peak, dir) : null;
  const base = values.base !== undefined ? await load('--base', values.base, dir) : null;
  let data: ReportData;
  try {
    data = reportFromProfiles({
      title: `heaptap: ${basename(file)}`,
      heap,
      peak,
      base: base ? { label: basename(values.base!), profile: base } : null,
    });
  } catch (e) {
    throw new UsageError(`report: ${(e as Error).message}`);
  }
  data.facts = [...reportFacts(data), `profile ${basename(file)}${heap.timeNanos ? `, taken ${new Date(Number(BigInt(heap.timeNanos) / 1_000_000n)).toISOString()}` : ''}`];
  if (peak) data.facts.push(`peak profile ${basename(values.peak!)}`);
  const html = reportHtml(data);
  try {
    await writeFile(out, html);
  } catch (e) {
    process.stderr.write(`heaptap: report: cannot write ${out}: ${errnoText(e)}\n`);
    return 1;
  }
  process.stderr.write(`heaptap: wrote ${displayPath(out)} (${formatBytes(Buffer.byteLength(html))}): open it in a browser\n`);
  return 0;
}
