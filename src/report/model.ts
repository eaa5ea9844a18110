// The data of a report page (src/report/html.ts draws it): heaptap profiles aggregated, in
// Node, into one call tree (by function, as pprof's flame graph), the top sites with their
// call paths, and the growth against a base profile. The page gets the tree already pruned
// to what can be seen (nodes under 1/100000 of a view's total, and past MAX_NODES per view,
// are left out and counted in a note), so that a 100k-stack profile opens in a browser in
// about a second instead of shipping every stack.
import { basename } from 'node:path';
import type { Profile } from 'pprof-format';

import { str } from '../profile.ts';
import { shortName, siteOf as siteOfStack } from '../sites.ts';

// ---------------------------------------------------------------------------------------
// The one place the report uses src/sites.ts: which frame of a stack is its site, and how a
// function's name is shown.

/** The index (innermost = 0) of a stack's allocation site: the first frame past allocator
 * and standard-library plumbing (src/sites.ts, the list every output uses). */
export function siteIndex(namesInnermostFirst: readonly string[]): number {
  return Math.max(0, siteOfStack(namesInnermostFirst).index);
}

/** A function's name as the page shows it (template arguments and parameters elided); the
 * full name travels beside it and is shown on hover. */
export function displayName(name: string): string {
  return shortName(name);
}

// ---------------------------------------------------------------------------------------

/** The views of the flame graph and the site table; a report has those its inputs give. */
export type ViewId = 'alloc_space' | 'inuse_space' | 'peak_space' | 'alloc_objects' | 'inuse_objects' | 'growth_space';

export const VIEW_LABELS: Record<ViewId, string> = {
  alloc_space: 'bytes allocated',
  inuse_space: 'in use at the end',
  peak_space: 'in use at the peak',
  alloc_objects: 'objects allocated',
  inuse_objects: 'objects in use at the end',
  growth_space: 'growth of in use',
};

export interface ReportTimeline {
  /** ms since the epoch of t = 0 */
  startMs: number;
  /** ms since startMs, and per point the in use and resident bytes (0: not known) */
  t: number[];
  inuse: number[];
  rss: number[];
  peak: { t: number; bytes: number } | null;
}

export interface ReportView {
  id: ViewId;
  label: string;
  unit: 'bytes' | 'count';
  total: number;
  /** the pruned tree in preorder: per node [name index, value, number of children] */
  nodes: number[];
  /** what pruning left out: nodes under minFraction of the total or past the maxNodes largest */
  hiddenNodes: number;
  minFraction: number;
  maxNodes: number;
}

export interface SitePath {
  /** from the site outwards: "function file:line" */
  frames: string[];
  value: number;
}

export interface ReportSite {
  /** the short name shown, and the full one (hover) */
  name: string;
  full: string;
  /** file:line of the site where known */
  where: string;
  values: Partial<Record<ViewId, number>>;
  /** the heaviest call paths into it (by the first view's value) */
  paths: SitePath[];
}

export interface DiffRow {
  name: string;
  full: string;
  where: string;
  base: number;
  now: number;
  growth: number;
  allocGrowth: number;
  path: string[];
}

export interface ReportData {
  title: string;
  /** lines under the title */
  facts: string[];
  /** the flame graph's function names in full, and as shown (displayName) */
  names: string[];
  short: string[];
  views: ReportView[];
  sites: ReportSite[];
  timeline: ReportTimeline | null;
  diff: { label: string; rows: DiffRow[] } | null;
  notes: string[];
  /** the view whose values weigh the sites' call paths */
  pathView: ViewId | null;
}

/** One frame of a stack as the report sees it. */
interface Frame {
  name: string;
  where: string;
}

/** A profile's stacks, outermost frame first, memoized per location. */
class StackReader {
  private readonly profile: Profile;
  private readonly perLoc = new Map<number, Frame[]>();
  private readonly locations: Map<number, Profile['location'][number]>;
  private readonly functions: Map<number, { name: string; file: string }>;
  private readonly mappings: Map<number, string>;

  constructor(profile: Profile) {
    this.profile = profile;
    this.locations = new Map(profile.location.map((l) => [Number(l.id), l]));
    this.functions = new Map(profile.function.map((f) => [Number(f.id), { name: str(profile, f.name), file: str(profile, f.filename) }]));
    this.mappings = new Map(profile.mapping.map((m) => [Number(m.id), basename(str(profile, m.filename))]));
  }

  /** frames of one location, innermost first (inlined functions first) */
  private framesOf(id: number): Frame[] {
    let out = this.perLoc.get(id);
    if (out) return out;
    const loc = this.locations.get(id);
    if (!loc) out = [{ name: '?', where: '' }];
    else if (loc.line.length) {
      out = loc.line.map((l) => {
        const f = this.functions.get(Number(l.functionId));
        const line = Number(l.line);
        return { name: f?.name || '?', where: f?.file ? `${basename(f.file)}${line > 0 ? `:${line}` : ''}` : '' };
      });
    } else {
      const m = this.mappings.get(Number(loc.mappingId));
      out = [{ name: `${m ? `${m} ` : ''}0x${BigInt(loc.address).toString(16)}`, where: '' }];
    }
    this.perLoc.set(id, out);
    return out;
  }

  /** a sample's frames, innermost first */
  stack(locationIds: readonly (number | bigint)[]): Frame[] {
    const out: Frame[] = [];
    for (const id of locationIds) for (const f of this.framesOf(Number(id))) out.push(f);
    return out;
  }

  valueIndex(type: string): number {
    return this.profile.sampleType.findIndex((v) => str(this.profile, v.type) === type);
  }
}

/** A source of one view: which sample type of which profile. */
export interface ViewSource {
  id: ViewId;
  profile: Profile;
  sampleType: string;
  /** else VIEW_LABELS[id] */
  label?: string;
}

const MAX_NODES = 12_000;
const MIN_FRACTION = 1e-5;
const MAX_SITES = 120;
const PATHS_PER_SITE = 3;
const MAX_DIFF_ROWS = 100;

/** The call tree of every view at once: node k has parent[k] and name[k]; vals[v][k]. */
class Tree {
  readonly names: string[] = [];
  private readonly nameIds = new Map<string, number>();
  readonly parent: number[] = [-1];
  readonly name: number[] = [-1];
  /** (parent, name) -> child: open addressing in typed arrays (a Map of 2M entries keyed by
   * non-small numbers took most of the time on a 100k-stack profile) */
  private slotParent = new Int32Array(1 << 16).fill(-1);
  private slotName = new Int32Array(1 << 16);
  private slotChild = new Int32Array(1 << 16);
  private used = 0;
  readonly vals: number[][];

  constructor(views: number) {
    this.vals = Array.from({ length: views }, () => [0]);
  }

  nameId(n: string): number {
    let id = this.nameIds.get(n);
    if (id === undefined) {
      id = this.names.length;
      this.names.push(n);
      this.nameIds.set(n, id);
    }
    return id;
  }

  /** the nodes of a stack, outermost first (made as needed) */
  path(framesInnermostFirst: readonly Frame[]): number[] {
    const out: number[] = new Array(framesInnermostFirst.length);
    let node = 0;
    for (let i = framesInnermostFirst.length - 1, k = 0; i >= 0; i--, k++) {
      const nm = this.nameId(framesInnermostFirst[i]!.name);
      let c = this.find(node, nm);
      if (c < 0) {
        c = this.parent.length;
        this.parent.push(node);
        this.name.push(nm);
        for (const a of this.vals) a.push(0);
        this.insert(node, nm, c);
      }
      out[k] = c;
      node = c;
    }
    return out;
  }

  private slot(parent: number, nm: number): number {
    const mask = this.slotParent.length - 1;
    let i = (Math.imul(parent, 0x9e3779b1) ^ Math.imul(nm + 1, 0x85ebca77)) & mask;
    while (this.slotParent[i] !== -1 && (this.slotParent[i] !== parent || this.slotName[i] !== nm)) i = (i + 1) & mask;
    return i;
  }

  private find(parent: number, nm: number): number {
    const i = this.slot(parent, nm);
    return this.slotParent[i] === -1 ? -1 : this.slotChild[i]!;
  }

  private insert(parent: number, nm: number, child: number): void {
    if (2 * (this.used + 1) > this.slotParent.length) {
      const [ps, ns, cs] = [this.slotParent, this.slotName, this.slotChild];
      this.slotParent = new Int32Array(ps.length * 2).fill(-1);
      this.slotName = new Int32Array(ps.length * 2);
      this.slotChild = new Int32Array(ps.length * 2);
      for (let j = 0; j < ps.length; j++) {
        if (ps[j] === -1) continue;
        const k = this.slot(ps[j]!, ns[j]!);
        this.slotParent[k] = ps[j]!;
        this.slotName[k] = ns[j]!;
        this.slotChild[k] = cs[j]!;
      }
    }
    const i = this.slot(parent, nm);
    this.slotParent[i] = parent;
    this.slotName[i] = nm;
    this.slotChild[i] = child;
    this.used++;
  }

  /** adds v to view `view` at the root and every node of path */
  addPath(view: number, path: readonly number[], v: number): void {
    const vals = this.vals[view]!;
    vals[0] = vals[0]! + v;
    for (const k of path) vals[k] = vals[k]! + v;
  }

  add(view: number, framesInnermostFirst: readonly Frame[], v: number): void {
    this.addPath(view, this.path(framesInnermostFirst), v);
  }

  /** view `view` as preorder triples, children largest first, pruned: nodes under
   * MIN_FRACTION of the total, and past the MAX_NODES largest, are left out (a node is never
   * larger than its parent, so what stays is a tree). */
  emit(view: number): { nodes: number[]; hidden: number } {
    const vals = this.vals[view]!;
    const n = this.parent.length;
    const total = vals[0]!;
    let threshold = Math.max(total * MIN_FRACTION, Number.MIN_VALUE);
    let positive = 0;
    let kept: number[] = [];
    for (let k = 1; k < n; k++) {
      const v = vals[k]!;
      if (v > 0) positive++;
      if (v >= threshold) kept.push(k);
    }
    if (kept.length > MAX_NODES) {
      const sorted = kept.map((k) => vals[k]!).sort((x, y) => y - x);
      threshold = sorted[MAX_NODES - 1]!;
      kept = kept.filter((k) => vals[k]! >= threshold);
    }
    const kids = new Map<number, number[]>();
    for (const k of kept) {
      const p = this.parent[k]!;
      let l = kids.get(p);
      if (!l) kids.set(p, (l = []));
      l.push(k);
    }
    const nodes: number[] = [];
    const stack = [0];
    while (stack.length) {
      const k = stack.pop()!;
      const ch = (kids.get(k) ?? []).sort((x, y) => vals[y]! - vals[x]!);
      nodes.push(k === 0 ? -1 : this.name[k]!, vals[k]!, ch.length);
      for (let i = ch.length - 1; i >= 0; i--) stack.push(ch[i]!);
    }
    return { nodes, hidden: positive - kept.length };
  }
}

/** Site key of a stack: the site's name; its path: frames from the site outwards. */
function siteOf(frames: readonly Frame[]): { site: Frame; path: string[] } {
  const i = siteIndex(frames.map((f) => f.name));
  const site = frames[i] ?? { name: '?', where: '' };
  return { site, path: frames.slice(i).map((f) => (f.where ? `${displayName(f.name)} ${f.where}` : displayName(f.name))) };
}

export interface ModelInput {
  title: string;
  facts?: string[];
  /** the views, in the order the page offers them (the first is shown first) */
  views: ViewSource[];
  timeline?: ReportTimeline | null;
  /** with a base: the growth of in use between base and the profile given */
  base?: { label: string; profile: Profile; now: Profile } | null;
  notes?: string[];
}

/** Everything the page shows, from decoded profiles. */
export function buildReport(input: ModelInput): ReportData {
  const sources = [...input.views];
  const growthStacks = new Map<string, { frames: Frame[]; now: number; base: number; allocNow: number; allocBase: number }>();
  if (input.base) {
    // the stacks of both, keyed by their frames' names (ids differ between profiles)
    for (const [which, p] of [['base', input.base.profile], ['now', input.base.now]] as const) {
      const r = new StackReader(p);
      const iu = r.valueIndex('inuse_space'), al = r.valueIndex('alloc_space');
      if (iu < 0) throw new Error('a profile given has no inuse_space: not a heap profile');
      for (const s of p.sample) {
        const frames = r.stack(s.locationId);
        const key = frames.map((f) => f.name).join('\n');
        let g = growthStacks.get(key);
        if (!g) growthStacks.set(key, (g = { frames, now: 0, base: 0, allocNow: 0, allocBase: 0 }));
        const v = Number(s.value[iu] ?? 0), a = al >= 0 ? Number(s.value[al] ?? 0) : 0;
        if (which === 'base') { g.base += v; g.allocBase += a; } else { g.now += v; g.allocNow += a; }
      }
    }
  }
  const viewIds: ViewId[] = sources.map((s) => s.id);
  if (input.base) viewIds.push('growth_space');
  const tree = new Tree(viewIds.length);
  const sites = new Map<string, { site: Frame; values: number[]; paths: Map<number, { frames: string[]; value: number }> }>();
  const siteEntry = (site: Frame) => {
    let e = sites.get(site.name);
    if (!e) sites.set(site.name, (e = { site, values: viewIds.map(() => 0), paths: new Map() }));
    return e;
  };
  // call paths are weighed by bytes allocated (every sampled stack has some), else the first view
  const pathValueView = Math.max(0, sources.findIndex((x) => x.id === 'alloc_space'));
  // each profile read once, for all the views it feeds
  const groups = new Map<Profile, { v: number; idx: number }[]>();
  sources.forEach((src, v) => {
    const idx = src.profile.sampleType.findIndex((t) => str(src.profile, t.type) === src.sampleType);
    if (idx < 0) throw new Error(`a profile given has no sample type ${src.sampleType}: not a heap profile`);
    let g = groups.get(src.profile);
    if (!g) groups.set(src.profile, (g = []));
    g.push({ v, idx });
  });
  for (const [profile, group] of groups) {
    const r = new StackReader(profile);
    const vals = new Array<number>(group.length);
    for (const s of profile.sample) {
      let any = false;
      for (let j = 0; j < group.length; j++) {
        const val = Number(s.value[group[j]!.idx] ?? 0);
        vals[j] = val;
        if (val > 0) any = true; // a growth view (p1 - p0) shows the stacks that grew
      }
      if (!any) continue;
      const frames = r.stack(s.locationId);
      const path = tree.path(frames);
      const si = siteIndex(frames.map((f) => f.name));
      const e = siteEntry(frames[si] ?? { name: '?', where: '' });
      for (let j = 0; j < group.length; j++) {
        const val = vals[j]!, v = group[j]!.v;
        if (!(val > 0)) continue;
        tree.addPath(v, path, val);
        e.values[v]! += val;
        if (v === pathValueView) {
          // a call path from the site out: the tree node of the site's frame names it
          const key = path[path.length - 1 - si] ?? 0;
          const p = e.paths.get(key);
          if (p) p.value += val;
          else e.paths.set(key, { frames: frames.slice(si).map((f) => (f.where ? `${displayName(f.name)} ${f.where}` : displayName(f.name))), value: val });
        }
      }
    }
  }
  let diff: ReportData['diff'] = null;
  if (input.base) {
    const g = viewIds.length - 1;
    const rows = new Map<string, DiffRow>();
    for (const st of growthStacks.values()) {
      const d = st.now - st.base;
      if (d > 0) tree.add(g, st.frames, d);
      const { site, path } = siteOf(st.frames);
      if (d > 0) siteEntry(site).values[g]! += d;
      let row = rows.get(site.name);
      if (!row) rows.set(site.name, (row = { name: displayName(site.name), full: site.name, where: site.where, base: 0, now: 0, growth: 0, allocGrowth: 0, path: [] }));
      row.base += st.base;
      row.now += st.now;
      row.allocGrowth += st.allocNow - st.allocBase;
      // the path shown: the one that grew most
      if (d > 0 && (!row.path.length || d > ((row as DiffRow & { best?: number }).best ?? 0))) {
        row.path = path;
        (row as DiffRow & { best?: number }).best = d;
      }
    }
    const list = [...rows.values()].map((r) => {
      r.growth = r.now - r.base;
      delete (r as DiffRow & { best?: number }).best;
      return r;
    }).filter((r) => r.growth !== 0 || r.allocGrowth !== 0)
      .sort((a, b) => b.growth - a.growth || b.allocGrowth - a.allocGrowth || (a.name < b.name ? -1 : 1))
      .slice(0, MAX_DIFF_ROWS);
    diff = { label: input.base.label, rows: list };
  }

  const notes = [...(input.notes ?? [])];
  const views: ReportView[] = viewIds.map((id, v) => {
    const { nodes, hidden } = tree.emit(v);
    return {
      id,
      label: sources[v]?.label ?? VIEW_LABELS[id],
      unit: id.endsWith('_objects') ? 'count' : 'bytes',
      total: tree.vals[v]![0]!,
      nodes,
      hiddenNodes: hidden,
      minFraction: MIN_FRACTION,
      maxNodes: MAX_NODES,
    };
  });
  // names: only those some view shows (the rest stay in Node), renumbered
  const keep = new Map<number, number>();
  const names: string[] = [];
  for (const view of views) {
    for (let i = 0; i < view.nodes.length; i += 3) {
      const old = view.nodes[i]!;
      if (old < 0) continue;
      let nw = keep.get(old);
      if (nw === undefined) {
        nw = names.length;
        names.push(tree.names[old]!);
        keep.set(old, nw);
      }
      view.nodes[i] = nw;
    }
  }

  // the top sites: the union of the top of each view
  const all = [...sites.values()];
  const chosen = new Set<(typeof all)[number]>();
  const per = Math.max(10, Math.floor(MAX_SITES / viewIds.length));
  viewIds.forEach((_, v) => {
    for (const e of [...all].filter((x) => x.values[v]! > 0).sort((a, b) => b.values[v]! - a.values[v]!).slice(0, per)) chosen.add(e);
  });
  const siteRows: ReportSite[] = [...chosen].map((e) => ({
    name: displayName(e.site.name),
    full: e.site.name,
    where: e.site.where,
    values: Object.fromEntries(viewIds.map((id, v) => [id, e.values[v]!])),
    paths: [...e.paths.values()].sort((a, b) => b.value - a.value).slice(0, PATHS_PER_SITE),
  }));
  return { title: input.title, facts: input.facts ?? [], names, short: names.map(displayName), views, sites: siteRows, timeline: input.timeline ?? null, diff, notes, pathView: viewIds[pathValueView] ?? null };
}

// ---------------------------------------------------------------------------------------
// The timeline inside a profile: a pprof comment that starts with '#' (pprof leaves such
// comments out of its labels; `go tool pprof -comments` prints them):
//   #heaptap-timeline v1 {"startMs":..,"t":[..],"inuse":[..],"rss":[..],"peak":{"t":..,"bytes":..}}
// t in ms since startMs (the command's start), bytes as integers (docs/report.md).

export const TIMELINE_COMMENT = '#heaptap-timeline v1 ';

export function addTimelineComment(profile: Profile, tl: ReportTimeline): void {
  const round = (a: number[]) => a.map((x) => Math.round(x));
  const json = JSON.stringify({
    startMs: Math.round(tl.startMs),
    t: tl.t.map((x) => Math.round(x * 10) / 10),
    inuse: round(tl.inuse),
    rss: round(tl.rss),
    peak: tl.peak ? { t: Math.round(tl.peak.t * 10) / 10, bytes: Math.round(tl.peak.bytes) } : null,
  });
  profile.comment.push(profile.stringTable.dedup(TIMELINE_COMMENT + json));
}

/** The timeline a profile carries, null if none (or one this version cannot read). */
export function timelineOf(profile: Profile): ReportTimeline | null {
  for (const c of profile.comment) {
    const s = str(profile, c);
    if (!s.startsWith(TIMELINE_COMMENT)) continue;
    try {
      const o = JSON.parse(s.slice(TIMELINE_COMMENT.length)) as ReportTimeline;
      const ok = Number.isFinite(o.startMs) && [o.t, o.inuse, o.rss].every((a) => Array.isArray(a) && a.length === o.t.length && a.every(Number.isFinite));
      if (ok) return { startMs: o.startMs, t: o.t, inuse: o.inuse, rss: o.rss, peak: o.peak && Number.isFinite(o.peak.t) && Number.isFinite(o.peak.bytes) ? o.peak : null };
    } catch { /* not ours */ }
  }
  return null;
}

/** Points thinned to at most `cols` spans of time, each keeping its highest in use and RSS
 * (so a spike stays), for points in time order. */
export function thinTimeline(startMs: number, ms: readonly number[], inuse: readonly number[], rss: readonly number[], peak: { ms: number; bytes: number } | null, cols = 1000): ReportTimeline {
  const tl: ReportTimeline = { startMs, t: [], inuse: [], rss: [], peak: peak ? { t: peak.ms - startMs, bytes: peak.bytes } : null };
  const n = ms.length;
  if (n <= cols) {
    for (let i = 0; i < n; i++) {
      tl.t.push(ms[i]! - startMs);
      tl.inuse.push(inuse[i]!);
      tl.rss.push(rss[i]!);
    }
    return tl;
  }
  const from = ms[0]!, span = Math.max(ms[n - 1]! - from, 1e-9);
  let col = -1;
  for (let i = 0; i < n; i++) {
    const c = Math.min(cols - 1, Math.floor(((ms[i]! - from) / span) * cols));
    if (c !== col) {
      col = c;
      tl.t.push(ms[i]! - startMs);
      tl.inuse.push(inuse[i]!);
      tl.rss.push(rss[i]!);
    } else {
      const k = tl.t.length - 1;
      if (inuse[i]! > tl.inuse[k]!) tl.inuse[k] = inuse[i]!;
      if (rss[i]! > tl.rss[k]!) tl.rss[k] = rss[i]!;
    }
  }
  return tl;
}
