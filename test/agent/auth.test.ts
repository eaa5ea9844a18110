// Who may change a process through the agent (issue 10, item 3): control without a token
// only while the agent listens on loopback alone; beyond loopback, no token is a start-up
// error unless --insecure-no-token is given (then reads are served, control is a 403);
// an empty token is an error wherever it comes from.
import { writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import test from 'ava';

import { ConfigError, isLoopbackHost, parseAgentArgs } from '../../src/agent/config.ts';
import { listRegions, readRegion } from '../../src/region.ts';
import { bound, killGroup, spawnGroup } from '../helpers/procs.ts';
import { cli, get, node, spawnAgent, startTicker, tempDir, until } from './helpers.ts';

/** This machine's first non-loopback IPv4 address: how another host reaches the agent. */
function machineAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.')) return a.address;
  }
  throw new Error('this machine has no non-loopback IPv4 address (ip -4 addr): the off-loopback cases cannot be tested');
}

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawnGroup(null, node, [cli, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => killGroup(p), bound(20_000));
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

test('loopback is 127.0.0.0/8, ::1 and localhost; 0.0.0.0, :: and other addresses are not', (t) => {
  for (const h of ['127.0.0.1', '127.0.0.2', '127.255.0.9', '::1', 'localhost', '::ffff:127.0.0.1']) t.true(isLoopbackHost(h), h);
  for (const h of ['0.0.0.0', '::', '192.0.2.2', '10.0.0.1', '128.0.0.1', 'example', '::ffff:10.0.0.1', '1270.0.0.1']) t.false(isLoopbackHost(h), h);
});

test('an empty token is an error whether it comes from --token, HEAPTAP_TOKEN, HEAPTAP_TOKEN_FILE or the file', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const empty = join(dir, 'empty-token');
  writeFileSync(empty, '\n');
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['--token', ''], {}, /--token: empty/],
    [['--token='], {}, /--token: empty/],
    [[], { HEAPTAP_TOKEN: '' }, /HEAPTAP_TOKEN: set but empty/],
    [[], { HEAPTAP_TOKEN_FILE: '' }, /HEAPTAP_TOKEN_FILE: set but empty/],
    [['--token-file', ''], {}, /--token-file: empty/],
    [['--token-file', empty], {}, /is empty/],
    [[], { HEAPTAP_TOKEN_FILE: empty }, /HEAPTAP_TOKEN_FILE .* is empty/],
  ];
  for (const [args, env, msg] of cases) {
    t.throws(() => parseAgentArgs(args, env), { instanceOf: ConfigError, message: msg }, JSON.stringify([args, env]));
  }
  // The same from the command line: one `heaptap:` line, exit 2, on loopback too.
  const results = await Promise.all(cases.map(([args, env]) => run(['agent', '--dir', dir, '--listen', '127.0.0.1:0', ...args], env)));
  cases.forEach(([args, env, msg], i) => {
    const r = results[i]!;
    const what = JSON.stringify([args, env]);
    t.is(r.code, 2, `${what}: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, `${what}: one line (${r.stderr})`);
    t.regex(r.stderr, /^heaptap: agent: /, what);
    t.regex(r.stderr, msg, what);
  });
  // A flag wins over its variable: --token given, an empty HEAPTAP_TOKEN is not used.
  t.is(parseAgentArgs(['--token', 'x'], { HEAPTAP_TOKEN: '' }).config.token, 'x');
});

test('listening beyond loopback without a token refuses to start unless --insecure-no-token is given', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  for (const [args, env] of [[['--listen', '0.0.0.0:0'], {}], [['--listen', ':0'], {}], [[], { HEAPTAP_LISTEN: '[::]:0' }]] as [string[], Record<string, string>][]) {
    const r = await run(['agent', '--dir', dir, ...args], env);
    t.is(r.code, 2, r.stderr);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, /^heaptap: agent: listening on .* \(beyond loopback\) needs a token: give --token-file or --token, or --insecure-no-token/);
  }
  t.notThrows(() => parseAgentArgs(['--listen', '0.0.0.0:0', '--insecure-no-token']));
  t.notThrows(() => parseAgentArgs(['--listen', '0.0.0.0:0'], { HEAPTAP_INSECURE_NO_TOKEN: 'true' }));
  t.notThrows(() => parseAgentArgs(['--listen', '0.0.0.0:0', '--token', 'x']));
  t.throws(() => parseAgentArgs(['--listen', '0.0.0.0:0'], { HEAPTAP_INSECURE_NO_TOKEN: 'false' }), { instanceOf: ConfigError });
  t.notThrows(() => parseAgentArgs(['--listen', '127.0.0.2:0']), 'a loopback address needs no token');
});

test('an agent on 0.0.0.0 with --insecure-no-token warns, serves reads to another address and refuses control there (403), leaving the rate alone', async (t) => {
  const ip = machineAddress();
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [path] = await listRegions(dir);
  const agent = await spawnAgent(dir, ['--listen', '0.0.0.0:0', '--insecure-no-token'], {}, t);
  t.teardown(() => agent.stop().then(() => undefined, () => undefined));
  const warn = await agent.waitLog((l) => l.level === 'warn' && /no token/.test(String(l.msg)));
  t.regex(String(warn.msg), /control is refused/);
  const port = new URL(agent.url).port;
  const base = `http://${ip}:${port}`;
  await until(async () => (await get(`${base}/debug/heaptap/processes`)).text.includes(`"pid": ${fx.pid}`), 15_000, 'the process served');
  t.is((await get(`${base}/metrics`)).status, 200, 'reads need no token');
  const before = readRegion(path!, 0xffffffff).control;
  const r = await get(`${base}/debug/heaptap/control?pid=${fx.pid}&action=rate&bytes=1`, { method: 'POST' });
  t.is(r.status, 403);
  t.regex(r.text, /control needs a token when the agent listens beyond loopback/);
  // Even from loopback: the agent cannot tell a local proxy from a local user.
  t.is((await get(`http://127.0.0.1:${port}/debug/heaptap/control?pid=${fx.pid}&action=pause`, { method: 'POST' })).status, 403);
  t.deepEqual(readRegion(path!, 0xffffffff).control, before, 'the control area was not written');
});

test('an agent on 0.0.0.0 with a token wants it for control from another address (401 without, 200 with)', async (t) => {
  const ip = machineAddress();
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [path] = await listRegions(dir);
  const tokenFile = join(dir, '..', `heaptap-token-${process.pid}`);
  writeFileSync(tokenFile, 's3cret\n');
  t.teardown(() => import('node:fs').then((fs) => fs.rmSync(tokenFile, { force: true })));
  const agent = await spawnAgent(dir, ['--listen', '0.0.0.0:0'], { HEAPTAP_TOKEN_FILE: tokenFile }, t);
  t.teardown(() => agent.stop().then(() => undefined, () => undefined));
  t.false(agent.logs.some((l) => l.level === 'warn' && /no token/.test(String(l.msg))), 'no warning with a token');
  const base = `http://${ip}:${new URL(agent.url).port}`;
  const auth = { authorization: 'Bearer s3cret' };
  await until(async () => (await get(`${base}/debug/heaptap/processes`, { headers: auth })).text.includes(`"pid": ${fx.pid}`), 15_000, 'the process served');
  const url = `${base}/debug/heaptap/control?pid=${fx.pid}&action=rate&bytes=1`;
  const before = readRegion(path!, 0xffffffff).control;
  const denied = await get(url, { method: 'POST' });
  t.is(denied.status, 401);
  t.regex(denied.text, /unauthorized/);
  t.is((await get(url, { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status, 401);
  t.deepEqual(readRegion(path!, 0xffffffff).control, before, 'the control area was not written');
  const ok = await get(url, { method: 'POST', headers: auth });
  t.is(ok.status, 200, ok.text);
  t.is(readRegion(path!, 0xffffffff).control.rate, 1n);
});

test('an agent on loopback alone without a token still takes control', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [path] = await listRegions(dir);
  const agent = await spawnAgent(dir, [], {}, t);
  t.teardown(() => agent.stop().then(() => undefined, () => undefined));
  t.false(agent.logs.some((l) => l.level === 'warn'), 'no warning on loopback');
  await until(async () => (await get(`${agent.url}/debug/heaptap/processes`)).text.includes(`"pid": ${fx.pid}`), 15_000, 'the process served');
  const r = await get(`${agent.url}/debug/heaptap/control?pid=${fx.pid}&action=rate&bytes=4096`, { method: 'POST' });
  t.is(r.status, 200, r.text);
  t.is(readRegion(path!, 0xffffffff).control.rate, 4096n);
});
