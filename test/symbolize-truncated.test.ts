// A module file truncated while the symbolizer reads it (issue 10: the agent survives a
// hostile neighbour). The files the agent symbolizes are the profiled process's own: one it
// can write (a shared library or a debug file in its container) can be cut short while
// libelf has it mapped, and the next read past the new end raised SIGBUS in the agent. Now
// such a read sees zeros, the answers from that file are dropped and the file is opened
// anew next time (src/addon/reader.h, htr_zero_fill_begin).
import test from 'ava';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { native } from '../src/native.ts';
import { addonPath } from '../src/native.ts';
import { bound, execGroup, killGroup, spawnGroup } from './helpers/procs.ts';

const root = join(import.meta.dirname, '..');

test('a module file truncated and rewritten while it is symbolized never raises a signal, and is read right once it stops changing', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'heaptap-trunc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // the addon itself: an ELF file with 1.8 MB of DWARF, so a read takes long enough to be
  // caught in the middle
  const orig = join(dir, 'orig.so');
  const file = join(dir, 'module.so');
  await copyFile(addonPath, orig);
  await copyFile(addonPath, file);
  const nm = await execGroup('nm', ['--defined-only', orig], { timeout: bound(60_000) });
  const funcs = nm.stdout.split('\n').map((l) => l.split(' ')).filter((f) => f.length === 3 && /^[tTwW]$/.test(f[1]!)).map((f) => f[0]!.replace(/^0+/, '') || '0');
  t.true(funcs.length > 300, `${funcs.length} functions`);
  const addrs = funcs.filter((_, i) => i % Math.ceil(funcs.length / 800) === 0);

  // the neighbour: cut the file to 8 KiB, write it back whole (cat truncates it to 0 first)
  const truncator = spawnGroup(t, 'bash', ['-c', `while :; do truncate -s 8192 "$1"; cat "$2" > "$1"; done`, 'truncator', file, orig], { stdio: 'ignore' });
  let out: { rounds: number; named: number; changed: number; other: number };
  try {
    const r = await execGroup(process.execPath, [join(root, 'test/helpers/symbolize-loop.ts'), file, '8000', ...addrs], { timeout: bound(120_000) })
      .catch((e: { code: number | null; signal: string | null; stderr: string }) => {
        throw new Error(`the symbolizer died: code ${e.code} signal ${e.signal} ${e.stderr.slice(-400)}`);
      });
    out = JSON.parse(r.stdout.trim()) as typeof out;
  } finally {
    killGroup(truncator);
  }
  t.log(`${out.rounds} rounds: ${out.named} named, ${out.changed} said the file changed, ${out.other} other (not an ELF file at that moment, ...)`);
  t.true(out.rounds > 10);

  // once it stops changing, the file reads as it is
  await copyFile(orig, file);
  t.deepEqual(await readFile(file), await readFile(orig));
  const s = new native.Symbolizer({ debugDirs: [] });
  t.teardown(() => s.close());
  const r = s.resolve([file], file, '', BigUint64Array.from(addrs.slice(0, 50).map((h) => BigInt(`0x${h}`))));
  t.is(r.error, '');
  t.true(r.frames.length >= 50, `${r.frames.length} frames`);
});
