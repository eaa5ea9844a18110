// The exporters against a real OpenTelemetry Collector (built by scripts/peers/otelcol.sh:
// otlp receiver, file and debug exporters; profiles behind
// --feature-gates=+service.profilesSupport), on loopback. The Collector decodes what we
// send with its own pdata and writes it back as OTLP JSON: we check what it understood.
// The first run on a machine builds the Collector (minutes); a missing Go toolchain or
// module is a failure with the script's output, never a skip.
import test from 'ava';

import { FakeHeapSource, fakeProcess, type FakeStack } from './fake-source.ts';
import { OtelMetricsExporter } from '../../src/exporters/otel-metrics.ts';
import { OtlpProfilesExporter } from '../../src/exporters/otlp-profiles.ts';
import { collectorBinary, startCollector, until } from './helpers.ts';

const BUILD_TIMEOUT = 30 * 60_000;

const HOT: FakeStack = { frames: ['json_alloc', 'parse_request', 'main'], allocObjects: 4000, allocBytes: 384000, inuseObjects: 100, inuseBytes: 9600 };
const BUF: FakeStack = { frames: ['grow_buffer', 'serve', 'main'], allocObjects: 20, allocBytes: 20 << 20, inuseObjects: 4, inuseBytes: 4 << 20 };

const K8S_ENV = { K8S_POD_NAME: 'shop-5c9d', K8S_NAMESPACE_NAME: 'prod', K8S_CONTAINER_NAME: 'heaptap' };

// ---------------------------------------------------------------------------------------
// OTLP JSON as the Collector's file exporter writes it.

interface AnyValue { stringValue?: string; intValue?: string; doubleValue?: number; boolValue?: boolean; stringValueStrindex?: number }
interface KV { key?: string; keyStrindex?: number; value: AnyValue }

/** Attributes as a record; the Collector may have moved keys and strings into the profiles
 * dictionary (keyStrindex, stringValueStrindex). */
function attrs(list: KV[] | undefined, strings: string[] = []): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of list ?? []) {
    const key = kv.key ?? strings[kv.keyStrindex ?? 0] ?? '';
    const v = kv.value;
    out[key] = v.stringValue ?? (v.stringValueStrindex !== undefined ? strings[v.stringValueStrindex]! : undefined)
      ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.boolValue ?? '';
  }
  return out;
}

interface MetricsDoc {
  resourceMetrics: {
    resource: { attributes: KV[] };
    scopeMetrics: {
      scope: { name: string };
      metrics: {
        name: string;
        unit?: string;
        sum?: { dataPoints: Point[]; isMonotonic?: boolean; aggregationTemporality?: number };
        gauge?: { dataPoints: Point[] };
      }[];
    }[];
  }[];
}
interface Point { attributes: KV[]; asDouble?: number; asInt?: string }

interface ProfilesDoc {
  resourceProfiles: {
    resource: { attributes: KV[] };
    scopeProfiles: {
      scope: { name: string };
      profiles: {
        sampleType: { typeStrindex?: number; unitStrindex?: number };
        periodType?: { typeStrindex?: number; unitStrindex?: number };
        period?: string;
        samples?: { stackIndex?: number; values?: string[] }[];
      }[];
    }[];
  }[];
  dictionary: {
    stringTable: string[];
    functionTable: { nameStrindex?: number }[];
    locationTable: { lines?: { functionIndex?: number }[] }[];
    stackTable: { locationIndices?: number[] }[];
  };
}

// ---------------------------------------------------------------------------------------

test('OpenTelemetry metrics reach a real Collector with their names, units, attributes and resource', async (t) => {
  t.timeout(BUILD_TIMEOUT, 'the first run builds the Collector');
  const col = await startCollector(await collectorBinary());
  t.teardown(() => col.stop());
  t.timeout(60_000);
  const source = new FakeHeapSource([
    { process: fakeProcess({ pid: 7001, exe: '/srv/bin/api', service: 'checkout', inuseBytes: 123456, residentBytes: 999999, allocatedBytes: 5555555, samples: 42 }), stacks: [] },
    { process: fakeProcess({ pid: 7002, exe: '/usr/bin/python3' }), stacks: [] },
  ]);
  const exp = new OtelMetricsExporter({
    env: {
      ...K8S_ENV,
      OTEL_EXPORTER_OTLP_ENDPOINT: col.endpoint,
      OTEL_METRIC_EXPORT_INTERVAL: '300',
      OTEL_SERVICE_NAME: 'shop',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=staging',
    },
    version: '0.1.0',
  });
  t.is(exp.endpoint, `${col.endpoint}/v1/metrics`);
  exp.start(source);
  // No flush: the export interval alone must bring them.
  const docs = await until('the Collector to write metrics', async () => {
    const d = (await col.read(col.metricsFile)) as MetricsDoc[];
    return d.length > 0 ? d : undefined;
  }, 15_000);
  await exp.stop();
  t.deepEqual(exp.stats().failures, {});

  const rm = docs[0]!.resourceMetrics[0]!;
  t.like(attrs(rm.resource.attributes), {
    'service.name': 'shop',
    'deployment.environment.name': 'staging',
    'k8s.pod.name': 'shop-5c9d',
    'k8s.namespace.name': 'prod',
    'k8s.container.name': 'heaptap',
    'telemetry.sdk.language': 'nodejs',
  });
  const sm = rm.scopeMetrics.find((s) => s.scope.name === 'heaptap')!;
  const byName = new Map(sm.metrics.map((m) => [m.name, m]));
  const expected: Record<string, [unit: string, kind: 'counter' | 'updown' | 'gauge']> = {
    'process.memory.usage': ['By', 'updown'],
    'heaptap.heap.inuse': ['By', 'updown'],
    'heaptap.heap.inuse_objects': ['{object}', 'updown'],
    'heaptap.heap.allocated': ['By', 'counter'],
    'heaptap.heap.allocations': ['{allocation}', 'counter'],
    'heaptap.heap.freed': ['By', 'counter'],
    'heaptap.heap.peak_inuse': ['By', 'gauge'],
    'heaptap.heap.peak': ['By', 'gauge'],
    'heaptap.unattributed_resident': ['By', 'updown'],
    'heaptap.samples': ['{sample}', 'counter'],
    'heaptap.samples.dropped': ['{sample}', 'counter'],
    'heaptap.sampling.interval': ['By', 'gauge'],
    'heaptap.sampling.paused': ['1', 'gauge'],
  };
  t.deepEqual([...byName.keys()].sort(), Object.keys(expected).sort());
  for (const [name, [unit, kind]] of Object.entries(expected)) {
    const m = byName.get(name)!;
    t.is(m.unit, unit, name);
    if (kind === 'gauge') t.truthy(m.gauge, `${name} is a gauge`);
    else {
      t.truthy(m.sum, `${name} is a sum`);
      t.is(m.sum!.isMonotonic ?? false, kind === 'counter', `${name} monotonic`);
      t.is(m.sum!.aggregationTemporality, 2, `${name} cumulative`);
    }
  }
  const points = (name: string) => (byName.get(name)!.sum ?? byName.get(name)!.gauge)!.dataPoints
    .map((p) => ({ a: attrs(p.attributes), v: p.asDouble ?? Number(p.asInt) }));
  const inuse = points('heaptap.heap.inuse');
  t.deepEqual(inuse.map((p) => p.a), [
    { 'process.pid': 7001, 'process.executable.name': 'api', 'service.name': 'checkout' },
    { 'process.pid': 7002, 'process.executable.name': 'python3', 'service.name': 'shop' },
  ]);
  t.is(inuse[0]!.v, 123456);
  t.is(points('process.memory.usage')[0]!.v, 999999);
  t.is(points('heaptap.heap.allocated')[0]!.v, 5555555);
  t.is(points('heaptap.samples')[0]!.v, 42);
  t.true(points('heaptap.samples.dropped').every((p) => typeof p.a.reason === 'string'));
});

test('OTLP profiles reach a real Collector as four profiles per process with our functions and values', async (t) => {
  t.timeout(BUILD_TIMEOUT, 'the first run builds the Collector');
  const col = await startCollector(await collectorBinary());
  t.teardown(() => col.stop());
  t.timeout(60_000);
  const source = new FakeHeapSource([
    { process: fakeProcess({ pid: 8001, exe: '/srv/bin/api', service: 'checkout' }), stacks: [{ ...HOT }, { ...BUF }] },
  ]);
  const key = source.processes()[0]!.key;
  const exp = new OtlpProfilesExporter({
    env: { ...K8S_ENV, OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT: `${col.endpoint}/v1development/profiles` },
    intervalMs: 60_000,
    version: '0.1.0',
  });
  exp.start(source);
  await exp.pushNow();
  // A process's next delta is built once its previous one is delivered (rounds.ts).
  await until('the first batch to be sent', () => exp.stats().sent >= 1, 15_000);
  source.allocate(key, HOT.frames, 1000, 96000, 0);
  await exp.pushNow();
  const docs = await until('the Collector to write two profile batches', async () => {
    const d = (await col.read(col.profilesFile)) as ProfilesDoc[];
    return d.length >= 2 ? d : undefined;
  }, 15_000);
  await exp.stop();
  t.like(exp.stats(), { sent: 3, rejected: 0, failed: 0, rejectedProfiles: 0 }, 'two rounds and the last one at stop');
  t.regex(col.output(), /"resource profiles": 1/, 'the debug exporter saw them');

  const summarize = (doc: ProfilesDoc) => {
    const d = doc.dictionary;
    const s = (i?: number) => d.stringTable[i ?? 0] ?? '';
    const rp = doc.resourceProfiles[0]!;
    const out: Record<string, Record<string, number>> = {};
    for (const p of rp.scopeProfiles[0]!.profiles) {
      const type = `${s(p.sampleType.typeStrindex)}/${s(p.sampleType.unitStrindex)}`;
      t.is(`${s(p.periodType?.typeStrindex)}/${s(p.periodType?.unitStrindex)}`, 'space/bytes');
      t.is(p.period, '524288');
      const byFn: Record<string, number> = {};
      for (const sample of p.samples ?? []) {
        const frames = (d.stackTable[sample.stackIndex ?? 0]!.locationIndices ?? [])
          .map((li) => s(d.functionTable[d.locationTable[li]!.lines![0]!.functionIndex ?? 0]!.nameStrindex));
        const leaf = frames[0]!;
        t.is(frames.at(-1), 'main');
        byFn[leaf] = (byFn[leaf] ?? 0) + Number(sample.values![0]);
      }
      out[type] = byFn;
    }
    return { resource: attrs(rp.resource.attributes, d.stringTable), scope: rp.scopeProfiles[0]!.scope.name, profiles: out };
  };

  const first = summarize(docs[0]!);
  t.like(first.resource, {
    'service.name': 'checkout',
    'process.pid': 8001,
    'process.executable.name': 'api',
    'k8s.pod.name': 'shop-5c9d',
    'k8s.namespace.name': 'prod',
  });
  t.is(first.scope, 'heaptap');
  t.deepEqual(first.profiles, {
    'alloc_objects/count': { json_alloc: 4000, grow_buffer: 20 },
    'alloc_space/bytes': { json_alloc: 384000, grow_buffer: 20 << 20 },
    'inuse_objects/count': { json_alloc: 100, grow_buffer: 4 },
    'inuse_space/bytes': { json_alloc: 9600, grow_buffer: 4 << 20 },
  });
  // The second push is a delta: only the 1000 new allocations; in-use absolute.
  t.deepEqual(summarize(docs[1]!).profiles, {
    'alloc_objects/count': { json_alloc: 1000 },
    'alloc_space/bytes': { json_alloc: 96000 },
    'inuse_objects/count': { json_alloc: 100, grow_buffer: 4 },
    'inuse_space/bytes': { json_alloc: 9600, grow_buffer: 4 << 20 },
  });
});
