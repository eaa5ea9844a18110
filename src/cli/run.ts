// heaptap run [options] -- <command> [args]: runs a command (and every process it starts)
// under the preload, follows its heap while it runs, and writes two profiles at the end.
import { spawn } from 'node:child_process';
import { accessSync, closeSync, existsSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { access, constants as fsConstants, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { constants as osConstants, tmpdir } from 'node:os';
import { basename, delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { native } from '../native.ts';
import { buildProfileAsync, encodeProfile, type ProfileInput } from '../profile.ts';
import { Symbolizer } from '../symbolize.ts';
import {
  constants,
  dropsByReason,
  objectsToNumber,
  type RegionSnapshot,
  type RegionStacks,
} from '../region.ts';
import {
  SELF_COMMAND,
  UsageError,
  displayPath,
  ensureOutputDir,
  formatBytes,
  formatCount,
  formatSeconds,
  parse,
  parseInteger,
  parseMillis,
  parseSize,
} from './common.ts';
import { RUN_USAGE } from './usage.ts';
import { siteTable, formatValue, type SiteTable } from './top.ts';
import { frameName, shortName, type StackFrame } from '../sites.ts';
import { bucketMax, concurrentPeak, renderChart, seriesOf, type PointLog, type Series } from '../timeline.ts';
import { describeEnd, type ProcessEnd } from '../ends.ts';
import { Watcher } from '../agent/processes.ts';
import { createLogger } from '../agent/log.ts';
import { reportHtml } from '../report/html.ts';
import { addTimelineComment, timelineOf, type ReportTimeline } from '../report/model.ts';
import { reportFromProfiles } from '../report/profiles.ts';
import { reportFacts } from './report.ts';


/** preload/build/libheaptap.so of this package. */
export const PRELOAD_PATH = fileURLToPath(new URL('../../preload/build/libheaptap.so', import.meta.url));

/** Options that take a value, so that the first word of the command can be told apart. */
const VALUE_OPTIONS = new Set(['-o', '--output', '--rate', '--depth', '--interval']);

/** Splits heaptap's options from the command: at `--`, or at the first word that is not
 * an option (so `heaptap run ls -l` runs `ls -l`). */
function splitCommand(args: string[]): [string[], string[]] {
  let i = 0;
  while (i < args.length) {
    const a = args[i]!;
    if (a === '--') return [args.slice(0, i), args.slice(i + 1)];
    if (!a.startsWith('-') || a === '-') break;
    i += VALUE_OPTIONS.has(a) ? 2 : 1;
  }
  return [args.slice(0, Math.min(i, args.length)), args.slice(i)];
}

interface RunOptions {
  outDir: string;
  rate?: number;
  depth?: number;
  intervalMs: number;
  keepRegions: boolean;
  /** draw the in-use chart in the summary (default: when stderr is a terminal) */
  chart: boolean;
  command: string[];
}

function parseRun(args: string[]): RunOptions | 'help' {
  const [opts, command] = splitCommand(args);
  const { values } = parse('run', opts, {
    output: { type: 'string', short: 'o' },
    rate: { type: 'string' },
    depth: { type: 'string' },
    interval: { type: 'string' },
    'keep-regions': { type: 'boolean' },
    chart: { type: 'boolean' },
    'no-chart': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  }, false);
  if (values.help) return 'help';
  if (command.length === 0) throw new UsageError('run: no command given (heaptap run [options] -- <command> [args])');
  return {
    outDir: resolve(values.output ?? '.'),
    rate: values.rate !== undefined ? parseSize('run: --rate', values.rate) : undefined,
    depth: values.depth !== undefined ? parseInteger('run: --depth', values.depth, 1, 256) : undefined,
    intervalMs: values.interval !== undefined ? parseMillis('run: --interval', values.interval, 1, 60_000) : 100,
    keepRegions: values['keep-regions'] ?? false,
    chart: values['no-chart'] ? false : values.chart ?? process.stderr.isTTY === true,
    command,
  };
}

// ---------------------------------------------------------------------------------------
// Following the regions while the command runs.

/** A process image's counters at one poll (stacks and timeline left out: kept elsewhere). */
interface Frame {
  ms: number;
  snap: RegionSnapshot;
}

const MAX_FRAMES = 64;

/** What the report needs of one process image, from the agent's Watcher (one follower of
 * regions for heaptap run and the agent: src/agent/processes.ts). */
interface Tracked {
  path: string;
  latest?: RegionSnapshot;
  /** its stack records (read incrementally by the Watcher) */
  chunks: RegionStacks[];
  /** its timeline */
  log: PointLog;
  /** its counters at polls, thinned to MAX_FRAMES (every other dropped, the last kept):
   * what it held when another process made the run's peak */
  frames: Frame[];
  /** how it ended, once it has (src/ends.ts) */
  end?: ProcessEnd;
}

function totalsOf(s: RegionSnapshot): { allocBytes: bigint; allocObjects: number } {
  const c = s.counters;
  let ab = 0n, ao = 0n;
  for (let i = 0; i < c.ids.length; i++) {
    ab += c.allocBytes[i]!;
    ao += c.allocObjects[i]!;
  }
  return { allocBytes: ab, allocObjects: objectsToNumber(ao) };
}

const NO_STACKS: RegionStacks = {
  ids: new Uint32Array(0), depths: new Uint32Array(0), flags: new Uint32Array(0),
  frameStart: new Uint32Array(0), frames: new BigUint64Array(0), next: 0,
};

/** The regions of the run's directory, followed by the agent's Watcher: every region read
 * at each poll (new stack records and timeline points only), ended ones read once more,
 * their end told (exit, exec, the OOM killer...), and all of them kept until the report. */
class Follower {
  readonly watcher: Watcher;
  /** in use now (live images), allocated so far, and the highest the live line has seen */
  inuseNow = 0n;
  allocNow = 0n;
  peakSeen = 0n;
  /** regions that could not be read (the first error of each kind) */
  readonly errors: string[] = [];
  private readonly frames = new Map<string, Frame[]>();

  /** removeEnded: delete a region once it has been read after its process image ended
   * (everything the profiles need is then in memory), so that a command that starts
   * thousands of processes does not fill /dev/shm with their regions. */
  constructor(dir: string, intervalMs: number, removeEnded: boolean) {
    const log = createLogger({
      format: 'json', level: 'warn',
      write: (line) => {
        const l = JSON.parse(line) as { msg?: string; error?: string };
        if (l.msg?.startsWith('cannot read region') && l.error) this.errors.push(l.error);
      },
    });
    this.watcher = new Watcher({ dir, pollMs: intervalMs, retentionMs: Infinity, log, unlinkEnded: removeEnded });
    this.watcher.onRead((p, snap) => {
      let f = this.frames.get(p.key);
      if (!f) this.frames.set(p.key, (f = []));
      f.push({ ms: Date.now(), snap: { ...snap, stacks: NO_STACKS } });
      if (f.length > MAX_FRAMES) this.frames.set(p.key, f.filter((_, i, a) => i % 2 === 1 || i === a.length - 1));
    });
  }

  /** Every image read so far, keyed by its region's path. */
  get regions(): Map<string, Tracked> {
    const out = new Map<string, Tracked>();
    for (const p of this.watcher.all()) {
      out.set(p.path, {
        path: p.path,
        latest: p.snapshot ?? undefined,
        chunks: [p.stacks.pending()],
        log: p.timeline,
        frames: this.frames.get(p.key) ?? [],
        end: p.end ?? undefined,
      });
    }
    return out;
  }

  /** Reads every region once. */
  async poll(): Promise<void> {
    await this.watcher.scan();
    let inuse = 0n, alloc = 0n, ownPeak = 0n;
    for (const p of this.watcher.all()) {
      const s = p.snapshot;
      if (!s) continue;
      alloc += totalsOf(s).allocBytes;
      if (p.phase === 'live' && s.alive) inuse += s.inuseBytes;
      if (s.peak && s.peak.bytes > ownPeak) ownPeak = s.peak.bytes;
    }
    this.inuseNow = inuse;
    this.allocNow = alloc;
    // the live line's peak: at least any process's own, and any total seen at a poll
    for (const v of [inuse, ownPeak]) if (v > this.peakSeen) this.peakSeen = v;
  }

  stop(): Promise<void> {
    return this.watcher.stop();
  }

  /** Each image's series for the sweep (src/timeline.ts). An image without a timeline (a
   * writer without the feature) is represented by its polls. */
  series(): Array<{ t: Tracked; s: Series }> {
    const out: Array<{ t: Tracked; s: Series }> = [];
    for (const t of this.regions.values()) {
      if (!t.latest) continue;
      const points = t.latest.header.features & constants.FEATURE_TIMELINE ? t.log.points
        : t.frames.map((f) => ({ ms: f.ms, inuseBytes: Number(f.snap.inuseBytes), allocBytes: 0, rssBytes: 0 }));
      out.push({ t, s: seriesOf(t.path, t.latest, points) });
    }
    return out;
  }
}

/** Counters whose in use is each stack's in use at the process's own peak. */
function atPeak(s: RegionSnapshot): RegionSnapshot {
  return { ...s, counters: { ...s.counters, inuseBytes: s.counters.peakBytes, inuseObjects: s.counters.peakObjects } };
}

/** The snapshot of t taken at the last poll at or before ms (else its first). */
function frameAt(t: Tracked, ms: number): RegionSnapshot | undefined {
  let best = t.frames[0];
  for (const f of t.frames) if (f.ms <= ms) best = f;
  return best?.snap;
}

// ---------------------------------------------------------------------------------------

export async function runCommand(args: string[]): Promise<number> {
  const parsed = parseRun(args);
  if (parsed === 'help') {
    process.stdout.write(RUN_USAGE);
    return 0;
  }
  const o = parsed;
  if (!existsSync(PRELOAD_PATH)) throw new UsageError(`run: ${PRELOAD_PATH} is missing: build it with \`npm run build\` (or run ./heaptap, which sets everything up)`);
  // Checked before the command starts: a run whose profiles cannot be written is wasted.
  await ensureOutputDir('run: -o', o.outDir);

  // A private directory for this run's regions: on the memory-backed /dev/shm if we can.
  const shm = await access('/dev/shm', fsConstants.W_OK).then(() => '/dev/shm', () => tmpdir());
  const dir = await mkdtemp(join(shm, 'heaptap-run-'));
  const env: NodeJS.ProcessEnv = { ...process.env, HEAPTAP_DIR: dir };
  env.LD_PRELOAD = process.env.LD_PRELOAD ? `${PRELOAD_PATH}:${process.env.LD_PRELOAD}` : PRELOAD_PATH;
  if (o.rate !== undefined) env.HEAPTAP_SAMPLE_RATE = String(o.rate);
  if (o.depth !== undefined) env.HEAPTAP_MAX_DEPTH = String(o.depth);

  // LD_PRELOAD does not reach a setuid, setgid or file-capability program: say so now, not
  // only after a run that may be long.
  const secure = secureExecReason(o.command[0]!, env.PATH);
  if (secure) process.stderr.write(`heaptap: warning: ${secure}: its heap cannot be profiled\n`);

  const start = Date.now();
  // Set up before the command starts, while the cursor is at the start of a line.
  const live = process.stderr.isTTY ? new LiveLine(start) : undefined;
  const child = spawn(o.command[0]!, o.command.slice(1), { env, stdio: 'inherit' });
  const spawned = new Promise<void>((res, rej) => {
    child.once('spawn', res);
    child.once('error', rej);
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => child.once('exit', (c, s) => res([c, s])));
  // Signals: pass them on; the command decides when it ends. In the terminal's foreground
  // a Ctrl-C (SIGINT) or Ctrl-\ (SIGQUIT) already reached the command: don't send a second.
  const forward = (sig: NodeJS.Signals) => {
    if ((sig === 'SIGINT' || sig === 'SIGQUIT') && inTerminalForeground()) return;
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
  // Installed in the same tick as the spawn: a signal that comes as soon as the command
  // runs must not find heaptap with the default action (which would end it).
  for (const sig of signals) process.on(sig, forward);
  try {
    await spawned;
  } catch (e) {
    for (const sig of signals) process.off(sig, forward);
    live?.clear();
    const err = e as NodeJS.ErrnoException;
    await rm(dir, { recursive: true, force: true });
    process.stderr.write(`heaptap: cannot run ${o.command[0]}: ${err.code === 'ENOENT' ? 'command not found' : err.message}\n`);
    return err.code === 'ENOENT' ? 127 : 126;
  }
  const rootPid = child.pid!;

  const follower = new Follower(dir, o.intervalMs, !o.keepRegions);
  let stopped = false;
  let wake = () => {};
  const loop = (async () => {
    while (!stopped) {
      await follower.poll().catch(() => {});
      live?.update(follower);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, o.intervalMs);
        wake = () => { clearTimeout(timer); r(); };
      });
    }
  })();
  const [code, signal] = await exited;
  stopped = true;
  wake();
  await loop;
  await follower.poll(); // the final figures: every region now holds its exit state
  await follower.stop();
  live?.clear();
  for (const sig of signals) process.off(sig, forward);

  const elapsedMs = Date.now() - start;
  const exitCode = signal ? 128 + (osConstants.signals[signal] ?? 0) : (code ?? 1);
  try {
    await report(o, follower, rootPid, start, elapsedMs, code, signal, secure);
  } catch (e) {
    process.stderr.write(`heaptap: ${(e as Error).message}\n`);
    if (exitCode === 0) return 1;
  } finally {
    if (o.keepRegions) process.stderr.write(`heaptap: region files kept in ${dir}\n`);
    else await rm(dir, { recursive: true, force: true });
  }
  return exitCode;
}

/** The root process's images first (in the order they were made), then the others by
 * start time: the first input's main executable becomes the profile's main mapping. */
function ordered(follower: Follower, rootPid: number, pick: (t: Tracked) => RegionSnapshot | undefined): ProfileInput[] {
  const out: Array<{ t: Tracked; s: RegionSnapshot }> = [];
  for (const t of follower.regions.values()) {
    const s = pick(t);
    if (s) out.push({ t, s });
  }
  out.sort((a, b) =>
    Number(b.s.header.pid === rootPid) - Number(a.s.header.pid === rootPid) ||
    (a.s.header.startNs < b.s.header.startNs ? -1 : a.s.header.startNs > b.s.header.startNs ? 1 : 0));
  return out.map(({ t, s }) => ({ snapshot: s, extraStacks: t.chunks }));
}

async function report(o: RunOptions, f: Follower, rootPid: number, start: number, elapsedMs: number, code: number | null, signal: NodeJS.Signals | null, secure: string | null): Promise<void> {
  const err = (s: string) => process.stderr.write(s);
  // The command's end as waitpid told it; the OOM killer if its cgroup's count rose.
  const rootEnd = [...f.regions.values()].filter((t) => t.latest?.header.pid === rootPid && t.end)
    .sort((a, b) => Number(b.latest!.header.startNs - a.latest!.header.startNs))[0]?.end;
  const how = signal ? (signal === 'SIGKILL' && rootEnd?.reason === 'oom_kill' ? 'was killed by the OOM killer (SIGKILL; its memory cgroup counted the kill)' : `was killed by ${signal}`)
    : `exited with code ${code}`;
  const heapInputs = ordered(f, rootPid, (t) => t.latest);
  const words = [basename(o.command[0]!), ...o.command.slice(1)].join(' ');
  const name = words.length > 60 ? `${words.slice(0, 59)}…` : words;
  if (heapInputs.length === 0) {
    const why = f.errors[0];
    err(`heaptap: ${name} ${how} after ${formatSeconds(elapsedMs)}; no heap data: ` +
      (why ? `its region could not be read: ${why}\n` :
        secure ? `${secure}\n` :
        'no process made a region (a statically linked program, or one that never called malloc?)\n'));
    return;
  }
  // The run's peak: the highest total of the images that ran together, from their
  // timelines and own peaks (src/timeline.ts); the peak profile is, for the image whose
  // own peak made that moment, its stacks at that peak (kept by the library), and for the
  // others their stacks at the last poll before it.
  const all = f.series();
  const cp = concurrentPeak(all.map((x) => x.s));
  const peakSnap = (t: Tracked): RegionSnapshot | undefined => {
    if (!cp.byKey.has(t.path)) return undefined;
    if (t.path === cp.peakOf && t.latest) return atPeak(t.latest);
    return frameAt(t, cp.ms);
  };
  const peakInputs = cp.byKey.size ? ordered(f, rootPid, peakSnap) : [];
  const peakAtMs = Number.isFinite(cp.ms) ? cp.ms - start : 0;

  // The command's processes have exited by now: their regions are this run's own (it
  // started them), so their module paths may be opened on this host (src/moduleFiles.ts).
  const symbolizer = new Symbolizer({ trustRegionPaths: true });
  const warnings = new Set<string>();
  const onWarning = (m: string) => warnings.add(m);
  const now = BigInt(Date.now()) * 1_000_000n;
  const heap = await buildProfileAsync(heapInputs, { view: 'heap', symbolizer, timeNanos: now, onWarning });
  const peak = await buildProfileAsync(peakInputs, {
    view: 'heap', symbolizer, onWarning, exeLabel: heapInputs.length > 1,
    timeNanos: BigInt(Math.round(Number.isFinite(cp.ms) ? cp.ms : start)) * 1_000_000n,
  });
  symbolizer.close();
  // The timeline travels in both profiles (a '#' comment pprof does not show), so that
  // `heaptap report` can draw it from either.
  const timeline = runTimeline(all.map((x) => x.s), start, start + elapsedMs, cp);
  addTimelineComment(heap, timeline);
  addTimelineComment(peak, timeline);
  const heapPath = join(o.outDir, `heaptap.${rootPid}.heap.pb.gz`);
  const peakPath = join(o.outDir, `heaptap.${rootPid}.peak.pb.gz`);
  const htmlPath = join(o.outDir, `heaptap.${rootPid}.html`);
  await writeFile(heapPath, await encodeProfile(heap));
  await writeFile(peakPath, await encodeProfile(peak));
  // the page draws what the profiles carry (rounded as stored), so `heaptap report` agrees
  const page = reportFromProfiles({ title: `heaptap run: ${name}`, heap, peak: peakInputs.length ? peak : null, timeline: timelineOf(heap) });
  page.facts = [`${name} ${how} after ${formatSeconds(elapsedMs)}`, ...reportFacts(page)];
  await writeFile(htmlPath, reportHtml(page));

  let allocBytes = 0n, allocObjects = 0, inuseExit = 0n;
  const drops = new Map<string, bigint>();
  for (const { snapshot } of heapInputs) {
    const t = totalsOf(snapshot);
    allocBytes += t.allocBytes;
    allocObjects += t.allocObjects;
    inuseExit += snapshot.inuseBytes;
    for (const [reason, n] of Object.entries(dropsByReason(snapshot.header))) {
      if (n > 0n && DROP_NOTES[reason]) drops.set(reason, (drops.get(reason) ?? 0n) + n);
    }
  }
  const procs = new Set(heapInputs.map((i) => i.snapshot.header.pid)).size;
  const rate = heapInputs[0]!.snapshot.header.sampleRate;
  const lines: string[] = [];
  lines.push(`heaptap: ${name} ${how} after ${formatSeconds(elapsedMs)} (${procs} process${procs > 1 ? 'es' : ''}, ${heapInputs.length} image${heapInputs.length > 1 ? 's' : ''}; ` +
    (rate === 1n ? 'every allocation recorded' : `sampled every ${formatBytes(rate)} on average: figures are estimates`) + ')');
  lines.push(`  peak in use     ${formatBytes(Math.round(cp.bytes))} (${formatCount(Math.round(cp.bytes))} bytes) at ${formatSeconds(Math.max(0, peakAtMs))}` +
    (heapInputs.length > 1 ? ' (the most the processes held together)' : ''));
  lines.push(`  allocated       ${formatBytes(allocBytes)} in ${formatCount(allocObjects)} objects`);
  lines.push(`  in use at exit  ${formatBytes(inuseExit)}`);
  for (const [reason, n] of drops) lines.push(`  note            ${formatCount(n)} ${DROP_NOTES[reason]} (${reason})`);
  if (heapInputs.length > 1) lines.push('', ...processBlock(all, cp.bytes, start));
  if (o.chart) lines.push('', ...chartBlock(all.map((x) => x.s), start, start + elapsedMs));
  lines.push('', ...sitesBlock('top sites by bytes allocated', siteTable(heap, 'alloc_space')));
  lines.push('', ...sitesBlock(`top sites by bytes in use at the peak`, siteTable(peak, 'inuse_space')));
  lines.push('');
  lines.push(`  profiles: ${displayPath(heapPath)}  (in use at exit, all allocations)`);
  lines.push(`            ${displayPath(peakPath)}  (in use at the peak)`);
  // What to run next, none of it needing Go: the profile that holds the story (the peak's
  // when next to nothing, under 1% of the peak, was left in use at exit), and the HTML
  // report when run wrote one.
  const story = Number.isFinite(cp.ms) && Number(inuseExit) * 100 < cp.bytes ? peakPath : heapPath;
  lines.push(...exploreBlock(displayPath(story), existsSync(htmlPath) ? displayPath(htmlPath) : undefined));
  for (const w of warnings) lines.push(`  warning: ${w}`);
  err(lines.join('\n') + '\n');
}

/** In use and RSS of every process summed, at most 800 points (each the highest of its
 * span of time), and the run's peak: the report's timeline. */
function runTimeline(series: Series[], fromMs: number, toMs: number, cp: { bytes: number; ms: number }): ReportTimeline {
  const cols = 800;
  const b = bucketMax(series, fromMs, toMs, cols);
  const span = Math.max(toMs - fromMs, 1e-9);
  const t: number[] = [];
  for (let c = 0; c < cols; c++) t.push((c * span) / cols);
  return {
    startMs: fromMs, t, inuse: [...b.inuse], rss: [...b.rss],
    peak: Number.isFinite(cp.ms) && cp.bytes > 0 ? { t: cp.ms - fromMs, bytes: cp.bytes } : null,
  };
}

/** Each large image's own peak: those that reached 1% of the run's peak, largest first. */
function processBlock(all: Array<{ t: Tracked; s: Series }>, runPeak: number, start: number): string[] {
  const rows = all
    .filter((x) => x.s.peak && x.t.latest)
    .sort((a, b) => b.s.peak!.bytes - a.s.peak!.bytes);
  const big = rows.filter((x) => x.s.peak!.bytes >= runPeak / 100).slice(0, 8);
  const out = ['  own peak of each process (largest first):'];
  for (const { t, s } of big) {
    const h = t.latest!.header;
    const exe = basename(h.exe) || `pid ${h.pid}`;
    const end = t.end ? `  (${describeEnd(t.end).replace(/ \(a signal.*\)$/, '')})` : t.latest!.alive ? '  (still running)' : '';
    out.push(`    ${formatBytes(s.peak!.bytes).padStart(10)} at ${formatSeconds(Math.max(0, s.peak!.ms - start)).padEnd(8)} pid ${String(h.pid).padEnd(7)} ${exe}${end}`);
  }
  if (rows.length > big.length) out.push(`    (and ${rows.length - big.length} smaller)`);
  return out;
}

/** In use and RSS over the run, every process summed, as a small chart. */
function chartBlock(series: Series[], fromMs: number, toMs: number): string[] {
  const cols = Math.max(20, Math.min(64, (process.stderr.columns || 80) - 16));
  const b = bucketMax(series, fromMs, toMs, cols);
  const chart = renderChart(b, 6, (v) => formatBytes(Math.round(v)), (ms) => formatSeconds(ms));
  if (!chart.length) return ['  in use over time: nothing recorded'];
  return ['  in use (█) and resident (░) over time, all processes:', ...chart.map((l) => `  ${l}`)];
}

/** What a drop counter means for the figures, for the ones that change what users see
 * (the others, like slab_full, lose nothing: those counts go to the shared table). */
const DROP_NOTES: Record<string, string> = {
  stacks_full: 'samples counted under [heaptap: stack table full] (HEAPTAP_MAX_STACKS)',
  frames_full: 'samples counted under [heaptap: stack table full] (frame pool full)',
  reserve_failed: 'samples counted under [heaptap: stack table full] (region could not grow)',
  truncated: 'samples whose stack was cut short (--depth, or the unwinder stopped), marked [heaptap: truncated]',
  live_full: 'sampled allocations whose free could not be tracked: in use is overstated',
  modules_full: 'samples with frames in no known module (module table full)',
  bootstrap: 'allocations made before the preload was ready, not sampled',
  busy: 'sample points skipped because another thread held what recording needed (heaptap never waits inside malloc)',
};

function sitesBlock(title: string, table: SiteTable): string[] {
  const rows = table.rows.filter((r) => r.flat > 0).slice(0, 10);
  if (!rows.length) return [`  ${title}: none`];
  const out = [`  ${title}:`];
  const indent = ' '.repeat(4 + 9 + 1 + 6 + 2);
  for (const r of rows) {
    const p = table.total ? ((100 * r.flat) / table.total).toFixed(1) : '0.0';
    const [site, ...callers] = r.path ?? [];
    out.push(`    ${formatValue(r.flat, table.unit).padStart(9)} ${`${p}%`.padStart(6)}  ${r.name}${site ? where(site) : ''}`);
    // two callers of its heaviest stack, outward
    // (a function inlined into itself, or a recursion, is shown once)
    const up = callers.filter((f, i) => !f.name || f.name !== (i === 0 ? site : callers[i - 1])!.name).slice(0, 2);
    if (up.length) out.push(`${indent}${up.map((f) => `← ${f.name ? shortName(f.name) : frameName(f)}${where(f)}`).join(' ')}`);
  }
  return out;
}

/** "  file.cc:42" for a frame with a source line. */
function where(f: StackFrame): string {
  return f.file && f.line ? `  ${basename(f.file)}:${f.line}` : '';
}

/** The summary's last lines: commands to explore the profile, and the report. */
export function exploreBlock(profile: string, report?: string): string[] {
  const out = report ? [`  report:   ${report}  (open it in a browser: timeline, flame graph, top sites)`] : [];
  out.push(
    `  explore:  ${SELF_COMMAND} top ${profile}        (-n 40; --sample-index alloc_space)`,
    `            ${SELF_COMMAND} export --format folded ${profile} > heap.folded   (flame graphs; callgrind for KCachegrind)`,
  );
  return out;
}

/** Why the dynamic loader will run the command in secure mode (AT_SECURE), where it ignores
 * LD_PRELOAD: a setuid program owned by another user, a setgid one of another group, or one
 * with file capabilities started by a user who is not root. null when none applies, or
 * when the command cannot be found (spawn reports that). */
export function secureExecReason(command: string, path = process.env.PATH ?? '', ids = { euid: process.geteuid?.() ?? 0, egid: process.getegid?.() ?? 0 }): string | null {
  let file: string | undefined;
  for (const cand of command.includes('/') ? [resolve(command)] : path.split(delimiter).filter(Boolean).map((d) => join(d, command))) {
    try {
      accessSync(cand, fsConstants.X_OK);
      if (statSync(cand).isFile()) {
        file = cand;
        break;
      }
    } catch { /* next */ }
  }
  if (!file || nosuidMount(file) || isScript(file)) return null;
  const st = statSync(file);
  const { euid, egid } = ids;
  const how = 'the dynamic loader ignores LD_PRELOAD for it';
  if (st.mode & 0o4000 && st.uid !== euid) return `${file} is setuid (owner uid ${st.uid}): ${how} unless heaptap runs as uid ${st.uid}`;
  if (st.mode & 0o2000 && st.mode & fsConstants.S_IXGRP && st.gid !== egid) return `${file} is setgid (group gid ${st.gid}): ${how} unless heaptap runs with gid ${st.gid}`;
  if (euid !== 0 && native.hasFileCapabilities(file)) return `${file} has file capabilities (setcap): ${how} unless heaptap runs as root`;
  return null;
}

/** Whether file starts with #! (the kernel ignores setuid and setgid on scripts). */
function isScript(file: string): boolean {
  try {
    const fd = openSync(file, 'r');
    try {
      const b = Buffer.alloc(2);
      return readSync(fd, b, 0, 2, 0) === 2 && b.toString('latin1') === '#!';
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

/** Whether file is on a filesystem mounted nosuid, where the kernel ignores setuid, setgid
 * and file capabilities (the mount whose point is the longest prefix of its real path). */
function nosuidMount(file: string): boolean {
  try {
    const real = realpathSync(file);
    let best = '';
    let nosuid = false;
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f.length < 6) continue;
      const point = f[4]!.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
      const under = point === '/' || real === point || real.startsWith(point + '/');
      if (under && point.length >= best.length) {
        best = point;
        nosuid = f[5]!.split(',').includes('nosuid');
      }
    }
    return nosuid;
  } catch {
    return false;
  }
}

/** Whether this process's group is the foreground group of its controlling terminal
 * (/proc/self/stat fields 5 pgrp, 7 tty_nr, 8 tpgid). */
function inTerminalForeground(): boolean {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const [pgrp, tty, tpgid] = [Number(f[2]), Number(f[4]), Number(f[5])];
    return tty !== 0 && tpgid === pgrp;
  } catch {
    return false;
  }
}

/** The live status line on a terminal (stderr). The command writes to the same terminal
 * whenever it likes, so the line cannot be drawn where the cursor is: the command's next
 * output would continue it ("...MiB/sservice: handled..."). Instead, as apt does for its
 * progress line, the terminal's scrolling region is set to every row but the last: the
 * command's output scrolls inside it, and the status line is drawn on the last row with
 * the cursor saved before and restored after, in one write (a terminal takes one write
 * whole, never interleaved with another process's). At the end the region is reset and
 * the row cleared, before the summary. Not drawn on a terminal of fewer than 3 rows. */
export class LiveLine {
  private lastAlloc = 0n;
  private lastMs: number;
  private rate = 0;
  private shown = false;
  /** rows of the terminal when the region was set; 0 while it is not */
  private rows = 0;
  private readonly start: number;
  private readonly out: NodeJS.WriteStream;
  private readonly onResize = () => this.setRegion();

  constructor(start: number, out: NodeJS.WriteStream = process.stderr) {
    this.start = start;
    this.lastMs = start;
    this.out = out;
    this.setRegion();
    out.on('resize', this.onResize);
  }

  /** Scrolling region = rows 1..rows-1. The newline first makes room when the cursor is on
   * the last row (the screen scrolls one line up); moving back up one row puts the cursor
   * where it was, now inside the region (setting the region moves the cursor home, so it is
   * saved and restored around it). */
  private setRegion(): void {
    const rows = this.out.rows ?? 0;
    if (rows < 3) {
      if (this.rows) this.out.write('\x1b7\x1b[r\x1b8');
      this.rows = 0;
      return;
    }
    this.out.write(`\n\x1b7\x1b[1;${rows - 1}r\x1b8\x1b[1A`);
    this.rows = rows;
  }

  update(f: Follower): void {
    if (!this.rows) return;
    const now = Date.now();
    const dt = (now - this.lastMs) / 1000;
    if (dt >= 0.25) {
      const inst = Number(f.allocNow - this.lastAlloc) / dt;
      this.rate = this.shown ? 0.5 * this.rate + 0.5 * inst : inst;
      this.lastAlloc = f.allocNow;
      this.lastMs = now;
    }
    const peak = f.peakSeen;
    const procs = new Set([...f.regions.values()].map((t) => t.latest?.header.pid)).size;
    const text = `heaptap: ${formatSeconds(now - this.start)}  in use ${formatBytes(f.inuseNow)}  peak ${formatBytes(peak)}  ` +
      `allocating ${formatBytes(Math.max(0, this.rate))}/s${procs > 1 ? `  (${procs} processes)` : ''}`;
    this.draw(text);
  }

  /** text on the last row (cut to the width: a wrap there would scroll the whole screen) */
  draw(text: string): void {
    if (!this.rows) return;
    const cols = this.out.columns || 80;
    this.out.write(`\x1b7\x1b[${this.rows};1H\x1b[2K${text.slice(0, cols - 1)}\x1b8`);
    this.shown = true;
  }

  clear(): void {
    this.out.off('resize', this.onResize);
    if (!this.rows) return;
    this.out.write(`\x1b7\x1b[r\x1b[${this.rows};1H\x1b[2K\x1b8`);
    this.rows = 0;
  }
}
