// The rule by which Grafana Alloy's pyroscope.scrape turns cumulative /debug/pprof/allocs
// scrapes into deltas before it sends them to Pyroscope, restated over pprof-format's
// decoded profile so that tests can apply it to what heaptap serves. Read from grafana/alloy:
//   internal/component/pyroscope/scrape/delta_profiles.go   deltaProfiles: for __name__
//     "memory" the delta fields are alloc_objects/count and alloc_space/bytes; the first
//     scrape of a target only primes the state and is not sent; the rest go on with
//     __delta__="false" so that Pyroscope does not subtract again
//   internal/component/pyroscope/scrape/internal/fastdelta/hasher.go   a sample's identity:
//     the *addresses* of its locations, in order, then the hashes of its labels (key,
//     num_unit, num, str), sorted
//   internal/component/pyroscope/scrape/internal/fastdelta/delta_map.go   samples of the
//     same identity are summed; each delta field becomes (now - the last value seen for that
//     identity), the others stay as they are; samples whose values are all 0 are left out
// A label whose value changes between scrapes gives the sample a new identity: nothing is
// subtracted from it, and the whole cumulative value goes on as if it were a delta.
import type { Profile } from 'pprof-format';

import { str } from '../../src/profile.ts';

const DELTA_FIELDS = [['alloc_objects', 'count'], ['alloc_space', 'bytes']];

export interface DeltaSample {
  /** location addresses, innermost first */
  addresses: bigint[];
  labels: Record<string, string | number>;
  /** the profile's sample types' values, after the rule */
  values: number[];
}

export class AlloyDelta {
  /** identity -> last values of the delta fields */
  readonly #old = new Map<string, number[]>();
  #primed = false;

  /** The delta Alloy would send for this scrape, or null for the first (which it drops). */
  next(p: Profile): DeltaSample[] | null {
    const types = p.sampleType.map((vt) => [str(p, vt.type), str(p, vt.unit)]);
    const isDelta = types.map(([t, u]) => DELTA_FIELDS.some(([dt, du]) => dt === t && du === u));
    const address = new Map(p.location.map((l) => [Number(l.id), BigInt(l.address)]));
    const ident = (s: Profile['sample'][number]) => {
      const addrs = s.locationId.map((id) => {
        const a = address.get(Number(id));
        if (a === undefined) throw new Error(`sample refers to location ${id}, which the profile lacks`);
        return a.toString(16);
      });
      const labels = s.label
        .map((l) => JSON.stringify([str(p, l.key), str(p, l.numUnit), String(l.num), str(p, l.str)]))
        .sort();
      return `${addrs.join(',')}|${labels.join(',')}`;
    };
    // Pass 2: sum samples of the same identity.
    const full = new Map<string, { values: number[]; sample: Profile['sample'][number] }>();
    for (const s of p.sample) {
      const k = ident(s);
      const e = full.get(k);
      if (e) s.value.forEach((v, i) => { e.values[i]! += Number(v); });
      else full.set(k, { values: s.value.map(Number), sample: s });
    }
    // Pass 3: subtract the previous values of the delta fields; keep the new ones.
    const out: DeltaSample[] = [];
    for (const [k, { values, sample }] of full) {
      const old = this.#old.get(k) ?? [];
      const now: number[] = [];
      const res = values.map((v, i) => {
        if (!isDelta[i]) return v;
        const n = now.length;
        now.push(v);
        return v - (old[n] ?? 0);
      });
      this.#old.set(k, now);
      if (res.every((v) => v === 0)) continue;
      out.push({
        addresses: sample.locationId.map((id) => address.get(Number(id))!),
        labels: Object.fromEntries(sample.label.map((l) => [str(p, l.key), Number(l.str) ? str(p, l.str) : Number(l.num)])),
        values: res,
      });
    }
    if (!this.#primed) {
      this.#primed = true;
      return null;
    }
    return out;
  }
}
