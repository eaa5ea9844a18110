// The agent's own encoder (src/agent/pprof.ts: cached per-process tables, protobuf
// written directly) against src/profile.ts's buildProfile, the reference: on regions of
// real fixtures the two profiles hold the same samples, locations, functions and mappings.
import test from 'ava';

import { counters as fakeCounters } from '../helpers/fakeRegion.ts';
import type { Profile } from 'pprof-format';

import { encodeHeapProfile, freeEncoded, SymbolTables } from '../../src/agent/pprof.ts';
import { StackStore } from '../../src/agent/stackStore.ts';
import { buildProfileAsync, decodeProfile, OVERFLOW_FUNCTION, str, UNKNOWN_STACK_FUNCTION } from '../../src/profile.ts';
import { listRegions, readRegion, type RegionSnapshot } from '../../src/region.ts';
import { Symbolizer } from '../../src/symbolize.ts';
import { buildRegion, tempDir as tempRegionDir, writeRegion } from '../helpers/regionBuilder.ts';
import { fixtures, startFixture, tempDir } from './helpers.ts';

/** Every sample as a comparable line: labels, then its frames (mapping file, address,
 * functions with lines), then its values. */
function canonical(p: Profile): { samples: string[]; mappings: string[]; meta: string } {
  const s = (i: number | bigint) => str(p, i);
  const maps = new Map(p.mapping.map((m) => [Number(m.id), m]));
  const fns = new Map(p.function.map((f) => [Number(f.id), f]));
  const locs = new Map(p.location.map((l) => [Number(l.id), l]));
  const frame = (id: number | bigint) => {
    const l = locs.get(Number(id))!;
    const m = maps.get(Number(l.mappingId));
    const lines = l.line.map((ln) => {
      const f = fns.get(Number(ln.functionId))!;
      return `${s(f.name)}|${s(f.systemName)}|${s(f.filename)}:${ln.line}@${f.startLine}`;
    });
    return `${m ? s(m.filename) : '-'}+${Number(l.address).toString(16)}[${lines.join(',')}]`;
  };
  const samples = p.sample.map((smp) => {
    const labels = smp.label.map((lb) => `${s(lb.key)}=${Number(lb.str) ? s(lb.str) : Number(lb.num)}`).sort().join(',');
    return `${labels} ${smp.locationId.map(frame).join(' < ')} = ${smp.value.map(Number).join('/')}`;
  }).sort();
  const mappings = p.mapping.map((m) => `${s(m.filename)} ${s(m.buildId)} ${m.memoryStart}-${m.memoryLimit}@${m.fileOffset} ${m.hasFunctions}${m.hasFilenames}${m.hasLineNumbers}${m.hasInlineFrames}`).sort();
  const meta = JSON.stringify({
    types: p.sampleType.map((v) => `${s(v.type)}/${s(v.unit)}`),
    period: Number(p.period),
    periodType: `${s(p.periodType!.type)}/${s(p.periodType!.unit)}`,
    def: s(p.defaultSampleType),
    comments: p.comment.map((c) => s(c)),
    duration: Number(p.durationNanos),
    firstMapping: s(p.mapping[0]!.filename),
  });
  return { samples, mappings, meta };
}

async function ours(snaps: { snapshot: RegionSnapshot; base?: RegionSnapshot }[], sym: Symbolizer, view: 'heap' | 'allocs'): Promise<Profile> {
  const inputs = [];
  for (const { snapshot, base } of snaps) {
    const store = new StackStore();
    store.append(snapshot.stacks);
    const tables = new SymbolTables();
    await tables.update(store, snapshot.modules, snapshot.header.pid, sym, () => {});
    inputs.push({ snapshot, tables, base });
  }
  return decodeProfile(encodeHeapProfile(inputs, { view, exeLabel: snaps.length > 1, timeNanos: 1n }));
}

test('the agent encoder and buildProfile agree on real fixture regions: heap, allocs, delta, merged', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  // Two processes: churn with DWARF (inlined frames, lines) and the C++ fixture (demangled
  // names, operator new), both exact so every stack is present.
  const a = await startFixture([`${fixtures}/churn`, '--threads', '2', '--mib', '2', '--leak-mib', '1', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  await a.finish();
  const b = await startFixture([`${fixtures}/churn-stripped`, '--threads', '1', '--mib', '1', '--leak-mib', '1', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '4096' }, t);
  await b.finish();
  const [pa, pb] = (await listRegions(dir)).sort((x, y) => (x.includes(`${a.pid}-`) ? -1 : y.includes(`${a.pid}-`) ? 1 : 0));
  const sa = readRegion(pa!);
  const sb = readRegion(pb!);
  t.true(sa.stacks.ids.length > 10);
  const sym = new Symbolizer();
  t.teardown(() => sym.close());

  // A base with smaller counters, as an earlier delta_heap call would have left.
  const half = (s: RegionSnapshot): RegionSnapshot => ({
    ...s,
    counters: { ...s.counters, allocObjects: s.counters.allocObjects.map((v) => v / 2n), allocBytes: s.counters.allocBytes.map((v) => v / 2n) },
  });
  // Another process of the same binary (as a hundred replicas on one node would be).
  const twin: RegionSnapshot = { ...sa, header: { ...sa.header, pid: sa.header.pid + 1 } };
  const cases: [string, { snapshot: RegionSnapshot; base?: RegionSnapshot }[], 'heap' | 'allocs'][] = [
    ['heap', [{ snapshot: sa }], 'heap'],
    ['allocs', [{ snapshot: sa }], 'allocs'],
    ['stripped', [{ snapshot: sb }], 'heap'],
    ['delta', [{ snapshot: sa, base: half(sa) }], 'heap'],
    ['merged', [{ snapshot: sa }, { snapshot: sb }], 'heap'],
    ['merged, one binary twice', [{ snapshot: sa }, { snapshot: twin }], 'heap'],
  ];
  for (const [name, snaps, view] of cases) {
    const ref = await buildProfileAsync(snaps, { view, symbolizer: sym, timeNanos: 1n, exeLabel: snaps.length > 1 });
    const mine = await ours(snaps, sym, view);
    const r = canonical(await decodeProfile(await (await import('../../src/profile.ts')).encodeProfile(ref)));
    const m = canonical(mine);
    t.is(m.meta, r.meta, `${name}: header fields`);
    t.deepEqual(m.mappings, r.mappings, `${name}: mappings`);
    t.is(m.samples.length, r.samples.length, `${name}: sample count`);
    t.deepEqual(m.samples, r.samples, `${name}: samples`);
  }
  // What processes share is written once: no string and no function twice.
  const twice = await ours([{ snapshot: sa }, { snapshot: twin }], sym, 'heap');
  const strs = twice.stringTable.strings;
  t.is(new Set(strs).size, strs.length, 'no repeated strings');
  const fkeys = twice.function.map((f) => `${f.name},${f.systemName},${f.filename},${f.startLine}`);
  t.is(new Set(fkeys).size, fkeys.length, 'no repeated functions');
  t.is(twice.function.length, (await ours([{ snapshot: sa }], sym, 'heap')).function.length);
});

test('the encoder: counts of 2^53 and more, negative in-use deltas, overflow and unknown stacks, merged offsets', async (t) => {
  const { dir, cleanup } = tempRegionDir();
  t.teardown(cleanup);
  const { buf } = buildRegion({ stacks: [{ frames: [0x401000n, 0x402000n] }, { frames: [0x403000n] }], header: { pid: 4242, exe: '/usr/bin/example' } });
  const real = readRegion(writeRegion(dir, '4242-1.heaptap', buf));
  const store = new StackStore();
  store.append(real.stacks);
  const tables = new SymbolTables();
  await tables.update(store, [], 4242, undefined, () => {});
  const O = 65536n;
  const counters = (rows: [number, bigint, bigint, bigint, bigint][]): RegionSnapshot['counters'] => fakeCounters({
    ids: Uint32Array.from(rows.map((r) => r[0])),
    allocObjects: BigUint64Array.from(rows.map((r) => r[1])),
    allocBytes: BigUint64Array.from(rows.map((r) => r[2])),
    freeObjects: BigUint64Array.from(rows.map((r) => r[3])),
    freeBytes: BigUint64Array.from(rows.map((r) => r[4])),
    samples: new BigUint64Array(rows.length),
  });
  const now: RegionSnapshot = { ...real, counters: counters([
    [2, 3n * O, 1n << 60n, 1n * O, 1n << 59n], // beyond 2^53: exact
    [3, 10n * O, 1000n, 10n * O, 1000n], // all freed since the base
    [1, 1n * O, 16n, 0n, 0n], // the overflow stack
    [99, O / 2n, 8n, 0n, 0n], // a stack with no record: unknown; half an object rounds to 1
    [4, 0n, 0n, 0n, 0n], // nothing: left out
  ]) };
  const base: RegionSnapshot = { ...real, counters: counters([[3, 10n * O, 1000n, 0n, 0n]]) };
  const decode = async (raw: Uint8Array) => {
    const p = await decodeProfile(raw);
    return p.sample.map((smp) => ({
      fns: smp.locationId.map((id) => p.location.find((l) => Number(l.id) === Number(id))!.line.map((ln) => str(p, p.function.find((f) => Number(f.id) === Number(ln.functionId))!.name)).join('|')),
      locs: smp.locationId.map(Number),
      values: smp.value.map((v) => BigInt.asIntN(64, BigInt(v))),
      labels: Object.fromEntries(smp.label.map((l) => [str(p, l.key), Number(l.str) ? str(p, l.str) : BigInt(l.num)])),
    }));
  };
  const full = await decode(encodeHeapProfile([{ snapshot: now, tables, base }], { view: 'heap', exeLabel: false, fullDelta: true }));
  t.is(full.length, 4);
  t.deepEqual(full[0]!.values, [3n, 1n << 60n, 2n, 1n << 59n]);
  t.deepEqual(full[0]!.labels, { pid: 4242n }, 'pid only: no bytes label, whose average would drift');
  t.deepEqual(full[1]!.values, [0n, 0n, -10n, -1000n], 'in use went down by what the base held');
  t.deepEqual(full[2]!.fns, [OVERFLOW_FUNCTION]);
  t.deepEqual(full[3]!.fns, [UNKNOWN_STACK_FUNCTION]);
  t.deepEqual(full[3]!.values, [1n, 8n, 1n, 8n]);
  for (const smp of full) t.deepEqual(Object.keys(smp.labels), ['pid']);
  // Merged after another process, location ids move by that process's location count,
  // and each sample carries the exe label.
  const one = await decode(encodeHeapProfile([{ snapshot: now, tables }], { view: 'heap', exeLabel: false }));
  const two = await decode(encodeHeapProfile([{ snapshot: now, tables }, { snapshot: { ...now, header: { ...now.header, pid: 4343 } }, tables }], { view: 'heap', exeLabel: true }));
  t.is(two.length, 2 * one.length);
  const offset = tables.locAddress.length; // the first process's locations come first
  for (let i = 0; i < one.length; i++) {
    t.deepEqual(two[one.length + i]!.fns, one[i]!.fns);
    t.deepEqual(two[one.length + i]!.values, one[i]!.values);
    t.is(two[one.length + i]!.labels.pid, 4343n);
    t.is(two[one.length + i]!.labels.exe, '/usr/bin/example');
    t.deepEqual(two[one.length + i]!.locs, one[i]!.locs.map((l) => l + offset), 'ids offset by the first process\'s locations');
  }
});

test('freeEncoded frees an encoded profile\'s buffer at once, once, and leaves other bytes alone', (t) => {
  const raw = encodeHeapProfile([], { view: 'heap', exeLabel: false });
  const buf = raw.buffer;
  t.true(raw.length > 0);
  const before = process.memoryUsage().arrayBuffers;
  freeEncoded(raw);
  // Detached: V8 has let go of the backing store (it is freed now, not at a collection).
  t.is(buf.byteLength, 0);
  t.is(raw.length, 0);
  t.true(process.memoryUsage().arrayBuffers <= before - 65536, 'the 64 KiB buffer is no longer counted');
  t.notThrows(() => freeEncoded(raw), 'a second call does nothing');
  // Bytes that are not an encodeHeapProfile result, such as a Buffer from Node's shared
  // pool (whose other Buffers would break), keep their memory.
  const pooled = Buffer.from('abc');
  const neighbour = Buffer.from('def');
  freeEncoded(pooled);
  t.is(pooled.toString(), 'abc');
  t.is(neighbour.toString(), 'def');
  const copy = new Uint8Array(encodeHeapProfile([], { view: 'heap', exeLabel: false }));
  freeEncoded(copy);
  t.true(copy.length > 0, 'a copy is the caller\'s own');
});
