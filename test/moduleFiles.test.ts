// A region cannot make heaptap open a host path (issue 10, item 4): module files are
// opened only as the live process maps them (src/moduleFiles.ts), checked by device and
// inode. A region naming /etc/shadow made an agent running as root open /etc/shadow,
// /proc/<pid>/root/etc/shadow and /proc/<pid>/exe.
import { execFileSync } from 'node:child_process';
import { openSync, readFileSync, closeSync, writeSync, writeFileSync, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';

import { ModuleResolver, parseMaps } from '../src/moduleFiles.ts';
import { constants, listRegions, readRegion, type RegionModule } from '../src/region.ts';
import { Symbolizer } from '../src/symbolize.ts';
import { killGroup, spawnGroup, within } from './helpers/procs.ts';
import { cli, get, node, startTicker, until } from './agent/helpers.ts';
import { symbolsOf } from './preload/run.ts';

const B = join(import.meta.dirname, 'fixtures/symfix/build');

async function tmp(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'heaptap-modfiles-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

/** An ELF whose one big function, planted_secret_fn, covers 0x401000..0x801000: any address
 * of the static sleeper (main at 0x4014f0 or so) falls in it if this file is ever read. */
function plantElf(dir: string): string {
  const src = join(dir, 'planted.c');
  writeFileSync(src, 'void planted_secret_fn(void) { __asm__ volatile(".fill 0x400000,1,0x90"); }\nvoid _start(void) { planted_secret_fn(); for (;;) ; }\n');
  const out = join(dir, 'planted');
  execFileSync('cc', ['-nostdlib', '-static', '-no-pie', '-g', '-o', out, src]);
  return out;
}

function moduleAt(pid: number, path: string): RegionModule {
  const e = parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8')).find((x) => x.path === path && x.start >= 0x401000n);
  if (!e) throw new Error(`process ${pid} does not map ${path}`);
  return { index: 0, state: 1, flags: constants.MODULE_MAIN, path, loadBias: 0n, start: e.start, limit: e.end, fileOffset: 0n, loadNs: 0n, unloadNs: 0n, buildId: '' };
}

const names = (frames: { function: string }[][]) => frames.flat().map((f) => f.function);

test('parseMaps keeps file mappings with their device, inode and path, and marks deleted files', (t) => {
  const maps = parseMaps([
    '55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1234567                    /usr/bin/app',
    '7f0000000000-7f0000001000 rw-p 00000000 00:00 0 ',
    '00401000-00479000 r-xp 00000000 00:1a 42                                 /tmp/x (deleted)',
    '7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                          [vdso]',
  ].join('\n'));
  t.is(maps.length, 2);
  t.like(maps[0], { start: 0x55d0c0a00000n, end: 0x55d0c0a21000n, range: '55d0c0a00000-55d0c0a21000', major: 0xfd, minor: 1, inode: 1234567n, path: '/usr/bin/app', deleted: false });
  t.like(maps[1], { path: '/tmp/x', deleted: true, major: 0, minor: 0x1a, range: '401000-479000' });
});

test('a module path named by a region is never opened: only the file the live process maps, and nothing once it is gone', async (t) => {
  const d = await tmp(t);
  const planted = plantElf(d);
  const sleeper = join(B, 'sleeper');
  const main = (await symbolsOf(sleeper)).find((x) => x.name === 'main')!.start;
  const child = spawnGroup(t, sleeper, [], { stdio: 'ignore' });
  await until(() => existsSync(`/proc/${child.pid}/maps`) && readFileSync(`/proc/${child.pid}/maps`, 'utf8').includes(sleeper), 10_000, 'the sleeper mapped');
  const pid = child.pid!;
  const real = moduleAt(pid, sleeper);
  // The region lies: the sleeper's own range, but the planted file's path.
  const lie = { ...real, path: planted };
  const s = new Symbolizer({ debugDirs: [] });
  t.teardown(() => s.close());
  const r = s.symbolize(lie, pid, [main + 1n]);
  t.true(names(r.frames).includes('main'), `the file the process maps answers: ${names(r.frames)}`);
  t.false(names(r.frames).includes('planted_secret_fn'), 'the planted file was read');
  t.true(r.info.path.startsWith(`/proc/${pid}/`), r.info.path);
  // Where the process maps no file: nothing is opened, and the error says why.
  const nowhere = { ...lie, start: 0x10000n, limit: 0x11000n, path: '/etc/shadow' };
  const n = new Symbolizer({ debugDirs: [] }).symbolize(nowhere, pid, [0x10010n]);
  t.false(n.info.found);
  t.regex(n.info.error, /maps no file at 0x10000/);
  t.deepEqual(new ModuleResolver().resolve(nowhere, pid).candidates, []);

  killGroup(child);
  await until(() => !existsSync(`/proc/${pid}`), 10_000, 'the sleeper gone');
  const fresh = new Symbolizer({ debugDirs: [] });
  t.teardown(() => fresh.close());
  const gone = fresh.symbolize(lie, pid, [main + 1n]);
  t.false(gone.info.found);
  t.regex(gone.info.error, /gone/);
  t.deepEqual(gone.frames, [[]]);
  // The check above can fail: trusting the region's path (heaptap run's final profile)
  // does read the planted file.
  const trusting = new Symbolizer({ debugDirs: [], trustRegionPaths: true });
  t.teardown(() => trusting.close());
  t.true(names(trusting.symbolize(lie, pid, [main + 1n]).frames).includes('planted_secret_fn'));
});

test('an agent running as root opens no path that a live process\'s region names, such as /etc/shadow (strace)', async (t) => {
  const d = await tmp(t);
  const dir = join(d, 'regions');
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [region] = await listRegions(dir);
  const exe = readRegion(region!, 0xffffffff).modules.find((m) => m.flags & constants.MODULE_MAIN)!.path;
  // The region now names /etc/shadow (as ////…/etc/shadow, the same length) for the main
  // program, wherever its path is written (module paths and the header's exe).
  const hostile = '/'.repeat(exe.length - '/etc/shadow'.length) + '/etc/shadow';
  const bytes = readFileSync(region!);
  const fd = openSync(region!, 'r+');
  let at = bytes.indexOf(exe);
  t.true(at >= 0);
  for (; at >= 0; at = bytes.indexOf(exe, at + 1)) writeSync(fd, Buffer.from(hostile), 0, hostile.length, at);
  closeSync(fd);
  t.true(readRegion(region!, 0xffffffff).modules.some((m) => m.path === hostile), 'the region names /etc/shadow');

  const trace = join(d, 'strace.out');
  const agent = spawnGroup(t, 'strace', ['-f', '-qq', '-e', 'trace=open,openat,openat2', '-o', trace,
    node, cli, 'agent', '--dir', dir, '--listen', '127.0.0.1:0', '--poll', '200ms', '--log-format', 'json'], {
    env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((r) => agent.on('close', r));
  const url = await within(new Promise<string>((resolve) => {
    createInterface({ input: agent.stderr! }).on('line', (l) => {
      try {
        const o = JSON.parse(l) as { msg?: string; url?: string };
        if (o.msg === 'listening') resolve(o.url!);
      } catch {
        // strace's own lines
      }
    });
  }), 60_000, 'the agent under strace to listen');
  // The text profile: symbolized, with the ticker's own functions from the file it maps.
  const text = await until(async () => {
    const r = await get(`${url}/debug/pprof/heap?pid=${fx.pid}&debug=1`);
    return r.status === 200 && r.text.includes('site_keep') ? r.text : null;
  }, 60_000, 'a symbolized profile');
  t.true(text.includes('site_keep'));
  killGroup(agent, 'SIGTERM'); // strace and the agent under it
  await within(exited, 30_000, 'the agent to exit');
  const opens = readFileSync(trace, 'utf8').split('\n').filter((l) => /open/.test(l));
  t.true(opens.some((l) => l.includes(`/proc/${fx.pid}/`)), 'strace saw the agent open the process\'s file');
  const bad = opens.filter((l) => l.includes('shadow') || l.includes(`/proc/${fx.pid}/exe`));
  t.deepEqual(bad, [], 'opened a path the region named');
});
