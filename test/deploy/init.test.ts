// heaptap-init's HEAPTAP_DIR_MODE (issue 10): a region directory that others may write would
// let any user plant or replace regions, so such a mode is refused before anything is made.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';

const init = join(import.meta.dirname, '../../deploy/image/heaptap-init');

function run(dir: string, mode: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('sh', [init, dir], { env: { PATH: process.env.PATH, HEAPTAP_DIR_MODE: mode }, timeout: 20_000 }, (e, _out, stderr) =>
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stderr }));
  });
}

test('heaptap-init refuses a HEAPTAP_DIR_MODE that lets others write, or that is not an octal mode, with exit 2 and one line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'heaptap-init-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [mode, msg] of [['0777', /lets others write/], ['0702', /lets others write/], ['1773', /lets others write/], ['abc', /not an octal mode/]] as const) {
    const r = await run(dir, mode);
    t.is(r.code, 2, `${mode}: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, /^heaptap-init: HEAPTAP_DIR_MODE=/);
    t.regex(r.stderr, msg, mode);
    t.false(existsSync(join(dir, 'regions')), `${mode}: nothing made`);
  }
  // 0700 and 2770 pass the check (and fail later here, with no libraries beside the script).
  for (const mode of ['0700', '2770']) t.notRegex((await run(dir, mode)).stderr, /HEAPTAP_DIR_MODE/, mode);
});
