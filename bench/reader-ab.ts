// The region reader, two builds in one run: what a change to src/addon/reader.c costs the
// agent's poll. Loads the addon built in this tree and another build of it (ADDON_B), and
// reads the same synthetic region (bench/sidecar.ts's makeRegion: tree-shaped stacks,
// counters half in a slab, half in the shared table) with each, interleaved.
//
//   node bench/reader-ab.ts OTHER_ADDON.node [STACKS=100000] [ROUNDS=40]
//
// Per build: full = readRegion(path, 0) (the first read of a process), poll =
// readRegion(path, next) (every --poll after that: counters, no stack records). Prints
// medians and the ratio this tree / other. Synchronous reads on the main thread, so the
// times are the reader's own (no libuv pool hand-off).
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

import { elfModule, makeRegion, placeIn } from './sidecar.ts';

interface Reader {
  readRegion(path: string, since?: number): { stacks: { next: number } };
}

const root = resolve(import.meta.dirname, '..');
const other = process.argv[2];
if (!other) {
  console.error('usage: node bench/reader-ab.ts OTHER_ADDON.node [STACKS] [ROUNDS]');
  process.exit(2);
}
const n = Number(process.argv[3] ?? 100_000);
const rounds = Number(process.argv[4] ?? 40);

const work = mkdtempSync(join('/dev/shm', 'heaptap-reader-ab-'));
try {
  // Two copies, so that each is its own dlopen (same path would be one module).
  const here = join(work, 'here.node');
  const there = join(work, 'other.node');
  copyFileSync(join(root, 'src/addon/build/heaptap.node'), here);
  copyFileSync(other, there);
  const require = createRequire(import.meta.url);
  const a = require(here) as Reader;
  const b = require(there) as Reader;
  const placed = placeIn(process.pid, [elfModule('/lib/x86_64-linux-gnu/libc.so.6'), elfModule(here)]); // this process maps both
  const path = makeRegion(work, `${1000 + n}-1.heaptap`, 1000 + n, n, placed, n);
  const next = a.readRegion(path, 0).stacks.next;
  const times = { a: { full: [] as number[], poll: [] as number[] }, b: { full: [] as number[], poll: [] as number[] } };
  const time = (fn: () => unknown) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  for (let i = 0; i < rounds; i++) {
    // alternate which goes first, so neither always finds the caches warm
    const order: ('a' | 'b')[] = i % 2 ? ['a', 'b'] : ['b', 'a'];
    for (const k of order) {
      const r = k === 'a' ? a : b;
      times[k].full.push(time(() => r.readRegion(path, 0)));
      times[k].poll.push(time(() => r.readRegion(path, next)));
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const row = (what: 'full' | 'poll') => {
    const ma = median(times.a[what]), mb = median(times.b[what]);
    return `| ${what} | ${mb.toFixed(2)} ms | ${ma.toFixed(2)} ms | ${(ma / mb).toFixed(2)} |`;
  };
  console.log(`${n.toLocaleString('en-US')} stacks, ${rounds} rounds interleaved, medians`);
  console.log('| read | other build | this tree | ratio |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(row('full'));
  console.log(row('poll'));
} finally {
  rmSync(work, { recursive: true, force: true });
}
