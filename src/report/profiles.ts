// A report from heaptap profiles: what `heaptap run` writes beside its profiles and what
// `heaptap report` makes from any heaptap profile (src/cli/report.ts).
import type { Profile } from 'pprof-format';

import { str } from '../profile.ts';
import { buildReport, timelineOf, type ReportData, type ReportTimeline, type ViewSource } from './model.ts';

export interface ProfileReportInput {
  title: string;
  facts?: string[];
  /** a heap profile: alloc_* and inuse_* (in use at the end) */
  heap: Profile;
  /** in use at the peak (heaptap run's peak profile) */
  peak?: Profile | null;
  /** an older profile: the growth of in use since it */
  base?: { label: string; profile: Profile } | null;
  /** else the timeline the profiles carry (src/report/model.ts: TIMELINE_COMMENT) */
  timeline?: ReportTimeline | null;
  notes?: string[];
}

function has(p: Profile, type: string): boolean {
  return p.sampleType.some((v) => str(p, v.type) === type);
}

export function reportFromProfiles(o: ProfileReportInput): ReportData {
  const views: ViewSource[] = [];
  if (o.peak && has(o.peak, 'inuse_space')) views.push({ id: 'peak_space', profile: o.peak, sampleType: 'inuse_space' });
  for (const [id, type] of [['alloc_space', 'alloc_space'], ['inuse_space', 'inuse_space'], ['alloc_objects', 'alloc_objects'], ['inuse_objects', 'inuse_objects']] as const) {
    if (has(o.heap, type)) views.push({ id, profile: o.heap, sampleType: type });
  }
  if (!views.length) throw new Error('the profile has none of the sample types alloc_space, alloc_objects, inuse_space, inuse_objects: not a heap profile');
  const timeline = o.timeline !== undefined ? o.timeline : timelineOf(o.heap) ?? (o.peak ? timelineOf(o.peak) : null);
  return buildReport({
    title: o.title,
    facts: o.facts,
    views,
    timeline,
    base: o.base ? { label: o.base.label, profile: o.base.profile, now: o.heap } : null,
    notes: o.notes,
  });
}
