// `heaptap agent` and `heaptap ctl` from the command line: settings, the exit code 2 for
// bad values, the agent process's malloc setting, and ctl's round trip through a running
// process's control area.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';

import { ConfigError, OPTIONS, parseAgentArgs, parseDuration, parseListen } from '../../src/agent/config.ts';
import { agentExecEnv, takeAgentExecMark } from '../../src/cli/agentExec.ts';
import { constants, listRegions, readRegion } from '../../src/region.ts';
import { bound, killGroup, spawnGroup, within } from '../helpers/procs.ts';
import { cli, get, inProcessAgent, node, spawnAgent, startTicker, tempDir, until } from './helpers.ts';

function run(args: string[], env: Record<string, string> = {}, ms = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawnGroup(null, node, [cli, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => killGroup(p), bound(ms));
    // 'close', not 'exit': under load the last of stderr arrives after the exit (a busy
    // machine showed exit code 2 with stderr still empty).
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('settings come from flags over HEAPTAP_* variables, with the documented defaults', (t) => {
  const d = parseAgentArgs([], {}).config;
  t.like(d, { dir: '/dev/shm/heaptap', host: '127.0.0.1', port: 6060, pollMs: 1000, retentionMs: 600_000, token: '', topSites: 10, logFormat: 'text', otelMetrics: false, pushIntervalMs: 15_000 });
  const env = { HEAPTAP_DIR: '/x', HEAPTAP_LISTEN: ':7070', HEAPTAP_POLL: '250ms', HEAPTAP_RETENTION: '1m30s', HEAPTAP_TOKEN: 'abc', HEAPTAP_TOP_SITES: '3', HEAPTAP_LOG_FORMAT: 'json', HEAPTAP_LABELS: 'team=core, zone=a' };
  t.like(parseAgentArgs([], env).config, { dir: '/x', host: '0.0.0.0', port: 7070, pollMs: 250, retentionMs: 90_000, token: 'abc', topSites: 3, logFormat: 'json', labels: { team: 'core', zone: 'a' } });
  t.like(parseAgentArgs(['--dir=/y', '--poll', '2s', '--label', 'a=1', '--label=b=2'], env).config, { dir: '/y', pollMs: 2000, labels: { a: '1', b: '2' } });
  t.true(parseAgentArgs([], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).config.otelMetrics);
  t.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  t.is(parseDuration('10m', 'x'), 600_000);
  t.is(parseDuration('1.5', 'x'), 1500);
  for (const [args, env2] of [
    [['--poll', '0'], {}],
    [['--poll', '50ms'], {}],
    [['--retention', 'soon'], {}],
    [['--listen', 'localhost'], {}],
    [['--listen', '127.0.0.1:99999'], {}],
    [['--top-sites', '-1'], {}],
    [['--log-format', 'xml'], {}],
    [['--pyroscope-url', 'ftp://x'], {}],
    [['--label', 'no-equals'], {}],
    [['--token', 'a', '--token-file', '/etc/hostname'], {}],
    [['--token-file', '/nonexistent/token'], {}],
    [['--nope'], {}],
    [['stray'], {}],
    [['--dir'], {}],
    [[], { HEAPTAP_POLL: 'fast' }],
  ] as [string[], Record<string, string>][]) {
    t.throws(() => parseAgentArgs(args, env2), { instanceOf: ConfigError }, JSON.stringify([args, env2]));
  }
  t.throws(() => parseAgentArgs([], { HEAPTAP_RETENTION: 'x' }), { message: /HEAPTAP_RETENTION/ }, 'names the variable that was wrong');
});

test('bad flags and values: one line on stderr and exit code 2', async (t) => {
  const cases = [
    [['agent', '--poll', '0'], {}, /--poll/],
    [['agent', '--listen', 'nowhere'], {}, /--listen/],
    [['agent', '--bogus'], {}, /unknown option '--bogus'/],
    [['agent'], { HEAPTAP_LOG_FORMAT: 'xml' }, /HEAPTAP_LOG_FORMAT/],
    [['ctl'], {}, /need <pid>/],
    [['ctl', 'abc', 'pause'], {}, /bad pid/],
    [['ctl', '1', 'rate'], {}, /byte count/],
    [['ctl', '1', 'rate', '0'], {}, /out of range/],
    [['ctl', '1', 'explode'], {}, /unknown action/],
  ] as [string[], Record<string, string>, RegExp][];
  const results = await Promise.all(cases.map(([args, env]) => run(args, env)));
  cases.forEach(([args, , what], i) => {
    const r = results[i]!;
    t.is(r.code, 2, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line (${r.stderr})`);
    t.regex(r.stderr, /^heaptap: /);
    t.regex(r.stderr, what);
  });
  const help = await run(['agent', '--help']);
  t.is(help.code, 0);
  for (const flag of ['--dir', '--listen', '--poll', '--retention', '--token', '--top-sites', '--log-format', '--pyroscope-url', '--otlp-profiles-url', 'HEAPTAP_TOKEN']) {
    t.true(help.stdout.includes(flag), flag);
  }
  t.is((await run(['ctl', '--help'])).code, 0);
});

test('the README documents every agent option, its variable and its default, and nothing else', (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Running the agent'));
  const rows = section.split('\n').filter((l) => l.startsWith('| `--'));
  const documented = new Map(rows.map((r) => {
    const cells = r.split(' | ').map((c) => c.replace(/^\|\s*|\s*\|$/g, ''));
    return [/`(--[a-z-]+)/.exec(cells[0]!)![1]!, { env: cells[1]!, def: cells[2]! }];
  }));
  t.deepEqual([...documented.keys()].sort(), OPTIONS.map((o) => o.flag).sort());
  for (const o of OPTIONS) {
    const d = documented.get(o.flag)!;
    if (o.env) t.true(d.env.includes(`\`${o.env}\``), `${o.flag}: ${d.env}`);
    if (o.def) t.true(d.def.includes(o.def), `${o.flag}: default ${o.def} vs ${d.def}`);
  }
});

test('heaptap agent listens where told, logs JSON lines, and exits 0 on SIGTERM', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  // Killed when the test ends, however it ends: a test that failed here once left the agent
  // running and the suite waiting for it.
  const p = spawnGroup(t, node, [cli, 'agent', '--dir', dir, '--listen', '127.0.0.1:0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => p.on('close', r)); // after the last of stderr
  await until(() => stderr.includes('"msg":"listening"'), 15_000, 'listening');
  p.kill('SIGTERM');
  const code = await within(exited, 15_000, 'the agent to exit after SIGTERM');
  t.is(code, 0);
  const lines = stderr.trim().split('\n');
  const parsed = lines.map((l) => JSON.parse(l) as { time: string; level: string; msg: string });
  t.true(parsed.every((l) => l.time && l.level && l.msg), 'every line is one JSON event');
  t.deepEqual(parsed.map((l) => l.msg), ['listening', 'stopping', 'stopped']);
});

test('heaptap ctl pauses, resumes and sets the rate of a running process without an agent', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [path] = await listRegions(dir);
  const header = () => readRegion(path!, 0xffffffff).header;
  const ctl = (...a: string[]) => run(['ctl', String(fx.pid), ...a, '--dir', dir]);

  let r = await ctl('pause');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`pid ${fx.pid}: sampling paused`));
  await until(() => header().pausedNow === 1, 5000, 'paused');
  const slot = constants.dropReasons.indexOf('paused');
  const paused = header().drops[slot]!;
  await until(() => header().drops[slot]! > paused, 5000, 'paused drops counted');

  r = await ctl('resume');
  t.is(r.code, 0);
  await until(() => header().pausedNow === 0, 5000, 'resumed');

  r = await run(['ctl', String(fx.pid), 'rate', '64k'], { HEAPTAP_DIR: dir });
  t.is(r.code, 0, r.stderr);
  await until(() => header().rateNow === 65536n, 5000, 'rate 64k');

  // A pid with no region, and a process that ended: exit 1, not 2.
  t.is((await run(['ctl', '999999999', 'pause', '--dir', dir])).code, 1);
  fx.kill('SIGKILL');
  await fx.exited;
  const ended = await ctl('pause');
  t.is(ended.code, 1);
  t.regex(ended.stderr, /no running region/);
});

test('heaptap agent --dir that does not exist warns, is not ready, and says when the directory appears', async (t) => {
  // It used to log nothing and report ready while watching nothing (a mistyped --dir).
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const missing = join(dir, 'later');
  const agent = await spawnAgent(missing, ['--poll', '200ms'], {}, t);
  const warned = await agent.waitLog((l) => l.level === 'warn' && /region directory does not exist/.test(String(l.msg)));
  t.is(warned.dir, missing);
  const notReady = await get(`${agent.url}/readyz`);
  t.is(notReady.status, 503);
  t.is(notReady.text, `not ready: the region directory ${missing} does not exist\n`);
  t.is((await get(`${agent.url}/healthz`)).status, 200, 'alive all the same');
  // The first profiled process makes it (here: by hand); the agent says so and is ready.
  mkdirSync(missing);
  await agent.waitLog((l) => l.msg === 'the region directory appeared' && l.dir === missing);
  await until(async () => (await get(`${agent.url}/readyz`)).status === 200, 10_000, 'ready');
  t.is(agent.logs.filter((l) => /does not exist/.test(String(l.msg))).length, 1, 'warned once, not every poll');
  t.is(await agent.stop(), 0);
  // A --dir that exists but is not a directory is a usage error.
  const file = join(dir, 'a-file');
  writeFileSync(file, '');
  const r = await run(['agent', '--dir', file, '--listen', '127.0.0.1:0']);
  t.is(r.code, 2);
  t.is(r.stderr, `heaptap: agent: --dir ${file}: not a directory\n`);
});

test('agent --help offers ?seconds=N on heap and allocs, which take it, and not on delta_heap, which refuses it', async (t) => {
  const help = (await run(['agent', '--help'])).stdout;
  const endpoints = help.slice(help.indexOf('Endpoints:'));
  const block = (name: string) => {
    const lines = endpoints.split('\n');
    const i = lines.findIndex((l) => l.includes(`/debug/pprof/${name} `));
    const out = [lines[i]!];
    for (let j = i + 1; j < lines.length && /^ {7}\S/.test(lines[j]!) && !lines[j]!.includes('all three'); j++) out.push(lines[j]!);
    return out.join('\n');
  };
  t.notRegex(block('delta_heap'), /seconds/, block('delta_heap'));
  t.regex(block('allocs'), /\?seconds=N .*heap and allocs/);
  // What the text says, the server does.
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const agent = await inProcessAgent(dir);
  t.teardown(() => agent.stop());
  await until(() => agent.source.processes().length === 1, 10_000, 'the ticker');
  for (const name of ['heap', 'allocs']) t.is((await get(`${agent.url}/debug/pprof/${name}?seconds=1`)).status, 200, name);
  const delta = await get(`${agent.url}/debug/pprof/delta_heap?seconds=1`);
  t.is(delta.status, 400);
  t.regex(delta.text, /delta_heap takes no seconds/);
});

test('heaptap agent runs in its own process with MALLOC_ARENA_MAX=2, keeping a value the user set', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  for (const [env, want] of [[{}, '2'], [{ MALLOC_ARENA_MAX: '4' }, '4']] as [Record<string, string>, string][]) {
    const p = spawnGroup(t, node, [cli, 'agent', '--dir', dir, '--listen', '127.0.0.1:0', '--log-format', 'json'], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise((r) => p.on('close', r));
    await until(() => stderr.includes('"msg":"listening"'), 15_000, 'listening');
    // The environment the agent's process (the same pid: execve) started with; glibc reads
    // MALLOC_ARENA_MAX from it before any thread allocates.
    const environ = readFileSync(`/proc/${p.pid}/environ`, 'utf8').split('\0');
    t.true(environ.includes(`MALLOC_ARENA_MAX=${want}`), `${JSON.stringify(env)}: ${environ.filter((v) => v.startsWith('MALLOC')).join(' ')}`);
    p.kill('SIGTERM');
    t.is(await within(exited, 15_000, 'the agent to exit after SIGTERM'), 0);
  }
});

test('the re-executed agent takes out of its environment what the re-exec added, and only that', (t) => {
  const user = { PATH: '/bin', HOME: '/root' };
  const env = agentExecEnv(user);
  t.is(env.MALLOC_ARENA_MAX, '2');
  t.true(takeAgentExecMark(env));
  t.deepEqual(env, user, 'MALLOC_ARENA_MAX and the mark are gone: what the agent starts does not inherit them');
  const own = { PATH: '/bin', MALLOC_ARENA_MAX: '8' };
  const env2 = agentExecEnv(own);
  t.is(env2.MALLOC_ARENA_MAX, '8');
  t.true(takeAgentExecMark(env2));
  t.deepEqual(env2, own, 'the user\'s MALLOC_ARENA_MAX stays');
  const plain = { ...user };
  t.false(takeAgentExecMark(plain), 'not re-executed: nothing to take out');
  t.deepEqual(plain, user);
});
