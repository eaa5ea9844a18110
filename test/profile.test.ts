// src/profile.ts: the shape of the pprof profiles, from synthetic snapshots and a fake
// symbolizer (the real one is exercised end to end in pprof.test.ts).
import test from 'ava';
import { gunzipSync } from 'node:zlib';
import { Profile } from 'pprof-format';

import {
  OVERFLOW_FUNCTION,
  TRUNCATED_FUNCTION,
  buildProfile,
  buildProfileAsync,
  decodeProfile,
  encodeProfile,
  str,
} from '../src/profile.ts';
import { constants } from '../src/region.ts';
import { LIBC, MAIN, ONE, counters, fakeSymbolizer, module, snapshot } from './helpers/fakeRegion.ts';

function roundTrip(p: Profile): Profile {
  return Profile.decode(p.encode());
}

function fnName(p: Profile, locId: number | bigint, line = 0): string {
  const loc = p.location.find((l) => Number(l.id) === Number(locId))!;
  const ln = loc.line[line];
  if (!ln) return `0x${BigInt(loc.address).toString(16)}`;
  return str(p, p.function.find((f) => Number(f.id) === Number(ln.functionId))!.name);
}

const labels = (p: Profile, i: number) =>
  Object.fromEntries(p.sample[i]!.label.map((l) => [str(p, l.key), Number(l.str) ? str(p, l.str) : Number(l.num)]));

const basic = () =>
  snapshot(100, [
    { id: 2, frames: [0x400110n, 0x400220n], alloc: [10, 1000], free: [4, 400] },
    { id: 3, frames: [0x400177n, 0x7f0000000500n, 0x9000n], alloc: [3, 3000] },
  ]);

test('writes Go heap-profile sample types, period and no default type in the heap view', async (t) => {
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  t.deepEqual(p.sampleType.map((v) => `${str(p, v.type)}/${str(p, v.unit)}`), [
    'alloc_objects/count', 'alloc_space/bytes', 'inuse_objects/count', 'inuse_space/bytes',
  ]);
  t.is(`${str(p, p.periodType!.type)}/${str(p, p.periodType!.unit)}`, 'space/bytes');
  t.is(Number(p.period), 524288);
  t.is(Number(p.defaultSampleType), 0, 'unset: consumers show inuse_space');
  t.true(BigInt(p.timeNanos) > 1_600_000_000_000_000_000n);
  t.is(p.stringTable.strings[0], '');
});

test('sets alloc_space as the default sample type in the allocs view', (t) => {
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'allocs', symbolizer: fakeSymbolizer() }));
  t.is(str(p, p.defaultSampleType), 'alloc_space');
});

test('keeps ids non-zero and unique and gives every sample four values', (t) => {
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  for (const table of [p.mapping, p.location, p.function]) {
    const ids = table.map((x) => Number(x.id));
    t.false(ids.includes(0));
    t.is(new Set(ids).size, ids.length);
    t.deepEqual(ids, ids.map((_, i) => i + 1), 'consecutive from 1');
  }
  for (const s of p.sample) {
    t.is(s.value.length, 4);
    for (const id of s.locationId) t.truthy(p.location.find((l) => l.id === id), 'location exists');
  }
  for (const l of p.location) {
    if (Number(l.mappingId)) t.truthy(p.mapping.find((m) => m.id === l.mappingId), 'mapping exists');
    for (const ln of l.line) t.truthy(p.function.find((f) => f.id === ln.functionId), 'function exists');
  }
});

test('values are alloc, and alloc minus free, with a pid label and no bytes label', (t) => {
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  t.is(p.sample.length, 2);
  t.deepEqual(p.sample[0]!.value.map(Number), [10, 1000, 6, 600]);
  t.deepEqual(p.sample[1]!.value.map(Number), [3, 3000, 3, 3000]);
  t.deepEqual(labels(p, 0), { pid: 100 });
  t.deepEqual(labels(p, 1), { pid: 100 });
});

test('locations hold the call address, leaf first, with inlined frames folded innermost first', (t) => {
  const sym = fakeSymbolizer();
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'heap', symbolizer: sym }));
  const s1 = p.sample[1]!;
  const locs = s1.locationId.map((id) => p.location.find((l) => l.id === id)!);
  t.deepEqual(locs.map((l) => BigInt(l.address)), [0x400176n, 0x7f00000004ffn, 0x8fffn]);
  t.deepEqual(locs[0]!.line.map((_, i) => fnName(p, locs[0]!.id, i)), ['inlined_leaf', 'fn_400177']);
  t.deepEqual(locs[0]!.line.map((l) => Number(l.line)), [3, 10]);
  t.is(fnName(p, locs[1]!.id), 'fn_7f0000000500');
  t.is(Number(locs[2]!.mappingId), 0, 'a frame in no module has no mapping');
  t.is(locs[2]!.line.length, 0, 'and just its address');
  // The symbolizer got runtime return addresses, once per module.
  t.deepEqual(sym.calls.map((c) => [c.path, c.pid, c.addresses.length]), [['/bin/app', 100, 3], ['/lib/libc.so.6', 100, 1]]);
  const f = p.function.find((x) => str(p, x.name) === 'fn_400177')!;
  t.is(str(p, f.systemName), '_Z400177');
  t.is(str(p, f.filename), 'app.c');
  t.is(Number(f.startLine), 5);
});

test('mappings come from the module table, main first, with symbol flags only where true', (t) => {
  const snap = basic();
  snap.modules = [LIBC, MAIN]; // main not first in the region
  const p = roundTrip(buildProfile([{ snapshot: snap }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  t.is(p.mapping.length, 2);
  const [m1, m2] = p.mapping;
  t.is(str(p, m1!.filename), '/bin/app');
  t.is(BigInt(m1!.memoryStart), 0x400000n);
  t.is(BigInt(m1!.memoryLimit), 0x500000n);
  t.is(BigInt(m1!.fileOffset), 0x1000n);
  t.is(str(p, m1!.buildId), MAIN.buildId);
  t.deepEqual([m1!.hasFunctions, m1!.hasFilenames, m1!.hasLineNumbers, m1!.hasInlineFrames], [true, true, true, true]);
  t.is(str(p, m2!.filename), '/lib/libc.so.6');
  t.deepEqual([m2!.hasFunctions, m2!.hasFilenames, m2!.hasLineNumbers, m2!.hasInlineFrames], [true, false, false, false]);
});

test('without a symbolizer, locations carry addresses and mappings claim no symbols', (t) => {
  const p = roundTrip(buildProfile([{ snapshot: basic() }], { view: 'heap' }));
  t.true(p.location.every((l) => l.line.length === 0));
  t.true(p.mapping.every((m) => !m.hasFunctions && !m.hasFilenames && !m.hasLineNumbers && !m.hasInlineFrames));
  t.is(p.function.length, 0);
});

test('a symbolizer that throws for a module leaves that module unsymbolized, with a warning', (t) => {
  const warnings: string[] = [];
  const sym = fakeSymbolizer();
  const p = roundTrip(buildProfile([{ snapshot: basic() }], {
    view: 'heap',
    symbolizer: { symbolize: (m, pid, a) => { if (m.path.includes('libc')) throw new Error('boom'); return sym.symbolize(m, pid, a); } },
    onWarning: (m) => warnings.push(m),
  }));
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /libc.*boom/);
  t.false(p.mapping[1]!.hasFunctions);
  t.true(p.mapping[0]!.hasFunctions);
});

test('a delta takes alloc values as the difference and in-use values as they are', (t) => {
  const base = snapshot(100, [
    { id: 2, frames: [0x400110n], alloc: [4, 400], free: [1, 100] },
    { id: 3, frames: [0x400120n], alloc: [5, 500] },
  ], { heartbeat: 1_000_000_000n });
  const cur = snapshot(100, [
    { id: 2, frames: [0x400110n], alloc: [10, 1000], free: [4, 400] },
    { id: 3, frames: [0x400120n], alloc: [5, 500] }, // no new allocations, still in use
    { id: 4, frames: [0x400130n], alloc: [2, 64], free: [2, 64] }, // new since base
  ], { heartbeat: 3_500_000_000n });
  const p = roundTrip(buildProfile([{ snapshot: cur, base }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  const byLeaf = new Map(p.sample.map((s) => [fnName(p, s.locationId[0]!), s.value.map(Number)]));
  t.deepEqual(byLeaf.get('fn_400110'), [6, 600, 6, 600]);
  t.deepEqual(byLeaf.get('fn_400120'), [0, 0, 5, 500]);
  t.deepEqual(byLeaf.get('fn_400130'), [2, 64, 0, 0]);
  t.is(BigInt(p.durationNanos), 2_500_000_000n, 'duration from the samples\' heartbeats');
  const q = buildProfile([{ snapshot: cur, base }], { view: 'heap', durationNanos: 7n, timeNanos: 42n });
  t.is(BigInt(q.durationNanos), 7n);
  t.is(BigInt(q.timeNanos), 42n);
});

test('a delta clamps counters that went backwards at zero', (t) => {
  const base = snapshot(1, [{ id: 2, frames: [0x400110n], alloc: [10, 1000] }]);
  const cur = snapshot(1, [{ id: 2, frames: [0x400110n], alloc: [8, 800], free: [9, 900] }]);
  const p = buildProfile([{ snapshot: cur, base }], { view: 'heap' });
  t.is(p.sample.length, 0, 'all four values 0: dropped');
});

test('drops stacks whose four values are all zero', (t) => {
  const snap = snapshot(7, [
    { id: 2, frames: [0x400110n], alloc: [0, 0] },
    { id: 3, frames: [0x400120n], alloc: [1, 16] },
  ]);
  const p = buildProfile([{ snapshot: snap }], { view: 'heap', symbolizer: fakeSymbolizer() });
  t.is(p.sample.length, 1);
  t.is(p.location.length, 1, 'no location for the dropped stack');
});

test('the overflow stack becomes one synthetic frame and truncated stacks end in a marker', (t) => {
  const snap = snapshot(9, [
    { id: constants.STACK_OVERFLOW, frames: [], alloc: [5, 5000] },
    { id: 2, frames: [0x400110n, 0x400220n], flags: constants.STACK_TRUNCATED, alloc: [1, 10] },
  ]);
  const p = roundTrip(buildProfile([{ snapshot: snap }], { view: 'heap', symbolizer: fakeSymbolizer() }));
  const over = p.sample.find((s) => s.locationId.length === 1)!;
  t.is(fnName(p, over.locationId[0]!), OVERFLOW_FUNCTION);
  t.deepEqual(over.value.map(Number), [5, 5000, 5, 5000]);
  const oloc = p.location.find((l) => l.id === over.locationId[0])!;
  t.is(Number(oloc.mappingId), 0);
  const trunc = p.sample.find((s) => s.locationId.length === 3)!;
  t.deepEqual(trunc.locationId.map((id) => fnName(p, id)), ['fn_400110', 'fn_400220', TRUNCATED_FUNCTION]);
});

test('merges regions into one profile with pid and exe labels and a mapping per region', (t) => {
  const a = snapshot(100, [{ id: 2, frames: [0x400110n], alloc: [1, 100] }]);
  const libAt = module(1, '/lib/libc.so.6', 0x7e0000000000n, 0x7e0000100000n);
  const b = snapshot(200, [
    { id: 2, frames: [0x400110n, 0x7e0000000500n], alloc: [2, 200] },
  ], { modules: [MAIN, libAt], rate: 1n });
  const c = snapshot(300, [{ id: 2, frames: [0x400110n], alloc: [3, 300] }], { rate: 1n });
  const sym = fakeSymbolizer();
  const p = roundTrip(buildProfile([{ snapshot: a }, { snapshot: b }, { snapshot: c }], { view: 'heap', symbolizer: sym }));
  t.deepEqual(p.sample.map((_, i) => labels(p, i).pid), [100, 200, 300]);
  t.deepEqual(p.sample.map((_, i) => labels(p, i).exe), ['/bin/app100', '/bin/app200', '/bin/app300']);
  t.is(p.mapping.length, 6, 'each (region, module) its own mapping');
  t.is(str(p, p.mapping[0]!.filename), '/bin/app');
  // Same address in two processes: two locations, each on its own region's mapping.
  const l0 = p.location.find((l) => l.id === p.sample[0]!.locationId[0])!;
  const l1 = p.location.find((l) => l.id === p.sample[1]!.locationId[0])!;
  t.not(l0.id, l1.id);
  t.not(l0.mappingId, l1.mappingId);
  const libMapping = p.mapping.find((m) => m.id === p.location.find((l) => l.id === p.sample[1]!.locationId[1])!.mappingId)!;
  t.is(BigInt(libMapping.memoryStart), 0x7e0000000000n);
  t.is(Number(p.period), 1, 'the most common rate');
  t.deepEqual(sym.calls.map((x) => x.pid), [100, 200, 200, 300]);
  // A single region gets no exe label by default.
  const single = buildProfile([{ snapshot: a }], { view: 'heap' });
  t.false(single.sample[0]!.label.some((l) => str(single, l.key) === 'exe'));
});

test('stack records read earlier are used besides the snapshot\'s own', (t) => {
  const early = snapshot(5, [{ id: 2, frames: [0x400110n], alloc: [1, 8] }]);
  const later = snapshot(5, [{ id: 3, frames: [0x400120n], alloc: [1, 8] }]);
  later.counters = counters({
    ids: Uint32Array.of(2, 3),
    allocObjects: BigUint64Array.of(ONE, ONE),
    allocBytes: BigUint64Array.of(8n, 8n),
    freeObjects: BigUint64Array.of(0n, 0n),
    freeBytes: BigUint64Array.of(0n, 0n),
    samples: BigUint64Array.of(1n, 1n),
  });
  const p = buildProfile([{ snapshot: later, extraStacks: [early.stacks] }], { view: 'heap', symbolizer: fakeSymbolizer() });
  t.deepEqual(p.sample.map((s) => fnName(p, s.locationId[0]!)), ['fn_400110', 'fn_400120']);
});

test('encodes gzipped protobuf that pprof-format decodes back', async (t) => {
  const built = buildProfile([{ snapshot: basic() }], { view: 'allocs', symbolizer: fakeSymbolizer() });
  const gz = await encodeProfile(built);
  t.is(gz[0], 0x1f);
  t.is(gz[1], 0x8b);
  const raw = Profile.decode(gunzipSync(gz));
  t.is(raw.sample.length, 2);
  const p = await decodeProfile(gz);
  t.is(str(p, p.defaultSampleType), 'alloc_space');
  t.deepEqual(p.sample.map((s) => s.value.map(Number)), built.sample.map((s) => s.value.map(Number)));
});

test('the async builder gives the same profile as the sync one', async (t) => {
  const sym = fakeSymbolizer();
  const a = buildProfile([{ snapshot: basic() }], { view: 'heap', symbolizer: sym, timeNanos: 1n });
  const b = await buildProfileAsync([{ snapshot: basic() }], {
    view: 'heap', timeNanos: 1n,
    symbolizer: { symbolizeAsync: async (m, pid, addrs) => sym.symbolize(m, pid, addrs) },
  });
  t.deepEqual(Buffer.from(b.encode()), Buffer.from(a.encode()));
});

test('fixed-point object counts round to whole objects', (t) => {
  const snap = snapshot(1, [{ id: 2, frames: [0x400110n], alloc: [0, 1000] }]);
  snap.counters.allocObjects[0] = ONE * 3n + ONE / 2n + 1n; // 3.5+ objects
  snap.counters.freeObjects[0] = ONE / 4n;
  snap.counters.inuseObjects[0] = ONE * 3n + ONE / 4n + 1n; // in use as the reader gives it
  const p = buildProfile([{ snapshot: snap }], { view: 'heap' });
  t.deepEqual(p.sample[0]!.value.map(Number), [4, 1000, 3, 1000]);
});
