// Runs a seeded corpus of damaged region files through readRegion and prints one JSON
// summary line. test/region.test.ts runs it in a child process, so that a crash (SIGSEGV,
// SIGBUS, abort) shows as a signal instead of taking the test runner down.
//
//   node test/helpers/hostileCorpus.ts DIR SEED SCALE
//
// Every case must either throw an Error whose message starts with the file path, or
// return a snapshot that is internally consistent (checkSnapshot). Anything else, or a
// read slower than SLOW_MS, is listed in `bad`.
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { native } from '../../src/native.ts';
import { bound } from './procs.ts';
import type { RegionSnapshot } from '../../src/region.ts';
import {
  FEATURE_PEAK,
  FEATURE_TIMELINE,
  FEATURE_SECTIONS,
  HDR,
  HEADER_BYTES,
  SECTION_NAMES,
  SLAB_ACTIVE,
  buildRegion,
  sampleSpec,
  sectionField,
  type RegionSpec,
} from './regionBuilder.ts';

// 1.5 s on an idle machine, stretched by how busy it is (test/helpers/procs.ts).
const SLOW_MS = bound(1500);

/** xorshift32: small, seedable, good enough to pick bytes and positions. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Returns a description of what is inconsistent in s, or '' if nothing is. */
export function checkSnapshot(s: RegionSnapshot): string {
  const st = s.stacks;
  const n = st.ids.length;
  if (st.depths.length !== n || st.flags.length !== n || st.frameStart.length !== n) return 'stack arrays differ in length';
  let frames = 0;
  for (let i = 0; i < n; i++) {
    if (i > 0 && st.ids[i]! <= st.ids[i - 1]!) return 'stack ids not ascending';
    if (st.frameStart[i] !== frames) return 'frameStart is not the running sum of depths';
    if (st.depths[i]! > s.header.maxDepth) return 'depth above maxDepth';
    frames += st.depths[i]!;
  }
  if (st.frames.length !== frames) return 'frames length is not the sum of depths';
  const c = s.counters;
  const m = c.ids.length;
  for (const col of [c.allocObjects, c.allocBytes, c.freeObjects, c.freeBytes, c.samples]) {
    if (col.length !== m) return 'counter columns differ in length';
  }
  const cap = Math.min(s.header.stacksUsed, s.header.stacks.capacity);
  for (let i = 0; i < m; i++) {
    if (i > 0 && c.ids[i]! <= c.ids[i - 1]!) return 'counter ids not ascending';
    if (c.ids[i]! === 0 || c.ids[i]! >= cap) return `counter id ${c.ids[i]} outside [1, ${cap})`;
    if (c.allocObjects[i]! === 0n && c.allocBytes[i]! === 0n && c.freeObjects[i]! === 0n &&
        c.freeBytes[i]! === 0n && c.samples[i]! === 0n) return 'all-zero counter row listed';
  }
  for (const col of [c.inuseObjects, c.inuseBytes, c.peakObjects, c.peakBytes]) {
    if (col.length !== m) return 'derived counter columns differ in length';
  }
  let inuse = 0n;
  for (let i = 0; i < m; i++) {
    const want = c.allocBytes[i]! > c.freeBytes[i]! ? c.allocBytes[i]! - c.freeBytes[i]! : 0n;
    if (c.inuseBytes[i] !== want) return `in use of stack ${c.ids[i]} is not alloc - free clamped`;
    inuse += want;
  }
  if (inuse < (1n << 64n) && s.inuseBytes !== inuse) return 'inuseBytes is not the sum over stacks';
  const peakBit = (s.header.features & FEATURE_PEAK) !== 0;
  if ((s.peak !== null) !== peakBit) return 'peak present without FEATURE_PEAK or missing with it';
  if (!peakBit && c.peakBytes.some((v) => v !== 0n)) return 'peak bytes without FEATURE_PEAK';
  const tl = s.timeline;
  const k = tl.index.length;
  for (const col of [tl.ns, tl.inuseBytes, tl.allocBytes, tl.rssBytes]) if (col.length !== k) return 'timeline columns differ in length';
  if (!(s.header.features & FEATURE_TIMELINE) && k) return 'timeline points without FEATURE_TIMELINE';
  if (k > s.header.timeline.capacity) return 'more timeline points than the ring holds';
  for (let i = 0; i < k; i++) {
    if (tl.ns[i] === 0n) return 'timeline point with ns 0';
    if (i > 0 && (tl.index[i]! <= tl.index[i - 1]! || tl.ns[i]! < tl.ns[i - 1]!)) return 'timeline points out of order';
  }
  for (const mod of s.modules) {
    if (mod.path.includes('\0')) return 'module path holds a NUL';
    if (mod.buildId.length > 64 || mod.buildId.length % 2) return 'bad build id';
  }
  if (s.malformed === 0 && s.firstMalformed !== '') return 'firstMalformed without malformed';
  if (s.malformed > 0 && s.firstMalformed === '') return 'malformed without a description';
  return '';
}

interface Summary {
  cases: number;
  threw: number;
  returned: number;
  malformedReturned: number;
  maxMs: number;
  codes: Record<string, number>;
  bad: string[];
}

/** The base region for corruption: a bit of everything, and real slab/shared content. */
export function corpusSpec(): RegionSpec {
  const spec = sampleSpec();
  spec.slabs!.push({
    state: SLAB_ACTIVE,
    entries: [1, 2, 3, 4].map((id) => ({ stackId: id, counters: { allocBytes: BigInt(id) * 10n, samples: 1n } })),
  });
  return spec;
}

/** The same from a writer with the peak and the timeline: peak rows of the latest and of
 * older peaks, and a ring that has wrapped. */
export function corpusFeatureSpec(): RegionSpec {
  const spec = corpusSpec();
  spec.features = FEATURE_PEAK | FEATURE_TIMELINE;
  spec.peak = { inuseBytes: 500n, allocBytes: 9000n, peakBytes: 1500n, peakNs: 99n, peakGen: 4n };
  spec.slabs!.forEach((sl, i) => sl.entries.forEach((e, j) => {
    e.peak = { gen: BigInt(4 - ((i + j) % 2)), bytes: BigInt(10 * (i + j)), objects: BigInt(i + j) << 16n };
  }));
  spec.shared!.forEach((e) => (e.peak = { gen: 4n, bytes: 33n, objects: 1n << 16n }));
  spec.timeline = {
    capacity: 8,
    points: Array.from({ length: 11 }, (_, n) => ({ n, ns: 1000n + BigInt(n), inuseBytes: BigInt(n), allocBytes: BigInt(n), rssBytes: 4096n })),
  };
  return spec;
}

function main(): void {
  const [dir, seedArg, scaleArg] = process.argv.slice(2);
  if (!dir) throw new Error('usage: hostileCorpus.ts DIR SEED SCALE');
  const rand = prng(Number(seedArg ?? 1));
  const scale = Number(scaleArg ?? 1);
  const sum: Summary = { cases: 0, threw: 0, returned: 0, malformedReturned: 0, maxMs: 0, codes: {}, bad: [] };

  const attempt = (path: string, what: string) => {
    sum.cases++;
    const t0 = performance.now();
    try {
      const s = native.readRegion(path);
      sum.returned++;
      if (s.malformed > 0) sum.malformedReturned++;
      const why = checkSnapshot(s);
      if (why && sum.bad.length < 20) sum.bad.push(`${what}: ${why}`);
    } catch (e) {
      sum.threw++;
      const code = (e as { code?: string }).code ?? 'none';
      sum.codes[code] = (sum.codes[code] ?? 0) + 1;
      if (!(e instanceof Error) || !e.message.startsWith(path + ': ') || code === 'none') {
        if (sum.bad.length < 20) sum.bad.push(`${what}: threw ${String(e)}`);
      }
    }
    const ms = performance.now() - t0;
    sum.maxMs = Math.max(sum.maxMs, ms);
    if (ms > SLOW_MS && sum.bad.length < 20) sum.bad.push(`${what}: took ${ms.toFixed(0)} ms`);
  };

  const path = join(dir, 'corpus.heaptap');
  // Each round runs on a region of a writer without features and on one with both.
  for (const base of [buildRegion(corpusSpec()).buf, buildRegion(corpusFeatureSpec()).buf]) {
    rounds(base, path, rand, scale, attempt);
  }
  process.stdout.write(JSON.stringify(sum) + '\n');
}

function rounds(base: Buffer, path: string, rand: () => number, scale: number, attempt: (path: string, what: string) => void): void {

  // 1. Single bit flips, in place: half in the header page, half anywhere.
  writeFileSync(path, base);
  const fd = openSync(path, 'r+');
  const one = Buffer.alloc(1);
  for (let i = 0; i < 3000 * scale; i++) {
    const pos = i % 2 === 0 ? rand() % 1744 : rand() % base.length;
    const bit = rand() % 8;
    one[0] = base[pos]! ^ (1 << bit);
    writeSync(fd, one, 0, 1, pos);
    attempt(path, `flip byte ${pos} bit ${bit}`);
    one[0] = base[pos]!;
    writeSync(fd, one, 0, 1, pos);
  }

  // 2. Hostile words written over header fields and table contents.
  const hostile32 = [0, 1, 2, 3, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 4096, 8191, 8192, base.length];
  const hostile64 = [0n, 1n, 7n, 4096n, 8192n, BigInt(base.length), BigInt(base.length) + 4096n, 1n << 32n,
    1n << 63n, (1n << 64n) - 4096n, (1n << 64n) - 1n];
  const word = Buffer.alloc(8);
  for (let i = 0; i < 2000 * scale; i++) {
    // a 4- or 8-byte aligned position, biased towards the header's fields
    const inHeader = rand() % 3 !== 0;
    const pos = inHeader ? (rand() % (1744 / 4)) * 4 : HEADER_BYTES + (rand() % ((base.length - HEADER_BYTES) / 4)) * 4;
    const wide = pos % 8 === 0 && rand() % 2 === 0;
    if (wide) word.writeBigUInt64LE(hostile64[rand() % hostile64.length]!);
    else word.writeUInt32LE(hostile32[rand() % hostile32.length]!);
    const len = wide ? 8 : 4;
    writeSync(fd, word, 0, len, pos);
    attempt(path, `word ${wide ? 64 : 32} at ${pos} = ${wide ? word.readBigUInt64LE() : word.readUInt32LE()}`);
    writeSync(fd, base, pos, len, pos);
  }
  closeSync(fd);

  // 3. Random files of random sizes.
  for (let i = 0; i < 200 * scale; i++) {
    const size = rand() % 3 === 0 ? rand() % 9000 : rand() % 48000;
    const buf = Buffer.alloc(size);
    for (let k = 0; k < size; k++) buf[k] = rand() & 0xff;
    writeFileSync(path, buf);
    attempt(path, `random file ${i} (${size} bytes)`);
  }

  // 4. A valid identity then random bytes; a valid header then random tables.
  for (let i = 0; i < 200 * scale; i++) {
    const buf = Buffer.from(base);
    const from = i % 2 === 0 ? HDR.headerBytes : HEADER_BYTES;
    for (let k = from; k < buf.length; k++) buf[k] = rand() & 0xff;
    if (i % 2 === 0) buf.writeUInt32LE(1, HDR.state); // get past "not ready"
    writeFileSync(path, buf);
    attempt(path, `${i % 2 === 0 ? 'identity' : 'header'} then random ${i}`);
  }

  // 5. A valid header with random section descriptors drawn from hostile values.
  const names = [...SECTION_NAMES, ...FEATURE_SECTIONS];
  for (let i = 0; i < 500 * scale; i++) {
    const buf = Buffer.from(base);
    const name = names[rand() % names.length]!;
    const field = (['offset', 'bytes', 'capacity', 'entryBytes'] as const)[rand() % 4]!;
    const at = sectionField(name, field);
    if (field === 'offset' || field === 'bytes') buf.writeBigUInt64LE(hostile64[rand() % hostile64.length]!, at);
    else buf.writeUInt32LE(hostile32[rand() % hostile32.length]!, at);
    writeFileSync(path, buf);
    attempt(path, `${name}.${field} hostile ${i}`);
  }

  // 6. Truncation at every page boundary and around it.
  for (let len = 0; len <= base.length; len += 512) {
    for (const d of [-1, 0, 1]) {
      const l = len + d;
      if (l < 0 || l > base.length) continue;
      writeFileSync(path, base.subarray(0, l));
      attempt(path, `truncated to ${l}`);
    }
  }
}

if (import.meta.main) main();
