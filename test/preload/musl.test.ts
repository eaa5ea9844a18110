// libheaptap-musl.so (the preload built with musl-gcc) under the fixtures built against
// musl (make -C test/fixtures musl: dynamic musl executables, as on Alpine), run on this
// host through musl's own loader, /lib/ld-musl-x86_64.so.1 (Debian's musl package). Fails,
// never skips, without musl-gcc (scripts/setup.sh installs musl-tools). No C++ fixture:
// Debian has no C++ library for musl.
import test from 'ava';
import { access, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { root, runBounded } from './run.ts';
import { churnExact, dlopenerExact, forkerExact, threadsExact, type World } from './worlds.ts';
import { execGroup } from '../helpers/procs.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
const lib = join(root, 'preload/build/libheaptap-musl.so');
const bin = join(root, 'test/fixtures/build-musl');

test.before(async () => {
  await exec('make', ['-s', '-C', join(root, 'test/fixtures'), 'musl']);
  await access(lib).catch(() => {
    throw new Error(`${lib} is not built (make -C preload builds it with musl-gcc)`);
  });
});

const musl: World = {
  async run(cmd, env, profiled) {
    const dir = await mkdtemp(join(tmpdir(), 'heaptap-musl-'));
    const [name, ...args] = cmd;
    const r = await runBounded([join(bin, name!), ...args], {
      PATH: process.env.PATH,
      HEAPTAP_DIR: dir,
      ...(profiled ? { LD_PRELOAD: lib } : {}),
      ...env,
    });
    return { ...r, dir };
  },
  hostPath: (p) => p,
  libc: /ld-musl-x86_64\.so\.1$|x86_64-linux-musl\/libc\.so$/,
  cleanEnds: false,
};

test('the musl fixtures are musl programs', async (t) => {
  const { stdout } = await exec('readelf', ['-l', join(bin, 'churn')]);
  t.regex(stdout, /interpreter: \/lib\/ld-musl-x86_64\.so\.1\]/);
});

test('records every allocation of a multi-threaded musl program exactly at rate 1', (t) => churnExact(t, musl));
test('counts hundreds of short-lived musl threads exactly', (t) => threadsExact(t, musl));
test('gives a musl fork child its own region and its exec a new one', (t) => forkerExact(t, musl));
test('records the allocations of a library a musl program dlopen()s', (t) => dlopenerExact(t, musl));
