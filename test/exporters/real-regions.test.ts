// Every exporter on real regions: a fixture writes its region through the built library
// in exact mode (HEAPTAP_SAMPLE_RATE=1, every allocation recorded), the agent's own
// HeapSource reads and symbolizes it, and Pyroscope, OTLP profiles and OpenTelemetry
// metrics send it to loopback receivers (the SDK's in-memory exporter for metrics). What
// each sends is compared with the fixture's exact truth (what its sites allocated, as it
// counted them itself), not with the agent's own figures; timestamps with the test's
// wall-clock window, in nanoseconds.
import test from 'ava';

import { AggregationTemporality, InMemoryMetricExporter } from '@opentelemetry/sdk-metrics';

import { OtelMetricsExporter } from '../../src/exporters/otel-metrics.ts';
import { OtlpProfilesExporter } from '../../src/exporters/otlp-profiles.ts';
import { PyroscopeExporter } from '../../src/exporters/pyroscope.ts';
import { fixtures, inProcessAgent, startFixture, tempDir, type Fixture } from '../agent/helpers.ts';
import type { AgentHandle } from '../../src/agent/agent.ts';
import { byLeaf, decodeIngest, decodeOtlp, otlpSummary, startServer, until } from './helpers.ts';

interface TruthSite { alloc_bytes: number; alloc_objects: number; inuse_bytes: number }

/** libc's and main()'s own allocations outside the sites (stdio and thread buffers). */
const SLACK = 256 * 1024;

async function exactFixture(t: import('ava').ExecutionContext): Promise<{ fx: Fixture; agent: AgentHandle; sites: Record<string, TruthSite> }> {
  const { dir, cleanup } = await tempDir('heaptap-exporters-');
  const fx = await startFixture([`${fixtures}/churn`, '--threads', '2', '--mib', '2', '--leak-mib', '2', '--truth', '-', '--hold'], dir, { HEAPTAP_SAMPLE_RATE: '1' });
  const agent = await inProcessAgent(dir);
  t.teardown(async () => {
    await agent.stop();
    await fx.finish();
    await cleanup();
  });
  await until('the agent to serve the fixture', () => agent.source.processes().some((p) => p.pid === fx.pid), 15_000);
  const { sites } = JSON.parse(fx.stdout.find((l) => l.startsWith('{'))!) as { sites: Record<string, TruthSite> };
  t.true(Object.keys(sites).length >= 9, 'the fixture printed its truth');
  return { fx, agent, sites };
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

test('Pyroscope receives the fixture\'s sites exactly, with the profile time in nanoseconds', async (t) => {
  const { fx, agent, sites } = await exactFixture(t);
  const server = await startServer();
  const exp = new PyroscopeExporter({ url: server.url, intervalMs: 60_000, stopDeadlineMs: 5000 });
  t.teardown(async () => {
    await exp.stop();
    await server.close();
  });
  const before = nowNs();
  exp.start(agent.source);
  await exp.pushNow();
  const req = await until('a push for the fixture', () => server.requests.find((r) => decodeIngest(r).labels.pid === String(fx.pid)), 30_000);
  const after = nowNs();
  const d = decodeIngest(req);
  const p = d.profile;
  const time = BigInt(p.timeNanos);
  t.true(time >= before && time <= after, `timeNanos ${time} within the push's window [${before}, ${after}] (ns)`);
  t.true(d.until >= Number(before / 1_000_000_000n) && d.until <= Number(after / 1_000_000_000n) + 1, `until ${d.until} in seconds`);
  t.is(Number(p.period), 1, 'exact mode');
  const alloc = byLeaf(p, 'alloc_space');
  const objects = byLeaf(p, 'alloc_objects');
  const inuse = byLeaf(p, 'inuse_space');
  for (const [name, want] of Object.entries(sites)) {
    t.is(alloc.get(name), want.alloc_bytes, `${name}: alloc_space (the first push holds everything since the start)`);
    t.is(objects.get(name), want.alloc_objects, `${name}: alloc_objects`);
    t.is(inuse.get(name) ?? 0, want.inuse_bytes, `${name}: inuse_space`);
  }
});

test('OTLP profiles carry the fixture\'s sites exactly, with time_unix_nano in nanoseconds', async (t) => {
  const { fx, agent, sites } = await exactFixture(t);
  const server = await startServer();
  const exp = new OtlpProfilesExporter({ url: server.url, env: {}, intervalMs: 60_000, stopDeadlineMs: 5000 });
  t.teardown(async () => {
    await exp.stop();
    await server.close();
  });
  const before = nowNs();
  exp.start(agent.source);
  await exp.pushNow();
  await until('a request', () => server.requests.length >= 1, 30_000);
  const after = nowNs();
  const d = decodeOtlp(server.requests[0]!.body);
  const rp = d.resource_profiles.findIndex((r) => r.resource.attributes.some((a) => a.key === 'process.pid' && Number(a.value.int_value) === fx.pid));
  t.true(rp >= 0, 'a resource for the fixture');
  for (const prof of d.resource_profiles[rp]!.scope_profiles[0]!.profiles) {
    const time = BigInt(prof.time_unix_nano);
    t.true(time >= before && time <= after, `time_unix_nano ${time} within the push's window [${before}, ${after}] (ns)`);
  }
  const summary = otlpSummary(d, rp);
  const alloc = summary.get('alloc_space/bytes')!;
  const objects = summary.get('alloc_objects/count')!;
  const inuse = summary.get('inuse_space/bytes')!;
  t.truthy(alloc && objects && inuse, `profiles: ${[...summary.keys()].join(', ')}`);
  for (const [name, want] of Object.entries(sites)) {
    t.is(alloc.get(name), want.alloc_bytes, `${name}: alloc_space`);
    t.is(objects.get(name), want.alloc_objects, `${name}: alloc_objects`);
    t.is(inuse.get(name) ?? 0, want.inuse_bytes, `${name}: inuse_space`);
  }
});

test('OpenTelemetry metrics report the fixture\'s allocated, freed and in-use bytes', async (t) => {
  const { fx, agent, sites } = await exactFixture(t);
  const mem = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const exp = new OtelMetricsExporter({ exporter: mem, env: {}, intervalMs: 60_000 });
  t.teardown(() => exp.stop());
  exp.start(agent.source);
  await exp.flush();
  const metrics = mem.getMetrics().at(-1)!.scopeMetrics.find((s) => s.scope.name === 'heaptap')!.metrics;
  const value = (name: string) => {
    const m = metrics.find((x) => x.descriptor.name === name);
    const point = m?.dataPoints.find((p) => p.attributes['process.pid'] === fx.pid);
    return point ? (point.value as number) : NaN;
  };
  const sum = (f: (x: TruthSite) => number) => Object.values(sites).reduce((a, x) => a + f(x), 0);
  const within = (name: string, base: number) => {
    const got = value(name);
    t.true(got >= base && got < base + SLACK, `${name}: ${got} vs the fixture's ${base} (+ at most ${SLACK})`);
  };
  within('heaptap.heap.allocated', sum((x) => x.alloc_bytes));
  within('heaptap.heap.freed', sum((x) => x.alloc_bytes - x.inuse_bytes));
  within('heaptap.heap.inuse', sum((x) => x.inuse_bytes));
  t.is(value('heaptap.sampling.interval'), 1, 'exact mode');
});
