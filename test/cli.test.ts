// The heaptap command line (src/cli.ts): exit codes, signals, the environment it gives the
// command, the files it writes, and list / snapshot / top on the regions it leaves.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { decodeProfile, str } from '../src/profile.ts';
import { cliPath, fixtures, heaptap, profilesIn, removeDir, root, tempDir, truths } from './helpers/heaptap.ts';

const PRELOAD = join(root, 'preload/build/libheaptap.so');

test('usage errors print one line and exit with code 2', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const cases: Array<[string[], RegExp]> = [
    [[], /^Usage: heaptap <command>/],
    [['bogus'], /^heaptap: unknown command 'bogus' \(see heaptap --help\)\n$/],
    [['--bogus'], /^heaptap: unknown option '--bogus'/],
    [['run'], /^heaptap: run: no command given/],
    [['run', '--rate', '1'], /^heaptap: run: no command given/],
    [['run', '--bogus', '--', 'true'], /^heaptap: run: Unknown option '--bogus' \(see heaptap run --help\)\n$/],
    [['run', '--rate', 'lots', '--', 'true'], /^heaptap: run: --rate 'lots' is not a whole number of bytes/],
    [['run', '--rate', '0', '--', 'true'], /out of range/],
    [['run', '--depth', '999', '--', 'true'], /^heaptap: run: --depth '999' is out of range \[1, 256\]\n$/],
    [['run', '--interval', 'soon', '--', 'true'], /--interval 'soon' is not a duration/],
    [['list', 'extra'], /^heaptap: list: unexpected argument 'extra'/],
    [['snapshot'], /^heaptap: snapshot: give one <pid\|region>/],
    [['snapshot', '1', '--view', 'weird', '--dir', dir], /--view 'weird' is not heap or allocs/],
    [['snapshot', join(dir, 'nope.heaptap')], /^heaptap: cannot read region .*nope\.heaptap.*ENOENT/],
    [['top', '424242', '--dir', dir], /^heaptap: no region of pid 424242 in /],
    [['top', '1', '--sample-index', 'rss', '--dir', dir], /--sample-index 'rss' is not one of alloc_objects, alloc_space, inuse_objects, inuse_space\n$/],
    [['help', 'bogus'], /^heaptap: help: unknown command 'bogus'/],
  ];
  const results = await Promise.all(cases.map(([args]) => heaptap(args)));
  results.forEach((r, i) => {
    const [args, re] = cases[i]!;
    t.is(r.code, 2, `heaptap ${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re, `heaptap ${args.join(' ')}`);
    t.is(r.stdout, '');
  });
});

test('an unreadable region is a clear message and exit code 2', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const bad = join(dir, '123-456.heaptap');
  await writeFile(bad, Buffer.alloc(100, 7));
  for (const args of [['snapshot', bad], ['top', bad], ['snapshot', '123', '--dir', dir]]) {
    const r = await heaptap(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, /^heaptap: cannot read (region |a region of pid 123: ).*123-456\.heaptap.*\(ERR_HEAPTAP_\w+\)\n$/, r.stderr);
  }
  const list = await heaptap(['list', '--dir', dir]);
  t.is(list.code, 0);
  t.regex(list.stdout, /^123\s+unreadable\s+-\s+-\s+.*123-456\.heaptap$/m);
});

test('--help documents every option and environment variable', async (t) => {
  const want: Record<string, string[]> = {
    run: ['--output', '-o', '--rate', '--depth', '--interval', '--keep-regions', '--help', 'HEAPTAP_DIR', 'HEAPTAP_SAMPLE_RATE', 'HEAPTAP_MAX_DEPTH', 'LD_PRELOAD', 'SIGTERM', '128', 'heaptap.<pid>.heap.pb.gz', 'heaptap.<pid>.peak.pb.gz'],
    list: ['--dir', '--help', 'HEAPTAP_DIR'],
    snapshot: ['--output', '-o', '--view', 'heap', 'allocs', '--dir', '--help', 'HEAPTAP_DIR'],
    top: ['--sample-index', '--nodes', '-n', '--dir', '--help', 'HEAPTAP_DIR'],
  };
  for (const [cmd, words] of Object.entries(want)) {
    const r = await heaptap([cmd, '--help']);
    t.is(r.code, 0);
    for (const w of words) t.true(r.stdout.includes(w), `heaptap ${cmd} --help mentions ${w}`);
    const h = await heaptap(['help', cmd]);
    t.is(h.stdout, r.stdout);
  }
  const top = await heaptap(['--help']);
  t.is(top.code, 0);
  for (const cmd of Object.keys(want)) t.regex(top.stdout, new RegExp(`^  ${cmd} `, 'm'));
});

test('run exits with the command\'s exit code, and 127 when there is no such command', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', '-o', dir, '--', 'sh', '-c', 'exit 7']);
  t.is(r.code, 7, r.stderr);
  const nf = await heaptap(['run', '-o', dir, '--', 'no-such-command-heaptap']);
  t.is(nf.code, 127);
  t.regex(nf.stderr, /^heaptap: cannot run no-such-command-heaptap: command not found\n$/);
  // Without `--`, the command starts at the first word that is not an option.
  const plain = await heaptap(['run', '-o', dir, 'sh', '-c', 'exit 3']);
  t.is(plain.code, 3);
});

test('run exits with 128 + the signal number when a signal kills the command, after writing the profiles', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', '--rate', '1', '-o', dir, '--', join(fixtures, 'churn'), '--threads', '1', '--mib', '1', '--hold'], {
    onSpawn: () => {},
  });
  // --hold reads stdin, which is closed here: churn exits 0. Now one that is killed:
  t.is(r.code, 0, r.stderr);
  const k = await heaptap(['run', '--rate', '1', '-o', dir, '--', 'sh', '-c', `${join(fixtures, 'churn')} --threads 1 --mib 1 --leak-mib 1; kill -KILL $$`]);
  t.is(k.code, 128 + 9, k.stderr);
  t.regex(k.stderr, /was killed by SIGKILL/);
  const files = await profilesIn(dir);
  t.true(existsSync(files.heap) && existsSync(files.peak));
});

test('SIGTERM and SIGINT sent to heaptap reach the command', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    // A command (Node itself) that reports the signal and exits 42 when it gets it.
    const script = `process.on('${sig}', () => { console.log('got-${sig}'); process.exit(42); }); ` +
      `console.log('ready'); setTimeout(() => {}, 30000);`;
    const r = await heaptap(['run', '-o', dir, '--', process.execPath, '-e', script], {
      timeoutMs: 25_000,
      onSpawn: (child) => child.stdout!.on('data', (d) => String(d).includes('ready') && child.kill(sig)),
    });
    t.is(r.code, 42, `${sig}: ${r.signal} ${r.stderr}`);
    t.regex(r.stdout, new RegExp(`got-${sig}`));
  }
  // A command that does not handle it dies of it: 128 + 15.
  const r = await heaptap(['run', '-o', dir, '--', 'sh', '-c', 'echo ready; exec sleep 30'], {
    timeoutMs: 25_000,
    onSpawn: (child) => child.stdout!.on('data', (d) => String(d).includes('ready') && setTimeout(() => child.kill('SIGTERM'), 100)),
  });
  t.is(r.code, 143, r.stderr);
});

test('run prepends the preload to LD_PRELOAD and passes --rate, --depth and a private HEAPTAP_DIR', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const other = join(fixtures, 'libdlalloc.so');
  const r = await heaptap(['run', '--rate', '512k', '--depth', '12', '-o', dir, '--', 'sh', '-c', 'echo "$LD_PRELOAD|$HEAPTAP_SAMPLE_RATE|$HEAPTAP_MAX_DEPTH|$HEAPTAP_DIR"'], {
    env: { LD_PRELOAD: other, HEAPTAP_DIR: '/somewhere/else' },
  });
  t.is(r.code, 0, r.stderr);
  const [ld, rate, depth, hdir] = r.stdout.trim().split('|');
  t.is(ld, `${PRELOAD}:${other}`);
  t.is(rate, '524288');
  t.is(depth, '12');
  t.regex(hdir!, /\/heaptap-run-\w+$/);
  t.false(existsSync(hdir!), 'the run\'s region directory is removed at the end');
  const plain = await heaptap(['run', '-o', dir, '--', 'sh', '-c', 'echo "$LD_PRELOAD"'], { env: { LD_PRELOAD: '' } });
  t.is(plain.stdout.trim(), PRELOAD);
});

test('run writes heap and peak profiles that parse, and a summary', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  // The working set (site_ws, about 2 MiB) is live during the run and freed at the end;
  // --leak-mib 1 stays: the peak profile has the first, the heap profile only the second.
  const r = await heaptap(['run', '--rate', '1', '--interval', '5ms', '-o', dir, '--', join(fixtures, 'churn'), '--threads', '1', '--mib', '24', '--leak-mib', '1', '--truth', '-']);
  t.is(r.code, 0, r.stderr);
  const { heap, peak, pid } = await profilesIn(dir);
  t.is(pid, truths(r.stdout)[0]!.pid);
  const inuseBy = async (file: string) => {
    const p = await decodeProfile(await readFile(file));
    t.is(Number(p.defaultSampleType), 0);
    t.is(str(p, p.sampleType[3]!.type), 'inuse_space');
    t.is(str(p, p.mapping[0]!.filename), join(fixtures, 'churn'));
    const out = new Map<string, number>();
    for (const s of p.sample) {
      const loc = p.location.find((l) => l.id === s.locationId[0])!;
      const f = loc.line[0] ? str(p, p.function.find((x) => x.id === loc.line[0]!.functionId)!.name) : '?';
      out.set(f, (out.get(f) ?? 0) + Number(s.value[3]));
    }
    return out;
  };
  const atExit = await inuseBy(heap);
  const atPeak = await inuseBy(peak);
  t.is(atExit.get('site_leak'), 1 << 20);
  t.is(atExit.get('site_ws') ?? 0, 0);
  t.true((atPeak.get('site_ws') ?? 0) > 1 << 20, 'the working set was live at the peak');
  for (const line of [
    /^heaptap: .*churn .* exited with code 0 after [\d.]+ s \(1 process, 1 image; every allocation recorded\)$/m,
    /^ {2}peak in use {5}[\d.]+ MiB at [\d.]+ s$/m,
    /^ {2}allocated {7}1\d\d MiB in [\d,]+ objects$/m,
    /^ {2}in use at exit {2}1\.0\d MiB$/m,
    /^ {2}top sites by bytes allocated:\n( {4}.*\n){10}\n/m,
    /^ {2}top sites by bytes in use at the peak:\n {4}\s*[\d.]+MiB\s+[\d.]+%\s+site_ws$/m,
    new RegExp(`^ {2}explore: {2}go tool pprof -http=: \\S+heaptap\\.${pid}\\.heap\\.pb\\.gz$`, 'm'),
  ]) t.regex(r.stderr, line);
  t.notRegex(r.stderr, /\r|\x1b\[/, 'no live line when stderr is not a terminal');
});

test('list, snapshot and top read the regions a run kept', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const r = await heaptap(['run', '--rate', '1', '--keep-regions', '-o', out, '--', join(fixtures, 'forker')]);
  t.is(r.code, 0, r.stderr);
  const kept = /region files kept in (\S+)/.exec(r.stderr)?.[1];
  t.truthy(kept);
  t.teardown(() => removeDir(kept!));
  const by = new Map(truths(r.stdout).map((x) => [x.role!, x.pid]));

  const list = await heaptap(['list'], { env: { HEAPTAP_DIR: kept } });
  t.is(list.code, 0, list.stderr);
  const rows = list.stdout.trim().split('\n').map((l) => l.split(/\s{2,}/));
  t.deepEqual(rows[0], ['PID', 'STATE', 'SAMPLES', 'DROPS', 'EXECUTABLE', 'REGION']);
  t.is(rows.length, 4, 'parent, fork child, exec\'d image');
  const states = rows.slice(1).map((x) => `${x[0]} ${x[1]}`).sort();
  t.deepEqual(states, [`${by.get('parent')} exited`, `${by.get('child')} exited`, `${by.get('child')} gone`].sort());
  for (const row of rows.slice(1)) {
    t.regex(row[2]!, /^\d+$/);
    t.true(Number(row[2]) > 0);
    t.regex(row[4]!, /forker$/);
  }

  // A pid picks its newest region: the exec'd image, which allocated at exec_site.
  const top = await heaptap(['top', String(by.get('child')), '--dir', kept!]);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /^Type: inuse_space$/m);
  t.regex(top.stdout, /site\n\s+1\.00MiB\s+\S+%\s+\S+%\s+1\.00MiB\s+\S+%  exec_site\n/, 'the largest first');
  const topAlloc = await heaptap(['top', String(by.get('parent')), '--dir', kept!, '--sample-index', 'alloc_objects', '-n', '1']);
  t.regex(topAlloc.stdout, /^Type: alloc_objects\nShowing 1 of \d+ sites/m);
  t.regex(topAlloc.stdout, /^\s+64 .*parent_site$/m);

  const file = join(out, 'snap.pb.gz');
  const snap = await heaptap(['snapshot', String(by.get('parent')), '--dir', kept!, '-o', file]);
  t.is(snap.code, 0, snap.stderr);
  t.regex(snap.stderr, /^heaptap: wrote .*snap\.pb\.gz \(\d+ stacks, pid \d+, \S+\/forker\)$/m);
  const p = await decodeProfile(await readFile(file));
  t.is(Number(p.defaultSampleType), 0);
  t.true(p.sample.every((s) => s.label.some((l) => str(p, l.key) === 'pid' && Number(l.num) === by.get('parent'))));

  const allocs = await heaptap(['snapshot', String(by.get('parent')), '--view', 'allocs'], { env: { HEAPTAP_DIR: kept }, cwd: out });
  t.is(allocs.code, 0, allocs.stderr);
  const a = await decodeProfile(await readFile(join(out, `heaptap.${by.get('parent')}.allocs.pb.gz`)));
  t.is(str(a, a.defaultSampleType), 'alloc_space');

  // -o - writes the gzipped profile to stdout.
  const piped = await new Promise<Buffer>((res) => {
    const c = spawn(process.execPath, [cliPath, 'snapshot', String(by.get('parent')), '--dir', kept!, '-o', '-']);
    const chunks: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => chunks.push(d));
    c.on('close', () => res(Buffer.concat(chunks)));
  });
  t.is(piped[0], 0x1f);
  t.is((await decodeProfile(piped)).sample.length, p.sample.length);
});

test('list and top see a process that is still running', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const child = spawn(join(fixtures, 'churn'), ['--threads', '1', '--mib', '1', '--leak-mib', '2', '--hold'], {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: PRELOAD, HEAPTAP_SAMPLE_RATE: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise<void>((res) => child.stdout.on('data', (d) => String(d).includes('ready') && res()));
  const list = await heaptap(['list', '--dir', dir]);
  t.regex(list.stdout, new RegExp(`^${child.pid}\\s+running\\s+\\d+\\s+0\\s+\\S+/churn\\s+`, 'm'));
  const top = await heaptap(['top', String(child.pid), '--dir', dir, '-n', '1']);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /^\s+2\.00MiB\s+\S+%\s+\S+%\s+2\.00MiB\s+\S+%\s+site_leak$/m);
  child.stdin.end('\n');
  await new Promise((res) => child.on('close', res));
  const after = await heaptap(['list', '--dir', dir]);
  t.regex(after.stdout, new RegExp(`^${child.pid}\\s+exited\\s`, 'm'));
});

test('a command that makes no region still runs, and heaptap says why there is no profile', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', '-o', dir, '--', 'sh', '-c', 'exit 0'], { env: { HEAPTAP_ENABLED: '0' } });
  t.is(r.code, 0);
  t.regex(r.stderr, /no heap data: no process made a region/);
});

test('run removes the regions of processes that ended, keeping their figures', async (t) => {
  // A command that starts 30 short processes, then counts the region files left while it
  // still runs: only its own (and the ones still running) stay in HEAPTAP_DIR.
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', '--rate', '1', '--interval', '10ms', '-o', dir, '--', 'sh', '-c',
    'for i in $(seq 30); do ls / >/dev/null; done; sleep 1; ls "$HEAPTAP_DIR" | wc -l'], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  t.true(Number(r.stdout.trim()) < 15, `${r.stdout.trim()} of some 35 region files left`);
  const procs = Number(/\((\d+) processes/.exec(r.stderr)?.[1]);
  t.true(procs >= 31, `all processes in the profile: ${r.stderr.split('\n')[0]}`);
});
