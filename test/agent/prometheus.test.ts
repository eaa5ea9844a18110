// A real Prometheus server (Debian's package, installed by scripts/peers/prometheus.sh)
// scrapes the agent every second; the test asks Prometheus's query API for the fixture's
// heap in use. promtool checks the exposition. A missing Prometheus fails the test.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';

import { exec, fixtures, get, inProcessAgent, root, startFixture, tempDir, until } from './helpers.ts';
import { killGroup, spawnGroup, within as withinBound } from '../helpers/procs.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function peers(): Promise<{ prometheus: string; promtool: string }> {
  try {
    const { stdout } = await exec('bash', [join(root, 'scripts/peers/prometheus.sh')], { timeout: 280_000 });
    const [prometheus, promtool] = stdout.trim().split('\n');
    return { prometheus: prometheus!, promtool: promtool! };
  } catch (e) {
    throw new Error(`Prometheus is not available (scripts/peers/prometheus.sh failed): ${(e as { stderr?: string }).stderr || (e as Error).message}`);
  }
}

interface TruthSite {
  alloc_bytes: number;
  alloc_objects: number;
  inuse_bytes: number;
}

interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

test('Prometheus scrapes the agent and reports the fixture\'s heap in use; promtool check metrics is clean', async (t) => {
  const { prometheus, promtool } = await peers();
  const { dir, cleanup } = await tempDir();
  const work = await mkdtemp(join(tmpdir(), 'heaptap-prom-'));
  // Exact mode: every allocation recorded, so in-use is known to the byte. --hold keeps
  // the process (and its heap) still while Prometheus scrapes.
  const fx = await startFixture([join(fixtures, 'churn'), '--threads', '2', '--mib', '1', '--leak-mib', '3', '--truth', '-', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '1' });
  const truth = JSON.parse(fx.stdout.find((l) => l.startsWith('{'))!) as { sites: Record<string, TruthSite> };
  const agent = await inProcessAgent(dir);
  const port = await freePort();
  const config = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: heaptap
    static_configs:
      - targets: ['127.0.0.1:${agent.address.port}']
`;
  await writeFile(join(work, 'prometheus.yml'), config);
  const prom = spawnGroup(t, prometheus, [
    `--config.file=${join(work, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(work, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let promLog = '';
  prom.stderr!.on('data', (d) => (promLog += d));
  const promExit = new Promise((r) => prom.on('exit', r));
  t.teardown(async () => {
    // SIGTERM lets it close its TSDB; a Prometheus that does not stop within the bound is
    // killed with its group (spawnGroup does that when the test ends, too).
    killGroup(prom, 'SIGTERM');
    await withinBound(promExit, 20_000, 'Prometheus to stop').catch(() => killGroup(prom));
    await agent.stop();
    await fx.finish();
    await cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const query = async (q: string): Promise<PromSample[]> => {
    const r = await get(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
    if (r.status !== 200) throw new Error(`query ${q}: ${r.status} ${r.text}`);
    return (JSON.parse(r.text) as { data: { result: PromSample[] } }).data.result;
  };
  const series = await until(async () => {
    const res = await query(`heaptap_heap_inuse_bytes{pid="${fx.pid}"}`);
    return res.length > 0 ? res : null;
  }, 30_000, `Prometheus to have scraped heaptap_heap_inuse_bytes (its log: ${promLog})`);

  t.is(series.length, 1);
  const s = series[0]!;
  t.like(s.metric, { __name__: 'heaptap_heap_inuse_bytes', job: 'heaptap', pid: String(fx.pid), exe: 'churn', service: 'churn' });
  // Exact mode, and the process is idle: every figure is the fixture's own count of what
  // its sites allocated and freed (its truth, not the agent's arithmetic), plus the little
  // that libc and main() allocate outside the sites (thread and stdio buffers): < 256 KiB.
  const slack = 256 * 1024;
  const sum = (f: (x: TruthSite) => number) => Object.values(truth.sites).reduce((a, x) => a + f(x), 0);
  const want = {
    inuse: sum((x) => x.inuse_bytes),
    allocated: sum((x) => x.alloc_bytes),
    freed: sum((x) => x.alloc_bytes - x.inuse_bytes),
    objects: sum((x) => x.alloc_objects),
  };
  const leak = truth.sites.site_leak!.inuse_bytes;
  t.is(want.inuse, leak, 'only site_leak holds memory at exit');
  const value = async (name: string) => Number((await query(`${name}{pid="${fx.pid}"}`))[0]?.value[1] ?? NaN);
  const within = (got: number, base: number, extra: number, what: string) =>
    t.true(got >= base && got < base + extra, `${what}: ${got} vs the fixture's ${base} (+ at most ${extra})`);
  within(Number(s.value[1]), want.inuse, slack, 'heaptap_heap_inuse_bytes');
  within(await value('heaptap_heap_allocated_bytes_total'), want.allocated, slack, 'heaptap_heap_allocated_bytes_total');
  within(await value('heaptap_heap_freed_bytes_total'), want.freed, slack, 'heaptap_heap_freed_bytes_total');
  within(await value('heaptap_heap_allocated_objects_total'), want.objects, 1000, 'heaptap_heap_allocated_objects_total');
  t.is(await value('heaptap_sample_rate_bytes'), 1, 'the rate the fixture was started with');

  // The top site, through Prometheus too: exact in this mode.
  const site = await until(async () => {
    const res = await query(`heaptap_site_inuse_bytes{pid="${fx.pid}",function="site_leak"}`);
    return res.length > 0 ? res : null;
  }, 10_000, 'heaptap_site_inuse_bytes for site_leak');
  t.is(Number(site[0]!.value[1]), leak);
  const up = await query('up{job="heaptap"}');
  t.is(up[0]!.value[1], '1');

  // promtool reads the exposition from stdin; it prints nothing and exits 0 when clean.
  const metrics = await get(`${agent.url}/metrics`);
  t.regex(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const check = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawnGroup(t, promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (out += d));
    // 'close', not 'exit': the output may still be in the pipes when it exits.
    p.on('close', (code) => resolve({ code, out }));
    p.stdin!.end(metrics.body);
  });
  t.is(check.out.trim(), '', 'promtool has no complaints');
  t.is(check.code, 0);
  for (const name of ['heaptap_heap_inuse_objects', 'heaptap_heap_allocated_objects_total', 'heaptap_heap_freed_bytes_total',
    'heaptap_heap_peak_inuse_bytes', 'heaptap_samples_total', 'heaptap_samples_dropped_total', 'heaptap_process_info',
    'heaptap_build_info', 'process_resident_memory_bytes']) {
    t.regex(metrics.text, new RegExp(`^${name}[{ ]`, 'm'), name);
  }
  t.regex(metrics.text, /^# TYPE heaptap_heap_allocated_bytes_total counter$/m);
});

test('every metric is served under its documented name and type (names are an interface users script against)', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fx = await startFixture([join(fixtures, 'churn'), '--threads', '1', '--mib', '1', '--leak-mib', '1', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '1' });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    await fx.finish();
    await cleanup();
  });
  await until(() => agent.source.processes().find((p) => p.pid === fx.pid), 15_000, 'the agent to serve the fixture');
  const text = (await get(`${agent.url}/metrics`)).text;
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  // Literal names (docs/agent.md lists them): a rename fails here.
  const perProcess: Record<string, string> = {
    heaptap_heap_inuse_bytes: 'gauge',
    heaptap_heap_inuse_objects: 'gauge',
    heaptap_heap_allocated_bytes_total: 'counter',
    heaptap_heap_allocated_objects_total: 'counter',
    heaptap_heap_freed_bytes_total: 'counter',
    heaptap_heap_peak_inuse_bytes: 'gauge',
    heaptap_heap_peak_bytes: 'gauge',
    heaptap_process_resident_memory_bytes: 'gauge',
    heaptap_unattributed_resident_bytes: 'gauge',
    heaptap_samples_total: 'counter',
    heaptap_samples_dropped_total: 'counter',
    heaptap_process_info: 'gauge',
    heaptap_process_alive: 'gauge',
    heaptap_sample_rate_bytes: 'gauge',
    heaptap_sampling_paused: 'gauge',
  };
  const agentWide: Record<string, string> = {
    heaptap_site_inuse_bytes: 'gauge',
    heaptap_build_info: 'gauge',
    heaptap_agent_processes: 'gauge',
    heaptap_agent_scans_total: 'counter',
    heaptap_agent_scan_duration_seconds: 'gauge',
    heaptap_agent_region_read_errors_total: 'counter',
    heaptap_process_ends_total: 'counter',
  };
  for (const [name, type] of Object.entries({ ...perProcess, ...agentWide })) t.is(types.get(name), type, `# TYPE ${name}`);
  t.is(Object.keys(perProcess).length + Object.keys(agentWide).length, 22);
  for (const name of Object.keys(perProcess)) {
    t.regex(text, new RegExp(`^${name}\\{pid="${fx.pid}",exe="churn",service="churn"[,}]`, 'm'), `${name} has the fixture's series`);
  }
  const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
  const id = `pid="${fx.pid}",exe="churn",service="churn"`;
  t.is(value(`heaptap_sample_rate_bytes{${id}}`), 1, 'the rate the fixture was started with');
  t.is(value(`heaptap_sampling_paused{${id}}`), 0);
  t.is(value(`heaptap_process_alive{${id}}`), 1);
  t.is(value('heaptap_agent_processes{state="live"}'), 1);
  t.true(value('heaptap_agent_scans_total') >= 1);
  t.is(value('heaptap_agent_region_read_errors_total'), 0);
});
