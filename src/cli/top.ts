// Site tables from a built profile, as `go tool pprof -top` prints them: flat is what a
// function allocated itself (it is the innermost frame), cum what it and its callees did.
// One difference, so that C++ programs show their own code: allocator entry points at the
// leaf end (operator new, std::allocator<>::allocate, strdup...) are skipped when choosing
// a sample's site, as pprof's own allocRx does for tcmalloc heap profiles.
import { basename } from 'node:path';
import type { Profile } from 'pprof-format';

import { SAMPLE_TYPES, str, type SampleTypeName } from '../profile.ts';
import { isAllocatorFrame } from '../sites.ts';
import { formatBytes, formatCount } from './common.ts';

export interface SiteRow {
  name: string;
  flat: number;
  cum: number;
}

export interface SiteTable {
  sampleType: SampleTypeName;
  unit: string;
  total: number;
  rows: SiteRow[];
}

/** Per-function flat and cum values of one sample type, largest flat first. */
export function siteTable(profile: Profile, sampleType: SampleTypeName): SiteTable {
  const index = profile.sampleType.findIndex((v) => str(profile, v.type) === sampleType);
  if (index < 0) throw new Error(`profile has no sample type ${sampleType}`);
  const unit = str(profile, profile.sampleType[index]!.unit);
  const locations = new Map(profile.location.map((l) => [Number(l.id), l]));
  const functions = new Map(profile.function.map((f) => [Number(f.id), str(profile, f.name)]));
  const mappings = new Map(profile.mapping.map((m) => [Number(m.id), basename(str(profile, m.filename))]));
  const frameNames = new Map<number, string[]>(); // per location, innermost first
  const namesOf = (locId: number): string[] => {
    let names = frameNames.get(locId);
    if (names) return names;
    const loc = locations.get(locId);
    if (!loc) names = ['?'];
    else if (loc.line.length) names = loc.line.map((l) => functions.get(Number(l.functionId)) ?? '?');
    else {
      const m = mappings.get(Number(loc.mappingId));
      names = [`${m ? `${m} ` : ''}0x${BigInt(loc.address).toString(16)}`];
    }
    frameNames.set(locId, names);
    return names;
  };
  const rows = new Map<string, SiteRow>();
  const row = (name: string) => {
    let r = rows.get(name);
    if (!r) rows.set(name, (r = { name, flat: 0, cum: 0 }));
    return r;
  };
  let total = 0;
  for (const s of profile.sample) {
    const v = Number(s.value[index] ?? 0);
    if (!v) continue;
    total += v;
    const names = s.locationId.flatMap((id) => namesOf(Number(id)));
    const site = names.find((n) => !isAllocatorFrame(n)) ?? names[0] ?? '?';
    row(site).flat += v;
    for (const n of new Set(names)) row(n).cum += v;
  }
  const sorted = [...rows.values()].filter((r) => r.flat > 0 || r.cum > 0).sort((a, b) => b.flat - a.flat || b.cum - a.cum || (a.name < b.name ? -1 : 1));
  return { sampleType, unit, total, rows: sorted };
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
