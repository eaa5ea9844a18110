// libheaptap.so end to end: fixture programs with known allocation sites run under the
// preload; their regions are read back through the addon and attributed to sites.
import test from 'ava';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { constants, readRegion, stackFrames, type RegionSnapshot } from '../../src/region.ts';
import { cleanup, fixtures, frameNames, perSite, preload, regionsIn, runUnder, truths } from './run.ts';
import { execGroup, spawnGroup, within } from '../helpers/procs.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
const SITES = /^(site_\w+|cxx_site_\w+|thread_site|parent_site|child_site|exec_site|dl_site)$/;
const drop = (name: string) => constants.dropReasons.indexOf(name as never);

test('records every allocation and free of a multi-threaded program exactly at rate 1', async (t) => {
  const r = await runUnder(['churn', '--threads', '4', '--mib', '4', '--leak-mib', '2', '--truth', '-'], {
    HEAPTAP_SAMPLE_RATE: '1',
  });
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  t.truthy(snap && truth);
  t.is(snap!.header.pid, truth!.pid);
  t.is(snap!.header.state, 2, 'exited normally');
  t.false(snap!.alive);
  t.true(snap!.header.exitNs > 0n);
  const sites = await perSite(snap!, SITES);
  for (const [name, want] of Object.entries(truth!.sites)) {
    const got = sites.get(name);
    t.truthy(got, `site ${name} found`);
    t.is(got!.allocBytes, BigInt(want.alloc_bytes), `${name} bytes`);
    t.is(Math.round(got!.allocObjects), want.alloc_objects ?? NaN, `${name} objects`);
    t.is(got!.inuseBytes, BigInt(want.inuse_bytes), `${name} in use at exit`);
  }
  for (const reason of ['stacks_full', 'frames_full', 'live_full', 'truncated', 'reserve_failed'])
    t.is(snap!.header.drops[drop(reason)], 0n, reason);
  await cleanup(r.dir);
});

test('estimates every site within 10% at the default rate with a fixed seed', async (t) => {
  // One thread and HEAPTAP_SEED: the run is repeatable. Each site allocates 1 GiB, about
  // 2048 sample points, so a small-object site's estimate has a relative sd of about
  // 1/sqrt(2048) = 2.2%; 10% is 4.5 sd (false failure ~7e-6 per site for a random seed).
  const r = await runUnder(['churn', '--threads', '1', '--mib', '1024', '--leak-mib', '256', '--truth', '-'], {
    HEAPTAP_SEED: '20261122',
  });
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  const sites = await perSite(snap!, SITES);
  for (const [name, want] of Object.entries(truth!.sites)) {
    const got = sites.get(name);
    const rel = Number(got?.allocBytes ?? 0n) / want.alloc_bytes - 1;
    t.true(Math.abs(rel) < 0.1, `${name}: estimated ${got?.allocBytes} vs ${want.alloc_bytes} (${(rel * 100).toFixed(1)}%)`);
    if (want.inuse_bytes > 0) {
      const relIn = Number(got!.inuseBytes) / want.inuse_bytes - 1;
      t.true(Math.abs(relIn) < 0.1, `${name} in use: ${got!.inuseBytes} vs ${want.inuse_bytes}`);
    }
  }
  t.is(snap!.header.sampleRate, 524288n);
  t.is(snap!.header.seed, 20261122n);
  await cleanup(r.dir);
});

test('unwinds full stacks through code built without frame pointers', async (t) => {
  for (const [bin, unwinder] of [['churn', 'dwarf'], ['churn-fp', 'fp']] as const) {
    const r = await runUnder([bin, '--threads', '1', '--mib', '2', '--leak-mib', '0'], {
      HEAPTAP_SAMPLE_RATE: '1',
      HEAPTAP_UNWINDER: unwinder,
    });
    t.is(r.code, 0, r.stderr);
    const [snap] = await regionsIn(r.dir);
    let seen = 0;
    for (let i = 0; i < snap!.stacks.ids.length; i++) {
      const names = await frameNames(snap!, stackFrames(snap!.stacks, i));
      if (names[0] !== 'site_deep') continue;
      seen++;
      t.deepEqual(names.slice(0, 4), ['site_deep', 'chain_inner', 'chain_outer', 'run'], `${bin}: ${names.join(' < ')}`);
      t.is(snap!.stacks.flags[i]! & constants.STACK_TRUNCATED, 0, `${bin}: not truncated`);
      // Past `run` the walk goes on into libc (start_thread, clone3: not in its dynamic
      // symbols, so unnamed here) and ends there, cleanly: not truncated (checked above).
      const frames = stackFrames(snap!.stacks, i);
      const libc = snap!.modules.find((m) => /\/libc\.so/.test(m.path))!;
      const tail = [...frames.slice(4)];
      t.true(tail.length >= 1 && tail.every((pc) => pc >= libc.start && pc < libc.limit), `${bin}: ends in libc`);
    }
    t.true(seen > 0, `${bin}: site_deep stacks recorded`);
    t.is(snap!.header.unwinder, unwinder === 'dwarf' ? 1 : 2);
    await cleanup(r.dir);
  }
});

test('sees C++ new and delete through libstdc++', async (t) => {
  const r = await runUnder(['cxx_new', '--count', '20000'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  const sites = await perSite(snap!, SITES);
  for (const [name, want] of Object.entries(truth!.sites)) {
    t.is(sites.get(name)?.allocBytes, BigInt(want.alloc_bytes), name);
    t.is(sites.get(name)?.inuseBytes, BigInt(want.inuse_bytes), `${name} in use`);
  }
  // operator new is a frame between malloc and the site, as Go's pprof shows runtime frames.
  let sawNew = false;
  for (let i = 0; i < snap!.stacks.ids.length; i++) {
    const names = await frameNames(snap!, stackFrames(snap!.stacks, i));
    if (names[1] === 'cxx_site_array' && names[0]!.startsWith('operator new')) sawNew = true;
  }
  t.true(sawNew, 'operator new[] frame under cxx_site_array');
  await cleanup(r.dir);
});

test('thousands of short-lived threads reuse slabs without losing counts', async (t) => {
  const r = await runUnder(['threads', '--threads', '3000', '--batch', '64'], {
    HEAPTAP_SAMPLE_RATE: '1',
    HEAPTAP_MAX_THREADS: '128',
  });
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  const site = (await perSite(snap!, SITES)).get('thread_site');
  t.is(site?.allocBytes, BigInt(truth!.sites.thread_site!.alloc_bytes));
  t.is(site?.freeBytes, site?.allocBytes, 'frees from other threads counted: nothing in use');
  t.true(snap!.header.slabFolds > 0n, 'retired slabs were folded and reused');
  t.true(snap!.header.threadsSeen >= 3000n);
  await cleanup(r.dir);
});

test('a fork child gets its own region and an exec a new one', async (t) => {
  const r = await runUnder(['forker'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.is(r.code, 0, r.stderr);
  const by = new Map(truths(r.stdout).map((x) => [x.role!, x]));
  const snaps = await regionsIn(r.dir);
  t.is(snaps.length, 3);
  const parent = snaps.find((s) => s.header.pid === by.get('parent')!.pid)!;
  const images = snaps.filter((s) => s.header.pid === by.get('child')!.pid);
  const child = images.find((s) => s.header.flags & constants.FLAG_FORK_CHILD)!;
  const execd = images.find((s) => !(s.header.flags & constants.FLAG_FORK_CHILD))!;
  t.truthy(parent && child && execd);
  t.is(child.header.ppid, parent.header.pid);
  const ps = await perSite(parent, SITES);
  t.is(ps.get('parent_site')?.inuseBytes, 64n * 65536n, 'the child freeing them does not touch the parent');
  const cs = await perSite(child, SITES);
  t.is(cs.get('child_site')?.inuseBytes, 32n * 65536n);
  t.false(cs.has('parent_site'), "the parent's blocks freed in the child count nowhere");
  for (const s of cs.values()) t.true(s.freeBytes <= s.allocBytes, 'in use never negative');
  const es = await perSite(execd, SITES);
  t.is(es.get('exec_site')?.allocBytes, 16n * 65536n);
  t.false(child.alive, 'the image the child exec()ed away from is no longer alive');
  t.is(child.header.state, 1, 'exec is not an exit');
  await cleanup(r.dir);
});

test('HEAPTAP_FOLLOW_CHILDREN=0 leaves children unprofiled', async (t) => {
  const r = await runUnder(['forker'], { HEAPTAP_SAMPLE_RATE: '1', HEAPTAP_FOLLOW_CHILDREN: '0' });
  t.is(r.code, 0, r.stderr);
  const snaps = await regionsIn(r.dir);
  t.is(snaps.length, 1);
  t.is(snaps[0]!.header.pid, truths(r.stdout).find((x) => x.role === 'parent')!.pid);
  await cleanup(r.dir);
});

test('records allocations of a dlopen()ed library and its module', async (t) => {
  const r = await runUnder(['dlopener', '--count', '4000'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.is(r.code, 0, r.stderr);
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  const mod = snap!.modules.find((m) => m.path === truth!.lib);
  t.truthy(mod, 'module recorded');
  t.regex(mod!.buildId, /^[0-9a-f]{40}$/);
  const { stdout } = await exec('readelf', ['-n', truth!.lib!]);
  t.true(stdout.includes(mod!.buildId), 'build id matches the file');
  const site = (await perSite(snap!, SITES)).get('dl_site');
  t.is(site?.allocBytes, BigInt(truth!.sites.dl_site!.alloc_bytes));
  t.is(site?.inuseBytes, BigInt(truth!.sites.dl_site!.inuse_bytes));
  await cleanup(r.dir);
});

test('never deadlocks when sampling inside dlopen, fork and many threads', async (t) => {
  const a = await runUnder(['dlopener', '--stress', '3'], { HEAPTAP_SAMPLE_RATE: '1' }, { timeoutMs: 60_000 });
  t.is(a.code, 0, `dlopen stress: ${a.signal} ${a.stderr}`);
  const [snap] = await regionsIn(a.dir);
  t.true(snap!.modules.some((m) => m.path.endsWith('libdlalloc.so') && m.state === 2), 'dlclose seen: module unloaded');
  await cleanup(a.dir);
  const b = await runUnder(['forker', '--stress', '200'], { HEAPTAP_SAMPLE_RATE: '1' }, { timeoutMs: 60_000 });
  t.is(b.code, 0, `fork stress: ${b.signal} ${b.stderr}`);
  await cleanup(b.dir);
});

test('works with jemalloc behind it', async (t) => {
  const je = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';
  const r = await runUnder(
    ['churn', '--threads', '2', '--mib', '2', '--leak-mib', '1', '--truth', '-'],
    { HEAPTAP_SAMPLE_RATE: '1', MALLOC_CONF: 'stats_print:true' },
    { preloadAfter: [je] },
  );
  t.is(r.code, 0, r.stderr);
  t.true(r.stderr.includes('jemalloc statistics'), 'jemalloc served the allocations');
  const [truth] = truths(r.stdout);
  const [snap] = await regionsIn(r.dir);
  const sites = await perSite(snap!, SITES);
  for (const [name, want] of Object.entries(truth!.sites)) {
    t.is(sites.get(name)?.allocBytes, BigInt(want.alloc_bytes), name);
    t.is(sites.get(name)?.inuseBytes, BigInt(want.inuse_bytes), `${name} in use`);
  }
  await cleanup(r.dir);
});

test('a region stays readable after its process is killed with -9', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'heaptap-e2e-'));
  const child = spawnGroup(t, join(fixtures, 'churn'), ['--threads', '2', '--mib', '2', '--leak-mib', '4', '--hold'], {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: preload, HEAPTAP_SAMPLE_RATE: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await within(new Promise<void>((res) => child.stdout!.on('data', (d) => String(d).includes('ready') && res())),
    60_000, 'churn to say ready');
  const [live] = await regionsIn(dir);
  t.true(live!.alive);
  t.is(live!.header.state, 1);
  const closed = new Promise((res) => child.on('close', res));
  child.kill('SIGKILL');
  await within(closed, 30_000, 'churn to end after SIGKILL');
  const [dead] = await regionsIn(dir);
  t.false(dead!.alive, 'the writer is gone');
  t.is(dead!.header.state, 1, 'never marked exited');
  const leak = (await perSite(dead!, SITES)).get('site_leak');
  t.is(leak?.inuseBytes, 8n << 20n, 'counts intact');
  await cleanup(dir);
});

/** Runs a fixture at rate 1 with HEAPTAP_DIR on a 64 KiB tmpfs of its own (a private mount
 * namespace): room for a region's first pages, not for a thread's slab or much growth.
 * Returns the copied-out region (when exactly one was made), and stdout in out/stdout. */
async function onTinyTmpfs(cmd: string) {
  const out = await mkdtemp(join(tmpdir(), 'heaptap-e2e-'));
  const script = `set -e; mount -t tmpfs -o size=64k tmpfs "$D"
    HEAPTAP_DIR="$D" HEAPTAP_SAMPLE_RATE=1 LD_PRELOAD="$P" "$F"/${cmd} > "$O/stdout"
    cp "$D"/*.heaptap "$O"/`;
  const { stderr } = await exec('unshare', ['-m', 'sh', '-c', script], {
    env: { ...process.env, D: await mkdtemp(join(tmpdir(), 'heaptap-tiny-')), P: preload, F: fixtures, O: out },
  });
  const names = (await readdir(out)).filter((n) => n.endsWith('.heaptap'));
  return { out, stderr, snap: names.length === 1 ? readRegion(join(out, names[0]!)) : undefined! };
}

test('a full tmpfs becomes drop counters, never a crash', async (t) => {
  const { out, snap, stderr } = await onTinyTmpfs('threads --threads 400 --batch 64');
  t.false(stderr.includes('Bus error'), stderr);
  const [truth] = truths(await readFile(join(out, 'stdout'), 'utf8'));
  t.truthy(snap, 'one region');
  t.true(snap.header.drops[drop('reserve_failed')]! > 0n, 'reservation failures counted');
  t.true(snap.header.stacksUsed < 64, `ids are not burnt by failed reservations (${snap.header.stacksUsed})`);
  // Nothing is lost: what could not get a stack of its own is under the overflow stack.
  // thread_site is all but a few KiB of what the program allocates (stdio, thread setup).
  let total = 0n;
  let overflow = 0n;
  snap.counters.ids.forEach((id, i) => {
    total += snap.counters.allocBytes[i]!;
    if (id === constants.STACK_OVERFLOW) overflow += snap.counters.allocBytes[i]!;
  });
  const want = BigInt(truth!.sites.thread_site!.alloc_bytes);
  t.true(total >= want && total < want + (1n << 20n), `total ${total} vs thread_site ${want}`);
  // No thread got a slab: every count went to the shared table, exactly.
  t.true(snap.header.drops[drop('no_slab')]! > 0n, 'counted in the shared table');
  await cleanup(out);
});

test('a full tmpfs stops the stack table growing: the rest is counted under the overflow stack', async (t) => {
  // 3000 distinct 43-frame stacks need about 1 MiB of frame pool.
  const { out, snap, stderr } = await onTinyTmpfs('deepstacks --stacks 3000 --depth 40');
  t.false(stderr.includes('Bus error'), stderr);
  t.truthy(snap, 'one region');
  t.true(snap.header.drops[drop('reserve_failed')]! > 0n, 'reservation failures counted');
  let overflow = 0n;
  let total = 0n;
  snap.counters.ids.forEach((id, i) => {
    total += snap.counters.allocBytes[i]!;
    if (id === constants.STACK_OVERFLOW) overflow += snap.counters.allocBytes[i]!;
  });
  t.true(overflow > 0n, 'stacks that found no room are under the overflow stack');
  t.true(total >= 3000n * 64n, `nothing lost: ${total} bytes counted`);
  await cleanup(out);
});

test('deep stacks fill the stack table before the frame pool', async (t) => {
  // Interpreters and recursive code make deep stacks (python3 compiling code averages
  // about 40 frames). The frame pool must hold a full-depth stack per table entry, so
  // that what runs out is the stack table, counted as stacks_full, never the pool
  // (frames_full). deepstacks makes 3000 distinct stacks about 43 frames deep.
  const r = await runUnder(['deepstacks', '--stacks', '3000', '--depth', '40'], {
    HEAPTAP_SAMPLE_RATE: '1', HEAPTAP_MAX_STACKS: '1024',
  });
  t.is(r.code, 0, r.stderr);
  const [snap] = await regionsIn(r.dir);
  const h = snap!.header;
  t.true(h.frames.capacity >= h.stacks.capacity * Math.min(h.maxDepth, 64), `frames ${h.frames.capacity} for ${h.stacks.capacity} stacks`);
  const avg = snap!.stacks.frames.length / snap!.stacks.ids.length;
  t.true(avg > 40, `stacks average ${avg.toFixed(1)} frames`);
  t.true(h.drops[drop('stacks_full')]! > 0n, 'the stack table did fill');
  t.is(h.drops[drop('frames_full')], 0n, 'the frame pool did not');
  t.true(snap!.stacks.ids.length >= 1000, `${snap!.stacks.ids.length} stacks recorded`);
  await cleanup(r.dir);
});

test('stacks cut at HEAPTAP_MAX_DEPTH are flagged truncated and counted', async (t) => {
  // deepstacks --depth 8 allocates about 13 frames deep. In full (the default limit, 64)
  // every stack ends cleanly; at HEAPTAP_MAX_DEPTH=8 every one is cut to 8 frames, and a
  // reader must be able to tell: the stack's TRUNCATED flag and the `truncated` drop count.
  const full = await runUnder(['deepstacks', '--stacks', '200', '--depth', '8'], { HEAPTAP_SAMPLE_RATE: '1' });
  const cut = await runUnder(['deepstacks', '--stacks', '200', '--depth', '8'], { HEAPTAP_SAMPLE_RATE: '1', HEAPTAP_MAX_DEPTH: '8' });
  t.teardown(async () => {
    await cleanup(full.dir);
    await cleanup(cut.dir);
  });
  t.is(full.code, 0, full.stderr);
  t.is(cut.code, 0, cut.stderr);
  const deep = async (snap: RegionSnapshot) => {
    const out: { depth: number; truncated: boolean }[] = [];
    for (let i = 0; i < snap.stacks.ids.length; i++) {
      const names = await frameNames(snap, stackFrames(snap.stacks, i));
      if (/^(next|step_[abcd])$/.test(names[0]!)) out.push({ depth: snap.stacks.depths[i]!, truncated: (snap.stacks.flags[i]! & constants.STACK_TRUNCATED) !== 0 });
    }
    return out;
  };
  const [f] = await regionsIn(full.dir);
  const fs = await deep(f!);
  t.true(fs.length >= 200, `${fs.length} deepstacks stacks in full`);
  t.true(fs.every((s) => s.depth > 8 && s.depth < 64 && !s.truncated), 'in full: deeper than 8 frames, not truncated');
  t.is(f!.header.drops[drop('truncated')], 0n);
  const [c] = await regionsIn(cut.dir);
  t.is(c!.header.maxDepth, 8);
  const cs = await deep(c!);
  t.true(cs.length >= 1, `${cs.length} deepstacks stacks at depth 8`);
  t.true(cs.every((s) => s.depth === 8 && s.truncated), `cut to 8 frames and flagged: ${JSON.stringify(cs.slice(0, 3))}`);
  t.true(c!.header.drops[drop('truncated')]! >= 200n, `truncated samples counted: ${c!.header.drops[drop('truncated')]}`);
});
