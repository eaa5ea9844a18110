// Tests of src/region.ts: the typed wrapper and its helpers, and the reader's behaviour on
// hostile region files (a region is input from another container).
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { bound, killGroup, spawnGroup } from './helpers/procs.ts';

import {
  OBJ_ONE,
  constants,
  dropsByReason,
  isRegionError,
  listRegions,
  objectsToNumber,
  objectsToNumbers,
  readRegion,
  readRegionAsync,
  stackFrames,
  writeControl,
  type RegionSnapshot,
} from '../src/region.ts';
import {
  FEATURE_PEAK,
  FEATURE_SECTIONS,
  FEATURE_TIMELINE,
  HDR,
  HEADER_BYTES,
  MOD,
  SECTION_NAMES,
  SIZES,
  SLAB_ACTIVE,
  STACK_READY,
  STACK_SYNTHETIC,
  STK,
  buildRegion,
  sampleSpec,
  sectionField,
  tempDir,
  writeRegion,
  type BuiltRegion,
  type RegionSpec,
} from './helpers/regionBuilder.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const { dir, cleanup } = tempDir();
test.after.always(cleanup);

let n = 0;
function region(spec: RegionSpec = sampleSpec(), edit?: (b: BuiltRegion) => void): { path: string; built: BuiltRegion } {
  const built = buildRegion(spec);
  edit?.(built);
  return { path: writeRegion(dir, `h${n++}.heaptap`, built.buf), built };
}

/** Asserts that reading path throws a region error naming path, with code and message. */
function rejects(t: import('ava').ExecutionContext, path: string, code: string, message?: RegExp) {
  const e = t.throws(() => readRegion(path));
  t.true(isRegionError(e), String(e));
  t.true(e.message.startsWith(path + ': '), e.message);
  t.is((e as { code?: string }).code, code, e.message);
  if (message) t.regex(e.message, message);
}

/** Asserts that reading path gives a snapshot that reports skipped items. */
function malformed(t: import('ava').ExecutionContext, path: string, message: RegExp): RegionSnapshot {
  const s = readRegion(path);
  t.true(s.malformed > 0, 'expected malformed > 0');
  t.regex(s.firstMalformed, message);
  return s;
}

// ---- the wrapper ---------------------------------------------------------------------

test('listRegions returns the *.heaptap regular files of a directory, sorted, as full paths', async (t) => {
  const d = join(dir, 'list');
  mkdirSync(d);
  for (const name of ['b.heaptap', 'a.heaptap', 'c.txt', '10-x.heaptap']) writeFileSync(join(d, name), '');
  mkdirSync(join(d, 'dir.heaptap'));
  symlinkSync(join(d, 'a.heaptap'), join(d, 'link.heaptap'));
  t.deepEqual(await listRegions(d), [join(d, '10-x.heaptap'), join(d, 'a.heaptap'), join(d, 'b.heaptap')]);
  t.deepEqual(await listRegions(join(dir, 'does-not-exist')), []);
  await t.throwsAsync(listRegions(join(d, 'c.txt')), { code: 'ENOTDIR' });
});

test('objectsToNumber converts fixed point to objects, keeping the fraction', (t) => {
  t.is(OBJ_ONE, 65536);
  t.is(objectsToNumber(0n), 0);
  t.is(objectsToNumber(65536n), 1);
  t.is(objectsToNumber(98304n), 1.5);
  t.is(objectsToNumber(1n), 1 / 65536);
  // whole part beyond 2^32 objects stays exact
  t.is(objectsToNumber((1n << 50n) * 65536n + 16384n), 2 ** 50 + 0.25);
  t.deepEqual([...objectsToNumbers(new BigUint64Array([65536n, 32768n]))], [1, 0.5]);
});

test('stackFrames and dropsByReason read a snapshot by name', (t) => {
  const { path } = region();
  const s = readRegion(path);
  t.deepEqual([...stackFrames(s.stacks, 1)], [0x401000n, 0x402000n, 0x403000n]);
  t.deepEqual([...stackFrames(s.stacks, 0)], []);
  const d = dropsByReason(s.header);
  t.is(d.stacks_full, 1n);
  t.is(d.paused, 11n);
  t.is(Object.keys(d).length, constants.DROP_COUNT);
});

test('readRegion and readRegionAsync default sinceStack to 0 and writeControl round-trips', async (t) => {
  const { path } = region();
  t.deepEqual([...readRegion(path).stacks.ids], [1, 2, 3, 4]);
  t.deepEqual([...(await readRegionAsync(path)).stacks.ids], [1, 2, 3, 4]);
  writeControl(path, { paused: true, rate: 1024 });
  t.deepEqual(readRegion(path).control, { paused: 1, rate: 1024n, seq: 1n });
});

// ---- what is not a region file -------------------------------------------------------

test('a missing file, a directory, a symlink, a FIFO and /dev/null are refused by name', (t) => {
  rejects(t, join(dir, 'nope.heaptap'), 'ENOENT');
  const d = join(dir, 'adir.heaptap');
  mkdirSync(d);
  rejects(t, d, 'EISDIR', /directory/);
  const { path } = region();
  const link = join(dir, 'link.heaptap');
  symlinkSync(path, link);
  rejects(t, link, 'ELOOP', /symbolic link/);
  const fifo = join(dir, 'fifo.heaptap');
  execFileSync('mkfifo', [fifo]);
  rejects(t, fifo, 'EINVAL', /not a regular file/); // and does not block on open
  rejects(t, '/dev/null', 'EINVAL', /not a regular file/);
});

test('an empty file, a short file and a file of another kind are not regions', (t) => {
  rejects(t, writeRegion(dir, 'empty.heaptap', Buffer.alloc(0)), 'ERR_HEAPTAP_FORMAT', /0 bytes, smaller than a region header/);
  rejects(t, writeRegion(dir, 'short.heaptap', Buffer.alloc(HEADER_BYTES - 1)), 'ERR_HEAPTAP_FORMAT', /smaller/);
  rejects(t, writeRegion(dir, 'zeros.heaptap', Buffer.alloc(HEADER_BYTES)), 'ERR_HEAPTAP_FORMAT', /not a heaptap region/);
});

test('a newer layout version is refused with a message that says so', (t) => {
  const { path } = region(sampleSpec(), (b) => b.buf.writeUInt32LE(2, HDR.version));
  rejects(t, path, 'ERR_HEAPTAP_VERSION', /newer layout version 2; this reader knows version 1/);
  const old = region(sampleSpec(), (b) => b.buf.writeUInt32LE(0, HDR.version));
  rejects(t, old.path, 'ERR_HEAPTAP_VERSION', /unsupported layout version 0/);
});

test('a region truncated at any length is refused, never read past its end', (t) => {
  const { built } = region();
  const full = built.buf;
  const lengths = new Set<number>([0, 1, 8, 4095, 4096, 8191, 8192, 8193, full.length - 1]);
  for (const name of SECTION_NAMES) {
    const s = built.sections[name];
    for (const l of [s.offset - 1, s.offset, s.offset + 1, s.offset + s.bytes - 1]) lengths.add(l);
  }
  for (const l of lengths) {
    if (l < 0 || l >= full.length) continue;
    const path = writeRegion(dir, `trunc-${l}.heaptap`, full.subarray(0, l));
    rejects(t, path, 'ERR_HEAPTAP_FORMAT', l < HEADER_BYTES ? /smaller than a region header/ : /header says the file is \d+ bytes but it is only/);
  }
});

test('a file larger than file_bytes says is read (the writer may grow it)', (t) => {
  const { built } = region();
  const path = writeRegion(dir, 'grown.heaptap', Buffer.concat([built.buf, Buffer.alloc(8192)]));
  t.deepEqual([...readRegion(path).counters.ids], [1, 2, 3, 4]);
});

// ---- hostile header geometry -----------------------------------------------------------

test('every section offset, size and capacity set to hostile values is refused naming the section', (t) => {
  const { built } = region();
  const size = BigInt(built.buf.length);
  for (const name of SECTION_NAMES) {
    const s = built.sections[name];
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ['unaligned', (b) => b.writeBigUInt64LE(BigInt(s.offset + 8), sectionField(name, 'offset')), /not 4096-byte aligned/],
      ['inside the header', (b) => b.writeBigUInt64LE(4096n, sectionField(name, 'offset')), /inside the header/],
      ['zero offset', (b) => b.writeBigUInt64LE(0n, sectionField(name, 'offset')), /inside the header/],
      ['huge offset', (b) => b.writeBigUInt64LE((1n << 64n) - 4096n, sectionField(name, 'offset')), /extends past end of file/],
      ['offset at EOF', (b) => b.writeBigUInt64LE(size, sectionField(name, 'offset')), /extends past end of file/],
      ['overflowing size', (b) => b.writeBigUInt64LE((1n << 64n) - 1n, sectionField(name, 'bytes')), /extends past end of file/],
      ['size past EOF', (b) => b.writeBigUInt64LE(size, sectionField(name, 'bytes')), /extends past end of file/],
      ['huge capacity', (b) => b.writeUInt32LE(0xffffffff, sectionField(name, 'capacity')), /exceeds its \d+ bytes/],
      ['wrong entry size', (b) => b.writeUInt32LE(s.entryBytes + 1, sectionField(name, 'entryBytes')), /entry_bytes/],
    ];
    for (const [what, edit, re] of cases) {
      const { path } = region(sampleSpec(), (b) => edit(b.buf));
      const e = t.throws(() => readRegion(path), undefined, `${name}: ${what}`);
      t.is((e as { code?: string }).code, 'ERR_HEAPTAP_FORMAT', `${name} ${what}: ${e.message}`);
      t.true(e.message.startsWith(path + ': '));
      t.regex(e.message, re, `${name} ${what}`);
      const label = name === 'stackIndex' ? 'stack_index' : name;
      if (what !== 'huge capacity' || name !== 'paths') t.true(e.message.includes(label), `${name} ${what}: ${e.message}`);
    }
  }
});

/** sampleSpec from a writer with both features, a timeline and peak rows. */
function featureSpec(): RegionSpec {
  const spec = sampleSpec();
  spec.features = FEATURE_PEAK | FEATURE_TIMELINE;
  spec.peak = { peakBytes: 900n, peakGen: 3n, peakNs: 1n, inuseBytes: -5n, allocBytes: 10n };
  spec.slabs![0]!.entries[0]!.peak = { gen: 3n, bytes: 250n, objects: 2n * BigInt(OBJ_ONE) };
  spec.timeline = { capacity: 16, points: [0, 1, 2].map((n) => ({ n, ns: 10n + BigInt(n), inuseBytes: 1n, allocBytes: 2n, rssBytes: 3n })) };
  return spec;
}

test('the sections a feature adds get the same hostile geometry checks, named', (t) => {
  const { built } = region(featureSpec());
  const size = BigInt(built.buf.length);
  for (const name of FEATURE_SECTIONS) {
    const s = built.sections[name];
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ['unaligned', (b) => b.writeBigUInt64LE(BigInt(s.offset + 8), sectionField(name, 'offset')), /not 4096-byte aligned/],
      ['zero offset', (b) => b.writeBigUInt64LE(0n, sectionField(name, 'offset')), /inside the header/],
      ['huge offset', (b) => b.writeBigUInt64LE((1n << 64n) - 4096n, sectionField(name, 'offset')), /extends past end of file/],
      ['overflowing size', (b) => b.writeBigUInt64LE((1n << 64n) - 1n, sectionField(name, 'bytes')), /extends past end of file/],
      ['size past EOF', (b) => b.writeBigUInt64LE(size, sectionField(name, 'bytes')), /extends past end of file/],
      ['huge capacity', (b) => b.writeUInt32LE(0xffffffff, sectionField(name, 'capacity')), /exceeds its \d+ bytes/],
      ['wrong entry size', (b) => b.writeUInt32LE(s.entryBytes + 8, sectionField(name, 'entryBytes')), /entry_bytes/],
      ['onto the slabs', (b) => b.writeBigUInt64LE(BigInt(built.sections.slabs.offset), sectionField(name, 'offset')), /overlaps/],
    ];
    for (const [what, edit, re] of cases) {
      const { path } = region(featureSpec(), (b) => edit(b.buf));
      const e = t.throws(() => readRegion(path), undefined, `${name}: ${what}`);
      t.is((e as { code?: string }).code, 'ERR_HEAPTAP_FORMAT', `${name} ${what}: ${e.message}`);
      t.regex(e.message, re, `${name} ${what}`);
      t.true(e.message.includes(name === 'sharedPeak' ? 'shared_peak' : 'timeline'), `${name} ${what}: ${e.message}`);
    }
  }
});

test('a feature bit without what it needs is refused: old-size slabs, a short shared peak table, an empty timeline', (t) => {
  const cases: [string, (b: BuiltRegion) => void, RegExp][] = [
    ['PEAK on slabs without peak rows', (b) => b.buf.writeUInt32LE(SIZES.slabHeader + b.slabEntries * SIZES.slabEntry, sectionField('slabs', 'entryBytes')),
      /slabs entry_bytes \d+ is smaller than a slab of 16 entries/],
    ['shared_peak shorter than shared', (b) => b.buf.writeUInt32LE(b.sections.shared.capacity - 1, sectionField('sharedPeak', 'capacity')),
      /shared_peak capacity 63 is smaller than the shared table's 64/],
    ['timeline capacity 0', (b) => b.buf.writeUInt32LE(0, sectionField('timeline', 'capacity')), /timeline capacity is 0/],
  ];
  for (const [what, edit, re] of cases) rejects(t, region(featureSpec(), edit).path, 'ERR_HEAPTAP_FORMAT', re);
  // The same region without the bits reads: what they cover is not looked at.
  const off = region(featureSpec(), (b) => {
    b.buf.writeUInt32LE(0, HDR.features);
    b.buf.writeUInt32LE(0, sectionField('timeline', 'capacity'));
    b.buf.writeBigUInt64LE(0n, sectionField('sharedPeak', 'offset'));
  });
  const s = readRegion(off.path);
  t.is(s.peak, null);
  t.deepEqual(s.counters.ids, readRegion(region(featureSpec()).path).counters.ids);
});

test('hostile peak words and rows saturate and clamp; a huge timeline_next reads at most one ring', (t) => {
  const max = (1n << 63n) - 1n;
  const spec = featureSpec();
  spec.peak = { peakBytes: (1n << 64n) - 1n, peakGen: (1n << 64n) - 1n, peakNs: (1n << 64n) - 1n, inuseBytes: -(1n << 63n) };
  spec.slabs![0]!.entries[0]!.peak = { gen: (1n << 64n) - 1n, bytes: max, objects: -max };
  spec.slabs![1]!.entries[0]!.peak = { gen: (1n << 64n) - 1n, bytes: max, objects: -max };
  spec.timeline = { capacity: 16, next: (1n << 64n) - 1n, points: [] };
  const { path, built } = region(spec);
  const s = readRegion(path);
  t.is(s.malformed, 0, s.firstMalformed);
  const i = [...s.counters.ids].indexOf(2);
  t.is(s.counters.peakBytes[i], BigInt(max)); // two rows of 2^63 - 1 saturate, not wrap
  t.is(s.counters.peakObjects[i], 0n); // negative: clamped
  t.deepEqual(new Map([...s.counters.ids].map((id, k) => [id, { bytes: s.counters.peakBytes[k]!, objects: s.counters.peakObjects[k]! }])),
    new Map([...built.expectedPeak].map(([id, p]) => [id, id === 2 ? { bytes: BigInt(max), objects: 0n } : p])));
  t.is(s.header.inuseBytes, -(1n << 63n));
  t.is(s.peak!.bytes, (1n << 64n) - 1n);
  // the ring's 16 slots hold zeros: nothing to take, and next stays in the window
  t.is(s.timeline.index.length, 0);
  t.true(s.timeline.next >= (1n << 64n) - 1n - 16n);
});

test('overlapping sections are refused naming both', (t) => {
  const { built } = region();
  const { path } = region(sampleSpec(), (b) =>
    b.buf.writeBigUInt64LE(BigInt(built.sections.stacks.offset), sectionField('frames', 'offset')));
  rejects(t, path, 'ERR_HEAPTAP_FORMAT', /stacks section \[\d+, \d+\) overlaps frames section/);
});

test('inconsistent header words are refused', (t) => {
  const cases: [string, (b: Buffer) => void, RegExp][] = [
    ['magic', (b) => b.writeBigUInt64LE(0x1234n, HDR.magic), /not a heaptap region/],
    ['header_bytes', (b) => b.writeUInt32LE(4096, HDR.headerBytes), /header_bytes is 4096/],
    ['file_bytes too big', (b) => b.writeBigUInt64LE(BigInt(b.length + 1), HDR.fileBytes), /header says the file is/],
    ['file_bytes tiny', (b) => b.writeBigUInt64LE(100n, HDR.fileBytes), /smaller than the header/],
    ['arch', (b) => b.writeUInt32LE(3, HDR.arch), /ELF machine 3/],
    ['max_depth', (b) => b.writeUInt32LE(5000, HDR.maxDepth), /max_depth 5000/],
    ['slab_entries 0', (b) => b.writeUInt32LE(0, HDR.slabEntries), /slab_entries 0 is not a power of two/],
    ['slab_entries 12', (b) => b.writeUInt32LE(12, HDR.slabEntries), /slab_entries 12/],
    ['slab_entries huge', (b) => b.writeUInt32LE(1 << 30, HDR.slabEntries), /smaller than a slab of/],
    ['stack_index not pow2', (b) => b.writeUInt32LE(48, sectionField('stackIndex', 'capacity')), /stack_index capacity 48/],
    ['stacks capacity 1', (b) => b.writeUInt32LE(1, sectionField('stacks', 'capacity')), /reserved ids/],
    ['slab size unaligned', (b) => {
      b.writeUInt32LE(SIZES.slabHeader + 16 * SIZES.slabEntry + 4, sectionField('slabs', 'entryBytes'));
      b.writeUInt32LE(1, sectionField('slabs', 'capacity'));
    }, /not a multiple of 8/],
  ];
  for (const [what, edit, re] of cases) {
    const { path } = region(sampleSpec(), (b) => edit(b.buf));
    const e = t.throws(() => readRegion(path), undefined, what);
    t.true(e.message.startsWith(path + ': '), what);
    t.regex(e.message, re, `${what}: ${e.message}`);
  }
});

// ---- hostile live indices ----------------------------------------------------------------

function stackAt(b: BuiltRegion, id: number): number {
  return b.sections.stacks.offset + id * SIZES.stack;
}

test('stack records with frames outside the pool or too deep are skipped and counted', (t) => {
  const edits: [string, (b: BuiltRegion) => void, RegExp][] = [
    ['frame_off huge', (b) => b.buf.writeBigUInt64LE((1n << 64n) - 1n, stackAt(b, 2) + STK.frameOff), /outside the frame pool/],
    ['frame_off at the end', (b) => b.buf.writeBigUInt64LE(BigInt(b.sections.frames.capacity - 1), stackAt(b, 2) + STK.frameOff), /outside the frame pool/],
    ['depth huge', (b) => b.buf.writeUInt32LE(0xffffffff, stackAt(b, 2) + STK.depth), /depth 4294967295 > max_depth/],
    ['depth over max_depth', (b) => b.buf.writeUInt32LE(65, stackAt(b, 2) + STK.depth), /depth 65 > max_depth 64/],
    ['synthetic with frames', (b) => b.buf.writeUInt32LE(2, stackAt(b, 1) + STK.depth), /synthetic with depth 2/],
  ];
  for (const [what, edit, re] of edits) {
    const { path } = region(sampleSpec(), edit);
    const s = malformed(t, path, re);
    t.false([...s.stacks.ids].includes(what === 'synthetic with frames' ? 1 : 2), what);
  }
});

test('stack records that share frames cannot make the reader copy more than the pool', (t) => {
  const spec: RegionSpec = { capacities: { frames: 8 }, maxDepth: 8, stacks: [] };
  for (let i = 0; i < 20; i++) spec.stacks!.push({ frames: i === 0 ? [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n] : [] });
  const { path } = region(spec, (b) => {
    for (let id = 3; id < 22; id++) {
      b.buf.writeBigUInt64LE(0n, stackAt(b, id) + STK.frameOff);
      b.buf.writeUInt32LE(8, stackAt(b, id) + STK.depth);
    }
  });
  const s = malformed(t, path, /more frames than the pool holds/);
  t.true(s.stacks.frames.length <= 8 * 1024); // frames capacity is 512 at minimum page size
});

test('stacks_used and modules_used beyond capacity are clamped', (t) => {
  const { path } = region(sampleSpec(), (b) => {
    b.buf.writeUInt32LE(0xffffffff, HDR.stacksUsed);
    b.buf.writeUInt32LE(0xffffffff, HDR.modulesUsed);
  });
  const s = readRegion(path);
  t.deepEqual([...s.stacks.ids], [1, 2, 3, 4]);
  t.is(s.stacks.next, 6); // the first record not READY
  t.is(s.modules.length, 2);
  t.is(s.header.stacksUsed, 0xffffffff); // reported raw
});

test('slab entries naming stacks out of range or not ready are skipped and counted', (t) => {
  const cases: [string, number, RegExp][] = [
    ['beyond capacity', 64, /stack id 64 >= stacks capacity 64/],
    ['huge', 0xffffffff, /stack id 4294967295 >= stacks capacity/],
    ['not handed out', 40, /counts for stack id 40 >= stacks_used 6/],
    ['not ready', 5, /stack id 5 whose record is a duplicate/],
  ];
  for (const [what, id, re] of cases) {
    const spec = sampleSpec();
    spec.slabs!.push({ state: SLAB_ACTIVE, entries: [{ stackId: id === 0xffffffff ? 9 : id, counters: { allocBytes: 1n } }] });
    const { path } = region(spec, (b) => {
      if (id !== 0xffffffff) return;
      // rewrite the entry's id in place (the builder cannot hash 2^32 - 1 into a slot it reads back)
      const slab = b.sections.slabs.offset + 3 * b.sections.slabs.entryBytes + SIZES.slabHeader;
      for (let j = 0; j < b.slabEntries; j++) {
        const e = slab + j * SIZES.slabEntry;
        if (b.buf.readUInt32LE(e) === 9) b.buf.writeUInt32LE(id, e);
      }
    });
    const s = malformed(t, path, re);
    t.deepEqual([...s.counters.ids], [1, 2, 3, 4], what);
  }
});

test('a slab in an unknown state and counts in shared row 0 are skipped and counted', (t) => {
  const spec = sampleSpec();
  spec.slabs!.push({ state: 9, entries: [{ stackId: 2, counters: { allocBytes: 1n } }] });
  malformed(t, region(spec).path, /slab 3 has unknown state 9/);
  const spec2 = sampleSpec();
  spec2.shared!.push({ stackId: 0, counters: { allocBytes: 1n } });
  malformed(t, region(spec2).path, /shared table row 0/);
});

test('counters that would overflow 64 bits saturate instead of wrapping', (t) => {
  const max = (1n << 64n) - 1n;
  const { path } = region({
    stacks: [{ frames: [1n] }],
    slabs: [
      { state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocBytes: max } }] },
      { state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocBytes: max } }] },
    ],
    shared: [{ stackId: 2, counters: { allocBytes: 5n } }],
  });
  t.is(readRegion(path).counters.allocBytes[0], max);
});

function moduleAt(b: BuiltRegion, i: number): number {
  return b.sections.modules.offset + i * SIZES.module;
}

test('modules with a path outside the pool, an unterminated path or a long build id are skipped', (t) => {
  const cases: [string, (b: BuiltRegion) => void, RegExp][] = [
    ['path_off huge', (b) => b.buf.writeUInt32LE(0xffffffff, moduleAt(b, 0) + MOD.pathOff), /outside the path pool/],
    ['path_len huge', (b) => b.buf.writeUInt32LE(0xffffffff, moduleAt(b, 0) + MOD.pathLen), /outside the path pool/],
    ['path to the last byte', (b) => {
      b.buf.writeUInt32LE(b.sections.paths.bytes - 1, moduleAt(b, 0) + MOD.pathOff);
      b.buf.writeUInt32LE(1, moduleAt(b, 0) + MOD.pathLen);
    }, /outside the path pool/],
    ['unterminated', (b) => { b.buf[b.sections.paths.offset + '/usr/bin/example'.length] = 0x41; }, /not a NUL-terminated string/],
    ['embedded NUL', (b) => { b.buf[b.sections.paths.offset + 3] = 0; }, /not a NUL-terminated string/],
    ['build id too long', (b) => b.buf.writeUInt32LE(33, moduleAt(b, 0) + MOD.buildIdLen), /build_id_len 33 > 32/],
    ['unknown state', (b) => b.buf.writeUInt32LE(7, moduleAt(b, 0) + MOD.state), /module 0 has unknown state 7/],
  ];
  for (const [what, edit, re] of cases) {
    const s = malformed(t, region(sampleSpec(), edit).path, re);
    t.deepEqual(s.modules.map((m) => m.index), [1], what);
  }
});

test('a path pool filled without NUL bytes is caught', (t) => {
  const { path } = region(sampleSpec(), (b) => b.buf.fill(0x41, b.sections.paths.offset, b.sections.paths.offset + b.sections.paths.bytes));
  const s = malformed(t, path, /not a NUL-terminated string/);
  t.is(s.modules.length, 0);
  t.is(s.malformed, 2);
});

test('the overflow stack is listed as synthetic with no frames', (t) => {
  const s = readRegion(region().path);
  t.is(s.stacks.ids[0], 1);
  t.is(s.stacks.depths[0], 0);
  t.is(s.stacks.flags[0], STACK_READY | STACK_SYNTHETIC);
});

// ---- the seeded corpus, in a child process ----------------------------------------------

function run(cmd: string, args: string[]): Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnGroup(null, cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => killGroup(child), bound(120_000));
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

test('thousands of seeded bit flips, hostile words, random files and truncations never crash the reader', async (t) => {
  const d = join(dir, 'corpus');
  mkdirSync(d);
  const t0 = Date.now();
  const r = await run(process.execPath, [join(root, 'test/helpers/hostileCorpus.ts'), d, '20261122', '2']);
  t.is(r.signal, null, `corpus runner died with ${r.signal}: ${r.stderr}`);
  t.is(r.status, 0, r.stderr);
  const sum = JSON.parse(r.stdout.trim()) as { cases: number; threw: number; returned: number; malformedReturned: number; maxMs: number; bad: string[]; codes: Record<string, number> };
  t.deepEqual(sum.bad, []);
  t.true(sum.cases > 10_000, `${sum.cases} cases`);
  t.true(sum.threw > 1000 && sum.returned > 1000 && sum.malformedReturned > 10, JSON.stringify(sum));
  t.log(`${sum.cases} cases in ${Date.now() - t0} ms: ${sum.threw} refused ${JSON.stringify(sum.codes)}, ` +
    `${sum.returned} read (${sum.malformedReturned} with malformed items), slowest ${sum.maxMs.toFixed(1)} ms`);
});
