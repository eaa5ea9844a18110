// Site tables from a built profile, as `go tool pprof -top` prints them: flat is what a
// site allocated itself, cum what a function and its callees did. One difference, so that
// programs show their own code: allocator and standard-library plumbing at the leaf end
// (operator new, std::vector<…>::_M_realloc_insert, alloc::raw_vec, Perl_safesysmalloc,
// sqlite3Malloc...) is skipped when choosing a sample's site (src/sites.ts, the one list),
// and names are shown short (template arguments and parameters elided).
import type { Profile } from 'pprof-format';

import { SAMPLE_TYPES, str, type SampleTypeName } from '../profile.ts';
import { ProfileStacks, shortName, type StackFrame } from '../sites.ts';
import { formatBytes, formatCount } from './common.ts';

export interface SiteRow {
  /** short display name */
  name: string;
  /** the full name of the site's function (as the profile holds it) */
  full: string;
  flat: number;
  cum: number;
  /** for sites: the site's frame and the callers of its heaviest stack, outward (site first) */
  path?: StackFrame[];
}

export interface SiteTable {
  sampleType: SampleTypeName;
  unit: string;
  total: number;
  rows: SiteRow[];
}

/** Per-site flat and per-function cum values of one sample type, largest flat first. */
export function siteTable(profile: Profile, sampleType: SampleTypeName): SiteTable {
  const stacks = new ProfileStacks(profile);
  const index = stacks.valueIndex(sampleType);
  if (index < 0) throw new Error(`profile has no sample type ${sampleType}`);
  const unit = str(profile, profile.sampleType[index]!.unit);
  const rows = new Map<string, SiteRow & { heaviest: number }>();
  const row = (name: string, full: string) => {
    let r = rows.get(name);
    if (!r) rows.set(name, (r = { name, full, flat: 0, cum: 0, heaviest: 0 }));
    return r;
  };
  let total = 0;
  for (const s of profile.sample) {
    const v = Number(s.value[index] ?? 0);
    if (!v) continue;
    total += v;
    const site = stacks.site(s);
    const r = row(site.short, site.full);
    r.flat += v;
    if (v > r.heaviest) {
      r.heaviest = v;
      r.path = site.frames.slice(Math.max(site.index, 0));
    }
    const seen = new Set<string>();
    for (const f of site.frames) {
      const full = f.name || site.full;
      const name = f.name ? shortName(f.name) : full;
      if (seen.has(name)) continue;
      seen.add(name);
      row(name, full).cum += v;
    }
  }
  const sorted = [...rows.values()].filter((r) => r.flat > 0 || r.cum > 0)
    .map(({ heaviest: _, ...r }) => r)
    .sort((a, b) => b.flat - a.flat || b.cum - a.cum || (a.name < b.name ? -1 : 1));
  return { sampleType, unit, total, rows: sorted };
}

export interface DiffRow {
  name: string;
  old: number;
  new: number;
  delta: number;
}

/** Per-site change from old to new in one sample type, largest growth first (sites that
 * shrank last, the most shrunk at the end). */
export function diffTable(oldP: Profile, newP: Profile, sampleType: SampleTypeName): { unit: string; oldTotal: number; newTotal: number; rows: DiffRow[] } {
  const a = siteTable(oldP, sampleType);
  const b = siteTable(newP, sampleType);
  const rows = new Map<string, DiffRow>();
  for (const r of a.rows) if (r.flat) rows.set(r.name, { name: r.name, old: r.flat, new: 0, delta: -r.flat });
  for (const r of b.rows) {
    if (!r.flat) continue;
    const d = rows.get(r.name) ?? { name: r.name, old: 0, new: 0, delta: 0 };
    d.new = r.flat;
    d.delta = d.new - d.old;
    rows.set(r.name, d);
  }
  const sorted = [...rows.values()].filter((r) => r.delta !== 0)
    .sort((x, y) => y.delta - x.delta || (x.name < y.name ? -1 : 1));
  return { unit: b.unit, oldTotal: a.total, newTotal: b.total, rows: sorted };
}

const sites = (n: number) => `${n} site${n === 1 ? '' : 's'}`;

/** The diff as a table: the n sites that grew most (and, after them, those that shrank most). */
export function formatDiffTable(d: ReturnType<typeof diffTable>, sampleType: string, n: number): string {
  const fv = (v: number) => formatValue(v, d.unit);
  const sv = (v: number) => (v > 0 ? '+' : v < 0 ? '-' : '') + fv(Math.abs(v));
  const grew = d.rows.filter((r) => r.delta > 0).slice(0, n);
  const shrank = d.rows.filter((r) => r.delta < 0).reverse().slice(0, Math.max(0, n - grew.length));
  const lines = [
    `Type: ${sampleType}`,
    `Total: ${fv(d.oldTotal)} -> ${fv(d.newTotal)} (${sv(d.newTotal - d.oldTotal)}); ${sites(d.rows.filter((r) => r.delta > 0).length)} grew, ${sites(d.rows.filter((r) => r.delta < 0).length)} shrank`,
    `${'change'.padStart(11)} ${'old'.padStart(10)} ${'new'.padStart(10)}  site`,
  ];
  for (const r of [...grew, ...shrank]) lines.push(`${sv(r.delta).padStart(11)} ${fv(r.old).padStart(10)} ${fv(r.new).padStart(10)}  ${r.name}`);
  return lines.join('\n') + '\n';
}

export function formatValue(v: number, unit: string): string {
  return unit === 'bytes' ? formatBytes(v, '') : formatCount(v);
}

const pct = (v: number, total: number) => (total ? `${((100 * v) / total).toFixed(2)}%` : '0.00%');

/** The table `go tool pprof -top` prints, for the top n sites (flat > 0). */
export function formatTopTable(table: SiteTable, n: number): string {
  const shown = table.rows.filter((r) => r.flat > 0).slice(0, n);
  const shownSum = shown.reduce((a, r) => a + r.flat, 0);
  const fv = (v: number) => formatValue(v, table.unit);
  const lines = [
    `Type: ${table.sampleType}`,
    `Showing ${shown.length} of ${table.rows.filter((r) => r.flat > 0).length} sites, ${fv(shownSum)} (${pct(shownSum, table.total)}) of ${fv(table.total)} total`,
    `${'flat'.padStart(10)} ${'flat%'.padStart(7)} ${'sum%'.padStart(7)} ${'cum'.padStart(10)} ${'cum%'.padStart(7)}  site`,
  ];
  let sum = 0;
  for (const r of shown) {
    sum += r.flat;
    lines.push(`${fv(r.flat).padStart(10)} ${pct(r.flat, table.total).padStart(7)} ${pct(sum, table.total).padStart(7)} ${fv(r.cum).padStart(10)} ${pct(r.cum, table.total).padStart(7)}  ${r.name}`);
  }
  return lines.join('\n') + '\n';
}

export const SAMPLE_TYPE_NAMES: readonly SampleTypeName[] = SAMPLE_TYPES.map(([t]) => t);
