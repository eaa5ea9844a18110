// GET /ui in headless Chromium (test/helpers/browser.ts): the agent's processes, one's
// timeline with its peak, and flame graphs of now, of the peak and of the growth since the
// agent's earlier snapshot; behind the token like every other endpoint.
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { artifactsDir, flameState, launch, openPage } from '../helpers/browser.ts';
import { bound } from '../helpers/procs.ts';
import { cli, exec, fixtures, node, spawnAgent, startFixture, tempDir, until } from './helpers.ts';

const TOKEN = 'ui-s3cret';
const auth = { Authorization: `Bearer ${TOKEN}` };

test('the agent serves /ui: a process with its timeline and peak, and flame graphs of now, the peak and the growth, behind the token', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const agent = await spawnAgent(dir, ['--token', TOKEN, '--poll', '200ms'], {}, t);
  t.teardown(() => agent.stop().then(() => undefined));
  // spike --ready: 256 KiB in base_alloc, "ready", then on a line 8 MiB in spike_alloc held
  const fx = await startFixture([join(fixtures, 'spike'), '--ready', '--mib', '8', '--hold-us', '600000000'], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  type Proc = { pid: number; inuseBytes: number };
  const procs = async () => (await (await fetch(`${agent.url}/debug/heaptap/processes`, { headers: auth })).json()) as Proc[];
  // read by the agent before the spike (its first read is what the growth is measured from)
  await until(async () => (await procs()).some((p) => p.pid === fx.pid), 20_000, 'the agent to read the fixture');
  fx.child.stdin!.write('go\n');
  await until(async () => (await procs()).some((p) => p.pid === fx.pid && p.inuseBytes >= 8 * 1024 * 1024), 20_000, 'the spike to be read');

  const denied = await fetch(`${agent.url}/ui`);
  t.is(denied.status, 401);
  // a browser asks for the token itself (Basic: any user, the token as password)
  t.is(denied.headers.get('www-authenticate'), 'Bearer realm="heaptap", Basic realm="heaptap", charset="UTF-8"');
  const basic = (user: string, pw: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });
  t.is((await fetch(`${agent.url}/ui`, { headers: basic('anyone', TOKEN) })).status, 200);
  t.is((await fetch(`${agent.url}/ui`, { headers: basic('anyone', 'wrong') })).status, 401);
  // Basic is for reads: a cross-site form POST would carry a browser's remembered Basic
  // credentials, so control wants Bearer
  const post = await fetch(`${agent.url}/debug/heaptap/control`, { method: 'POST', headers: { ...basic('x', TOKEN), 'content-type': 'application/x-www-form-urlencoded' }, body: `pid=${fx.pid}&action=pause` });
  t.is(post.status, 401);

  const browser = await launch();
  t.teardown(() => browser.close());
  const { page, errors } = await openPage(browser, { headers: auth });
  await page.goto(`${agent.url}/ui`); // one process: it is the one shown
  await page.waitForFunction(() => (window as unknown as { heaptap?: { ready: boolean } }).heaptap?.ready === true, undefined, { timeout: bound(60_000) });
  t.regex(await page.locator('nav.procs tr.on').innerText(), new RegExp(`^${fx.pid}\\s+spike\\s`));
  const buttons = await page.locator('#views button').allInnerTexts();
  t.is(buttons[0], 'in use now');
  t.true(buttons.includes('in use at the peak'), buttons.join(' | '));
  const growth = buttons.find((b) => b.startsWith('growth over the last'));
  t.truthy(growth, buttons.join(' | '));

  let s = await flameState(page);
  t.is(s.view, 'inuse_space');
  const names = new Set(s.drawn.map((d) => d.name));
  t.true(names.has('spike_alloc') && names.has('base_alloc'), [...names].join(' '));
  // the peak (exact at rate 1): 256 KiB + 8 MiB and the pointers' array, 8.25 MiB
  t.regex(s.peakMarker ?? '', /^peak 8\.2\d MiB at /);
  t.true(await page.locator('#peak-marker').isVisible());
  await page.screenshot({ path: join(artifactsDir(), 'ui-now.png'), fullPage: true });

  // growth since the agent's first read: the spike grew, the base did not
  await page.click('#views button[data-view="growth_space"]');
  s = await flameState(page);
  t.is(s.view, 'growth_space');
  t.true(s.drawn.some((d) => d.name === 'spike_alloc'));
  t.false(s.drawn.some((d) => d.name === 'base_alloc'));
  const spike = s.drawn.find((d) => d.name === 'spike_alloc')!;
  t.true(spike.value >= 8 * 1024 * 1024 && spike.value < 8.1 * 1024 * 1024, String(spike.value));

  // a click zooms (on the peak view)
  await page.click('#views button[data-view="peak_space"]');
  s = await flameState(page);
  const canvas = (await page.locator('#flame').boundingBox())!;
  const base = s.drawn.find((d) => d.name === 'base_alloc')!;
  await page.mouse.click(canvas.x + base.x + base.w / 2, canvas.y + base.y + base.h / 2);
  s = await flameState(page);
  t.is(s.focus, 'base_alloc');
  t.true(Math.abs(s.drawn.find((d) => d.name === 'base_alloc')!.w - canvas.width) < 2);
  await page.screenshot({ path: join(artifactsDir(), 'ui-peak-zoomed.png'), fullPage: true });

  // ?pid= names the process; an unknown one is a 404 as elsewhere
  const one = await page.goto(`${agent.url}/ui?pid=${fx.pid}`);
  t.is(one?.status(), 200);
  const missing = await fetch(`${agent.url}/ui?pid=1`, { headers: auth });
  t.is(missing.status, 404);
  t.deepEqual(errors, []);
  t.log(`screenshots: ${artifactsDir()}/ui-*.png`);

  // heaptap report on the agent's /debug/pprof/heap (the token from HEAPTAP_TOKEN): the
  // same process's page, made without Go and without the region
  const html = join(dir, 'from-agent.html');
  const env = { ...process.env, HEAPTAP_TOKEN: TOKEN };
  const r = await exec(node, [cli, 'report', `${agent.url}/debug/pprof/heap?pid=${fx.pid}`, '-o', html], { env, timeout: bound(60_000) });
  t.regex(r.stderr, /wrote .*from-agent\.html/);
  const fromAgent = await readFile(html, 'utf8');
  t.true(fromAgent.includes('spike_alloc') && fromAgent.includes('base_alloc'));
  const noToken = await exec(node, [cli, 'report', `${agent.url}/debug/pprof/heap`, '-o', html], { env: { ...process.env, HEAPTAP_TOKEN: '' } }).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
  t.is(noToken.code, 2);
  t.regex(noToken.stderr, /HTTP 401/);
  fx.kill();
});
