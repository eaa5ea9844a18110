// Tests of src/exporters/otel-metrics.ts with the SDK's own test double
// (InMemoryMetricExporter): names, units, instrument kinds, attributes, the resource, and
// how export failures are counted. The real Collector test (otelcol.test.ts) checks the wire.
import test from 'ava';

import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  type MetricData,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';

import { FakeHeapSource, fakeProcess } from './fake-source.ts';
import { OtelMetricsExporter } from '../../src/exporters/otel-metrics.ts';

function source(): FakeHeapSource {
  return new FakeHeapSource([
    { process: fakeProcess({ pid: 501, exe: '/srv/bin/api', service: 'checkout', inuseBytes: 1000, residentBytes: 5000, allocatedBytes: 9000, allocatedObjects: 90, freedBytes: 8000, peakInuseBytes: 3000, peakBytes: 2500, samples: 17, drops: { stacks_full: 2, live_full: 0 } }), stacks: [] },
    { process: fakeProcess({ pid: 502, exe: '/usr/bin/python3', residentBytes: null, paused: true }), stacks: [] },
  ]);
}

async function collect(env: Record<string, string> = {}, serviceName?: string): Promise<{ metrics: Map<string, MetricData>; resource: Record<string, unknown>; exp: OtelMetricsExporter }> {
  const mem = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const exp = new OtelMetricsExporter({ exporter: mem, env, serviceName, intervalMs: 60_000, version: '0.1.0' });
  exp.start(source());
  await exp.flush();
  await exp.stop();
  const rm = mem.getMetrics()[0]!;
  const sm = rm.scopeMetrics.find((s) => s.scope.name === 'heaptap')!;
  return { metrics: new Map(sm.metrics.map((m) => [m.descriptor.name, m])), resource: rm.resource.attributes, exp };
}

test('exports every per-process figure with semantic-convention names and UCUM units', async (t) => {
  // Literal names, not the module's constants: a rename must fail here.
  const { metrics } = await collect();
  const shape = Object.fromEntries([...metrics.values()].map((m) => [m.descriptor.name, {
    unit: m.descriptor.unit,
    kind: m.dataPointType === DataPointType.GAUGE ? 'gauge' : (m as { isMonotonic?: boolean }).isMonotonic ? 'counter' : 'updowncounter',
  }]));
  t.deepEqual(shape, {
    'process.memory.usage': { unit: 'By', kind: 'updowncounter' },
    'heaptap.heap.inuse': { unit: 'By', kind: 'updowncounter' },
    'heaptap.heap.inuse_objects': { unit: '{object}', kind: 'updowncounter' },
    'heaptap.heap.allocated': { unit: 'By', kind: 'counter' },
    'heaptap.heap.allocations': { unit: '{allocation}', kind: 'counter' },
    'heaptap.heap.freed': { unit: 'By', kind: 'counter' },
    'heaptap.heap.peak_inuse': { unit: 'By', kind: 'gauge' },
    'heaptap.heap.peak': { unit: 'By', kind: 'gauge' },
    'heaptap.unattributed_resident': { unit: 'By', kind: 'updowncounter' },
    'heaptap.samples': { unit: '{sample}', kind: 'counter' },
    'heaptap.samples.dropped': { unit: '{sample}', kind: 'counter' },
    'heaptap.sampling.interval': { unit: 'By', kind: 'gauge' },
    'heaptap.sampling.paused': { unit: '1', kind: 'gauge' },
  });
  t.is(metrics.get('process.memory.usage')!.descriptor.unit, 'By');
});

test('points carry process.pid, process.executable.name and service.name, with the source values', async (t) => {
  const { metrics } = await collect();
  const points = (name: string) => metrics.get(name)!.dataPoints.map((p) => ({ attrs: p.attributes, value: p.value as number }));
  t.deepEqual(points('heaptap.heap.inuse').map((p) => p.attrs), [
    { 'process.pid': 501, 'process.executable.name': 'api', 'service.name': 'checkout' },
    { 'process.pid': 502, 'process.executable.name': 'python3', 'service.name': 'python3' },
  ]);
  t.is(points('heaptap.heap.allocated')[0]!.value, 9000);
  t.is(points('heaptap.heap.allocations')[0]!.value, 90);
  t.is(points('heaptap.heap.freed')[0]!.value, 8000);
  t.is(points('heaptap.heap.peak_inuse')[0]!.value, 3000);
  t.is(points('heaptap.heap.peak')[0]!.value, 2500);
  t.is(points('heaptap.samples')[0]!.value, 17);
  t.is(points('heaptap.unattributed_resident')[0]!.value, 4000);
  t.deepEqual(points('process.memory.usage').map((p) => p.attrs['process.pid']), [501], 'no point where the resident size is unknown');
  t.deepEqual(points('heaptap.sampling.paused').map((p) => p.value), [0, 1]);
  const dropped = points('heaptap.samples.dropped').filter((p) => p.attrs['process.pid'] === 501);
  t.deepEqual(dropped.map((p) => [p.attrs.reason, p.value]), [['stacks_full', 2], ['live_full', 0]]);
});

test('the resource: service.name heaptap by default, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and k8s.* from the environment', async (t) => {
  t.is((await collect()).resource['service.name'], 'heaptap');
  const { resource, metrics } = await collect({
    OTEL_SERVICE_NAME: 'shop',
    OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod',
    K8S_POD_NAME: 'shop-5c9',
    K8S_NAMESPACE_NAME: 'default',
    K8S_CONTAINER_NAME: 'heaptap',
  });
  t.like(resource, {
    'service.name': 'shop',
    'deployment.environment.name': 'prod',
    'k8s.pod.name': 'shop-5c9',
    'k8s.namespace.name': 'default',
    'k8s.container.name': 'heaptap',
  });
  // The configured name also names processes that declare none.
  t.deepEqual(metrics.get('heaptap.heap.inuse')!.dataPoints.map((p) => p.attributes['service.name']), ['checkout', 'shop']);
  t.is((await collect({ OTEL_SERVICE_NAME: 'shop' }, 'flag')).resource['service.name'], 'flag');
});

test('the endpoint and interval come from OTEL_EXPORTER_OTLP_*_ENDPOINT and OTEL_METRIC_EXPORT_INTERVAL', async (t) => {
  const exp = new OtelMetricsExporter({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://col:4318', OTEL_METRIC_EXPORT_INTERVAL: '7000' } });
  t.is(exp.endpoint, 'http://col:4318/v1/metrics');
  t.is(exp.endpointFrom, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  t.is(exp.intervalMs, 7000);
  await exp.stop();
  const exp2 = new OtelMetricsExporter({ url: 'http://flag:4318/', env: { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://env:1/m' } });
  t.is(exp2.endpoint, 'http://flag:4318/v1/metrics');
  await exp2.stop();
});

test('failed exports are counted by kind and logged once until one succeeds', async (t) => {
  let fail = true;
  const flaky: PushMetricExporter = {
    export(_m, done) {
      if (fail) done({ code: 1, error: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4318'), { code: 'ECONNREFUSED' }) });
      else done({ code: 0 });
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  };
  const logs: string[] = [];
  const exp = new OtelMetricsExporter({ exporter: flaky, env: {}, log: (level, msg) => logs.push(`${level} ${msg}`) });
  exp.start(source());
  await exp.flush().catch(() => {});
  await exp.flush().catch(() => {});
  fail = false;
  await exp.flush();
  await exp.stop();
  const s = exp.stats();
  t.deepEqual(s.failures, { ECONNREFUSED: 2 });
  t.true(s.exports >= 1);
  t.true(s.collections >= 3);
  t.deepEqual(logs, ['warn otel-metrics: export failed', 'info otel-metrics: exports succeed again']);
});

test('stop returns by its deadline when the backend hangs', async (t) => {
  const hanging: PushMetricExporter = {
    export() { /* never calls back */ },
    forceFlush: () => new Promise(() => {}),
    shutdown: () => new Promise(() => {}),
  };
  const exp = new OtelMetricsExporter({ exporter: hanging, env: {}, stopDeadlineMs: 300 });
  exp.start(source());
  const t0 = performance.now();
  await exp.stop();
  t.true(performance.now() - t0 < 2000);
});
