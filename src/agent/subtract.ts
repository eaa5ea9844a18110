// p1 - p0 for two profiles of the same processes, as net/http/pprof serves ?seconds=N
// (serveDeltaProfile: p0 scaled by -1, merged with p1). Samples are matched by their
// labels (pid, exe) and their locations' (mapping file, address, function); every value
// is subtracted, so in-use may come out negative (memory freed over the interval).
//
// Counters only grow and stack records are only added, so every sample of p0 has its
// match in p1 (an allocation count never goes back to zero): the result keeps p1's
// tables and drops the samples whose values all subtract to zero.
import { Profile, Sample, type Label } from 'pprof-format';

type Numeric = number | bigint;

function sampleKeys(p: Profile): string[] {
  const s = p.stringTable.strings;
  const mappings = new Map(p.mapping.map((m) => [Number(m.id), s[Number(m.filename)] ?? '']));
  const functions = new Map(p.function.map((f) => [Number(f.id), s[Number(f.name)] ?? '']));
  const locKey = new Map<number, string>();
  for (const l of p.location) {
    const fn = l.line.map((ln) => functions.get(Number(ln.functionId)) ?? '').join('|');
    locKey.set(Number(l.id), `${mappings.get(Number(l.mappingId)) ?? ''}@${l.address.toString(16)}:${fn}`);
  }
  const labelKey = (labels: Label[]) =>
    labels
      .filter((lb) => s[Number(lb.key)] !== 'bytes') // Go's average-size label moves as the counts do
      .map((lb) => `${s[Number(lb.key)]}=${Number(lb.str) ? s[Number(lb.str)] : String(lb.num)}`)
      .sort()
      .join(',');
  return p.sample.map((smp) => `${labelKey(smp.label)}#${smp.locationId.map((id) => locKey.get(Number(id))).join(';')}`);
}

const toNumber = (v: Numeric): number => Number(v);

export function subtractProfiles(p1: Profile, p0: Profile): Profile {
  const before = new Map<string, Numeric[]>();
  const keys0 = sampleKeys(p0);
  p0.sample.forEach((smp, i) => {
    const k = keys0[i]!;
    const prev = before.get(k);
    before.set(k, prev ? prev.map((v, j) => toNumber(v) + toNumber(smp.value[j] ?? 0)) : smp.value);
  });
  const keys1 = sampleKeys(p1);
  const samples: Sample[] = [];
  p1.sample.forEach((smp, i) => {
    const b = before.get(keys1[i]!);
    // Merge repeated keys into the first sample that has them.
    before.delete(keys1[i]!);
    const value = smp.value.map((v, j) => toNumber(v) - toNumber(b?.[j] ?? 0));
    if (value.every((v) => v === 0)) return;
    samples.push(new Sample({ locationId: smp.locationId, label: smp.label, value }));
  });
  return new Profile({
    sampleType: p1.sampleType,
    sample: samples,
    mapping: p1.mapping,
    location: p1.location,
    function: p1.function,
    stringTable: p1.stringTable,
    dropFrames: p1.dropFrames,
    keepFrames: p1.keepFrames,
    timeNanos: p1.timeNanos,
    durationNanos: p1.durationNanos,
    periodType: p1.periodType,
    period: p1.period,
    comment: p1.comment,
    defaultSampleType: p1.defaultSampleType,
  });
}
