// Names a person can read, in real programs, and the text tools that read profiles back
// (heaptap top / diff / export on .pb.gz files and on the agent's /debug/pprof/heap):
//   C++   test/fixtures/session_cache.cc: every byte its cache holds is allocated inside
//         std::map / std::vector / std::string; the site must be SessionCache::remember
//   Rust  test/compat/programs/sites.rs (legacy and v0 manglings): the program's own
//         functions, demangled, without hashes; not alloc::raw_vec or hashbrown
//   perl  not Perl_safesysmalloc;  sqlite3  not its allocator wrappers (unnamed in Debian's
//         stripped libsqlite3)
// Perl, sqlite3 and rustc come from scripts/peers/battery.sh (which installs them), and
// callgrind_annotate from valgrind (scripts/setup-tests.sh).
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Profile } from 'pprof-format';

import { formatBytes } from '../src/cli/common.ts';
import { exploreBlock } from '../src/cli/run.ts';
import { decodeProfile, str } from '../src/profile.ts';
import { ProfileStacks, isAllocatorFrame } from '../src/sites.ts';
import { fixtures, heaptap, profilesIn, removeDir, root, tempDir } from './helpers/heaptap.ts';
import { get, spawnAgent, startFixture, until } from './agent/helpers.ts';

const SESSION = join(fixtures, 'session_cache');

function run(cmd: string, args: string[], opts: { timeout?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { maxBuffer: 64 << 20, timeout: opts.timeout ?? 120_000 }, (err, stdout, stderr) => {
      const e = err as { code?: number | string } | null;
      res({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Total of one sample type, summed straight from the samples. */
function total(p: Profile, type: string): number {
  const i = p.sampleType.findIndex((t) => str(p, t.type) === type);
  return p.sample.reduce((a, s) => a + Number(s.value[i] ?? 0), 0);
}

/** Sum of one sample type over the samples with a frame whose full name starts with fn. */
function under(p: Profile, type: string, fn: string): number {
  const i = p.sampleType.findIndex((t) => str(p, t.type) === type);
  const stacks = new ProfileStacks(p);
  return p.sample.filter((s) => stacks.frames(s).some((f) => f.name.startsWith(fn))).reduce((a, s) => a + Number(s.value[i] ?? 0), 0);
}

/** The site rows of a run summary's block ("top sites by ..."): [name, the line after]. */
function summarySites(stderr: string, title: RegExp): Array<{ name: string; where: string; path: string }> {
  const lines = stderr.split('\n');
  const at = lines.findIndex((l) => title.test(l));
  if (at < 0) return [];
  const out: Array<{ name: string; where: string; path: string }> = [];
  for (let k = at + 1; k < lines.length && lines[k]!.startsWith('    '); k++) {
    const m = /^ {4}\s*\S+\s+[\d.]+%  (.+?)(?:  (\S+:\d+))?$/.exec(lines[k]!);
    if (!m) continue;
    const next = lines[k + 1] ?? '';
    out.push({ name: m[1]!, where: m[2] ?? '', path: next.trim().startsWith('←') ? next.trim() : '' });
  }
  return out;
}

let peers: Record<string, string> = {};
test.before('builds the Rust programs and installs perl and sqlite3 (scripts/peers/battery.sh)', async (t) => {
  t.timeout(15 * 60_000);
  const r = await run('bash', [join(root, 'scripts/peers/battery.sh')], { timeout: 14 * 60_000 });
  if (r.code !== 0) throw new Error(`scripts/peers/battery.sh failed: ${r.stderr}`);
  peers = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
});

test('a C++ cache filled through std::map and std::vector is sited at SessionCache::remember in the summary, top and the peak profile', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const r = await heaptap(['run', '--rate', '64k', '-o', out, '--', SESSION, '4000', '16384']);
  t.is(r.code, 0, r.stderr);
  const { peak, pid } = await profilesIn(out);
  const alloc = summarySites(r.stderr, /top sites by bytes allocated/);
  const atPeak = summarySites(r.stderr, /top sites by bytes in use at the peak/);
  t.is(alloc[0]?.name, 'SessionCache::remember', r.stderr);
  t.is(atPeak[0]?.name, 'SessionCache::remember', r.stderr);
  // its file:line and two callers of its path
  t.regex(alloc[0]!.where, /^session_cache\.cc:\d+$/);
  t.regex(alloc[0]!.path, /^← handle_request {2}session_cache\.cc:\d+ ← main {2}session_cache\.cc:\d+$/);
  t.true(alloc.some((s) => s.name === 'Request::parse'), r.stderr);
  for (const s of [...alloc, ...atPeak]) t.false(/^(std|__gnu_cxx)::|^operator new/.test(s.name), `a site in the summary is plumbing: ${s.name}`);
  // the cache is freed when main returns: the story is in the peak profile, and the
  // explore line says so; no command it suggests needs Go
  t.regex(r.stderr, /in use at exit {2}0 B/);
  t.regex(r.stderr, new RegExp(`^ {2}explore: {2}heaptap top \\S*heaptap\\.${pid}\\.peak\\.pb\\.gz `, 'm'));
  t.notRegex(r.stderr, /go tool pprof/);

  // top on the file run wrote (it failed with "smaller than a region header")
  const top = await heaptap(['top', peak, '-n', '3']);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, new RegExp(`^Profile: ${peak.replace(/[.]/g, '\\.')}\n`));
  const rows = top.stdout.split('\n').filter((l) => /^\s+\S+\s+[\d.]+%/.test(l));
  t.regex(rows[0] ?? '', /\d+\.\d\d% {2}SessionCache::remember$/, top.stdout);
  // the full name stays in the profile; the display name is short
  const p = await decodeProfile(await readFile(peak));
  t.true(p.function.some((f) => str(p, f.name).startsWith('SessionCache::remember(std::__cxx11::basic_string<char')), 'full name in the profile');
  t.true(p.function.some((f) => /^std::vector<char, std::allocator<char> >::/.test(str(p, f.name))));
});

test('top reads a .pb.gz file that heaptap run wrote (it took the file for a region: "smaller than a region header")', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const r = await heaptap(['run', '--rate', '64k', '-o', out, '--', SESSION, '500', '16384']);
  t.is(r.code, 0, r.stderr);
  const { heap } = await profilesIn(out);
  const top = await heaptap(['top', heap, '--sample-index', 'alloc_space']);
  t.is(top.code, 0, top.stderr);
  t.notRegex(top.stderr, /region header/);
  t.regex(top.stdout, /^Type: alloc_space\n/m);
  // a file that is neither: one line, exit 2
  const junk = join(out, 'junk.pb.gz');
  await writeFile(junk, Buffer.from([0x1f, 0x8b, 1, 2, 3]));
  const bad = await heaptap(['top', junk]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^heaptap: \S*junk\.pb\.gz: not a pprof profile \(.*\)\n$/);
});

test('diff names the site that grew between two runs, by the difference of its in-use', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const [a, b] = [join(out, 'a'), join(out, 'b')];
  const ra = await heaptap(['run', '--rate', '1', '-o', a, '--', SESSION, '1000', '16384']);
  const rb = await heaptap(['run', '--rate', '1', '-o', b, '--', SESSION, '4000', '16384']);
  t.is(ra.code, 0, ra.stderr);
  t.is(rb.code, 0, rb.stderr);
  const [pa, pb] = [(await profilesIn(a)).peak, (await profilesIn(b)).peak];
  const d = await heaptap(['diff', pa, pb]);
  t.is(d.code, 0, d.stderr);
  const [oa, ob] = [await decodeProfile(await readFile(pa)), await decodeProfile(await readFile(pb))];
  const grew = under(ob, 'inuse_space', 'SessionCache::remember') - under(oa, 'inuse_space', 'SessionCache::remember');
  // every allocation recorded: 3000 more sessions of a 16 KiB payload, their map node and key
  t.true(grew > 3000 * 16384 && grew < 3000 * (16384 + 256), `grew ${grew}`);
  const row = d.stdout.split('\n').find((l) => l.endsWith('  SessionCache::remember'));
  t.truthy(row, d.stdout);
  t.is(row!.trim().split(/\s+/)[0], `+${formatBytes(grew, '')}`, d.stdout);
  t.regex(d.stdout, /^Type: inuse_space\n/m);
  t.regex(d.stdout, /^ +change +old +new {2}site\n +\+[\d.]+MiB .* {2}SessionCache::remember$/m, 'the largest growth first');
  // allocated bytes, from the heap profiles (the cache is freed by then: in use is 0)
  const alloc = await heaptap(['diff', '--sample-index', 'alloc_space', (await profilesIn(a)).heap, (await profilesIn(b)).heap]);
  t.is(alloc.code, 0, alloc.stderr);
  t.regex(alloc.stdout, /^Type: alloc_space\n/m);
  t.regex(alloc.stdout, /\+[\d.]+(KiB|MiB)\s+\S+\s+\S+ {2}Request::parse$/m);
  const bad = await heaptap(['diff', pa]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^heaptap: diff: give OLD and NEW/);
});

test('export writes folded stacks, root first, and callgrind that callgrind_annotate reads, both adding up to the profile\'s total', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const r = await heaptap(['run', '--rate', '16k', '-o', out, '--', SESSION, '2000', '16384']);
  t.is(r.code, 0, r.stderr);
  const { heap, peak } = await profilesIn(out);
  for (const [file, type] of [[peak, 'inuse_space'], [heap, 'alloc_space'], [heap, 'alloc_objects']] as const) {
    const p = await decodeProfile(await readFile(file));
    const want = total(p, type);
    t.true(want > 0, `${type} of ${file}`);

    const folded = await heaptap(['export', '--format', 'folded', '--type', type, file]);
    t.is(folded.code, 0, folded.stderr);
    const lines = folded.stdout.trimEnd().split('\n');
    let sum = 0;
    for (const l of lines) {
      const m = /^([^ ;][^;]*(?:;[^;]+)*) (\d+)$/.exec(l);
      t.truthy(m, `a folded line: ${l}`);
      sum += Number(m![2]);
    }
    t.is(sum, want, `folded ${type} total`);
    // root first: main calls handle_request calls SessionCache::remember ... operator new
    t.true(lines.some((l) => /(^|;)main;handle_request;SessionCache::remember;std::.*;operator new \d+$/.test(l)), folded.stdout.slice(0, 2000));

    const cg = join(out, `${type}.callgrind`);
    const c = await heaptap(['export', '-f', 'callgrind', '--type', type, '-o', cg, file]);
    t.is(c.code, 0, c.stderr);
    const ann = await run('callgrind_annotate', ['--inclusive=yes', '--threshold=100', cg]);
    t.is(ann.code, 0, ann.stderr);
    const totals = /^\s*([\d,]+)(?: \([\d.]+%\))?\s+PROGRAM TOTALS/m.exec(ann.stdout);
    t.truthy(totals, ann.stdout);
    t.is(Number(totals![1]!.replace(/,/g, '')), want, `callgrind_annotate's total for ${type}`);
    // inclusive cost of SessionCache::remember: what the samples through it hold
    const incl = new RegExp(`^\\s*([\\d,]+) \\([\\d.]+%\\)\\s+\\S*:SessionCache::remember\\(`, 'm').exec(ann.stdout);
    t.truthy(incl, ann.stdout);
    t.is(Number(incl![1]!.replace(/,/g, '')), under(p, type, 'SessionCache::remember'));
  }
  const bad = await heaptap(['export', '--format', 'svg', peak]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^heaptap: export: --format 'svg' is not folded or callgrind\n$/);
});

test('the agent\'s debug=1, its site metric, and top, export and snapshot on its /debug/pprof/heap (a URL or a saved file) name SessionCache::remember', async (t) => {
  const dir = await tempDir('heaptap-names-');
  const fx = await startFixture([SESSION, '2000', '16384', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '65536' }, t);
  const agent = await spawnAgent(dir, ['--poll', '200ms', '--top-sites', '5'], {}, t);
  t.teardown(async () => {
    await agent.stop();
    fx.kill();
    await removeDir(dir);
  });
  const url = `${agent.url}/debug/pprof/heap?pid=${fx.pid}`;
  const text = await until(async () => {
    const r = await get(`${url}&debug=1`);
    return r.status === 200 && /SessionCache::remember/.test(r.text) ? r.text : null;
  }, 30_000, 'debug=1 with the cache');
  const first = text.split('\n').find((l) => /^\s*[\d.]+ (B|KiB|MiB)\s+\d/.test(l));
  t.regex(first ?? '', /  SessionCache::remember$/, text);
  t.notRegex(text, /  (std::|operator new)/);

  const metrics = await until(async () => {
    const r = await get(`${agent.url}/metrics`);
    return /heaptap_site_inuse_bytes\{[^}]*function="SessionCache::remember"/.test(r.text) ? r.text : null;
  }, 30_000, 'the site metric');
  t.notRegex(metrics, /heaptap_site_inuse_bytes\{[^}]*function="std::/);

  const top = await heaptap(['top', url]);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /^\s+\S+\s+[\d.]+%\s+[\d.]+%\s+\S+\s+[\d.]+% {2}SessionCache::remember$/m);
  const saved = join(dir, 'heap.pb.gz');
  const body = await fetch(url);
  await writeFile(saved, Buffer.from(await body.arrayBuffer()));
  const p = await decodeProfile(await readFile(saved));
  const fromFile = await heaptap(['top', saved, '-n', '1']);
  t.is(fromFile.code, 0, fromFile.stderr);
  t.regex(fromFile.stdout, /% {2}SessionCache::remember\n$/);
  const folded = await heaptap(['export', '-f', 'folded', saved]);
  t.is(folded.code, 0, folded.stderr);
  t.is(folded.stdout.trimEnd().split('\n').reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0), total(p, 'inuse_space'));
  const cg = join(dir, 'heap.callgrind');
  t.is((await heaptap(['export', '-f', 'callgrind', '-o', cg, url])).code, 0);
  const ann = await run('callgrind_annotate', [cg]);
  t.is(ann.code, 0, ann.stderr);
  t.regex(ann.stdout, /PROGRAM TOTALS/);
  // snapshot of a profile file: written again, as allocs view
  const again = join(dir, 'allocs.pb.gz');
  const snap = await heaptap(['snapshot', saved, '--view', 'allocs', '-o', again]);
  t.is(snap.code, 0, snap.stderr);
  const q = await decodeProfile(await readFile(again));
  t.is(str(q, q.defaultSampleType), 'alloc_space');
  t.is(total(q, 'inuse_space'), total(p, 'inuse_space'));
  await fx.finish();
});

test('a Rust program\'s own functions are its sites, demangled without hashes, in both manglings', async (t) => {
  for (const which of ['rust_sites_legacy', 'rust_sites_v0']) {
    const bin = peers[which];
    t.truthy(bin, `${which} from battery.sh`);
    const out = await tempDir();
    t.teardown(() => removeDir(out));
    const r = await heaptap(['run', '--rate', '16k', '-o', out, '--', bin!, '50000']);
    t.is(r.code, 0, r.stderr);
    const alloc = summarySites(r.stderr, /top sites by bytes allocated/);
    t.is(alloc[0]?.name, 'sites::build_index', `${which}: ${r.stderr}`);
    t.regex(alloc[0]!.where, /^sites\.rs:\d+$/);
    t.regex(alloc[0]!.path, /^← sites::main {2}sites\.rs:\d+/);
    t.true(alloc.some((s) => s.name === 'sites::render_report'), r.stderr);
    t.notRegex(r.stderr, /::h[0-9a-f]{16}\b|17h[0-9a-f]{16}E|\b_[RZ]N/, `${which}: no hash or mangled name`);
    for (const s of alloc.slice(0, 2)) t.false(isAllocatorFrame(s.name));
    const { heap } = await profilesIn(out);
    const top = await heaptap(['top', heap, '--sample-index', 'alloc_space', '-n', '2']);
    t.is(top.code, 0, top.stderr);
    t.regex(top.stdout, /% {2}sites::build_index\n/);
    const p = await decodeProfile(await readFile(heap));
    const names = p.function.map((f) => str(p, f.name));
    t.true(names.includes('sites::build_index'), which);
    // the mangled name is kept as the system name
    const sys = p.function.filter((f) => str(p, f.name) === 'sites::build_index').map((f) => str(p, f.systemName));
    t.regex(sys[0] ?? '', which.endsWith('v0') ? /^_R/ : /^_ZN5sites11build_index17h[0-9a-f]{16}E$/);
  }
});

test('perl\'s and sqlite3\'s allocator wrappers are not sites', async (t) => {
  const out = await tempDir();
  t.teardown(() => removeDir(out));
  const perl = await heaptap(['run', '--rate', '16k', '-o', join(out, 'perl'), '--', peers.perl!, '-e',
    'my %h; $h{"key$_"} = "v" x 200 for 1..100000; my @a = map { [$_] } 1..50000; print scalar(keys %h), "\\n"']);
  t.is(perl.code, 0, perl.stderr);
  const ps = summarySites(perl.stderr, /top sites by bytes allocated/);
  t.true(ps.length >= 3, perl.stderr);
  for (const s of ps) t.notRegex(s.name, /^Perl_safesys|^malloc$|^realloc$/, perl.stderr);
  t.regex(ps[0]!.name, /^Perl_\w+$/);

  const sql = 'create table t(a,b); with recursive c(x) as (select 1 union all select x+1 from c where x<20000) ' +
    'insert into t select x, randomblob(200) from c; create index i on t(b); select count(*) from t;';
  const sq = await heaptap(['run', '--rate', '16k', '-o', join(out, 'sqlite'), '--', peers.sqlite3!, ':memory:', sql]);
  t.is(sq.code, 0, sq.stderr);
  const ss = summarySites(sq.stderr, /top sites by bytes allocated/);
  t.true(ss.length >= 3, sq.stderr);
  // the top site: a named sqlite3 function, not a wrapper (named or, in Debian's stripped
  // library, an address)
  t.regex(ss[0]!.name, /^sqlite3\w+$/, sq.stderr);
  for (const s of ss.slice(0, 3)) {
    t.false(isAllocatorFrame(s.name), s.name);
    t.notRegex(s.name, /^libsqlite3\.so[\d.]*\+0x/, sq.stderr);
  }
});

test('the summary\'s explore lines name heaptap commands on the profile, and the report when there is one', (t) => {
  const without = exploreBlock('heaptap.7.peak.pb.gz');
  t.regex(without[0]!, /^ {2}explore: {2}heaptap top heaptap\.7\.peak\.pb\.gz /);
  t.regex(without[1]!, /heaptap export --format folded heaptap\.7\.peak\.pb\.gz /);
  t.false(without.some((l) => /\.html|go tool/.test(l)));
  const withReport = exploreBlock('heaptap.7.heap.pb.gz', 'heaptap.7.html');
  t.regex(withReport[0]!, /^ {2}report: {3}heaptap\.7\.html {2}\(open it in a browser/);
  t.regex(withReport[1]!, /^ {2}explore: {2}heaptap top heaptap\.7\.heap\.pb\.gz /);
});
