// The fixtures under a libheaptap build in another C library's world: an older glibc (a
// Debian 11 root, test/preload/oldglibc.test.ts) or musl (musl.test.ts). Each scenario runs
// a fixture unprofiled and profiled in that world, requires the same exit code, stdout
// (pids aside) and stderr, and reads the regions back from outside with the sidecar's
// reader, attributing them to the fixture's known sites at HEAPTAP_SAMPLE_RATE=1 (exact).
import type { ExecutionContext } from 'ava';

import { constants, stackFrames, type RegionSnapshot } from '../../src/region.ts';
import { cleanup, frameNames, perSite, regionsIn, truths, type Run } from './run.ts';
import { execGroup } from '../helpers/procs.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
export const SITES = /^(site_\w+|cxx_site_\w+|thread_site|parent_site|child_site|exec_site|dl_site)$/;
const drop = (name: string) => constants.dropReasons.indexOf(name as never);

export interface World {
  /** Runs a fixture (its name in the world's fixture directory, then its arguments) with
   * env added, under the world's libheaptap when profiled; Run.dir is HEAPTAP_DIR as this
   * process sees it. */
  run(cmd: string[], env: Record<string, string>, profiled: boolean): Promise<Run>;
  /** A path as the world's processes see it (in a region's module list, in a fixture's
   * output), as this process sees it. */
  hostPath(path: string): string;
  /** What the world's C library is called in a region's module list. */
  libc: RegExp;
  /** glibc's objects have unwind tables down to _start and clone3, so every walk ends
   * cleanly; musl's libc.so is built without them (.eh_frame for a few assembly stubs), so
   * a walk stops, marked truncated, at the first frame in it (__libc_start_main, a
   * thread's start, qsort...), after every frame of the program. */
  cleanEnds: boolean;
}

/** Stacks end where the world lets them: never truncated where the C library has unwind
 * tables; else truncated only at a frame in the C library. */
async function checkEnds(t: ExecutionContext, world: World, snap: RegionSnapshot) {
  const libc = snap.modules.filter((m) => world.libc.test(m.path));
  let truncated = 0;
  for (let i = 0; i < snap.stacks.ids.length; i++) {
    if (!(snap.stacks.flags[i]! & constants.STACK_TRUNCATED)) continue;
    truncated++;
    const frames = stackFrames(snap.stacks, i);
    const last = frames[frames.length - 1];
    const inLibc = last !== undefined && libc.some((m) => last >= m.start && last < m.limit);
    if (world.cleanEnds || !inLibc) {
      t.fail(`stack ${i} truncated at ${(await frameNames(snap, frames)).join(' < ')}`);
      return;
    }
  }
  if (world.cleanEnds) t.is(snap.header.drops[drop('truncated')], 0n, 'no walk truncated');
  else t.is((snap.header.drops[drop('truncated')] ?? 0n) > 0n, truncated > 0, 'truncated walks counted');
}

/** The pids differ between two runs; everything else a fixture prints must not. */
const samePids = (s: string) => s.replace(/"pid": \d+/g, '"pid": 0');

/** Runs cmd unprofiled and profiled; checks they behave alike and that the profiled one
 * ran on the world's C library; returns the profiled run, its regions with module paths
 * as seen from here, and the fixture's printed truth. */
export async function alike(t: ExecutionContext, world: World, cmd: string[], env: Record<string, string> = {}) {
  const plain = await world.run(cmd, {}, false);
  await cleanup(plain.dir);
  const r = await world.run(cmd, { HEAPTAP_SAMPLE_RATE: '1', ...env }, true);
  t.teardown(() => cleanup(r.dir));
  t.is(plain.code, 0, `unprofiled ${cmd[0]}: ${plain.signal} ${plain.stderr}`);
  t.is(r.code, plain.code, `profiled ${cmd[0]}: ${r.signal} ${r.stderr}`);
  t.is(samePids(r.stdout), samePids(plain.stdout), 'same stdout');
  t.is(r.stderr, plain.stderr, 'same stderr');
  const snaps = (await regionsIn(r.dir)).map((s) => rooted(s, world));
  t.true(snaps.length > 0, 'a region was written');
  for (const s of snaps) t.true(s.modules.some((m) => world.libc.test(m.path)), `ran on ${world.libc}`);
  return { r, snaps, truth: truths(r.stdout) };
}

/** The snapshot with its module paths made readable from here (symbols are read with nm). */
function rooted(snap: RegionSnapshot, world: World): RegionSnapshot {
  return { ...snap, modules: snap.modules.map((m) => ({ ...m, path: m.path.startsWith('/') ? world.hostPath(m.path) : m.path })) };
}

/** churn: four threads, nine sites; every byte, object and in-use byte exact, and its
 * deepest site unwound through code built without frame pointers. */
export async function churnExact(t: ExecutionContext, world: World) {
  const { snaps, truth } = await alike(t, world, ['churn', '--threads', '4', '--mib', '4', '--leak-mib', '2', '--truth', '-']);
  const [snap] = snaps;
  const [want] = truth;
  t.is(snaps.length, 1);
  t.is(snap!.header.pid, want!.pid);
  t.is(snap!.header.state, 2, 'exited normally');
  const sites = await perSite(snap!, SITES);
  t.is(Object.keys(want!.sites).length, 9);
  for (const [name, w] of Object.entries(want!.sites)) {
    const got = sites.get(name);
    t.truthy(got, `site ${name} found`);
    t.is(got?.allocBytes, BigInt(w.alloc_bytes), `${name} bytes`);
    t.is(Math.round(got?.allocObjects ?? NaN), w.alloc_objects ?? NaN, `${name} objects`);
    t.is(got?.inuseBytes, BigInt(w.inuse_bytes), `${name} in use at exit`);
  }
  for (const reason of ['stacks_full', 'frames_full', 'live_full', 'reserve_failed'])
    t.is(snap!.header.drops[drop(reason)], 0n, reason);
  await checkEnds(t, world, snap!);
  let deep = 0;
  for (let i = 0; i < snap!.stacks.ids.length; i++) {
    const names = await frameNames(snap!, stackFrames(snap!.stacks, i));
    if (names[0] !== 'site_deep') continue;
    deep++;
    t.deepEqual(names.slice(0, 4), ['site_deep', 'chain_inner', 'chain_outer', 'run'], names.join(' < '));
  }
  t.true(deep > 0, 'site_deep stacks recorded');
}

/** threads: hundreds of short-lived threads, frees from other threads. */
export async function threadsExact(t: ExecutionContext, world: World) {
  const { snaps, truth } = await alike(t, world, ['threads', '--threads', '600', '--batch', '64'], { HEAPTAP_MAX_THREADS: '128' });
  const site = (await perSite(snaps[0]!, SITES)).get('thread_site');
  t.is(site?.allocBytes, BigInt(truth[0]!.sites.thread_site!.alloc_bytes));
  t.is(site?.freeBytes, site?.allocBytes, 'frees from other threads counted: nothing in use');
  t.true(snaps[0]!.header.threadsSeen >= 600n);
}

/** forker: the parent, its fork child and the image the child execs, one region each;
 * the main thread's stacks reach main and end where the world lets them. */
export async function forkerExact(t: ExecutionContext, world: World) {
  const { snaps, truth } = await alike(t, world, ['forker']);
  const by = new Map(truth.map((x) => [x.role!, x]));
  t.is(snaps.length, 3);
  const parent = snaps.find((s) => s.header.pid === by.get('parent')?.pid);
  const images = snaps.filter((s) => s.header.pid === by.get('child')?.pid);
  const child = images.find((s) => s.header.flags & constants.FLAG_FORK_CHILD);
  const execd = images.find((s) => !(s.header.flags & constants.FLAG_FORK_CHILD));
  t.truthy(parent && child && execd, 'parent, fork child and exec image');
  t.is(child!.header.ppid, parent!.header.pid);
  t.is((await perSite(parent!, SITES)).get('parent_site')?.inuseBytes, 64n * 65536n);
  const cs = await perSite(child!, SITES);
  t.is(cs.get('child_site')?.inuseBytes, 32n * 65536n);
  t.false(cs.has('parent_site'), "the parent's blocks freed in the child count nowhere");
  t.is((await perSite(execd!, SITES)).get('exec_site')?.allocBytes, 16n * 65536n);
  let seen = 0;
  for (let i = 0; i < parent!.stacks.ids.length; i++) {
    const names = await frameNames(parent!, stackFrames(parent!.stacks, i));
    if (names[0] !== 'parent_site') continue;
    seen++;
    t.is(names[1], 'main', names.join(' < '));
  }
  t.true(seen > 0, 'parent_site stacks recorded');
  for (const s of snaps) await checkEnds(t, world, s);
}

/** dlopener: a library loaded with dlopen, its module (with its build id) and its site. */
export async function dlopenerExact(t: ExecutionContext, world: World) {
  const { snaps, truth } = await alike(t, world, ['dlopener', '--count', '4000']);
  const lib = world.hostPath(truth[0]!.lib!);
  const mod = snaps[0]!.modules.find((m) => m.path === lib);
  t.truthy(mod, `module ${truth[0]!.lib} recorded`);
  t.regex(mod?.buildId ?? '', /^[0-9a-f]{40}$/);
  const { stdout } = await exec('readelf', ['-n', lib]);
  t.true(stdout.includes(mod!.buildId), 'build id matches the file');
  const site = (await perSite(snaps[0]!, SITES)).get('dl_site');
  t.is(site?.allocBytes, BigInt(truth[0]!.sites.dl_site!.alloc_bytes));
  t.is(site?.inuseBytes, BigInt(truth[0]!.sites.dl_site!.inuse_bytes));
}

/** cxx_new: operator new and delete of the world's libstdc++. */
export async function cxxNewExact(t: ExecutionContext, world: World) {
  const { snaps, truth } = await alike(t, world, ['cxx_new', '--count', '20000']);
  const sites = await perSite(snaps[0]!, SITES);
  t.true(Object.keys(truth[0]!.sites).length > 0);
  for (const [name, want] of Object.entries(truth[0]!.sites)) {
    t.is(sites.get(name)?.allocBytes, BigInt(want.alloc_bytes), name);
    t.is(sites.get(name)?.inuseBytes, BigInt(want.inuse_bytes), `${name} in use`);
  }
  let sawNew = false;
  for (let i = 0; i < snaps[0]!.stacks.ids.length; i++) {
    const names = await frameNames(snaps[0]!, stackFrames(snaps[0]!.stacks, i));
    if (names[1] === 'cxx_site_array' && names[0]!.startsWith('operator new')) sawNew = true;
  }
  t.true(sawNew, 'operator new[] frame under cxx_site_array');
}
