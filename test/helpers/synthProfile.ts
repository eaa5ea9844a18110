// Heap profiles made in the test, with pprof-format: stacks of named functions and their
// values (alloc_objects, alloc_space, inuse_objects, inuse_space, Go's order).
import { Function as PFunction, Line, Location, Profile, Sample, StringTable, ValueType } from 'pprof-format';

import { encodeProfile } from '../../src/profile.ts';

export interface SynthStack {
  /** outermost first */
  frames: string[];
  allocBytes: number;
  inuseBytes: number;
}

export function synthProfile(stacks: readonly SynthStack[]): Profile {
  const st = new StringTable();
  const fnIds = new Map<string, number>();
  const locIds = new Map<string, number>();
  const functions: PFunction[] = [];
  const locations: Location[] = [];
  const loc = (name: string) => {
    let id = locIds.get(name);
    if (id !== undefined) return id;
    let f = fnIds.get(name);
    if (f === undefined) {
      f = functions.length + 1;
      fnIds.set(name, f);
      functions.push(new PFunction({ id: f, name: st.dedup(name), filename: st.dedup('synth.c') }));
    }
    id = locations.length + 1;
    locIds.set(name, id);
    locations.push(new Location({ id, line: [new Line({ functionId: f, line: 10 + f })] }));
    return id;
  };
  const vt = (t: string, u: string) => new ValueType({ type: st.dedup(t), unit: st.dedup(u) });
  const sampleType = [vt('alloc_objects', 'count'), vt('alloc_space', 'bytes'), vt('inuse_objects', 'count'), vt('inuse_space', 'bytes')];
  const sample = stacks.map((s) => new Sample({
    locationId: [...s.frames].reverse().map(loc),
    value: [Math.ceil(s.allocBytes / 64), s.allocBytes, Math.ceil(s.inuseBytes / 64), s.inuseBytes],
  }));
  return new Profile({ sampleType, sample, location: locations, function: functions, stringTable: st, periodType: vt('space', 'bytes'), period: 524288 });
}

export function synthProfileBytes(stacks: readonly SynthStack[]): Promise<Buffer> {
  return encodeProfile(synthProfile(stacks));
}
