// A hostile neighbour (issue 10): regions written by a process that may be compromised, in
// another container. Regions that keep being truncated under the reader must not kill the
// agent (SIGBUS) or make a real process's profile stale; a sparse file claiming millions
// of entries must cost what its data holds; a region that fails is quarantined (said once,
// left alone until it changes); a slow read must not hold up the others.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';

import { createLogger } from '../../src/agent/log.ts';
import { Watcher, type ReadRegion } from '../../src/agent/processes.ts';
import type { HeapProcess } from '../../src/agent/types.ts';
import { readRegion, readRegionAsync } from '../../src/region.ts';
import { buildRegion, HDR, OBJ_ONE, SEC, SLAB_ACTIVE, STATE_RUNNING, writeRegion } from '../helpers/regionBuilder.ts';
import { bound, killGroup, spawnGroup, within } from '../helpers/procs.ts';
import { fixtures, get, root, spawnAgent, startTicker, tempDir, until } from './helpers.ts';

const truncator = join(fixtures, 'region_truncator');

test.before(() => {
  execFileSync('make', ['-s', '-C', join(root, 'test/fixtures'), 'build/region_truncator'], { stdio: 'inherit' });
});

async function processes(url: string): Promise<HeapProcess[]> {
  const r = await get(`${url}/debug/heaptap/processes`);
  if (r.status !== 200) throw new Error(`processes: ${r.status}`);
  return JSON.parse(r.text) as HeapProcess[];
}

/** Holds a shared flock on path (the library's liveness signal; flock(1) stands in for the
 * writer) until the test ends. */
async function holdLock(t: { teardown(fn: () => void): void }, path: string): Promise<void> {
  const child = spawnGroup(t, 'flock', ['-s', path, 'sh', '-c', 'echo locked; exec sleep 600'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => killGroup(child));
  await within(new Promise<void>((res, rej) => {
    child.stdout!.once('data', () => res());
    child.once('exit', (c) => rej(new Error(`flock exited ${c}`)));
  }), 10_000, 'flock to hold the lock');
}

function residentKib(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

test('an agent beside ten regions truncated to 8 KiB and grown back for a minute keeps serving a real process and never dies', async (t) => {
  const { dir, cleanup } = await tempDir('heaptap-hostile-');
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 16, periodUs: 1000, t });
  const agent = await spawnAgent(dir, ['--poll', '200ms'], {}, t);
  await until(async () => (await processes(agent.url)).find((p) => p.pid === fx.pid && p.samples > 0), 10_000, 'the ticker');

  // Ten regions whose writer holds their flocks (as the library does: a shared flock) and
  // keeps truncating them to 8 KiB and growing them back, for 60 s.
  const SECONDS = 60;
  const hostile = spawnGroup(t, truncator, [dir, '10', String(SECONDS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out: string[] = [];
  const lines = createInterface({ input: hostile.stdout! });
  const done = new Promise<void>((res) => hostile.on('close', () => res()));
  const ready = new Promise<void>((res, rej) => {
    lines.on('line', (l) => {
      out.push(l);
      if (l.startsWith('ready')) res();
    });
    hostile.on('exit', (c) => rej(new Error(`region_truncator exited ${c} before it was ready`)));
  });
  await within(ready, 10_000, 'region_truncator to be ready');

  // Every 10 s window: the ticker's samples went up (it samples every allocation, one
  // every millisecond; a 200 ms poll that kept up sees thousands more per window), and the
  // agent is alive. Windows, not instants: a busy machine may stall a poll for a while.
  const windows: number[] = [];
  let last = (await processes(agent.url)).find((p) => p.pid === fx.pid)!.samples;
  const t0 = Date.now();
  while (Date.now() - t0 < SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, 10_000));
    t.is(agent.child.exitCode, null, 'the agent is alive');
    t.is(agent.child.signalCode, null, `the agent was not killed by a signal (${agent.child.signalCode})`);
    const p = (await processes(agent.url)).find((x) => x.pid === fx.pid);
    t.truthy(p, 'the ticker is still served');
    windows.push(p!.samples - last);
    last = p!.samples;
  }
  await within(done, 30_000, 'region_truncator to finish');
  t.true(windows.length >= 5, `${windows.length} windows`);
  for (const [i, d] of windows.entries()) t.true(d > 0, `window ${i}: the ticker's samples did not go up (${windows.join(', ')})`);

  // The profile of the good process is served, and the agent's memory stayed sane.
  const r = await get(`${agent.url}/debug/pprof/heap?pid=${fx.pid}`);
  t.is(r.status, 200);
  const rss = residentKib(agent.child.pid!);
  t.true(rss < 1024 * 1024, `agent resident ${rss} KiB`);

  // Each hostile region's failure was said at most once per kind, however often it failed.
  const said = new Map<string, number>();
  for (const l of agent.logs) {
    const region = String(l.region ?? '');
    if (!region.includes('-trunc')) continue;
    if (l.msg === 'process seen' || l.msg === 'process ended' || l.msg === 'region removed') continue;
    const k = `${region} ${String(l.msg)} ${String(l.code)}`;
    said.set(k, (said.get(k) ?? 0) + 1);
  }
  for (const [k, n] of said) t.is(n, 1, `said ${n} times: ${k}`);
  t.log(`${out.at(-1)}; ticker samples per 10 s: ${windows.join(', ')}; agent RSS ${Math.round(rss / 1024)} MiB; ${said.size} distinct warnings about the hostile regions`);
  t.is(await agent.stop(), 0, 'SIGTERM: a clean exit');
});

/** A region claiming 20 million stack records and shared rows (stacks_used too), every one
 * a hole but the first page of each: about 1.3 GB apparent, a few pages of data. */
function sparseRegion(dir: string): { path: string; apparent: number } {
  const { buf } = buildRegion({
    stacks: [{ frames: [0x401000n, 0x402000n] }, { frames: [0x401000n, 0x403000n] }],
    shared: [{ stackId: 3, counters: { allocObjects: OBJ_ONE, allocBytes: 7n, freeObjects: 0n, freeBytes: 0n, samples: 1n } }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocObjects: 2n * OBJ_ONE, allocBytes: 100n, freeObjects: 0n, freeBytes: 0n, samples: 2n } }] }],
    header: { pid: 424242, state: STATE_RUNNING },
  });
  const b = Buffer.from(buf);
  const N = 20_000_000;
  const oldStacks = Number(b.readBigUInt64LE(HDR.stacks + SEC.offset));
  const oldShared = Number(b.readBigUInt64LE(HDR.shared + SEC.offset));
  let at = b.length;
  const move = (field: number, entry: number) => {
    const bytes = Math.ceil((N * entry) / 4096) * 4096;
    b.writeBigUInt64LE(BigInt(at), field + SEC.offset);
    b.writeBigUInt64LE(BigInt(bytes), field + SEC.bytes);
    b.writeUInt32LE(N, field + SEC.capacity);
    const where = at;
    at += bytes;
    return where;
  };
  const stacksAt = move(HDR.stacks, 24);
  const sharedAt = move(HDR.shared, 40);
  b.writeBigUInt64LE(BigInt(at), HDR.fileBytes);
  b.writeUInt32LE(N, HDR.stacksUsed);
  const path = join(dir, '424242-sparse.heaptap');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, b, 0, b.length, 0);
    ftruncateSync(fd, at);
    writeSync(fd, b, oldStacks, 4096, stacksAt);
    writeSync(fd, b, oldShared, 4096, sharedAt);
  } finally {
    closeSync(fd);
  }
  return { path, apparent: at };
}

test('a sparse region claiming 20 million stacks on holes is read for what it holds: no hole faulted in, little memory', async (t) => {
  const { dir, cleanup } = await tempDir('heaptap-sparse-');
  t.teardown(cleanup);
  const { path, apparent } = sparseRegion(dir);
  const before = statSync(path).blocks;
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const s = await readRegionAsync(path, 0);
  const ms = performance.now() - t0;
  const grew = process.memoryUsage().rss - rss0;
  t.deepEqual([...s.counters.ids], [2, 3]);
  t.deepEqual([...s.stacks.ids], [1, 2, 3]);
  // the next record to read is the first not READY: id 4, a zero in the first page
  t.is(s.stacks.next, 4);
  t.is(statSync(path).blocks, before, 'the read allocated blocks in the file (a hole was faulted in)');
  // a read that touched every claimed entry would map 1.3 GB
  t.true(grew < 64 * 1048576, `resident grew by ${grew} bytes`);
  t.log(`${Math.round(apparent / 1048576)} MB apparent, ${before / 2} KiB of data: read in ${ms.toFixed(1)} ms, resident +${Math.round(grew / 1024)} KiB`);
});

test('a region holding more data than HEAPTAP_MAX_REGION_BYTES is refused with ERR_HEAPTAP_LIMIT', async (t) => {
  const { dir, cleanup } = await tempDir('heaptap-cap-');
  t.teardown(cleanup);
  const { buf } = buildRegion({ stacks: [{ frames: [0x401000n] }], header: { pid: 5, state: STATE_RUNNING } });
  const path = writeRegion(dir, '5-big.heaptap', buf);
  // 3 MiB of data past the region (allowed by the layout: the header's file_bytes is less)
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(3 << 20, 1), 0, 3 << 20, buf.length);
  closeSync(fd);
  const script = `import { readRegion } from ${JSON.stringify(join(root, 'src/region.ts'))};
try { readRegion(${JSON.stringify(path)}, 0); console.log('read'); } catch (e) { console.log(e.code, e.message); }`;
  const run = (env: Record<string, string>) => execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' }).trim();
  const refused = run({ HEAPTAP_MAX_REGION_BYTES: String(2 << 20) });
  t.regex(refused, /^ERR_HEAPTAP_LIMIT .*more than the reader's limit of 2097152 \(HEAPTAP_MAX_REGION_BYTES\)/);
  t.is(run({}), 'read', 'the default cap (1 GiB) reads it');
  t.notThrows(() => readRegion(path, 0));
});

test('a region that stops validating is quarantined: said once, not read again until the file changes', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const { buf } = buildRegion({
    stacks: [{ frames: [0x401000n] }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocObjects: OBJ_ONE, allocBytes: 64n, freeObjects: 0n, freeBytes: 0n, samples: 1n } }] }],
    header: { pid: 777, state: STATE_RUNNING },
  });
  const path = writeRegion(dir, '777-q.heaptap', buf);
  await holdLock(t, path);
  const reads = new Map<string, number>();
  // the addon's reader, counted
  const counted: ReadRegion = (p, s, pt) => {
    reads.set(p, (reads.get(p) ?? 0) + 1);
    return readRegionAsync(p, s, pt);
  };
  const lines: string[] = [];
  const w = new Watcher({ dir, pollMs: 100, retentionMs: 3_600_000, readRegion: counted, log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
  w.start();
  t.teardown(() => w.stop());
  await until(async () => w.get('777-q.heaptap')?.snapshot ?? undefined, 10_000, 'the first read');
  // The magic is overwritten: not a region any more.
  const bad = Buffer.from(buf);
  bad.writeBigUInt64LE(0n, HDR.magic);
  await writeFile(path, bad);
  await until(async () => (lines.some((l) => l.includes('region quarantined')) ? true : undefined), 10_000, 'the quarantine');
  const n0 = reads.get(path)!;
  const scans0 = w.scans;
  await until(async () => (w.scans >= scans0 + 5 ? true : undefined), 20_000, 'five more scans');
  t.is(reads.get(path), n0, 'read again while unchanged');
  t.is(lines.filter((l) => l.includes('region quarantined')).length, 1, 'said once');
  t.true(w.get('777-q.heaptap')?.snapshot !== null, 'the last good snapshot is kept');
  // Changed (a valid region again): read again, and served with the new counts.
  const good = Buffer.from(buf);
  await writeFile(path, good);
  await until(async () => ((reads.get(path) ?? 0) > n0 && w.get('777-q.heaptap')?.quarantine === null ? true : undefined), 10_000, 'a read after the change');
  t.is(lines.filter((l) => l.includes('region quarantined')).length, 1, 'still said once');
});

test('a region whose read is slow does not make the others stale', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const mk = (pid: number) => buildRegion({
    stacks: [{ frames: [0x401000n] }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocObjects: OBJ_ONE, allocBytes: 64n, freeObjects: 0n, freeBytes: 0n, samples: 1n } }] }],
    header: { pid, state: STATE_RUNNING },
  }).buf;
  const slowPath = writeRegion(dir, '801-slow.heaptap', mk(801));
  const goodPath = writeRegion(dir, '802-good.heaptap', mk(802));
  await holdLock(t, slowPath);
  await holdLock(t, goodPath);
  // The addon's reader; the slow region's reads wait (as a read that a hostile writer keeps
  // retrying would) until the test lets them go.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  t.teardown(() => release());
  const reader: ReadRegion = async (p, s, pt) => {
    if (p === slowPath) await gate;
    return readRegionAsync(p, s, pt);
  };
  const lines: string[] = [];
  const w = new Watcher({ dir, pollMs: 100, retentionMs: 3_600_000, slowReadMs: 300, readRegion: reader, log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
  w.start();
  t.teardown(() => {
    release();
    return w.stop();
  });
  const good = await until(async () => w.get('802-good.heaptap')?.snapshot ? w.get('802-good.heaptap') : undefined, 10_000, 'the good region');
  const v0 = good.version;
  const scans0 = w.scans;
  await until(async () => (w.scans >= scans0 + 10 ? true : undefined), bound(20_000), 'ten scans');
  // every scan reads it (9: the first of the ten may have read it before v0 was taken)
  t.true(good.version >= v0 + 9, `the good region was read ${good.version - v0} times in 10 scans`);
  t.is(lines.filter((l) => l.includes('region read is slow')).length, 1, 'the slow region was said once');
  t.is(w.get('801-slow.heaptap')?.snapshot ?? null, null);
  release();
  const slow = await until(async () => w.get('801-slow.heaptap')?.snapshot ?? undefined, 10_000, 'the slow region once let go');
  t.is(slow.header.pid, 801);
});
