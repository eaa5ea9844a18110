// src/symbolize.ts and the addon's libdwfl symbolizer (src/addon/symbolize.cc): fixtures in
// test/fixtures/symfix (built by `make -C test/fixtures/symfix`) run under the preload for
// real return addresses, plus addresses from nm, split debug files in every place they are
// looked for, hostile files, /proc/<pid>/root and /proc/<pid>/map_files, caching.
import test from 'ava';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  copyFileSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';

import { constants, stackFrames, type RegionModule, type RegionSnapshot } from '../src/region.ts';
import { Symbolizer, elfAddresses, type SymFrame } from '../src/symbolize.ts';
import { spawnGroup, within } from './helpers/procs.ts';
import { cleanup, regionsIn, root, runUnder, symbolsOf } from './preload/run.ts';

const SRC = join(root, 'test/fixtures/symfix');
const B = join(SRC, 'build');

test.before(() => {
  execFileSync('make', ['-s', '-C', SRC], { stdio: 'inherit' });
});

/** The 1-based line of the source line holding the marker `@name`. */
function line(file: string, name: string): number {
  const lines = readFileSync(join(SRC, file), 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(`@${name} `) || l.endsWith(`@${name}`));
  if (i < 0) throw new Error(`no marker @${name} in ${file}`);
  return i + 1;
}

function buildIdOf(path: string): string {
  const out = execFileSync('readelf', ['-n', path], { encoding: 'utf8' });
  const m = /Build ID: ([0-9a-f]+)/.exec(out);
  return m ? m[1]! : '';
}

function mod(path: string, extra: Partial<RegionModule> = {}): RegionModule {
  return {
    index: 0,
    state: 1,
    flags: 0,
    path,
    loadBias: 0n,
    start: 0n,
    limit: 0n,
    fileOffset: 0n,
    loadNs: 0n,
    unloadNs: 0n,
    buildId: '',
    ...extra,
  };
}

/** The file address of a function from nm (demangled name without parameters). */
async function nmAddress(path: string, name: string): Promise<bigint> {
  const s = (await symbolsOf(path)).find((x) => x.name === name);
  if (!s) throw new Error(`${name} not in ${path}`);
  return s.start;
}

async function tmp(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'heaptap-sym-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const brief = (f: SymFrame) => `${f.function}@${f.file.split('/').pop()}:${f.line}`;

/** Every stack of a snapshot as symbolic frames (all modules), innermost first. */
function symbolicStacks(snap: RegionSnapshot, s: Symbolizer): { frames: SymFrame[]; module: string }[][] {
  const byModule = new Map<RegionModule, bigint[]>();
  const owner = (pc: bigint) => snap.modules.find((m) => pc >= m.start && pc < m.limit);
  for (let i = 0; i < snap.stacks.ids.length; i++) {
    for (const pc of stackFrames(snap.stacks, i)) {
      const m = owner(pc);
      if (m) (byModule.get(m) ?? byModule.set(m, []).get(m)!).push(pc);
    }
  }
  const answers = new Map<string, SymFrame[]>();
  for (const [m, pcs] of byModule) {
    const r = s.symbolize(m, snap.header.pid, pcs);
    pcs.forEach((pc, i) => answers.set(`${m.index}:${pc}`, r.frames[i]!));
  }
  const out: { frames: SymFrame[]; module: string }[][] = [];
  for (let i = 0; i < snap.stacks.ids.length; i++) {
    out.push(
      Array.from(stackFrames(snap.stacks, i), (pc) => {
        const m = owner(pc);
        return { frames: m ? answers.get(`${m.index}:${pc}`)! : [], module: m?.path ?? '?' };
      }),
    );
  }
  return out;
}

/** The stacks as flat lists of frames. */
function flat(stacks: { frames: SymFrame[] }[][]): SymFrame[][] {
  return stacks.map((st) => st.flatMap((x) => x.frames));
}

/** The first position where want (brief strings) occurs consecutively in frames, or -1. */
function findRun(frames: SymFrame[], want: string[]): number {
  const b = frames.map(brief);
  for (let i = 0; i + want.length <= b.length; i++) if (want.every((w, k) => b[i + k] === w)) return i;
  return -1;
}

test('expands inlined calls into frames, innermost first, each with its caller\'s call line', async (t) => {
  const r = await runUnder([join(B, 'inl'), '40'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.teardown(() => cleanup(r.dir));
  t.is(r.code, 0, r.stderr);
  const [snap] = await regionsIn(r.dir);
  const exe = snap!.modules.find((m) => m.flags & constants.MODULE_MAIN)!;
  t.is(exe.path, join(B, 'inl'));
  t.not(exe.loadBias, 0n, 'a PIE, loaded at a bias');
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const stacks = flat(symbolicStacks(snap!, s));
  const want = [
    `leaf_alloc@inl.c:${line('inl.c', 'leaf-call')}`,
    `mid_alloc@inl.c:${line('inl.c', 'mid-call')}`,
    `outer_alloc@inl.c:${line('inl.c', 'outer-call')}`,
    `main@inl.c:${line('inl.c', 'main-call')}`,
  ];
  const hit = stacks.find((f) => findRun(f, want) >= 0);
  t.truthy(hit, `no stack with ${want.join(' < ')} in:\n${stacks.map((f) => f.map(brief).join(' | ')).join('\n')}`);
  const at = findRun(hit!, want);
  t.like(hit![at], { function: 'leaf_alloc', systemName: 'leaf_alloc', startLine: line('inl.c', 'leaf-decl') });
  t.like(hit![at + 1], { startLine: line('inl.c', 'mid-decl') });
  t.like(hit![at + 2], { startLine: line('inl.c', 'outer-decl') });
  t.true(hit![at]!.file.endsWith('/test/fixtures/symfix/inl.c'));

  const info = s.symbolize(exe, snap!.header.pid, []).info;
  t.deepEqual(info, {
    path: exe.path,
    buildId: exe.buildId,
    found: true,
    hasFunctions: true,
    hasFilenames: true,
    hasLineNumbers: true,
    hasInlineFrames: true,
    debugFile: '',
    error: '',
  });
});

test('names C++ functions demangled, with the mangled name as systemName', async (t) => {
  const r = await runUnder([join(B, 'cxx'), '20'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.teardown(() => cleanup(r.dir));
  t.is(r.code, 0, r.stderr);
  const [snap] = await regionsIn(r.dir);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const stacks = flat(symbolicStacks(snap!, s));
  const grab = stacks.flat().find((f) => f.systemName === '_ZN7heapfix4PoolIiE4grabEm');
  t.like(grab, {
    function: 'heapfix::Pool<int>::grab(unsigned long)',
    line: line('cxx.cc', 'grab-call'),
    startLine: line('cxx.cc', 'grab-decl'),
  });
  const build = stacks.flat().find((f) => f.systemName === '_ZN7heapfix6Widget5buildEi');
  t.like(build, {
    function: 'heapfix::Widget::build(int)',
    line: line('cxx.cc', 'build-call'),
    startLine: line('cxx.cc', 'build-decl'),
  });
  t.true(
    stacks.some((f) => findRun(f, [brief(build!), `main@cxx.cc:${line('cxx.cc', 'main-build')}`]) >= 0),
    'Widget::build called from main',
  );
  // libstdc++ has only its dynamic symbol table here: operator new by its ELF symbol
  const opNew = stacks.flat().find((f) => f.systemName === '_Znwm');
  t.like(opNew, { function: 'operator new(unsigned long)', file: '', line: 0, startLine: 0 });
});

test('symbolizes a shared library loaded at a non-zero bias', async (t) => {
  const r = await runUnder([join(B, 'usesym'), '20'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.teardown(() => cleanup(r.dir));
  t.is(r.code, 0, r.stderr);
  const [snap] = await regionsIn(r.dir);
  const lib = snap!.modules.find((m) => m.path.endsWith('/libsym.so'))!;
  t.truthy(lib);
  t.not(lib.loadBias, 0n);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const stacks = symbolicStacks(snap!, s);
  const want = [
    `lib_inner@libsym.c:${line('libsym.c', 'lib-inner-call')}`,
    `lib_make@libsym.c:${line('libsym.c', 'lib-make-call')}`,
    `main@usesym.c:${line('usesym.c', 'use-call')}`,
  ];
  t.true(flat(stacks).some((f) => findRun(f, want) >= 0), want.join(' < '));
  // every module of the process, libc and ld.so included, answers without an error
  for (const m of snap!.modules) {
    const info = s.symbolize(m, snap!.header.pid, [m.start + 16n]).info;
    t.is(info.error, '', m.path);
    t.is(info.found, !(m.flags & constants.MODULE_VDSO), m.path);
  }
});

test('resolves function start addresses taken from nm', async (t) => {
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const inl = join(B, 'inl');
  const outer = await nmAddress(inl, 'outer_alloc');
  const main = await nmAddress(inl, 'main');
  const r = s.symbolize(mod(inl), 0, [outer + 1n, main + 1n]);
  t.like(r.frames[0]!.at(-1), { function: 'outer_alloc', startLine: line('inl.c', 'outer-decl') });
  t.like(r.frames[1]!.at(-1), { function: 'main', startLine: line('inl.c', 'main-decl') });

  const cxx = join(B, 'cxx');
  const build = await nmAddress(cxx, 'heapfix::Widget::build');
  const c = s.symbolize(mod(cxx), 0, [build + 1n]);
  t.like(c.frames[0]!.at(-1), {
    function: 'heapfix::Widget::build(int)',
    systemName: '_ZN7heapfix6Widget5buildEi',
    startLine: line('cxx.cc', 'build-decl'),
  });
  t.true(c.frames[0]!.at(-1)!.file.endsWith('cxx.cc'));
  // gcc may split a function into a hot and a cold part (grab.isra.0 and grab.isra.0.cold):
  // both are the function
  for (const sym of (await symbolsOf(cxx)).filter((x) => x.name === 'heapfix::Pool<int>::grab')) {
    const g = s.symbolize(mod(cxx), 0, [sym.start + 1n]);
    t.is(g.frames[0]!.at(-1)!.systemName, '_ZN7heapfix4PoolIiE4grabEm', `at 0x${sym.start.toString(16)}`);
  }
});

test('finds a separate debug file through .gnu_debuglink next to the binary, in .debug/ and under a debug dir', async (t) => {
  const d = await tmp(t);
  const outer = await nmAddress(join(B, 'inl'), 'outer_alloc');
  const cases: [string, string][] = [
    ['next', 'next/inl.debug'],
    ['sub', 'sub/.debug/inl.debug'],
    ['dirs', `debug${d}/dirs/inl.debug`],
  ];
  for (const [dir, debugAt] of cases) {
    mkdirSync(join(d, dirname(debugAt)), { recursive: true });
    mkdirSync(join(d, dir), { recursive: true });
    copyFileSync(join(B, 'inl-debuglink'), join(d, dir, 'prog'));
    copyFileSync(join(B, 'inl.debug'), join(d, debugAt));
    const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [join(d, 'debug')] });
    const r = s.symbolize(mod(join(d, dir, 'prog'), { buildId: buildIdOf(join(B, 'inl')) }), 0, [outer + 1n]);
    s.close();
    t.is(r.info.debugFile, join(d, debugAt), dir);
    t.true(r.info.found && r.info.hasFunctions && r.info.hasLineNumbers && r.info.hasInlineFrames, dir);
    t.like(r.frames[0]!.at(-1), { function: 'outer_alloc', startLine: line('inl.c', 'outer-decl') }, dir);
  }
});

test('finds a separate debug file under <debugdir>/.build-id/', async (t) => {
  const d = await tmp(t);
  const id = buildIdOf(join(B, 'inl'));
  mkdirSync(join(d, 'debug/.build-id', id.slice(0, 2)), { recursive: true });
  const debugAt = join(d, 'debug/.build-id', id.slice(0, 2), `${id.slice(2)}.debug`);
  copyFileSync(join(B, 'inl.debug'), debugAt);
  copyFileSync(join(B, 'inl-stripped'), join(d, 'prog'));
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [join(d, 'debug')] });
  t.teardown(() => s.close());
  const pc = (await nmAddress(join(B, 'inl'), 'outer_alloc')) + 1n;
  const r = s.symbolize(mod(join(d, 'prog'), { buildId: id }), 0, [pc]);
  t.is(r.info.debugFile, debugAt);
  t.is(r.info.path, join(d, 'prog'));
  t.like(r.frames[0]!.at(-1), { function: 'outer_alloc', startLine: line('inl.c', 'outer-decl') });
});

test('a debug file named through a link that leads to a FIFO or a device is never opened for reading: the .build-id link and the debug link (strace)', async (t) => {
  // Debug dirs and debug links are looked up inside a profiled process's root, where an
  // absolute symlink resolves in the agent's own root: to a FIFO (an open for reading
  // blocks: libdwfl's own .build-id lookup hung here) or a device (an open can act: a
  // tape rewinds, a watchdog starts). Each candidate is resolved with O_PATH first and
  // opened for reading only when it is a regular file.
  const d = await tmp(t);
  const id = buildIdOf(join(B, 'inl'));
  const fifoA = join(d, 'a.fifo');
  const fifoB = join(d, 'b.fifo');
  execFileSync('mkfifo', [fifoA, fifoB]);
  mkdirSync(join(d, 'debug/.build-id', id.slice(0, 2)), { recursive: true });
  symlinkSync(fifoA, join(d, 'debug/.build-id', id.slice(0, 2), `${id.slice(2)}.debug`));
  copyFileSync(join(B, 'inl-debuglink'), join(d, 'prog'));
  symlinkSync(fifoB, join(d, 'inl.debug'));
  mkdirSync(join(d, '.debug'));
  symlinkSync('/dev/null', join(d, '.debug/inl.debug'));
  const pc = (await nmAddress(join(B, 'inl'), 'outer_alloc')) + 1n;
  const script = join(d, 'run.ts');
  writeFileSync(script, [
    `import { Symbolizer } from ${JSON.stringify(join(root, 'src/symbolize.ts'))};`,
    `const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [${JSON.stringify(join(d, 'debug'))}] });`,
    `const m = { index: 0, state: 1, flags: 0, path: ${JSON.stringify(join(d, 'prog'))}, loadBias: 0n, start: 0n, limit: 0n, fileOffset: 0n, loadNs: 0n, unloadNs: 0n, buildId: ${JSON.stringify(id)} };`,
    `const r = s.symbolize(m, 0, [${pc}n]);`,
    'console.log(JSON.stringify({ found: r.info.found, debugFile: r.info.debugFile }));',
    's.close();',
  ].join('\n'));
  const trace = join(d, 'strace.out');
  const child = spawnGroup(t, 'strace', ['-f', '-qq', '-e', 'trace=open,openat,openat2', '-o', trace, process.execPath, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  const [code] = await within(once(child, 'close'), 60_000, 'the symbolizer to finish (a FIFO opened for reading blocks it)');
  t.is(code, 0);
  t.like(JSON.parse(out) as object, { found: true, debugFile: '' });
  const opens = readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes(`"${d}/`) && /\.debug"/.test(l));
  t.true(opens.some((l) => l.includes('.build-id/')), `the .build-id link was looked at: ${opens.join('\n')}`);
  t.true(opens.some((l) => l.includes(`${d}/inl.debug`)), 'the debug link was looked at');
  t.deepEqual(opens.filter((l) => !l.includes('O_PATH')), [], 'a link was opened for reading before it was checked');
});

test('checks a .gnu_debuglink file by its CRC when the binary has no build id', async (t) => {
  const d = await tmp(t);
  copyFileSync(join(B, 'inl-noid-debuglink'), join(d, 'prog'));
  copyFileSync(join(B, 'inl-noid.debug'), join(d, 'inl-noid.debug'));
  const pc = (await nmAddress(join(B, 'inl-noid'), 'outer_alloc')) + 1n;
  const s1 = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const ok = s1.symbolize(mod(join(d, 'prog')), 0, [pc]);
  s1.close();
  t.is(ok.info.debugFile, join(d, 'inl-noid.debug'));
  t.is(ok.frames[0]!.at(-1)!.function, 'outer_alloc');
  // the same name with other contents: the CRC differs, the file is not used
  writeFileSync(join(d, 'inl-noid.debug'), Buffer.concat([readFileSync(join(B, 'inl-noid.debug')), Buffer.from('x')]));
  const s2 = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const bad = s2.symbolize(mod(join(d, 'prog')), 0, [pc]);
  s2.close();
  t.is(bad.info.debugFile, '');
  t.false(bad.info.hasFunctions);
  t.true(bad.info.found);
});

test('reports a stripped binary with no debug info anywhere as found, without functions', async (t) => {
  const d = await tmp(t);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [d] });
  t.teardown(() => s.close());
  const pc = (await nmAddress(join(B, 'inl'), 'outer_alloc')) + 1n;
  const r = s.symbolize(mod(join(B, 'inl-stripped'), { buildId: buildIdOf(join(B, 'inl')) }), 0, [pc, 1n, 0n]);
  t.like(r.info, { found: true, error: '', debugFile: '', hasFunctions: false, hasFilenames: false, hasLineNumbers: false, hasInlineFrames: false });
  t.deepEqual(r.frames, [[], [], []]);
});

test('turns truncated, garbage and non-regular files into an error result, never a throw', async (t) => {
  const d = await tmp(t);
  const inl = readFileSync(join(B, 'inl'));
  const files: Record<string, string> = {};
  const put = (name: string, data: Buffer) => {
    writeFileSync(join(d, name), data);
    files[name] = join(d, name);
  };
  for (const n of [0, 4, 16, 63, 64, 200, 1000, 4096, inl.length >> 1, inl.length - 1]) put(`cut-${n}`, inl.subarray(0, n));
  const rnd = Buffer.alloc(65536);
  for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 2654435761) >>> 24;
  put('random', rnd);
  put('elf-magic-random', Buffer.concat([inl.subarray(0, 16), rnd]));
  const lies = Buffer.from(inl);
  lies.writeBigUInt64LE(0xfffffffffff0n, 0x28); // e_shoff far past the end
  lies.writeUInt16LE(0xffff, 0x38); // e_phnum
  put('header-lies', lies);
  put('gzip', gzipSync(inl));
  execFileSync('cc', ['-c', '-g', '-O2', '-o', join(d, 'obj.o'), join(SRC, 'libsym.c')]);
  files['object'] = join(d, 'obj.o');
  files['directory'] = d;
  files['char-device'] = '/dev/zero';
  execFileSync('mkfifo', [join(d, 'fifo')]);
  files['fifo'] = join(d, 'fifo');
  symlinkSync(join(d, 'loop-a'), join(d, 'loop-b'));
  symlinkSync(join(d, 'loop-b'), join(d, 'loop-a'));
  files['symlink-loop'] = join(d, 'loop-a');
  files['missing'] = join(d, 'missing');

  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [d] });
  t.teardown(() => s.close());
  const pcs = [0x11d1n, 0x1001n, 0n, 0xffffffffffffffffn];
  for (const [name, path] of Object.entries(files)) {
    const r = s.symbolize(mod(path), 0, pcs);
    t.is(r.frames.length, pcs.length, name);
    if (!r.info.found) t.true(r.info.error.startsWith(path), `${name}: ${r.info.error}`);
    if (name.startsWith('cut-') && Number(name.slice(4)) < 64) t.false(r.info.found, name);
    const a = await s.symbolizeAsync(mod(path, { loadBias: 0x1000n }), 0, pcs);
    t.is(a.frames.length, pcs.length, name);
  }
  for (const name of ['random', 'gzip', 'object', 'directory', 'char-device', 'fifo', 'symlink-loop', 'missing']) {
    t.false(s.symbolize(mod(files[name]!), 0, pcs).info.found, name);
  }
  t.regex(s.symbolize(mod(files['gzip']!), 0, []).info.error, /not an ELF file/);
  t.regex(s.symbolize(mod(files['object']!), 0, []).info.error, /not an executable or shared object/);
  t.regex(s.symbolize(mod(files['fifo']!), 0, []).info.error, /not a regular file/);
});

test('survives seeded mutations of binaries with DWARF (in a child process)', async (t) => {
  const d = await tmp(t);
  for (const [bin, seed] of [['cxx', 20261122], ['inl', 7]] as const) {
    const t0 = Date.now();
    const child = spawnGroup(t, process.execPath, [join(SRC, 'fuzz.ts'), join(B, bin), d, String(seed), '400'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (b) => (out += b));
    child.stderr!.on('data', (b) => (err += b));
    const [code, signal] = (await within(once(child, 'close'), 180_000, `the fuzz runner (${bin})`)) as [number | null, NodeJS.Signals | null];
    t.is(signal, null, `${bin} seed ${seed}: the fuzz runner died with ${signal}: ${err}`);
    t.is(code, 0, err);
    const sum = JSON.parse(out.trim()) as { cases: number; found: number; notFound: number; withFunctions: number; slow: number[]; bad: string[] };
    t.deepEqual(sum.bad, []);
    t.deepEqual(sum.slow, []);
    t.is(sum.cases, 400);
    t.log(`${bin}: ${sum.cases} mutations in ${Date.now() - t0} ms: ${sum.found} opened (${sum.withFunctions} with functions), ${sum.notFound} refused`);
  }
});

test('refuses a file whose build id differs from the process\'s and says so', async (t) => {
  const d = await tmp(t);
  const prog = join(d, 'prog');
  copyFileSync(join(B, 'inl'), prog);
  const r = await runUnder([prog, '5'], { HEAPTAP_SAMPLE_RATE: '1' });
  t.teardown(() => cleanup(r.dir));
  t.is(r.code, 0, r.stderr);
  const [snap] = await regionsIn(r.dir);
  const exe = snap!.modules.find((m) => m.flags & constants.MODULE_MAIN)!;
  t.is(exe.buildId, buildIdOf(join(B, 'inl')));
  // the binary is replaced on disk after the process ran
  unlinkSync(prog);
  copyFileSync(join(B, 'cxx'), prog);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const pcs = Array.from(stackFrames(snap!.stacks, 0));
  const res = s.symbolize(exe, snap!.header.pid, pcs);
  t.false(res.info.found);
  t.is(res.info.path, '');
  t.regex(res.info.error, new RegExp(`${prog}: build id ${buildIdOf(join(B, 'cxx'))} does not match the process's ${exe.buildId}`));
  t.true(res.frames.every((f) => f.length === 0));
});

test('returns empty frames without an error for the vDSO and for modules without a path', (t) => {
  const s = new Symbolizer({ trustRegionPaths: true });
  t.teardown(() => s.close());
  const vdso = s.symbolize(mod('linux-vdso.so.1', { flags: constants.MODULE_VDSO }), process.pid, [0x1000n, 0x1001n]);
  t.deepEqual(vdso.frames, [[], []]);
  t.like(vdso.info, { found: false, error: '', path: '' });
  t.like(s.symbolize(mod(''), process.pid, [1n]).info, { found: false, error: '' });
  t.regex(s.symbolize(mod('relative/lib.so'), process.pid, [1n]).info.error, /not an absolute path/);
  t.is(s.stats().modulesLoaded, 0);
});

/** Starts the static sleeper in a mount namespace of its own, as dir/sleeper on a tmpfs
 * mounted over dir there (as root, else in a user namespace): here dir stays as it was, so
 * the file exists only under /proc/<pid>/root. */
async function inOwnMounts(dir: string): Promise<ChildProcess> {
  mkdirSync(dir, { recursive: true });
  const script = `mount -t tmpfs heaptap-test "${dir}" && cp "${join(B, 'sleeper')}" "${dir}/sleeper" && exec "${dir}/sleeper"`;
  const args = [...(process.getuid?.() === 0 ? [] : ['-r']), '--mount', '--propagation', 'private', 'sh', '-c', script];
  const child = spawnGroup(null, 'unshare', args, { stdio: 'ignore' });
  for (let i = 0; i < 500; i++) {
    try {
      if (readFileSync(`/proc/${child.pid}/maps`, 'utf8').includes(`${dir}/sleeper`)) return child;
    } catch {
      // not started yet
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill('SIGKILL');
  throw new Error(`could not start the sleeper in a mount namespace of its own at ${dir} (exit ${child.exitCode})`);
}

/** The module a region would give for the executable mapping of path in process pid (the
 * static sleeper: not PIE, bias 0). */
function mappedModule(pid: number, path: string, extra: Partial<RegionModule> = {}): RegionModule {
  const line = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').find((l) => / r-xp /.test(l) && l.includes(path));
  if (!line) throw new Error(`process ${pid} has no executable mapping of ${path}`);
  const [lo, hi] = line.split(' ')[0]!.split('-').map((x) => BigInt('0x' + x));
  return mod(path, { start: lo!, limit: hi!, flags: constants.MODULE_MAIN, ...extra });
}

test('opens a module through /proc/<pid>/root when its path is not in our filesystem', async (t) => {
  const d = await tmp(t);
  const appDir = join(d, 'app');
  const child = await inOwnMounts(appDir);
  t.teardown(() => child.kill('SIGKILL'));
  const s = new Symbolizer({ debugDirs: [] });
  t.teardown(() => s.close());
  const pc = (await nmAddress(join(B, 'sleeper'), 'main')) + 1n;
  const m = mappedModule(child.pid!, `${appDir}/sleeper`, { buildId: buildIdOf(join(B, 'sleeper')) });
  t.throws(() => statSync(`${appDir}/sleeper`), undefined, 'the path must not exist here for this test to mean anything');
  const r = s.symbolize(m, child.pid!, [pc]);
  t.is(r.info.path, `/proc/${child.pid}/root${appDir}/sleeper`);
  t.is(r.frames[0]!.at(-1)!.function, 'main');
  t.like(s.symbolize(m, process.pid, [pc]).info, { found: true }, 'cached by build id, whatever the pid');
});

test('prefers the file under /proc/<pid>/root when the same path here is another build', async (t) => {
  const d = await tmp(t);
  const appDir = join(d, 'app');
  mkdirSync(appDir);
  copyFileSync(join(B, 'cxx'), join(appDir, 'sleeper')); // here: another program
  const child = await inOwnMounts(appDir);
  t.teardown(() => child.kill('SIGKILL'));
  const pc = (await nmAddress(join(B, 'sleeper'), 'main')) + 1n;
  for (const buildId of [buildIdOf(join(B, 'sleeper')), '']) {
    // with a build id, and without one to tell the files apart: the file the process maps
    const s = new Symbolizer({ debugDirs: [] });
    t.teardown(() => s.close());
    const r = s.symbolize(mappedModule(child.pid!, `${appDir}/sleeper`, { buildId }), child.pid!, [pc]);
    t.is(r.info.path, `/proc/${child.pid}/root${appDir}/sleeper`, buildId);
    t.is(r.info.error, '');
    t.is(r.frames[0]!.at(-1)!.function, 'main');
  }
});

test('opens the main program through /proc/<pid>/map_files when its file was deleted', async (t) => {
  const d = await tmp(t);
  const prog = join(d, 'sleeper');
  copyFileSync(join(B, 'sleeper'), prog);
  const main = await nmAddress(prog, 'main');
  const child = spawnGroup(t, prog, [], { stdio: 'ignore' });
  for (let i = 0; i < 500 && !readFileSync(`/proc/${child.pid}/maps`, 'utf8').includes(prog); i++) await new Promise((r) => setTimeout(r, 10));
  const m = mappedModule(child.pid!, prog, { buildId: buildIdOf(join(B, 'sleeper')) });
  unlinkSync(prog);
  const s = new Symbolizer({ debugDirs: [] });
  t.teardown(() => s.close());
  const r = s.symbolize(m, child.pid!, [main + 1n]);
  t.regex(r.info.path, new RegExp(`^/proc/${child.pid}/map_files/[0-9a-f]+-[0-9a-f]+$`));
  t.is(r.frames[0]!.at(-1)!.function, 'main');
});

test('uses the module path itself for a process whose root is ours', (t) => {
  // /proc/self/root is '/' here, so both candidates name the same file: the first wins
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const r = s.symbolize(mod(join(B, 'inl'), { buildId: buildIdOf(join(B, 'inl')) }), process.pid, [0x11d1n]);
  t.is(r.info.path, join(B, 'inl'));
});

test('loads a build id once for many processes and answers repeated addresses from the cache', async (t) => {
  const id = buildIdOf(join(B, 'inl'));
  const outer = await nmAddress(join(B, 'inl'), 'outer_alloc');
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const pcs = Array.from({ length: 50 }, (_, i) => outer + 1n + BigInt(i));
  const first = s.symbolize(mod(join(B, 'inl'), { buildId: id, loadBias: 0x1000n }), 100, pcs.map((a) => a + 0x1000n));
  t.deepEqual(s.stats(), { modulesLoaded: 1, cacheHits: 0, addressesResolved: 50 });
  // another process of the same build, at another bias and through another (stripped)
  // path: the same file serves it, the addresses are already resolved
  const other = s.symbolize(mod(join(B, 'inl-stripped'), { buildId: id, loadBias: 0x7f0000000000n }), 200, pcs.map((a) => a + 0x7f0000000000n));
  t.deepEqual(other.frames, first.frames);
  t.deepEqual(s.stats(), { modulesLoaded: 1, cacheHits: 50, addressesResolved: 50 });
  t.is(other.info.path, join(B, 'inl'));
  // new addresses are resolved without loading anything
  s.symbolize(mod(join(B, 'inl'), { buildId: id }), 100, [outer + 200n, outer + 200n]);
  t.deepEqual(s.stats(), { modulesLoaded: 1, cacheHits: 50, addressesResolved: 51 });
});

test('keys modules without a build id by file identity, so a rewritten file is loaded again', async (t) => {
  const d = await tmp(t);
  const prog = join(d, 'prog');
  copyFileSync(join(B, 'inl-noid'), prog);
  const pc = (await nmAddress(join(B, 'inl-noid'), 'outer_alloc')) + 1n;
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  t.is(s.symbolize(mod(prog), 1, [pc]).frames[0]!.at(-1)!.function, 'outer_alloc');
  t.is(s.symbolize(mod(prog), 2, [pc]).frames[0]!.at(-1)!.function, 'outer_alloc');
  t.is(s.stats().modulesLoaded, 1);
  copyFileSync(join(B, 'cxx'), prog);
  utimesSync(prog, new Date(), new Date(Date.now() + 5000));
  const after = s.symbolize(mod(prog), 3, [pc]);
  t.is(s.stats().modulesLoaded, 2);
  t.not(after.frames[0]!.at(-1)?.function, 'outer_alloc');
});

test('evicts the least recently used module when maxModules is reached', async (t) => {
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [], maxModules: 2 });
  t.teardown(() => s.close());
  const paths = ['inl', 'cxx', 'usesym'].map((n) => join(B, n));
  for (const p of paths) s.symbolize(mod(p, { buildId: buildIdOf(p) }), 1, [0x1101n]);
  t.is(s.stats().modulesLoaded, 3);
  // usesym and cxx are kept; inl was evicted and is loaded again
  s.symbolize(mod(paths[2]!, { buildId: buildIdOf(paths[2]!) }), 1, [0x1201n]);
  s.symbolize(mod(paths[1]!, { buildId: buildIdOf(paths[1]!) }), 1, [0x1201n]);
  t.is(s.stats().modulesLoaded, 3);
  s.symbolize(mod(paths[0]!, { buildId: buildIdOf(paths[0]!) }), 1, [0x1201n]);
  t.is(s.stats().modulesLoaded, 4);
});

test('tries a module that could not be opened again only after retryFailedAfterMs', async (t) => {
  const d = await tmp(t);
  const prog = join(d, 'late');
  const pc = (await nmAddress(join(B, 'inl'), 'outer_alloc')) + 1n;
  const m = mod(prog, { buildId: buildIdOf(join(B, 'inl')) });
  const sticky = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const eager = new Symbolizer({ trustRegionPaths: true, debugDirs: [], retryFailedAfterMs: 0 });
  t.teardown(() => (sticky.close(), eager.close()));
  t.regex(sticky.symbolize(m, 1, [pc]).info.error, /ENOENT|No such file/);
  t.false(eager.symbolize(m, 1, [pc]).info.found);
  copyFileSync(join(B, 'inl'), prog);
  t.false(sticky.symbolize(m, 1, [pc]).info.found, 'the failure is remembered');
  t.true(eager.symbolize(m, 1, [pc]).info.found);
});

test('symbolizeAsync gives the same frames as symbolize', async (t) => {
  const cxx = join(B, 'cxx');
  const syms = await symbolsOf(cxx);
  const pcs = syms.flatMap((x) => [x.start + 1n, x.start + 5n, x.end]);
  const a = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const b = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => (a.close(), b.close()));
  const m = mod(cxx, { buildId: buildIdOf(cxx) });
  const [x, y] = await Promise.all([b.symbolizeAsync(m, 1, pcs), b.symbolizeAsync(m, 2, pcs)]);
  t.deepEqual(x, a.symbolize(m, 1, pcs));
  t.deepEqual(y.frames, x.frames);
});

/** The files this process has open. */
function openFiles(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/self/fd/${fd}`)];
    } catch {
      return [];
    }
  });
}

test('close() releases the files; later calls throw', async (t) => {
  const prog = join(await tmp(t), 'prog'); // other tests here have fixtures open
  copyFileSync(join(B, 'inl'), prog);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const m = mod(prog);
  s.symbolize(m, 1, [0x11d1n]);
  t.true(openFiles().includes(prog));
  s.close();
  t.false(openFiles().includes(prog), 'no descriptor left on the file');
  t.throws(() => s.symbolize(m, 1, [0x11d1n]), { message: /closed/ });
  await t.throwsAsync(() => s.symbolizeAsync(m, 1, [0x11d1n]), { message: /closed/ });
  s.close(); // twice is fine
});

test('releaseFiles() closes the files but keeps what was resolved; new addresses reopen them', async (t) => {
  const prog = join(await tmp(t), 'prog');
  copyFileSync(join(B, 'cxx'), prog);
  const syms = await symbolsOf(prog);
  const pcs = syms.map((x) => x.start + 1n);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  const fresh = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => (s.close(), fresh.close()));
  const m = mod(prog, { buildId: buildIdOf(prog) });
  const half = pcs.slice(0, Math.ceil(pcs.length / 2));
  const before = await s.symbolizeAsync(m, 1, half);
  t.true(openFiles().includes(prog));
  s.releaseFiles();
  t.false(openFiles().includes(prog), 'no descriptor left on the file');
  // Known addresses come from the cache: nothing is opened.
  t.deepEqual((await s.symbolizeAsync(m, 1, half)).frames, before.frames);
  t.is(s.stats().modulesLoaded, 1);
  t.false(openFiles().includes(prog));
  // The rest need the file again, and resolve as a fresh symbolizer does; names shared
  // with the first batch are the same string instances.
  const all = await s.symbolizeAsync(m, 1, pcs);
  t.is(s.stats().modulesLoaded, 2);
  t.deepEqual(all.frames, fresh.symbolize(m, 1, pcs).frames);
  const byName = new Map<string, string>();
  for (const f of all.frames.flat()) {
    const seen = byName.get(f.function);
    if (seen !== undefined) t.true(Object.is(seen, f.function));
    byName.set(f.function, f.function);
  }
  s.close();
  s.releaseFiles(); // after close: nothing to do, no throw
});

test('never contacts debuginfod, even with DEBUGINFOD_URLS set', async (t) => {
  // libdwfl's standard callbacks ask the debuginfod client when nothing is found locally
  // (it would connect here and map libdebuginfod.so); ours never do.
  let connections = 0;
  const server = createServer((c) => {
    connections++;
    c.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const saved = process.env.DEBUGINFOD_URLS;
  process.env.DEBUGINFOD_URLS = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  t.teardown(() => {
    if (saved === undefined) delete process.env.DEBUGINFOD_URLS;
    else process.env.DEBUGINFOD_URLS = saved;
  });
  const d = await tmp(t);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [d] });
  t.teardown(() => s.close());
  const r = await s.symbolizeAsync(mod(join(B, 'inl-stripped'), { buildId: buildIdOf(join(B, 'inl')) }), 1, [0x11d1n]);
  s.symbolize(mod(join(B, 'inl-debuglink')), 1, [0x11d1n]);
  t.true(r.info.found);
  await new Promise((res) => setTimeout(res, 200));
  t.is(connections, 0);
  t.false(readFileSync('/proc/self/maps', 'utf8').includes('libdebuginfod'));
});

test('maps runtime return addresses to ELF addresses modulo 2^64', (t) => {
  const m = mod('/x', { loadBias: 0x1000n });
  t.deepEqual(Array.from(elfAddresses(m, [0x2001n, 0x1000n, 0n])), [0x1000n, 0xffffffffffffffffn, 0xffffffffffffefffn]);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  const r = s.symbolize(mod(join(B, 'inl'), { loadBias: 0x555555554000n }), 1, [0n, 1n, 0xffffffffffffffffn]);
  t.deepEqual(r.frames, [[], [], []]);
});

test('symbolizes 100k addresses of one module (timings in the log)', async (t) => {
  // the addon itself: C++ with DWARF and deep inlining (node-addon-api)
  const path = join(root, 'src/addon/build/heaptap.node');
  const text = execFileSync('readelf', ['-SW', path], { encoding: 'utf8' }).split('\n').find((l) => / \.text /.test(l))!;
  const f = text.trim().replace(/^\[\s*\d+\]\s*/, '').split(/\s+/);
  const start = BigInt('0x' + f[2]);
  const size = BigInt('0x' + f[4]);
  const N = 100_000;
  const pcs = new BigUint64Array(N);
  for (let i = 0; i < N; i++) pcs[i] = start + (size * BigInt(i)) / BigInt(N) + 1n;
  const m = mod(path);
  const s = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s.close());
  let t0 = performance.now();
  const cold = s.symbolize(m, 1, pcs);
  const coldMs = performance.now() - t0;
  t0 = performance.now();
  const warm = s.symbolize(m, 1, pcs);
  const warmMs = performance.now() - t0;
  const s2 = new Symbolizer({ trustRegionPaths: true, debugDirs: [] });
  t.teardown(() => s2.close());
  t0 = performance.now();
  await s2.symbolizeAsync(m, 1, pcs);
  const asyncMs = performance.now() - t0;
  const resolved = cold.frames.filter((x) => x.length > 0).length;
  const frames = cold.frames.reduce((n, x) => n + x.length, 0);
  t.true(resolved > N * 0.95, `${resolved} of ${N} resolved`);
  t.is(warm.frames[N >> 1], cold.frames[N >> 1]);
  t.log(`${N} addresses over ${size} bytes of .text, ${frames} frames: cold ${coldMs.toFixed(0)} ms ` +
    `(${((coldMs * 1000) / N).toFixed(1)} µs/address), cached ${warmMs.toFixed(0)} ms, async cold ${asyncMs.toFixed(0)} ms`);
});

test('rejects debug dirs that are relative or contain a colon', (t) => {
  t.throws(() => new Symbolizer({ trustRegionPaths: true, debugDirs: ['usr/lib/debug'] }), { instanceOf: TypeError });
  t.throws(() => new Symbolizer({ trustRegionPaths: true, debugDirs: ['/a:/b'] }), { instanceOf: TypeError });
});

