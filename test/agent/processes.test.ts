// The Watcher: which regions are processes, when they end, when they are removed, and that
// identity is the region file rather than the pid. Synthetic regions (the reader's test
// builder) stand for processes; a region is "alive" while something holds a shared flock
// on it, as the preload does (flock(1) stands in for the writer).
import { existsSync, utimesSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';

import { createLogger } from '../../src/agent/log.ts';
import { Watcher } from '../../src/agent/processes.ts';
import { AgentSource } from '../../src/agent/source.ts';
import type { HeapProcess } from '../../src/agent/types.ts';
import type { RegionModule } from '../../src/region.ts';
import { Symbolizer } from '../../src/symbolize.ts';
import { buildRegion, OBJ_ONE, SLAB_ACTIVE, STATE_EXITED, STATE_RUNNING, writeRegion } from '../helpers/regionBuilder.ts';
import { bound, killGroup, spawnGroup, within } from '../helpers/procs.ts';
import { startTicker, tempDir, until } from './helpers.ts';

const NS = 1_000_000n;

function region(dir: string, name: string, opts: { pid: number; state: number; exitMs?: number; heartbeatMs?: number; allocBytes?: bigint; freeBytes?: bigint; exe?: string; startMs?: number }): string {
  const { buf } = buildRegion({
    stacks: [{ frames: [0x401000n, 0x402000n] }],
    slabs: [{ state: SLAB_ACTIVE, entries: [{ stackId: 2, counters: { allocObjects: 10n * OBJ_ONE, allocBytes: opts.allocBytes ?? 1000n, freeObjects: 2n * OBJ_ONE, freeBytes: opts.freeBytes ?? 200n, samples: 10n } }] }],
    header: {
      pid: opts.pid,
      state: opts.state,
      exe: opts.exe ?? '/usr/bin/example',
      startNs: BigInt(opts.startMs ?? Date.now() - 10_000) * NS,
      exitNs: opts.exitMs ? BigInt(opts.exitMs) * NS : 0n,
      heartbeatNs: BigInt(opts.heartbeatMs ?? Date.now()) * NS,
    },
  });
  return writeRegion(dir, name, buf);
}

/** Holds a shared flock on path (the preload's liveness signal) until released. */
async function holdLock(path: string): Promise<() => void> {
  // Its own process group, so that release() ends flock and the sleep holding the lock.
  // Tracked: killed when the test file is done if no teardown released it.
  const child = spawnGroup(null, 'flock', ['-s', path, 'sh', '-c', 'echo locked; exec sleep 600'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const release = () => killGroup(child);
  await within(new Promise<void>((res, rej) => {
    child.stdout!.once('data', () => res());
    child.once('exit', (c) => rej(new Error(`flock exited ${c}`)));
  }), 10_000, 'flock to hold the lock').catch((e) => {
    release();
    throw e;
  });
  return release;
}

function watcher(dir: string, retentionMs: number, lines: string[] = []) {
  return new Watcher({ dir, pollMs: 100, retentionMs, log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
}

test('a region already dead at start ends once and is removed after retention counted from its exit time', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const now = Date.now();
  const old = region(dir, '100-1.heaptap', { pid: 100, state: STATE_EXITED, exitMs: now - 60_000 });
  const recent = region(dir, '101-1.heaptap', { pid: 101, state: STATE_EXITED, exitMs: now });
  const lines: string[] = [];
  const w = watcher(dir, 3000, lines);
  const source = new AgentSource(w, { log: createLogger({ write: () => {} }) });
  const ended: HeapProcess[] = [];
  source.onProcessEnd((p) => ended.push(p));
  w.start();
  t.teardown(() => w.stop());
  await w.ready;
  // Both ended once, with their final figures; the old one is already gone.
  t.deepEqual(ended.map((p) => p.pid).sort(), [100, 101]);
  t.true(ended.every((p) => !p.alive && p.exited && p.inuseBytes === 800 && p.allocatedBytes === 1000));
  t.false(existsSync(old), 'retention over at start: removed by the first scan');
  t.true(existsSync(recent));
  t.deepEqual(source.processes().map((p) => p.pid), [101]);
  await until(() => !existsSync(recent), 6000, 'the recent one removed');
  t.deepEqual(source.processes(), []);
  t.is(ended.length, 2, 'onProcessEnd once per process');
  const msgs = lines.map((l) => JSON.parse(l).msg);
  t.is(msgs.filter((m) => m === 'region removed').length, 2);
});

test('a reused pid is a new process: identity is the region file', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  region(dir, '200-1.heaptap', { pid: 200, state: STATE_EXITED, exitMs: Date.now(), allocBytes: 5000n, freeBytes: 0n, exe: '/usr/bin/old', startMs: Date.now() - 60_000 });
  const liveRegion = region(dir, '200-2.heaptap', { pid: 200, state: STATE_RUNNING, allocBytes: 300n, freeBytes: 100n, exe: '/usr/bin/new' });
  const release = await holdLock(liveRegion);
  t.teardown(release);
  const w = watcher(dir, 60_000);
  const source = new AgentSource(w, { log: createLogger({ write: () => {} }) });
  const ended: HeapProcess[] = [];
  source.onProcessEnd((p) => ended.push(p));
  w.start();
  t.teardown(() => w.stop());
  await w.ready;
  const procs = source.processes().sort((a, b) => a.key.localeCompare(b.key));
  t.deepEqual(procs.map((p) => [p.key, p.alive, p.exeName, p.inuseBytes]), [
    ['200-1.heaptap', false, 'old', 5000],
    ['200-2.heaptap', true, 'new', 200],
  ]);
  t.is(source.byPid(200)?.key, '200-2.heaptap', 'pid picks the running image');
  t.deepEqual(source.defaultProcesses().map((p) => p.key), ['200-2.heaptap'], 'default: the live ones');
  t.deepEqual(ended.map((p) => p.key), ['200-1.heaptap']);
  // The new image's writer goes away (no exit mark: as after kill -9).
  release();
  await until(() => ended.length === 2, 5000, 'the second end');
  t.like(ended[1], { key: '200-2.heaptap', alive: false, exited: false, inuseBytes: 200 });
  t.is(source.byPid(200)?.key, '200-2.heaptap', 'none running: the most recently started');
});

test('a region found dead without an exit mark counts retention from its heartbeat or mtime', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const stale = region(dir, '300-1.heaptap', { pid: 300, state: STATE_RUNNING, heartbeatMs: Date.now() - 3_600_000 });
  const old = new Date(Date.now() - 3_600_000);
  utimesSync(stale, old, old);
  const fresh = region(dir, '301-1.heaptap', { pid: 301, state: STATE_RUNNING, heartbeatMs: Date.now() - 3_600_000 });
  const w = watcher(dir, 600_000);
  w.start();
  t.teardown(() => w.stop());
  await w.ready;
  t.false(existsSync(stale), 'killed an hour ago: past retention');
  t.true(existsSync(fresh), 'mtime is recent: kept');
  t.is(w.all().length, 1);
  t.false(w.all()[0]!.info!.alive);
});

test('a file that is not a region is logged once and left alone; a new region is seen within a second', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  await writeFile(join(dir, '400-1.heaptap'), Buffer.alloc(16384, 7));
  const lines: string[] = [];
  const w = new Watcher({ dir, pollMs: 1000, retentionMs: 60_000, log: createLogger({ format: 'json', write: (l) => lines.push(l) }) });
  w.start();
  t.teardown(() => w.stop());
  await w.ready;
  t.is(w.all().length, 0);
  t.true(existsSync(join(dir, '400-1.heaptap')));
  // A live process appearing after start is picked up at once (inotify), well within the poll.
  const path = region(dir, '401-1.heaptap', { pid: 401, state: STATE_RUNNING });
  const release = await holdLock(path);
  t.teardown(release);
  const t0 = Date.now();
  await until(() => w.all().some((p) => p.info?.pid === 401), 1500, 'the new region');
  t.true(Date.now() - t0 < bound(1500));
  await new Promise((r) => setTimeout(r, 1200));
  const warnings = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'cannot read region');
  t.is(warnings.length, 1, 'logged once, not every poll');
  t.is(warnings[0].code, 'ERR_HEAPTAP_FORMAT');
});

test('a process killed with -9 gets a final snapshot with its last counts', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 24, periodUs: 1000, t });
  const w = watcher(dir, 60_000);
  const source = new AgentSource(w, { log: createLogger({ write: () => {} }) });
  const ended: HeapProcess[] = [];
  source.onProcessEnd((p) => ended.push(p));
  w.start();
  t.teardown(() => w.stop());
  await until(() => source.processes().length === 1, 5000, 'the ticker');
  fx.kill('SIGKILL');
  await fx.exited;
  await until(() => ended.length === 1, 5000, 'the end');
  const p = ended[0]!;
  t.is(p.pid, fx.pid);
  t.false(p.alive);
  t.false(p.exited, 'killed: never marked its region');
  t.true(p.inuseBytes >= 24 * 1024);
  // Final means final: it no longer moves.
  await new Promise((r) => setTimeout(r, 300));
  t.is(source.processes()[0]!.samples, p.samples);
  t.is(source.processes()[0]!.residentBytes, null);
});

test('symbol tables are built as stacks arrive, so a profile request finds them ready', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const symbolizer = new Symbolizer();
  const calls: number[] = [];
  const counting = {
    symbolizeAsync: (m: RegionModule, pid: number, pcs: readonly bigint[]) => {
      calls.push(pcs.length);
      return symbolizer.symbolizeAsync(m, pid, pcs);
    },
  };
  const w = new Watcher({ dir, pollMs: 100, retentionMs: 60_000, log: createLogger({ write: () => {} }) });
  const source = new AgentSource(w, { log: createLogger({ write: () => {} }), symbolizer: counting });
  w.start();
  t.teardown(async () => {
    await w.stop();
    fx.kill();
    symbolizer.close();
    await cleanup();
  });
  // No request is made: the watcher's reads alone get the stacks symbolized.
  await until(() => calls.length > 0, 10_000, 'a background symbolization');
  await until(() => w.all()[0]?.snapshot != null, 5000, 'a snapshot');
  await source.idle();
  // The ticker's stacks are all known by now (it allocates from two fixed sites); a
  // request then symbolizes nothing new.
  const [p] = source.processes();
  const before = calls.length;
  const prof = await source.profile(p!.key, 'heap');
  t.is(calls.length, before, 'the request symbolized nothing');
  const names = prof.stringTable.strings;
  t.true(names.includes('site_tick') || names.includes('site_keep'), 'the profile names the ticker\'s sites');
});
