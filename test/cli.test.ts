// The heaptap command line (src/cli.ts): exit codes, signals, the environment it gives the
// command, the files it writes, and list / snapshot / top on the regions it leaves.
import test from 'ava';
import { existsSync } from 'node:fs';
import { chmod, chown, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { secureExecReason } from '../src/cli/run.ts';
import { decodeProfile, str } from '../src/profile.ts';
import { cliPath, fixtures, heaptap, profilesIn, removeDir, root, tempDir, truths } from './helpers/heaptap.ts';
import { execGroup, spawnGroup, until, within } from './helpers/procs.ts';

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
    [['snapshot'], /^heaptap: snapshot: give one <pid\|region\|profile>/],
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
    run: ['--output', '-o', '--rate', '--depth', '--interval', '--chart', '--no-chart', '--keep-regions', '--help', 'HEAPTAP_DIR', 'HEAPTAP_SAMPLE_RATE', 'HEAPTAP_MAX_DEPTH', 'LD_PRELOAD', 'SIGTERM', '128', 'heaptap.<pid>.heap.pb.gz', 'heaptap.<pid>.peak.pb.gz', 'heaptap.<pid>.html'],
    report: ['--peak', '--base', '--output', '-o', '--dir', '--help'],
    list: ['--dir', '--help', 'HEAPTAP_DIR'],
    snapshot: ['--output', '-o', '--view', 'heap', 'allocs', '--dir', '--help', 'HEAPTAP_DIR'],
    top: ['--sample-index', '--nodes', '-n', '--dir', '--help', 'HEAPTAP_DIR', '.pb.gz', 'http'],
    diff: ['--sample-index', '--nodes', '-n', '--dir', '--help', 'alloc_space'],
    export: ['--format', 'folded', 'callgrind', '--output', '-o', '--type', '--full-names', '--dir', '--help'],
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

test('the command run starts sees the user\'s environment, with only LD_PRELOAD and HEAPTAP_DIR added', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  // HEAPTAP_COMMAND is what ./heaptap adds for heaptap itself; MALLOC_ARENA_MAX is what the
  // agent's process runs with (src/cli/agentExec.ts): neither may reach the command.
  const user: Record<string, string> = { PATH: process.env.PATH!, HOME: '/nonexistent', HEAPTAP_SOMETHING: 'kept', EMPTY: '' };
  const r = await heaptap(['run', '-o', dir, '--', 'env', '-0'], {
    // exactly this environment: the helper's own (the test runner's) is unset
    env: { ...Object.fromEntries(Object.keys(process.env).map((k) => [k, undefined])), ...user, HEAPTAP_COMMAND: './heaptap' },
  });
  t.is(r.code, 0, r.stderr);
  const seen = Object.fromEntries(r.stdout.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  t.is(seen.LD_PRELOAD, PRELOAD);
  t.regex(seen.HEAPTAP_DIR ?? '', /\/heaptap-run-\w+$/);
  delete seen.LD_PRELOAD;
  delete seen.HEAPTAP_DIR;
  t.deepEqual(seen, user);
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
    /^ {2}peak in use {5}[\d.]+ MiB \([\d,]+ bytes\) at [\d.]+ s$/m,
    /^ {2}allocated {7}1\d\d MiB in [\d,]+ objects$/m,
    /^ {2}in use at exit {2}1\.0\d MiB$/m,
    // ten sites, each with its file:line, most with two callers on a line of their own
    /^ {2}top sites by bytes allocated:\n( {4}\s*[\d.]+\w?i?B\s+[\d.]+% {2}\S+( {2}\S+:\d+)?\n( {6,}← .*\n)?){10}\n/m,
    /^ {2}top sites by bytes in use at the peak:\n {4}\s*[\d.]+MiB\s+[\d.]+%\s+site_ws {2}churn\.c:\d+\n {6,}← run {2}churn\.c:\d+ ← start_thread /m,
    // in use at exit is not empty: the heap profile holds the story; no command needs Go
    new RegExp(`^ {2}explore: {2}heaptap top \\S*heaptap\\.${pid}\\.heap\\.pb\\.gz `, 'm'),
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
  const piped = await within(new Promise<Buffer>((res) => {
    const c = spawnGroup(t, process.execPath, [cliPath, 'snapshot', String(by.get('parent')), '--dir', kept!, '-o', '-']);
    const chunks: Buffer[] = [];
    c.stdout!.on('data', (d: Buffer) => chunks.push(d));
    c.on('close', () => res(Buffer.concat(chunks)));
  }), 60_000, 'snapshot -o -');
  t.is(piped[0], 0x1f);
  t.is((await decodeProfile(piped)).sample.length, p.sample.length);
});

test('list and top see a process that is still running', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const child = spawnGroup(t, join(fixtures, 'churn'), ['--threads', '1', '--mib', '1', '--leak-mib', '2', '--hold'], {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: PRELOAD, HEAPTAP_SAMPLE_RATE: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const closed = new Promise((res) => child.on('close', res));
  await within(new Promise<void>((res) => child.stdout!.on('data', (d) => String(d).includes('ready') && res())), 30_000, 'churn to be ready');
  const list = await heaptap(['list', '--dir', dir]);
  t.regex(list.stdout, new RegExp(`^${child.pid}\\s+running\\s+\\d+\\s+0\\s+\\S+/churn\\s+`, 'm'));
  const top = await heaptap(['top', String(child.pid), '--dir', dir, '-n', '1']);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /^\s+2\.00MiB\s+\S+%\s+\S+%\s+2\.00MiB\s+\S+%\s+site_leak$/m);
  child.stdin!.end('\n');
  await within(closed, 30_000, 'churn to exit');
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
  // still runs: only its own (and the ones still running) stay in HEAPTAP_DIR. It looks
  // every 0.1 s, for up to 30 s (about 1 s on an idle machine; a busy one needs longer to
  // read them all, and without the removal they would stay forever).
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const r = await heaptap(['run', '--rate', '1', '--interval', '10ms', '-o', dir, '--', 'sh', '-c',
    'for i in $(seq 30); do ls / >/dev/null; done; ' +
    'for j in $(seq 300); do n=$(ls "$HEAPTAP_DIR" | wc -l); [ "$n" -lt 15 ] && break; sleep 0.1; done; echo "$n"'], { timeoutMs: 90_000 });
  t.is(r.code, 0, r.stderr);
  t.true(Number(r.stdout.trim()) < 15, `${r.stdout.trim()} of some 35 region files left`);
  const procs = Number(/\((\d+) processes/.exec(r.stderr)?.[1]);
  t.true(procs >= 31, `all processes in the profile: ${r.stderr.split('\n')[0]}`);
});

test('run -o into /proc/x, a missing parent or a file fails at once with one line and exit 2, before the command runs', async (t) => {
  // `run -o /proc/nope` used to hang for ever without starting the command (Node's recursive
  // mkdir never returns there), and `-o /nonexistent/x` made /nonexistent/.
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const marker = join(dir, 'ran');
  const file = join(dir, 'a-file');
  await writeFile(file, '');
  const cases: Array<[string, RegExp]> = [
    ['/proc/heaptap-nope', /^heaptap: run: -o \/proc\/heaptap-nope: cannot make the directory: ENOENT/],
    [join(dir, 'missing/sub'), /^heaptap: run: -o \S+missing\/sub: \S+missing does not exist \(only the last directory is made\)\n$/],
    [file, /^heaptap: run: -o \S+a-file: not a directory\n$/],
    ['/proc', /^heaptap: run: -o \/proc: refuses new files \(/],
  ];
  for (const [out, re] of cases) {
    const r = await heaptap(['run', '-o', out, '--', 'sh', '-c', `touch ${marker}`], { timeoutMs: 30_000 });
    t.is(r.code, 2, `-o ${out}: ${r.signal ?? ''} ${r.stderr}`);
    t.regex(r.stderr, re);
    t.is(r.stderr.split('\n').length, 2, 'one line');
  }
  t.false(existsSync(marker), 'the command never ran');
  t.false(existsSync(join(dir, 'missing')), 'no directories made on the way');
  // One new directory under an existing one is made.
  const ok = await heaptap(['run', '--rate', '1', '-o', join(dir, 'new'), '--', join(fixtures, 'churn'), '--threads', '1', '--mib', '1']);
  t.is(ok.code, 0, ok.stderr);
  await t.notThrowsAsync(profilesIn(join(dir, 'new')));
});

test('snapshot -o that cannot be written is one line and exit 2, not a stack trace', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const r = await heaptap(['run', '--rate', '1', '--keep-regions', '-o', out, '--', join(fixtures, 'churn'), '--threads', '1', '--mib', '1', '--truth', '-']);
  t.is(r.code, 0, r.stderr);
  const kept = /region files kept in (\S+)/.exec(r.stderr)![1]!;
  t.teardown(() => removeDir(kept));
  const pid = String(truths(r.stdout)[0]!.pid);
  for (const [target, re] of [
    ['/proc/heaptap-nope.pb.gz', /^heaptap: snapshot: -o \/proc\/heaptap-nope\.pb\.gz: \/proc: refuses new files \(/],
    [join(out, 'missing/x.pb.gz'), /^heaptap: snapshot: -o \S+\/missing\/x\.pb\.gz: \S+\/missing: does not exist\n$/],
  ] as const) {
    const s = await heaptap(['snapshot', pid, '--dir', kept, '-o', target]);
    t.is(s.code, 2, s.stderr);
    t.regex(s.stderr, re);
    t.notRegex(s.stderr, /\n\s+at /, 'no stack trace');
  }
  // -o an existing directory: the usual name, in it.
  const d = await heaptap(['snapshot', pid, '--dir', kept, '-o', out]);
  t.is(d.code, 0, d.stderr);
  t.true(existsSync(join(out, `heaptap.${pid}.heap.pb.gz`)));
});

test('list, top and snapshot of a directory that does not exist exit 2 and say so', async (t) => {
  const missing = join(await tempDir(), 'nope');
  t.teardown(() => removeDir(join(missing, '..')));
  const list = await heaptap(['list', '--dir', missing]);
  t.is(list.code, 2);
  t.regex(list.stderr, /^heaptap: list: \S+\/nope does not exist/);
  const env = await heaptap(['list'], { env: { HEAPTAP_DIR: missing } });
  t.is(env.code, 2);
  const top = await heaptap(['top', '123', '--dir', missing]);
  t.is(top.code, 2);
  t.regex(top.stderr, /^heaptap: no region of pid 123 in \S+ \(\S+ does not exist\)\n$/);
});

test('a setuid or setgid command is named as the reason there is no profile (LD_PRELOAD does not reach it)', async (t) => {
  // Root runs a copy of id(1) that is setuid (or setgid) to nobody: the kernel switches
  // identity, so the dynamic loader runs it in secure mode and drops LD_PRELOAD, as it
  // does for a setuid-root program run by a user. The same copy without the bit is
  // profiled (the control: the warning is about the bit, and the preload works here).
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const prog = join(dir, 'id');
  await copyFile('/usr/bin/id', prog);
  await chown(prog, 65534, 65534);
  await chmod(prog, 0o755);
  const plain = await heaptap(['run', '-o', dir, '--rate', '1', '--', prog, '-u']);
  t.is(plain.code, 0, plain.stderr);
  t.notRegex(plain.stderr, /setuid|setgid|no heap data/);
  t.regex(plain.stderr, /\(1 process, 1 image; every allocation recorded\)/);
  for (const [mode, flag, what] of [[0o4755, '-u', /is setuid \(owner uid 65534\)/], [0o2755, '-g', /is setgid \(group gid 65534\)/]] as const) {
    await chmod(prog, mode);
    const r = await heaptap(['run', '-o', dir, '--rate', '1', '--', prog, flag]);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.trim(), '65534', 'the kernel did switch identity (the mount is not nosuid)');
    const lines = r.stderr.trim().split('\n');
    t.regex(lines[0]!, /^heaptap: warning: \S+\/id /);
    t.regex(lines[0]!, what);
    t.regex(lines[0]!, /the dynamic loader ignores LD_PRELOAD for it/);
    t.regex(lines.at(-1)!, /^heaptap: id -[ug] exited with code 0 after [\d.]+ s; no heap data: \S+\/id is set[ug]id/);
    t.notRegex(r.stderr, /statically linked/);
  }
});

test('file capabilities and setuid root are named for a user who is not root; a setuid script is not', async (t) => {
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const prog = join(dir, 'cat');
  await copyFile('/bin/cat', prog);
  t.is(secureExecReason(prog, '', { euid: 65534, egid: 65534 }), null, 'no capabilities yet');
  // setcap is libcap2-bin's, which scripts/setup-tests.sh installs.
  await execGroup('setcap', ['cap_net_raw+ep', prog], { timeout: 30_000 });
  t.regex(secureExecReason(prog, '', { euid: 65534, egid: 65534 }) ?? '', /\/cat has file capabilities \(setcap\): the dynamic loader ignores LD_PRELOAD for it unless heaptap runs as root$/);
  t.is(secureExecReason(prog, '', { euid: 0, egid: 0 }), null, 'root gains nothing from them: not secure mode');
  // Found on PATH, as the command is given.
  t.regex(secureExecReason('cat', dir, { euid: 65534, egid: 65534 }) ?? '', /file capabilities/);
  // The kernel ignores setuid on a script: nothing to say about it.
  const script = join(dir, 'script');
  await writeFile(script, '#!/bin/sh\ntrue\n');
  await chmod(script, 0o4755);
  t.is(secureExecReason(script, '', { euid: 65534, egid: 65534 }), null);
  await copyFile('/usr/bin/id', join(dir, 'id'));
  await chmod(join(dir, 'id'), 0o4755);
  t.regex(secureExecReason(join(dir, 'id'), '', { euid: 65534, egid: 65534 }) ?? '', /is setuid \(owner uid 0\)/, 'a setuid-root program run by a user');
});

test('on a terminal the live line keeps a row of its own while the command writes to the same terminal', async (t) => {
  // tmux (scripts/setup-tests.sh installs it) is a real terminal: its screen and scrollback
  // are what a person sees. The live line used to be drawn where the cursor was, so the
  // command's next line continued it: "...allocating 0 B/sservice: handled request 3".
  const dir = await tempDir();
  t.teardown(() => removeDir(dir));
  const sock = join(dir, 'tmux.sock');
  const tmux = (...a: string[]) => execGroup('tmux', ['-S', sock, ...a], { timeout: 30_000 });
  t.teardown(() => tmux('kill-server').then(() => undefined, () => undefined));
  const script = join(dir, 'service.sh');
  await writeFile(script, 'for i in $(seq 1 40); do echo "service: handled request $i"; sleep 0.05; done\n');
  const run = `${process.execPath} ${cliPath} run --interval 20ms -o ${dir} -- sh ${script}; echo heaptap-exit=$?; sleep 600`;
  await tmux('new-session', '-d', '-x', '100', '-y', '12', run);
  const screen = async (history = false) => (await tmux('capture-pane', '-p', '-J', ...(history ? ['-S', '-'] : []))).stdout.replace(/\n+$/, '').split('\n');

  // While it runs: the program's lines above, the live line alone on the bottom row.
  const during = await until(async () => {
    const rows = await screen();
    return rows.length === 12 && /^heaptap: [\d.]+ s {2}in use .* allocating /.test(rows[11]!) &&
      rows.slice(0, 11).some((r) => /^service: handled request \d+$/.test(r)) ? rows : undefined;
  }, 20_000, 'the live line on the bottom row below the program\'s output');
  t.false(during.slice(0, 11).some((r) => r.includes('allocating')), during.join('\n'));

  await until(async () => (await screen(true)).some((r) => r.startsWith('heaptap-exit=')), 60_000, 'heaptap to finish');
  const all = await screen(true);
  const text = all.join('\n');
  t.true(all.includes('heaptap-exit=0'), text);
  for (let i = 1; i <= 40; i++) {
    t.is(all.filter((r) => r === `service: handled request ${i}`).length, 1, `request ${i} is a line of its own:\n${text}`);
  }
  t.false(all.some((r) => /service:/.test(r) && !/^service: handled request \d+$/.test(r)), `no program line shares its row:\n${text}`);
  t.false(all.some((r) => r.includes('allocating')), `the live line leaves nothing behind:\n${text}`);
  t.regex(text, /^heaptap: sh \S+service\.sh exited with code 0 after /m);
});
