// End to end with a real consumer: fixture programs (C and C++, threads, fork and exec,
// dlopen, a stripped binary; all built without frame pointers) run under `heaptap run`,
// and `go tool pprof` reads what it wrote. At --rate 1 every figure pprof shows must be
// the fixture's exact truth. go is found on PATH or at /usr/local/go/bin/go; without it
// these tests fail (scripts/setup.sh installs it), they never skip.
import test, { type ExecutionContext } from 'ava';

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { OVERFLOW_FUNCTION, TRUNCATED_FUNCTION, buildProfile, encodeProfile } from '../src/profile.ts';
import { constants } from '../src/region.ts';
import { fakeSymbolizer, module, snapshot } from './helpers/fakeRegion.ts';
import { findGo, fixtures, heaptap, parseTop, pprof, profilesIn, removeDir, tempDir, truths, type Result, type TopRow } from './helpers/heaptap.ts';

const SPACE = ['-unit=B', '-nodefraction=0', '-nodecount=1000'];
const COUNT = ['-nodefraction=0', '-nodecount=1000'];

/** Runs a fixture under heaptap at rate 1; returns its profiles and the truth it printed. */
async function runFixture(t: ExecutionContext, cmd: string[], extra: string[] = ['--rate', '1']) {
  findGo(); // fail early, with the message, when go is missing
  const dir = await tempDir('heaptap-pprof-');
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', ...extra, '-o', dir, '--', join(fixtures, cmd[0]!), ...cmd.slice(1)]);
  t.is(r.code, 0, r.stderr);
  return { dir, ...(await profilesIn(dir)), truth: truths(r.stdout), run: r };
}

/** go tool pprof, asserting that it succeeded and printed nothing on stderr (or exactly
 * expectStderr: pprof's own note on how it read a filter option). */
async function clean(t: ExecutionContext, args: string[], expectStderr = ''): Promise<string> {
  const r: Result = await pprof(args);
  t.is(r.code, 0, `go tool pprof ${args.join(' ')}: ${r.stderr}`);
  t.is(r.stderr, expectStderr, `go tool pprof ${args.join(' ')} warned`);
  return r.stdout;
}

const cum = (rows: Map<string, TopRow>, re: RegExp) =>
  Math.max(0, ...[...rows.values()].filter((r) => re.test(r.name)).map((r) => r.cum));

test('go tool pprof reads the churn profiles without a warning, every site exact at rate 1', async (t) => {
  const { heap, peak, truth, pid } = await runFixture(t, ['churn', '--threads', '2', '--mib', '4', '--leak-mib', '1', '--truth', '-']);
  const want = truth[0]!;
  t.is(want.pid, pid, 'profiles are named for the command\'s pid');
  const allocSpace = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', heap]));
  const allocObjects = parseTop(await clean(t, ['-top', ...COUNT, '-sample_index=alloc_objects', heap]));
  const inuseSpaceOut = await clean(t, ['-top', ...SPACE, '-sample_index=inuse_space', heap]);
  const inuseSpace = parseTop(inuseSpaceOut);
  const inuseObjects = parseTop(await clean(t, ['-top', ...COUNT, '-sample_index=inuse_objects', heap]));
  t.regex(inuseSpaceOut, /^File: churn$/m);
  for (const [site, w] of Object.entries(want.sites)) {
    t.is(allocSpace.get(site)?.flat, w.alloc_bytes, `${site} alloc_space`);
    t.is(allocObjects.get(site)?.flat, w.alloc_objects, `${site} alloc_objects`);
    t.is(inuseSpace.get(site)?.flat ?? 0, w.inuse_bytes, `${site} inuse_space`);
    t.is(inuseObjects.get(site)?.flat ?? 0, w.inuse_bytes / 65536, `${site} inuse_objects`);
  }
  // The heap view has no default sample type: pprof shows inuse_space.
  t.regex(await clean(t, ['-top', heap]), /^Type: inuse_space$/m);
  t.regex(await clean(t, ['-top', peak]), /^Type: inuse_space$/m);

  // -traces: whole stacks, through the frames of code built without frame pointers, and
  // the pid label.
  const traces = await clean(t, ['-traces', '-sample_index=alloc_space', heap]);
  t.regex(traces, /site_deep\n\s+chain_inner\n\s+chain_outer\n\s+run\n/);
  t.regex(traces, new RegExp(`pid:\\s+${pid}\\b`));
  t.notRegex(traces, /\bbytes:/, 'no bytes label: its average would drift between profiles (src/profile.ts)');

  // -diff_base: the allocations after the peak, and in use at exit less in use at the peak.
  const peakAlloc = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', peak]));
  const diff = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', `-diff_base=${peak}`, heap]));
  for (const site of Object.keys(want.sites)) {
    t.is(diff.get(site)?.flat ?? 0, want.sites[site]!.alloc_bytes - (peakAlloc.get(site)?.flat ?? 0), `${site} diff`);
  }
});

test('a C++ program\'s sites are named and exact through operator new', async (t) => {
  const { heap, truth } = await runFixture(t, ['cxx_new', '--count', '20000']);
  const alloc = parseTop(await clean(t, ['-top', '-cum', ...SPACE, '-sample_index=alloc_space', heap]));
  const inuse = parseTop(await clean(t, ['-top', '-cum', ...SPACE, '-sample_index=inuse_space', heap]));
  for (const [site, w] of Object.entries(truth[0]!.sites)) {
    const re = new RegExp(`^${site}\\b`);
    t.is(cum(alloc, re), w.alloc_bytes, `${site} alloc_space`);
    t.is(cum(inuse, re), w.inuse_bytes, `${site} inuse_space`);
  }
  t.true([...alloc.keys()].some((n) => /^operator new/.test(n)), 'operator new is a frame, as Go shows runtime frames');
});

test('fork and exec: one profile, each process labelled with its pid', async (t) => {
  const { heap, truth, pid } = await runFixture(t, ['forker']);
  const by = new Map(truth.map((x) => [x.role!, x]));
  t.is(by.get('parent')!.pid, pid);
  const inuse = parseTop(await clean(t, ['-top', ...SPACE, heap]));
  t.is(inuse.get('parent_site')?.flat, by.get('parent')!.sites.parent_site!.inuse_bytes);
  t.is(inuse.get('child_site')?.flat, by.get('child')!.sites.child_site!.inuse_bytes);
  t.is(inuse.get('exec_site')?.flat, by.get('exec')!.sites.exec_site!.inuse_bytes);
  const tags = await clean(t, ['-tags', heap]);
  t.regex(tags, new RegExp(`\\b${by.get('parent')!.pid}\\n`));
  t.regex(tags, new RegExp(`\\b${by.get('child')!.pid}\\n`));
  // Only the child's own allocations under its pid (exec_site came after the exec).
  const childPid = by.get('child')!.pid;
  const child = parseTop(await clean(t, ['-top', ...SPACE, `-tagfocus=pid=${childPid}`, heap],
    `tagfocus:Interpreted '${childPid}' as range, not regexp\n`));
  t.is(child.get('parent_site'), undefined);
  t.is(child.get('child_site')?.flat, 32 * 65536);
  t.is(child.get('exec_site')?.flat, 16 * 65536);
});

test('a dlopen()ed library: its sites are named and exact, its mapping has its build id', async (t) => {
  const { heap, truth } = await runFixture(t, ['dlopener', '--count', '4000']);
  const w = truth[0]!;
  const alloc = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', heap]));
  const inuse = parseTop(await clean(t, ['-top', ...SPACE, heap]));
  t.is(alloc.get('dl_site')?.flat, w.sites.dl_site!.alloc_bytes);
  t.is(inuse.get('dl_site')?.flat, w.sites.dl_site!.inuse_bytes);
  const raw = await clean(t, ['-raw', heap]);
  t.regex(raw, new RegExp(`${w.lib!.replace(/[.]/g, '\\.')} [0-9a-f]{40}`));
});

test('threads: thousands of short-lived threads add up exactly', async (t) => {
  const { heap, truth } = await runFixture(t, ['threads', '--threads', '300', '--batch', '32']);
  const alloc = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', heap]));
  t.is(alloc.get('thread_site')?.flat, truth[0]!.sites.thread_site!.alloc_bytes);
  const inuse = parseTop(await clean(t, ['-top', ...SPACE, heap]));
  t.is(inuse.get('thread_site')?.flat ?? 0, 0, 'all freed by the main thread');
});

test('a stripped binary: pprof shows its frames by mapping name, without a warning', async (t) => {
  // What go tool pprof prints for a stripped executable: nothing on stderr; frames of the
  // binary appear as "[churn-stripped]" (it tries to symbolize the mapping from the file,
  // which has no symbols); libc's frames keep the names heaptap gave them.
  const { heap } = await runFixture(t, ['churn-stripped', '--threads', '1', '--mib', '2', '--leak-mib', '1']);
  const top = parseTop(await clean(t, ['-top', ...SPACE, '-sample_index=alloc_space', heap]));
  t.true((top.get('[churn-stripped]')?.flat ?? 0) > 17 << 20, 'the sites\' bytes, under the mapping name');
  t.false([...top.keys()].some((n) => n.startsWith('site_')), 'no names: the file has none');
  const traces = await clean(t, ['-traces', heap]);
  t.regex(traces, /^\s+\S+\s+\[churn-stripped\]$/m);
  const raw = await clean(t, ['-raw', heap]);
  t.regex(raw, /^1: 0x[0-9a-f]+\/0x[0-9a-f]+\/0x[0-9a-f]+ \S+\/churn-stripped [0-9a-f]{40} ?$/m,
    'mapping 1 is the executable, with its build id and no symbol flags: tools can symbolize it later');
});

test('pprof shows heaptap\'s synthetic frames: a full stack table and truncated stacks', async (t) => {
  // A hand-made region: bytes counted under the overflow stack, and a stack the unwinder
  // cut short (in a module the fake symbolizer names: pprof leaves it as it is).
  findGo();
  const dir = await tempDir('heaptap-pprof-');
  t.teardown(() => removeDir(dir));
  const snap = snapshot(4242, [
    { id: constants.STACK_OVERFLOW, frames: [], alloc: [3, 3 << 20] },
    { id: 2, frames: [0x400234n, 0x400678n], flags: constants.STACK_TRUNCATED, alloc: [1, 4096] },
  ], { modules: [module(0, join(fixtures, 'churn'), 0x400000n, 0x401000n, constants.MODULE_MAIN)] });
  const file = join(dir, 'synthetic.pb.gz');
  await writeFile(file, await encodeProfile(buildProfile([{ snapshot: snap }], { view: 'heap', symbolizer: fakeSymbolizer() })));
  const top = parseTop(await clean(t, ['-top', ...SPACE, file]));
  t.is(top.get(OVERFLOW_FUNCTION)?.flat, 3 << 20);
  t.is(top.get('fn_400234')?.flat, 4096);
  t.is(top.get(TRUNCATED_FUNCTION)?.cum, 4096);
  const traces = await clean(t, ['-traces', file]);
  t.regex(traces, /fn_400234\n\s+fn_400678\n\s+\[heaptap: truncated\]\n/);
});
