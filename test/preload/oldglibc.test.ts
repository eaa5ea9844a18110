// The libheaptap.so built on this host (Debian 12, glibc 2.36) inside a Debian 11 root
// (glibc 2.31; scripts/peers/bullseye-root.sh makes it with debootstrap and caches it):
// before glibc-pins.h it did not even load there ("version `GLIBC_2.34' not found", every
// program exits 1). The fixtures are built inside the root by bullseye's gcc against its
// glibc and libstdc++, as programs on such a system are, and run there with chroot in a
// private mount namespace (unshare -m, /proc mounted in it, gone with it). The regions land
// in a directory inside the root and are read from here with the sidecar's reader. Needs
// root; fails, never skips, when the root cannot be made.
import test from 'ava';
import { copyFile, cp, mkdir, mkdtemp, readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { cleanup, preload, root, runBounded } from './run.ts';
import { churnExact, cxxNewExact, dlopenerExact, forkerExact, threadsExact, type World } from './worlds.ts';
import { execGroup } from '../helpers/procs.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
// Inside the root: the sources and fixtures under /heaptap, the library in /heaptap/lib.
const IN = '/heaptap';
let R = '';

/** argv for running a command inside the root: its own mount namespace, /proc mounted. */
function inRoot(argv: string[], env: Record<string, string>): string[] {
  return [
    'unshare', '--mount', '--propagation', 'private',
    'sh', '-c', 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', R,
    'env', '-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv,
  ];
}

test.before(async () => {
  const made = await exec('bash', [join(root, 'scripts/peers/bullseye-root.sh')], { maxBuffer: 16 << 20 });
  R = made.stdout.trim();
  // The fixtures' sources (and the headers they include), copied with their times so that
  // make inside the root rebuilds only what changed.
  const src = join(R, IN.slice(1));
  const noBuild = (p: string) => !/\/build[^/]*$/.test(p);
  await cp(join(root, 'test/fixtures'), join(src, 'test/fixtures'), { recursive: true, preserveTimestamps: true, filter: noBuild });
  await cp(join(root, 'proto'), join(src, 'proto'), { recursive: true, preserveTimestamps: true });
  await mkdir(join(src, 'src/addon'), { recursive: true });
  for (const h of (await readdir(join(root, 'src/addon'))).filter((n) => n.endsWith('.h')))
    await cp(join(root, 'src/addon', h), join(src, 'src/addon', h), { preserveTimestamps: true });
  const built = await runBounded(inRoot(['make', '-s', '-C', `${IN}/test/fixtures`], {}), process.env, 300_000);
  if (built.code !== 0) throw new Error(`building the fixtures in ${R}: ${built.stdout}${built.stderr}`);
  // The library under test is the one built on this host, as a user would copy it.
  await mkdir(join(src, 'lib'), { recursive: true });
  await copyFile(preload, join(src, 'lib/libheaptap.so'));
});

const bullseye: World = {
  async run(cmd, env, profiled) {
    const dir = await mkdtemp(join(R, IN.slice(1), 'out-'));
    const [name, ...args] = cmd;
    const vars: Record<string, string> = { HEAPTAP_DIR: `${IN}/${basename(dir)}`, ...env };
    if (profiled) vars.LD_PRELOAD = `${IN}/lib/libheaptap.so`;
    const r = await runBounded(inRoot([`${IN}/test/fixtures/build/${name}`, ...args], vars), process.env);
    return { ...r, dir };
  },
  hostPath: (p) => join(R, p),
  // The root's libc, as the region names it (its path inside the root), seen from here.
  libc: /\/roots\/bullseye\/(usr\/)?lib\/x86_64-linux-gnu\/libc(\.so\.6|-2\.31\.so)$/,
  cleanEnds: true,
};

test('the library built here loads in Debian 11 (glibc 2.31) and leaves ls alone', async (t) => {
  const plain = await runBounded(inRoot(['ls', '-l', '/etc'], {}), process.env);
  const dir = await mkdtemp(join(R, IN.slice(1), 'out-'));
  t.teardown(() => cleanup(dir));
  const vars = { LD_PRELOAD: `${IN}/lib/libheaptap.so`, HEAPTAP_DIR: `${IN}/${basename(dir)}` };
  const r = await runBounded(inRoot(['ls', '-l', '/etc'], vars), process.env);
  t.is(r.stderr, '', 'no "version `GLIBC_2.34\' not found"');
  t.is(r.code, 0);
  t.is(r.stdout, plain.stdout);
  const { stdout } = await runBounded(inRoot(['ldd', '--version'], {}), process.env);
  t.regex(stdout, /GLIBC 2\.31/, 'the root is glibc 2.31');
});

test('a program that links only libc.so.6 starts under it on glibc 2.31', async (t) => {
  // Before 2.34, dlsym@GLIBC_2.2.5 and pthread_setspecific@GLIBC_2.2.5 are defined in
  // libdl.so.2 and libpthread.so.0: unless the library names them NEEDED, such a program
  // dies with "undefined symbol: pthread_setspecific, version GLIBC_2.2.5" (exit 127).
  const { stdout: needed } = await exec('readelf', ['-d', join(R, 'bin/true')]);
  t.deepEqual([...needed.matchAll(/\(NEEDED\).*\[(.*)\]/g)].map((m) => m[1]), ['libc.so.6']);
  const dir = await mkdtemp(join(R, IN.slice(1), 'out-'));
  t.teardown(() => cleanup(dir));
  const vars = { LD_PRELOAD: `${IN}/lib/libheaptap.so`, HEAPTAP_DIR: `${IN}/${basename(dir)}`, HEAPTAP_SAMPLE_RATE: '1' };
  const r = await runBounded(inRoot(['true'], vars), process.env);
  t.is(r.stderr, '');
  t.is(r.code, 0);
});

test('records every allocation of a multi-threaded program on glibc 2.31 exactly at rate 1', (t) => churnExact(t, bullseye));
test('counts hundreds of short-lived threads on glibc 2.31 exactly', (t) => threadsExact(t, bullseye));
test('gives a fork child its own region and its exec a new one on glibc 2.31', (t) => forkerExact(t, bullseye));
test('records the allocations of a library dlopen()ed on glibc 2.31', (t) => dlopenerExact(t, bullseye));
test("sees C++ new and delete through Debian 11's libstdc++", (t) => cxxNewExact(t, bullseye));
