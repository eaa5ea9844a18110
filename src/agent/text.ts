// ?debug=1: a profile as readable text. Not Go's legacy heap text format: a header per
// process with its totals, then a top-like table of sites (the first frame of each sample's
// stack past allocator and standard-library plumbing, src/sites.ts, by its short name), flat values only, largest first by the
// view's primary value (in-use bytes for heap and delta_heap, allocated bytes for allocs).
import type { Profile } from 'pprof-format';

import { ProfileStacks } from '../sites.ts';
import type { HeapProcess } from './types.ts';


function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2)} ${units[u]}`;
}

function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export interface TextOptions {
  title: string;
  processes: readonly HeapProcess[];
  /** the sample type the table is sorted by */
  sortBy: 'inuse_space' | 'alloc_space';
  /** limit on table rows (0 = all) */
  maxRows?: number;
}

export function profileText(profile: Profile, opts: TextOptions): string {
  const s = profile.stringTable.strings;
  const typeIndex = new Map(profile.sampleType.map((t, i) => [s[Number(t.type)] ?? '', i]));
  const idx = {
    ao: typeIndex.get('alloc_objects') ?? 0,
    ab: typeIndex.get('alloc_space') ?? 1,
    io: typeIndex.get('inuse_objects') ?? 2,
    ib: typeIndex.get('inuse_space') ?? 3,
  };
  const stacks = new ProfileStacks(profile);
  const rows = new Map<string, [number, number, number, number]>();
  const total = [0, 0, 0, 0];
  for (const smp of profile.sample) {
    const site = stacks.site(smp).short;
    const v = [idx.ib, idx.io, idx.ab, idx.ao].map((i) => Number(smp.value[i] ?? 0)) as [number, number, number, number];
    const r = rows.get(site) ?? [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) {
      r[i] = r[i]! + v[i]!;
      total[i] = total[i]! + v[i]!;
    }
    rows.set(site, r);
  }
  const key = opts.sortBy === 'alloc_space' ? 2 : 0;
  let sorted = [...rows].sort((a, b) => b[1][key] - a[1][key] || (a[0] < b[0] ? -1 : 1));
  const dropped = opts.maxRows && sorted.length > opts.maxRows ? sorted.length - opts.maxRows : 0;
  if (dropped) sorted = sorted.slice(0, opts.maxRows);

  const out: string[] = [`heaptap ${opts.title}`];
  const period = Number(profile.period);
  out.push(`sampling: mean ${period === 1 ? '1 byte (every allocation)' : `${count(period)} bytes`} between samples; values are unsampled estimates`);
  if (Number(profile.durationNanos) > 0) out.push(`interval: ${(Number(profile.durationNanos) / 1e9).toFixed(1)} s`);
  for (const p of opts.processes) {
    out.push('');
    out.push(`pid ${p.pid} ${p.exeName} (service ${p.service}, ${p.alive ? 'running' : p.end ? p.end.text : p.exited ? 'exited' : 'ended without exiting'}${p.paused ? ', sampling paused' : ''})`);
    const peak = p.peakBytes !== null
      ? `peak ${bytes(p.peakBytes)}${p.peakMs !== null ? ` at ${new Date(p.peakMs).toISOString()}` : ''}`
      : `peak seen ${bytes(p.peakInuseBytes)}`;
    out.push(`  in use     ${bytes(p.inuseBytes)} in ${count(p.inuseObjects)} objects (${peak})`);
    out.push(`  allocated  ${bytes(p.allocatedBytes)} in ${count(p.allocatedObjects)} objects; freed ${bytes(p.freedBytes)}`);
    if (p.residentBytes !== null) out.push(`  resident   ${bytes(p.residentBytes)}`);
    const lost = Object.entries(p.drops).filter(([, n]) => n > 0);
    out.push(`  samples    ${count(p.samples)}${lost.length ? `; drops: ${lost.map(([k, n]) => `${k}=${n}`).join(' ')}` : ''}`);
  }
  out.push('');
  out.push(`total in this profile: in use ${bytes(total[0]!)} in ${count(total[1]!)} objects; allocated ${bytes(total[2]!)} in ${count(total[3]!)} objects`);
  out.push('');
  const header = ['inuse_space', 'inuse_objects', 'alloc_space', 'alloc_objects'];
  const cells = sorted.map(([name, v]) => [bytes(v[0]), count(v[1]), bytes(v[2]), count(v[3]), name]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  out.push([...header.map((h, i) => h.padStart(widths[i]!)), 'site'].join('  '));
  for (const c of cells) out.push([...c.slice(0, 4).map((x, i) => x.padStart(widths[i]!)), c[4]].join('  '));
  if (dropped) out.push(`... ${dropped} more sites`);
  return out.join('\n') + '\n';
}
