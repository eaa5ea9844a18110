// Tests of the native addon (src/native.ts loads it): the layout it was compiled against,
// exact sums from synthetic regions, stack/module/header decoding, the control area,
// liveness, and consistent snapshots against a concurrent writer (test/fixtures/region_mutator.c).
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { killGroup, spawnGroup, within } from './helpers/procs.ts';

import { native } from '../src/native.ts';
import type { RegionSnapshot } from '../src/region.ts';
import {
  CTL,
  CONTROL_OFFSET,
  HDR,
  MOD,
  OBJ_ONE,
  SIZES,
  SLAB_ACTIVE,
  SLAB_FOLDING,
  SLAB_RETIRED,
  STACK_DUPLICATE,
  STACK_READY,
  STACK_SYNTHETIC,
  STACK_TRUNCATED,
  STATE_EXITED,
  FEATURE_PEAK,
  FEATURE_TIMELINE,
  buildRegion,
  sampleSpec,
  tempDir,
  writeRegion,
  type Counters,
  type RegionSpec,
} from './helpers/regionBuilder.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mutator = join(root, 'test/fixtures/build/region_mutator');

const { dir, cleanup } = tempDir();
test.after.always(cleanup);

test.before(() => {
  execFileSync('make', ['-s', '-C', join(root, 'test/fixtures'), 'build/region_mutator'], { stdio: 'inherit' });
});

function countersOf(s: RegionSnapshot): Map<number, Counters> {
  const c = s.counters;
  const m = new Map<number, Counters>();
  c.ids.forEach((id, i) =>
    m.set(id, {
      allocObjects: c.allocObjects[i]!,
      allocBytes: c.allocBytes[i]!,
      freeObjects: c.freeObjects[i]!,
      freeBytes: c.freeBytes[i]!,
      samples: c.samples[i]!,
    }),
  );
  return m;
}

let seq = 0;
function fresh(spec = sampleSpec()) {
  const built = buildRegion(spec);
  const path = writeRegion(dir, `r${seq++}.heaptap`, built.buf);
  return { ...built, path };
}

test('the builder and the addon agree on every offset and size of the layout', (t) => {
  const l = native.layout;
  t.deepEqual(l.sizes, SIZES);
  for (const [k, off] of Object.entries(HDR)) t.is(l.header[k], off, `header.${k}`);
  for (const [k, off] of Object.entries(MOD)) t.is(l.module[k], off, `module.${k}`);
  t.deepEqual(l.control, CTL);
});

test('constants name the drop reasons in HT_DROP_* order and give the fixed-point unit', (t) => {
  const c = native.constants;
  t.is(c.OBJ_ONE, 65536);
  t.is(c.LAYOUT_VERSION, 1);
  t.deepEqual(c.dropReasons, [
    'stacks_full', 'frames_full', 'slab_full', 'no_slab', 'live_full', 'recursion',
    'truncated', 'bootstrap', 'modules_full', 'reserve_failed', 'paused', 'busy',
  ]);
  t.is(c.dropReasons.length, c.DROP_COUNT);
  t.deepEqual(c.stateNames, ['init', 'running', 'exited']);
  t.deepEqual(c.moduleStateNames, ['empty', 'loaded', 'unloaded']);
  t.true(Object.isFrozen(c));
});

test('sums active and retired slabs plus the shared table, and ignores free slabs', (t) => {
  const r = fresh();
  const s = native.readRegion(r.path);
  t.is(s.malformed, 0, s.firstMalformed);
  t.is(s.retries, 0);
  t.deepEqual(countersOf(s), r.expected);
  // stack 2: active 3 + retired 1 + shared 10 objects; the free slab's 999 are not counted
  t.deepEqual(countersOf(s).get(2), {
    allocObjects: 14n * OBJ_ONE,
    allocBytes: 1400n,
    freeObjects: OBJ_ONE,
    freeBytes: 100n,
    samples: 14n,
  });
  t.deepEqual([...s.counters.ids], [1, 2, 3, 4]);
});

test('a slab in state FOLDING is not counted', (t) => {
  const spec = sampleSpec();
  spec.slabs!.push({ state: SLAB_FOLDING, entries: [{ stackId: 3, counters: { allocBytes: 5n } }] });
  const r = fresh(spec);
  const s = native.readRegion(r.path);
  t.deepEqual(countersOf(s), r.expected);
});

test('counters are raw: fractional fixed-point objects are passed through unchanged', (t) => {
  const r = fresh({
    stacks: [{ frames: [1n] }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocObjects: 98305n, allocBytes: 3n } }] }],
  });
  const s = native.readRegion(r.path);
  t.is(s.counters.allocObjects[0], 98305n); // 1.5 objects
});

test('stacks come with their frames, flags and the synthetic overflow stack; duplicates are left out', (t) => {
  const r = fresh();
  const s = native.readRegion(r.path);
  const st = s.stacks;
  t.deepEqual([...st.ids], [1, 2, 3, 4]);
  t.deepEqual([...st.depths], [0, 3, 1, 2]);
  t.deepEqual([...st.flags], [
    STACK_READY | STACK_SYNTHETIC,
    STACK_READY,
    STACK_READY | STACK_TRUNCATED,
    STACK_READY,
  ]);
  t.deepEqual([...st.frameStart], [0, 0, 3, 4]);
  t.deepEqual([...st.frames], [0x401000n, 0x402000n, 0x403000n, 0x401100n, 0x7f0000001000n, 0x401234n]);
  t.is(st.next, 6); // stacks_used: ids 0..5, id 5 is the duplicate
});

test('sinceStack returns only newer stacks, and next stops at a record that is not ready yet', (t) => {
  const spec = sampleSpec();
  spec.stacks!.push({ frames: [0x9n], flags: 0 }, { frames: [0xan] });
  const r = fresh(spec);
  const s = native.readRegion(r.path, 3);
  t.deepEqual([...s.stacks.ids], [3, 4, 7]);
  t.is(s.stacks.next, 6);
  t.deepEqual([...native.readRegion(r.path, 8).stacks.ids], []);
  t.is(native.readRegion(r.path, 8).stacks.next, 8);
  t.is(native.readRegion(r.path, 100).stacks.next, 100);
});

test('modules: path, state, addresses and build id as lowercase hex', (t) => {
  const r = fresh();
  const s = native.readRegion(r.path);
  t.is(s.modules.length, 2);
  t.deepEqual(s.modules[0], {
    index: 0,
    state: 1,
    flags: 1,
    path: '/usr/bin/example',
    loadBias: 0n,
    start: 0x401000n,
    limit: 0x480000n,
    fileOffset: 0x1000n,
    loadNs: 1_700_000_000_500_000_000n,
    unloadNs: 0n,
    buildId: 'abcdef0123456789000102030405060708090a0b',
  });
  t.is(s.modules[1]!.path, '/usr/lib/x86_64-linux-gnu/libc.so.6');
  t.is(s.modules[1]!.state, 2);
  t.is(s.modules[1]!.unloadNs, 1_700_000_002_000_000_000n);
  t.is(s.modules[1]!.buildId, '');
});

test('a module entry handed out but not yet published is skipped silently', (t) => {
  const r = fresh();
  // modules_used says 3, entry 2 is still EMPTY
  r.buf.writeUInt32LE(3, HDR.modulesUsed);
  writeFileSync(r.path, r.buf);
  const s = native.readRegion(r.path);
  t.is(s.modules.length, 2);
  t.is(s.malformed, 0);
});

test('header fields, strings and drops are decoded', (t) => {
  const r = fresh();
  const s = native.readRegion(r.path);
  const h = s.header;
  t.is(h.magic, 0x0050415450414548n);
  t.is(h.version, 1);
  t.is(h.headerBytes, 8192);
  t.is(h.fileBytes, r.buf.length);
  t.is(h.arch, native.constants.HOST_ARCH);
  t.deepEqual(h.stacks, { offset: r.sections.stacks.offset, bytes: 4096, capacity: 64, entryBytes: 24 });
  t.deepEqual(h.slabs, r.sections.slabs);
  t.is(h.slabEntries, 16);
  t.is(h.maxDepth, 64);
  t.is(h.pid, 4242);
  t.is(h.ppid, 1);
  t.is(h.startNs, 1_700_000_000_000_000_000n);
  t.is(h.procStartTicks, 12345n);
  t.is(h.sampleRate, 524288n);
  t.is(h.seed, 0xfeedfacecafebeefn);
  t.is(h.unwinder, 1);
  t.is(h.exe, '/usr/bin/example');
  t.is(h.cmdline, 'example --port 8080');
  t.is(h.service, 'checkout');
  t.is(h.state, 1);
  t.is(h.stacksUsed, 6);
  t.is(h.modulesUsed, 2);
  t.is(h.framesUsed, 9n);
  t.is(h.pathsUsed, BigInt('/usr/bin/example'.length + 1 + '/usr/lib/x86_64-linux-gnu/libc.so.6'.length + 1));
  t.true(h.drops instanceof BigUint64Array);
  t.deepEqual([...h.drops], [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 0n, 0n, 0n, 0n, 0n]);
});

test('header strings that fill their field without a NUL are cut one byte short', (t) => {
  const r = fresh();
  r.buf.fill(0x41, HDR.exe, HDR.exe + 512);
  r.buf.fill(0x42, HDR.service, HDR.service + 128);
  writeFileSync(r.path, r.buf);
  const h = native.readRegion(r.path).header;
  t.is(h.exe, 'A'.repeat(511));
  t.is(h.service, 'B'.repeat(127));
});

test('writeControl stores paused and rate in the control page and bumps its seq', (t) => {
  const r = fresh();
  native.writeControl(r.path, { paused: true, rate: 4096 });
  let s = native.readRegion(r.path);
  t.deepEqual(s.control, { paused: 1, rate: 4096n, seq: 1n });
  native.writeControl(r.path, { rate: 1n << 40n });
  s = native.readRegion(r.path);
  t.deepEqual(s.control, { paused: 1, rate: 1n << 40n, seq: 2n });
  native.writeControl(r.path, { paused: false });
  // read back the raw bytes as the preload would see them
  const fd = openSync(r.path, 'r');
  const page = Buffer.alloc(64);
  readSync(fd, page, 0, 64, CONTROL_OFFSET);
  closeSync(fd);
  t.is(page.readUInt32LE(CTL.paused), 0);
  t.is(page.readBigUInt64LE(CTL.rate), 1n << 40n);
  t.is(page.readBigUInt64LE(CTL.seq), 3n);
  // nothing outside the control page changed
  const after = Buffer.alloc(r.buf.length);
  const fd2 = openSync(r.path, 'r');
  readSync(fd2, after, 0, after.length, 0);
  closeSync(fd2);
  t.true(after.subarray(0, CONTROL_OFFSET).equals(r.buf.subarray(0, CONTROL_OFFSET)));
  t.true(after.subarray(CONTROL_OFFSET + 4096).equals(r.buf.subarray(CONTROL_OFFSET + 4096)));
});

test('writeControl rejects bad arguments without touching the file', (t) => {
  const r = fresh();
  t.throws(() => native.writeControl(r.path, { rate: -1 }), { instanceOf: RangeError });
  t.throws(() => native.writeControl(r.path, { rate: 1.5 }), { instanceOf: RangeError });
  t.throws(() => native.writeControl(r.path, { rate: 1n << 64n }), { instanceOf: RangeError });
  t.throws(() => native.writeControl(r.path, { paused: 1 as unknown as boolean }), { instanceOf: TypeError });
  t.throws(() => native.writeControl(r.path, null as unknown as object), { instanceOf: TypeError });
  t.deepEqual(native.readRegion(r.path).control, { paused: 0, rate: 0n, seq: 0n });
});

test('writeControl validates the region first', (t) => {
  const path = writeRegion(dir, 'junk.heaptap', Buffer.alloc(16384, 7));
  const e = t.throws(() => native.writeControl(path, { paused: true }));
  t.true(e.message.startsWith(path + ': '));
  t.is((e as Error & { code: string }).code, 'ERR_HEAPTAP_FORMAT');
});

test('readRegion checks its arguments', (t) => {
  const r = fresh();
  t.throws(() => native.readRegion(42 as unknown as string), { instanceOf: TypeError });
  t.throws(() => native.readRegion(''), { instanceOf: TypeError });
  t.throws(() => native.readRegion('a\0b'), { instanceOf: TypeError });
  t.throws(() => native.readRegion(r.path, -1), { instanceOf: RangeError });
  t.throws(() => native.readRegion(r.path, 2 ** 32), { instanceOf: RangeError });
  t.throws(() => native.readRegion(r.path, 1.5), { instanceOf: RangeError });
  t.throws(() => native.readRegion(r.path, '1' as unknown as number), { instanceOf: TypeError });
});

test('readRegionAsync gives the same snapshot and rejects the same way', async (t) => {
  const r = fresh();
  const a = await native.readRegionAsync(r.path, 2);
  const b = native.readRegion(r.path, 2);
  t.deepEqual(a, b);
  const e = await t.throwsAsync(native.readRegionAsync(join(dir, 'missing.heaptap')));
  t.is((e as Error & { code: string }).code, 'ENOENT');
  t.true(e.message.includes('missing.heaptap'));
});

test('a region still being set up (state INIT) is reported as not ready', (t) => {
  const r = fresh({ header: { state: 0 } });
  const e = t.throws(() => native.readRegion(r.path));
  t.is((e as Error & { code: string }).code, 'ERR_HEAPTAP_NOT_READY');
  t.true(e.message.startsWith(r.path));
  t.is((e as Error & { alive?: boolean }).alive, false); // nobody holds its lock
  t.regex(e.message, /no writer holds it/);
});

test('a sequence that stays odd makes the reader give up as busy, quickly', (t) => {
  const r = fresh({ ...sampleSpec(), header: { seq: 7n } });
  const t0 = Date.now();
  const e = t.throws(() => native.readRegion(r.path));
  t.is((e as Error & { code: string }).code, 'ERR_HEAPTAP_BUSY');
  t.regex(e.message, /region busy: a slab fold stayed under way/);
  t.is((e as Error & { alive?: boolean }).alive, false);
  t.true(Date.now() - t0 < 2000);
});

test('an even sequence other than zero reads normally', (t) => {
  const r = fresh({ ...sampleSpec(), header: { seq: 1000n } });
  t.deepEqual(countersOf(native.readRegion(r.path)), r.expected);
});

test('a file nobody holds a lock on is reported not alive', (t) => {
  const r = fresh();
  t.false(native.readRegion(r.path).alive);
});

interface MutatorRun {
  path: string;
  child: ReturnType<typeof spawnGroup>;
  lines: AsyncIterator<string>;
}

async function startMutator(name: string, args: string[]): Promise<MutatorRun> {
  const path = join(dir, name);
  // Tracked: killed when the test file is done if a failing test left it running.
  const child = spawnGroup(null, mutator, [path, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await within(lines.next(), 30_000, 'the mutator to be ready').catch((e) => {
    killGroup(child);
    throw e;
  });
  if (first.done || first.value !== `ready ${path}`) throw new Error(`mutator said ${String(first.value)}`);
  return { path, child, lines };
}

async function readTotals(lines: AsyncIterator<string>) {
  const totals = new Map<number, Counters>();
  let stats = '';
  for (;;) {
    const { value, done } = await lines.next();
    if (done || value === 'end') break;
    if (value.startsWith('stats ')) stats = value;
    const m = /^stack (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$/.exec(value);
    if (m) {
      totals.set(Number(m[1]), {
        allocObjects: BigInt(m[2]!),
        allocBytes: BigInt(m[3]!),
        freeObjects: BigInt(m[4]!),
        freeBytes: BigInt(m[5]!),
        samples: BigInt(m[6]!),
      });
    }
  }
  return { totals, stats };
}

test('a writer holding its flock is alive; after it exits the region is not', async (t) => {
  const run = await startMutator('live.heaptap', ['0.05', '1', '3', '--wait']);
  await readTotals(run.lines);
  const s = native.readRegion(run.path);
  t.true(s.alive);
  t.is(s.header.state, STATE_EXITED); // finished writing, but the process still runs
  const exited = new Promise((resolve) => run.child.once('exit', resolve));
  run.child.stdin!.end();
  await exited;
  t.false(native.readRegion(run.path).alive);
});

test('snapshots under concurrent writers and slab folds are monotonic per stack and end exact', async (t) => {
  // The writers run until this test has taken enough snapshots over at least two seconds
  // (then SIGUSR1 ends them), at most 60 s: the overlap does not depend on how busy the
  // machine is.
  const run = await startMutator('mutator.heaptap', ['60', '3', '12345']);
  const started = Date.now();
  let stopped = false;
  let done = false;
  const totalsP = readTotals(run.lines).then((x) => {
    done = true;
    return x;
  });
  const exitP = new Promise<number | null>((resolve) => run.child.once('exit', resolve));

  const prev = new Map<number, Counters>();
  const known = new Set<number>();
  let since = 0;
  let snapshots = 0;
  let retries = 0;
  let violations = 0;
  let firstViolation = '';
  while (!done) {
    const s = native.readRegion(run.path, since);
    snapshots++;
    retries += s.retries;
    t.is(s.malformed, 0, s.firstMalformed);
    s.stacks.ids.forEach((id) => known.add(id));
    since = s.stacks.next;
    for (const [id, c] of countersOf(s)) {
      if (!known.has(id)) {
        violations++;
        firstViolation ||= `counts for stack ${id} before its record`;
      }
      const p = prev.get(id);
      if (p) {
        for (const k of Object.keys(c) as (keyof Counters)[]) {
          if (c[k] < p[k]) {
            violations++;
            firstViolation ||= `stack ${id} ${k} went down from ${p[k]} to ${c[k]} (snapshot ${snapshots})`;
          }
        }
      }
      prev.set(id, c);
    }
    // A stack that had counts never disappears.
    for (const id of prev.keys()) {
      if (!s.counters.ids.includes(id)) {
        violations++;
        firstViolation ||= `stack ${id} vanished`;
      }
    }
    if (!stopped && snapshots >= 30 && Date.now() - started >= 2000) {
      stopped = true;
      run.child.kill('SIGUSR1');
    }
    await sleep(1);
  }
  const { totals, stats } = await totalsP;
  t.is(await exitP, 0);
  t.is(violations, 0, firstViolation);
  // Enough reads overlapped the writers to mean something (the writers ran until then).
  t.true(snapshots >= 30, `only ${snapshots} snapshots`);
  const folds = Number(/folds=(\d+)/.exec(stats)?.[1] ?? 0);
  t.true(folds > 10, `only ${folds} folds: the test did not exercise the fold path`);
  const final = native.readRegion(run.path);
  t.is(final.malformed, 0, final.firstMalformed);
  t.is(final.header.state, STATE_EXITED);
  t.deepEqual(countersOf(final), totals);
  t.log(`${snapshots} snapshots, ${retries} retries, ${stats}, ${totals.size} stacks`);
});

test('reading a sparse region does not touch the slab pages the writer never used', (t) => {
  // On tmpfs a read fault on a hole allocates a page (and raises SIGBUS when the file
  // system is full): the reader must leave unreserved parts of the file alone.
  const spec = sampleSpec();
  spec.slabEntries = 128; // 6208-byte slabs: several pages each
  spec.capacities = { slabs: 32 };
  const built = buildRegion(spec);
  const path = join(dir, 'sparse.heaptap');
  const fd = openSync(path, 'w+');
  ftruncateSync(fd, built.buf.length);
  const slabs = built.sections.slabs;
  for (let at = 0; at < built.buf.length; at += 4096) {
    const page = built.buf.subarray(at, at + 4096);
    const inSlabs = at >= slabs.offset && at < slabs.offset + slabs.bytes;
    if (!inSlabs || page.some((b) => b !== 0)) writeSync(fd, page, 0, page.length, at);
  }
  closeSync(fd);
  const before = statSync(path).blocks;
  const s = native.readRegion(path);
  t.deepEqual(countersOf(s), built.expected);
  t.is(statSync(path).blocks, before);
});

test('slab states ACTIVE and RETIRED count the same', (t) => {
  const mk = (state: number) =>
    fresh({
      stacks: [{ frames: [1n] }],
      slabs: [{ state, entries: [{ stackId: 2, counters: { allocBytes: 11n, samples: 1n } }] }],
    });
  t.deepEqual(countersOf(native.readRegion(mk(SLAB_ACTIVE).path)), countersOf(native.readRegion(mk(SLAB_RETIRED).path)));
});

test('stack ids with only zero counters are not listed; an empty region lists nothing', (t) => {
  const r = fresh({
    stacks: [{ frames: [1n] }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: {} }] }],
  });
  const s = native.readRegion(r.path);
  t.is(s.counters.ids.length, 0);
  t.is(s.malformed, 0);
  const e = native.readRegion(fresh({}).path);
  t.is(e.counters.ids.length, 0);
  t.deepEqual([...e.stacks.ids], [1]);
  t.deepEqual(e.modules, []);
});

test('counts on a duplicate stack record are dropped and reported as malformed', (t) => {
  const r = fresh({
    stacks: [{ frames: [1n], flags: STACK_READY | STACK_DUPLICATE }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocBytes: 1n } }] }],
  });
  const s = native.readRegion(r.path);
  t.is(s.counters.ids.length, 0);
  t.is(s.malformed, 1);
  t.regex(s.firstMalformed, /duplicate/);
});

test('dedupeFrames: distinct values in order of first appearance, and each frame\'s position among them', (t) => {
  let x = 12345n;
  const frames = new BigUint64Array(50_000);
  for (let i = 0; i < frames.length; i++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
    frames[i] = 0x7f0000000000n + ((x >> 33n) % 3000n) * 16n; // about 3000 distinct addresses
  }
  frames[7] = (1n << 64n) - 1n; // the top bit set: full 64-bit values
  const { unique, index } = native.dedupeFrames(frames);
  const expected: bigint[] = [];
  const pos = new Map<bigint, number>();
  for (const f of frames) if (!pos.has(f)) pos.set(f, expected.push(f) - 1);
  t.deepEqual([...unique], expected);
  t.is(index.length, frames.length);
  t.true(frames.every((f, i) => unique[index[i]!] === f && index[i] === pos.get(f)));
  const empty = native.dedupeFrames(new BigUint64Array(0));
  t.is(empty.unique.length, 0);
  t.is(empty.index.length, 0);
  t.throws(() => native.dedupeFrames(new Uint32Array(4) as unknown as BigUint64Array), { instanceOf: TypeError });
});

test('gzipAsync: valid gzip that decompresses to the input, at any level; bad arguments throw', async (t) => {
  const { gunzipSync } = await import('node:zlib');
  const random = new Uint8Array(300_000);
  let x = 1;
  for (let i = 0; i < random.length; i++) random[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  const repetitive = new Uint8Array(1_000_000).map((_, i) => (i * 7) % 13);
  for (const [name, data] of [['random', random], ['repetitive', repetitive], ['empty', new Uint8Array(0)]] as const) {
    for (const level of [1, 6, 12]) {
      // Level 12 is libdeflate's slowest (seconds on a megabyte): a slice is enough.
      const input = level === 12 ? data.subarray(0, 20_000) : data;
      const gz = await native.gzipAsync(input, level);
      t.is(gz[0], 0x1f, `${name} L${level}: gzip magic`);
      t.is(gz[1], 0x8b);
      t.deepEqual(new Uint8Array(gunzipSync(gz)), input, `${name} L${level}: round trip`);
    }
  }
  t.true((await native.gzipAsync(repetitive)).length < 10_000, 'level 1 by default, and it does compress');
  t.throws(() => native.gzipAsync(new Uint8Array(4), 0), { instanceOf: RangeError });
  t.throws(() => native.gzipAsync(new Uint8Array(4), 13), { instanceOf: RangeError });
  t.throws(() => native.gzipAsync('text' as unknown as Uint8Array), { instanceOf: TypeError });
});

test('encodeSamples: out-of-range stack arrays make a row unknown, never a bad read; wrong types throw', (t) => {
  const counters = {
    ids: Uint32Array.from([2, 3, 5]),
    allocObjects: BigUint64Array.from([65536n, 65536n, 65536n]),
    allocBytes: BigUint64Array.from([8n, 8n, 8n]),
    freeObjects: new BigUint64Array(3),
    freeBytes: new BigUint64Array(3),
    inuseObjects: BigUint64Array.from([65536n, 65536n, 65536n]),
    inuseBytes: BigUint64Array.from([8n, 8n, 8n]),
  };
  const args = {
    counters, fullDelta: false,
    // stack 2: its packed bytes run past the buffer; stack 3: they start past it;
    // stack 5: beyond the per-stack arrays
    packed: Uint8Array.from([7]), packedStart: Uint32Array.from([0, 0, 0, 5]), packedLen: Uint32Array.from([0, 0, 2, 1]),
    locBase: 0, overflowLoc: 0, unknownLoc: 42, pidKey: 2, pid: 7, exeLabel: false, exeKey: 0, exeStr: 0,
  };
  // Three samples, each with the single location id 42 (field 1 packed: 0x0a 0x01 0x2a).
  const count42 = (out: Uint8Array) => {
    let n = 0;
    for (let i = 0; i + 2 < out.length; i++) if (out[i] === 0x0a && out[i + 1] === 0x01 && out[i + 2] === 42) n++;
    return n;
  };
  t.is(count42(native.encodeSamples(args)), 3);
  // A varint that never ends is cut, not read past: with an offset the ids are decoded.
  const open = native.encodeSamples({ ...args, packed: Uint8Array.from([0x81, 0x82, 0x83]), packedStart: Uint32Array.from([0, 0, 0, 0]), packedLen: Uint32Array.from([0, 0, 3, 3]), locBase: 5 });
  t.true(open.length > 0);
  t.throws(() => native.encodeSamples({ ...args, packed: new Int8Array(1) as unknown as Uint8Array }), { instanceOf: TypeError });
  t.throws(() => native.encodeSamples({ ...args, counters: { ...counters, freeBytes: new BigUint64Array(2) } }), { instanceOf: RangeError });
  t.throws(() => native.encodeSamples({ ...args, counters: { ...counters, inuseBytes: new BigUint64Array(2) } }), { instanceOf: RangeError });
  // in use is the inuse columns as given (a peak profile passes the values at the peak)
  const { inuseBytes: _drop, ...noInuse } = counters;
  t.throws(() => native.encodeSamples({ ...args, counters: noInuse as typeof counters }), { instanceOf: TypeError });
  t.throws(() => native.encodeSamples({ ...args, packedLen: new Uint32Array(2) }), { instanceOf: RangeError });
  t.throws(() => native.encodeSamples({ ...args, pid: -1 }), { instanceOf: RangeError });
});

// ---- the peak and the timeline (HT_FEATURE_PEAK, HT_FEATURE_TIMELINE) -------------------

const G = 5n;
/** A region of a writer with both features: rows whose ht_peak is of the latest peak (G),
 * of an older one, negative rows, and a shared row changed since the peak. */
function peakSpec(): RegionSpec {
  return {
    features: FEATURE_PEAK | FEATURE_TIMELINE,
    stacks: [{ frames: [0x401000n] }, { frames: [0x402000n] }, { frames: [0x403000n] }],
    peak: { inuseBytes: 3000n, allocBytes: 9000n, peakBytes: 5000n, peakNs: 1_700_000_000_123_000_000n, peakGen: G },
    slabs: [
      {
        state: SLAB_ACTIVE,
        entries: [
          // changed since the peak: its ht_peak holds what it had then
          { stackId: 2, counters: { allocObjects: 40n * OBJ_ONE, allocBytes: 4000n, freeObjects: 10n * OBJ_ONE, freeBytes: 1000n, samples: 40n },
            peak: { gen: G, bytes: 3500n, objects: 35n * OBJ_ONE } },
          // not changed since the peak (its ht_peak is of an older one): it holds now what it had then
          { stackId: 3, counters: { allocObjects: 5n * OBJ_ONE, allocBytes: 500n, samples: 5n },
            peak: { gen: G - 1n, bytes: 99n, objects: 99n } },
        ],
      },
      {
        state: SLAB_RETIRED,
        // freed here what another thread allocated: negative on its own
        entries: [{ stackId: 2, counters: { allocBytes: 100n, freeBytes: 300n, allocObjects: OBJ_ONE, freeObjects: 3n * OBJ_ONE, samples: 1n },
          peak: { gen: G, bytes: -100n, objects: -OBJ_ONE } }],
      },
      // a FREE slab's rows count for nothing, peak rows included
      { state: 0, entries: [{ stackId: 4, counters: { allocBytes: 77n, samples: 1n }, peak: { gen: G, bytes: 77n, objects: OBJ_ONE } }] },
    ],
    shared: [
      { stackId: 4, counters: { allocObjects: 20n * OBJ_ONE, allocBytes: 2000n, freeObjects: 20n * OBJ_ONE, freeBytes: 2000n, samples: 20n },
        peak: { gen: G, bytes: 1100n, objects: 11n * OBJ_ONE } },
      { stackId: 2, counters: { allocObjects: 10n * OBJ_ONE, allocBytes: 1000n, samples: 10n } },
    ],
    timeline: {
      capacity: 8,
      points: [0, 1, 2, 3, 4, 5].map((n) => ({
        n, ns: 1_700_000_000_000_000_000n + BigInt(n) * 10_000_000n, inuseBytes: BigInt(n * 100 - 50),
        allocBytes: BigInt(n * 1000), rssBytes: BigInt(1 << 20) + BigInt(n),
      })),
    },
  };
}

function peaksOf(s: RegionSnapshot): Map<number, { bytes: bigint; objects: bigint }> {
  const m = new Map<number, { bytes: bigint; objects: bigint }>();
  s.counters.ids.forEach((id, i) => m.set(id, { bytes: s.counters.peakBytes[i]!, objects: s.counters.peakObjects[i]! }));
  return m;
}

test('in use at the peak per stack: the row\'s ht_peak when of the latest peak, else the row as it is, summed and clamped', (t) => {
  const r = fresh(peakSpec());
  const s = native.readRegion(r.path);
  t.is(s.malformed, 0, s.firstMalformed);
  t.deepEqual(peaksOf(s), r.expectedPeak);
  // stack 2: 3500 (slab 0, of G) - 100 (slab 1, of G) + 1000 (shared, no ht_peak: as it is)
  t.deepEqual(peaksOf(s).get(2), { bytes: 4400n, objects: 44n * OBJ_ONE });
  t.deepEqual(peaksOf(s).get(3), { bytes: 500n, objects: 5n * OBJ_ONE }); // older gen: as it is
  t.deepEqual(peaksOf(s).get(4), { bytes: 1100n, objects: 11n * OBJ_ONE }); // freed since, held 1100 then
  t.deepEqual(s.peak, { bytes: 5000n, ns: 1_700_000_000_123_000_000n, gen: G, settled: true, stackBytes: 6000n });
  const h = s.header;
  t.is(h.features, FEATURE_PEAK | FEATURE_TIMELINE);
  t.is(h.inuseBytes, 3000n);
  t.is(h.allocBytes, 9000n);
  t.is(h.peakBytes, 5000n);
  t.is(h.timelineNext, 6n);
  t.is(h.timeline.capacity, 8);
  t.is(h.sharedPeak.capacity, 64);
});

test('in use per stack and per process follow one rule: alloc - free per stack clamped at 0, summed', (t) => {
  const r = fresh(peakSpec());
  const s = native.readRegion(r.path);
  const want = new Map([...r.expected].map(([id, c]) => [id, c.allocBytes > c.freeBytes ? c.allocBytes - c.freeBytes : 0n]));
  t.deepEqual(new Map([...s.counters.ids].map((id, i) => [id, s.counters.inuseBytes[i]!])), want);
  t.is(s.inuseBytes, [...want.values()].reduce((a, b) => a + b, 0n));
  // A stack freed more than it allocated (in rows read at different moments) counts 0, not
  // less: the process total is not sum(alloc) - sum(free).
  const neg = fresh({
    stacks: [{ frames: [1n] }, { frames: [2n] }],
    shared: [{ stackId: 2, counters: { allocBytes: 100n, samples: 1n } }, { stackId: 3, counters: { allocBytes: 10n, freeBytes: 60n, samples: 1n } }],
  });
  const n = native.readRegion(neg.path);
  t.deepEqual([...n.counters.inuseBytes], [100n, 0n]);
  t.is(n.inuseBytes, 100n);
});

test('a region from a writer without features reads as before: no peak, no timeline, whatever its reserved words hold', (t) => {
  const r = fresh(sampleSpec());
  // Words a newer writer uses, holding garbage in an old region: never read without the bit.
  r.buf.writeBigUInt64LE(0xdeadn, HDR.peakBytes);
  r.buf.writeBigUInt64LE(7n, HDR.peakGen);
  r.buf.writeBigUInt64LE(123n, HDR.timelineNext);
  r.buf.writeBigUInt64LE(0xffffffffffffn, HDR.sharedPeak); // an offset past the file
  r.buf.writeBigUInt64LE(3n, HDR.timeline);
  writeFileSync(r.path, r.buf);
  const s = native.readRegion(r.path);
  t.is(s.malformed, 0, s.firstMalformed);
  t.deepEqual(countersOf(s), r.expected);
  t.is(s.header.features, 0);
  t.is(s.peak, null);
  t.is(s.header.peakBytes, 0n);
  t.is(s.header.timelineNext, 0n);
  t.is(s.header.inuseBytes, 0n);
  t.deepEqual(s.header.timeline, { offset: 0, bytes: 0, capacity: 0, entryBytes: 0 });
  t.true(s.counters.peakBytes.every((v) => v === 0n));
  t.is(s.timeline.ns.length, 0);
  // in use is still given, by the same rule
  t.is(s.inuseBytes, [...r.expected.values()].reduce((a, c) => a + (c.allocBytes > c.freeBytes ? c.allocBytes - c.freeBytes : 0n), 0n));
});

test('unknown feature bits are ignored (they cover only what this reader does not read)', (t) => {
  const spec = peakSpec();
  spec.features = 0xfffffffc; // every bit but PEAK and TIMELINE
  const s = native.readRegion(fresh(spec).path);
  t.is(s.peak, null);
  t.is(s.timeline.ns.length, 0);
  t.is(s.header.features, 0xfffffffc);
});

function timelineOf(s: RegionSnapshot) {
  const tl = s.timeline;
  return [...tl.index].map((n, i) => ({ n, ns: tl.ns[i]!, inuse: tl.inuseBytes[i]!, alloc: tl.allocBytes[i]!, rss: tl.rssBytes[i]! }));
}

test('timeline points come in order from sincePoint on, with next to pass back', (t) => {
  const r = fresh(peakSpec());
  const s = native.readRegion(r.path);
  const pts = timelineOf(s);
  t.deepEqual(pts.map((p) => p.n), [0n, 1n, 2n, 3n, 4n, 5n]);
  t.deepEqual(pts[0], { n: 0n, ns: 1_700_000_000_000_000_000n, inuse: -50n, alloc: 0n, rss: 1048576n });
  t.is(s.timeline.next, 6n);
  t.deepEqual(timelineOf(native.readRegion(r.path, 0, 4)).map((p) => p.n), [4n, 5n]);
  t.deepEqual(timelineOf(native.readRegion(r.path, 0, 6n)), []);
  // a sincePoint beyond what the writer has claimed (another region's): from the start
  t.is(native.readRegion(r.path, 0, 1000).timeline.index.length, 6);
  t.throws(() => native.readRegion(r.path, 0, -1), { instanceOf: RangeError });
  t.throws(() => native.readRegion(r.path, 0, 'x' as unknown as number), { instanceOf: TypeError });
});

test('a wrapped timeline gives the last capacity points; a slot being written or not yet cleared is a gap that next points at', (t) => {
  const base = 1_700_000_000_000_000_000n;
  const pt = (n: number, ns = base + BigInt(n) * 1000n) => ({ n, ns, inuseBytes: BigInt(n), allocBytes: BigInt(n), rssBytes: 0n });
  const spec = peakSpec();
  spec.timeline = { capacity: 4, points: [6, 7, 8, 9].map((n) => pt(n)) };
  const wrapped = native.readRegion(fresh(spec).path);
  t.deepEqual(timelineOf(wrapped).map((p) => p.n), [6n, 7n, 8n, 9n]);
  t.is(wrapped.timeline.next, 10n);

  // slot of point 8 being written (ns 0): skipped; 9 still comes; next is 8
  spec.timeline = { capacity: 4, points: [pt(6), pt(7), pt(8, 0n), pt(9)] };
  const torn = native.readRegion(fresh(spec).path);
  t.deepEqual(timelineOf(torn).map((p) => p.n), [6n, 7n, 9n]);
  t.is(torn.timeline.next, 8n);

  // point 9 claimed but its slot still holds point 5 (one lap older): not taken
  spec.timeline = { capacity: 4, next: 10n, points: [pt(5), pt(6), pt(7), pt(8)] };
  const claimed = native.readRegion(fresh(spec).path);
  t.deepEqual(timelineOf(claimed).map((p) => p.n), [6n, 7n, 8n]);
  t.is(claimed.timeline.next, 9n);
});

test('reading a sparse region does not touch the shared peak or timeline pages the writer never reserved', (t) => {
  const spec = peakSpec();
  spec.capacities = { shared: 2048, stacks: 2048 }; // shared peak rows over 12 pages, most never written
  spec.timeline = { capacity: 1024, next: 3000n, points: [2990, 2991].map((n) => ({ n, ns: 1n + BigInt(n), inuseBytes: 1n, allocBytes: 1n, rssBytes: 1n })) };
  const built = buildRegion(spec);
  const path = join(dir, 'sparse-peak.heaptap');
  const fd = openSync(path, 'w+');
  ftruncateSync(fd, built.buf.length);
  const holes = [built.sections.sharedPeak, built.sections.timeline];
  for (let at = 0; at < built.buf.length; at += 4096) {
    const page = built.buf.subarray(at, at + 4096);
    const inHoles = holes.some((h) => at >= h.offset && at < h.offset + h.bytes);
    if (!inHoles || page.some((b) => b !== 0)) writeSync(fd, page, 0, page.length, at);
  }
  closeSync(fd);
  const before = statSync(path).blocks;
  // stacks_used past the written shared rows, and counts in a row whose ht_peak lies on a
  // hole, as a hostile writer might leave them
  const w = openSync(path, 'r+');
  const word = Buffer.alloc(8);
  word.writeUInt32LE(2048);
  writeSync(w, word, 0, 4, HDR.stacksUsed);
  word.writeBigUInt64LE(64n);
  writeSync(w, word, 0, 8, built.sections.shared.offset + 1500 * SIZES.counters + 8);
  closeSync(w);
  const s = native.readRegion(path);
  t.regex(s.firstMalformed, /counts for stack id 1500 whose record is not ready/);
  t.deepEqual(peaksOf(s), built.expectedPeak);
  t.deepEqual(timelineOf(s).map((p) => p.n), [2990n, 2991n]);
  t.is(statSync(path).blocks, before);
});

test('lockFile: one holder at a time, released by unlockFile; a file that cannot be made throws', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'heaptap-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'lease');
  const fd = native.lockFile(path);
  t.true(fd >= 0);
  t.is(native.lockFile(path), -1, 'held: a second open of the same file cannot take it');
  native.unlockFile(fd);
  const again = native.lockFile(path);
  t.true(again >= 0, 'free again once unlocked');
  native.unlockFile(again);
  t.throws(() => native.lockFile(join(dir, 'missing', 'lease')), { message: /open .*: No such file or directory/ });
  t.throws(() => native.lockFile(7 as unknown as string), { instanceOf: TypeError });
});
