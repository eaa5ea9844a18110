// Tests of src/exporters/otlp-profiles.ts: the pprof -> OTLP profiles conversion, decoded
// back with the same .proto files (the shapes the Collector test then checks with a real
// Collector), and the exporter's HTTP requests against a loopback server.
import { gunzipSync } from 'node:zlib';

import test from 'ava';

import { FakeHeapSource, fakeProcess, heapProfile, type FakeStack } from './fake-source.ts';
import {
  buildExportRequest,
  encodeExportRequest,
  OtlpProfilesExporter,
  type OtlpProfilesOptions,
} from '../../src/exporters/otlp-profiles.ts';
import { otlpProfileTypes } from '../../src/exporters/otlp-proto.ts';
import { decodeOtlp as decode, otlpSummary as summary, startServer, until, type TestServer } from './helpers.ts';

const HOT: FakeStack = { frames: ['json_alloc', 'parse_request', 'main'], allocObjects: 4000, allocBytes: 384000, inuseObjects: 100, inuseBytes: 9600 };
const BUF: FakeStack = { frames: ['grow_buffer', 'serve', 'main'], allocObjects: 20, allocBytes: 20 << 20, inuseObjects: 0, inuseBytes: 0 };

test('converts a heap profile into one OTLP profile per sample type over one shared dictionary', (t) => {
  const profile = heapProfile({ stacks: [HOT, BUF], pid: 31, exe: '/srv/bin/api', timeNanos: 1_700_000_000_123_456_789n });
  const req = buildExportRequest([{ process: fakeProcess({ pid: 31, exe: '/srv/bin/api', service: 'checkout' }), profile }],
    { resource: { 'service.name': 'heaptap', 'k8s.pod.name': 'api-1' }, version: '0.1.0' });
  const d = decode(encodeExportRequest(req));
  const dict = d.dictionary;

  // Element 0 of every table is the zero value.
  t.is(dict.string_table[0], '');
  for (const table of ['mapping_table', 'location_table', 'function_table', 'attribute_table', 'stack_table'] as const) {
    t.deepEqual(Object.entries(dict[table][0]!).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0)), [], `${table}[0] is empty`);
  }
  t.deepEqual([...dict.link_table[0]!.trace_id!], new Array(16).fill(0));
  t.deepEqual([...dict.link_table[0]!.span_id!], new Array(8).fill(0));
  t.is(new Set(dict.string_table).size, dict.string_table.length, 'no duplicate strings');

  const s = (i?: number) => dict.string_table[i ?? 0]!;
  const rp = d.resource_profiles[0]!;
  const attrs = Object.fromEntries(rp.resource.attributes.map((a) => [a.key, Object.values(a.value)[0]]));
  t.like(attrs, { 'service.name': 'checkout', 'k8s.pod.name': 'api-1', 'process.pid': 31, 'process.executable.name': 'api', 'process.executable.path': '/srv/bin/api' });
  t.like(rp.scope_profiles[0]!.scope, { name: 'heaptap', version: '0.1.0' });

  const profiles = rp.scope_profiles[0]!.profiles;
  t.deepEqual(profiles.map((p) => `${s(p.sample_type.type_strindex)}/${s(p.sample_type.unit_strindex)}`),
    ['alloc_objects/count', 'alloc_space/bytes', 'inuse_objects/count', 'inuse_space/bytes']);
  for (const p of profiles) {
    t.is(`${s(p.period_type.type_strindex)}/${s(p.period_type.unit_strindex)}`, 'space/bytes');
    t.is(p.period, 524288);
    t.is(BigInt(p.time_unix_nano), 1_700_000_000_123_456_768n, 'time kept (as a double here)');
    t.is(p.profile_id.length, 16);
  }
  t.not(Buffer.from(profiles[0]!.profile_id).toString('hex'), Buffer.from(profiles[1]!.profile_id).toString('hex'));

  const sum = summary(d);
  t.deepEqual([...sum.get('alloc_space/bytes')!], [['json_alloc', 384000], ['grow_buffer', 20 << 20]]);
  t.deepEqual([...sum.get('inuse_space/bytes')!], [['json_alloc', 9600]], 'samples of value 0 are left out');

  // Stacks are innermost first and share locations and functions.
  const stack = dict.stack_table[profiles[0]!.samples[0]!.stack_index]!.location_indices!;
  t.deepEqual(stack.map((li) => s(dict.function_table[dict.location_table[li]!.lines![0]!.function_index]!.name_strindex)),
    ['json_alloc', 'parse_request', 'main']);
  t.is(dict.function_table.filter((f) => s(f.name_strindex) === 'main').length, 1);
  const mainFn = dict.function_table.find((f) => s(f.name_strindex) === 'main')!;
  t.is(s(mainFn.filename_strindex), 'src/main.c');
  t.true((mainFn.start_line ?? 0) > 0);

  // pprof labels become sample attributes; the mapping carries the build id.
  const sampleAttrs = profiles[1]!.samples[0]!.attribute_indices!.map((i) => dict.attribute_table[i]!);
  t.deepEqual(sampleAttrs.map((a) => [s(a.key_strindex), Object.values(a.value!)[0]]).sort(), [['exe', '/srv/bin/api'], ['pid', 31]]);
  const mapping = dict.mapping_table[dict.location_table[stack[0]!]!.mapping_index!]! as { filename_strindex: number; attribute_indices: number[] };
  t.is(s(mapping.filename_strindex), '/srv/bin/api');
  const buildId = dict.attribute_table[mapping.attribute_indices[0]!]!;
  t.is(s(buildId.key_strindex), 'process.executable.build_id.gnu');
});

test('several processes share one dictionary, one ResourceProfiles each', (t) => {
  const a = heapProfile({ stacks: [HOT], pid: 1 });
  const b = heapProfile({ stacks: [HOT, BUF], pid: 2 });
  const req = buildExportRequest([
    { process: fakeProcess({ pid: 1, exe: '/bin/a' }), profile: a },
    { process: fakeProcess({ pid: 2, exe: '/bin/b' }), profile: b },
  ], { resource: {}, configuredService: 'shop' });
  const d = decode(encodeExportRequest(req));
  t.is(d.resource_profiles.length, 2);
  t.is(d.dictionary.function_table.filter((f) => d.dictionary.string_table[f.name_strindex ?? 0] === 'json_alloc').length, 1);
  const names = d.resource_profiles.map((rp) => rp.resource.attributes.find((x) => x.key === 'service.name')!.value.string_value);
  t.deepEqual(names, ['shop', 'shop'], 'no declared service: the configured one');
  t.deepEqual([...summary(d, 1).get('alloc_objects/count')!], [['json_alloc', 4000], ['grow_buffer', 20]]);
});

test('equal stacks with equal labels are summed into one sample', (t) => {
  const p = heapProfile({ stacks: [HOT, { ...HOT, allocBytes: 1000, allocObjects: 5 }] });
  t.deepEqual(p.sample[1]!.label, p.sample[0]!.label, 'the same pid and exe labels');
  const d = decode(encodeExportRequest(buildExportRequest([{ process: fakeProcess({ pid: 1 }), profile: p }], { resource: {} })));
  const allocSpace = d.resource_profiles[0]!.scope_profiles[0]!.profiles[1]!;
  t.is(allocSpace.samples.length, 1);
  t.is(allocSpace.samples[0]!.values[0], 385000);
});

// ---------------------------------------------------------------------------------------

function exporter(server: TestServer, over: Partial<OtlpProfilesOptions> = {}): { exp: OtlpProfilesExporter; logs: string[] } {
  const logs: string[] = [];
  const exp = new OtlpProfilesExporter({
    url: server.url,
    env: {},
    intervalMs: 60_000,
    initialBackoffMs: 20,
    stopDeadlineMs: 2000,
    log: (level, msg) => logs.push(`${level} ${msg}`),
    ...over,
  });
  return { exp, logs };
}

test('POSTs application/x-protobuf to /v1development/profiles, all live processes in one request', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = new FakeHeapSource([
    { process: fakeProcess({ pid: 11, service: 'checkout' }), stacks: [{ ...HOT }] },
    { process: fakeProcess({ pid: 12 }), stacks: [{ ...BUF }] },
  ]);
  const { exp } = exporter(server, { env: { OTEL_EXPORTER_OTLP_HEADERS: 'api-key=secret', K8S_POD_NAME: 'pod-9' } });
  t.is(exp.endpoint, `${server.url}/v1development/profiles`);
  exp.start(source);
  await exp.pushNow();
  await until('a request', () => server.requests.length >= 1);
  const r = server.requests[0]!;
  t.is(r.url.pathname, '/v1development/profiles');
  t.is(r.headers['content-type'], 'application/x-protobuf');
  t.is(r.headers['api-key'], 'secret');
  const d = decode(r.body);
  t.deepEqual(d.resource_profiles.map((rp) => rp.resource.attributes.find((a) => a.key === 'process.pid')!.value.int_value), [11, 12]);
  t.true(d.resource_profiles.every((rp) => rp.resource.attributes.some((a) => a.key === 'k8s.pod.name' && a.value.string_value === 'pod-9')));
  t.deepEqual(source.calls.map((c) => c.consumer), ['otlp-profiles', 'otlp-profiles']);
  await exp.stop();
});

test('gzip compression when OTEL_EXPORTER_OTLP_COMPRESSION=gzip', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 11 }), stacks: [{ ...HOT }] }]);
  const { exp } = exporter(server, { env: { OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip' } });
  exp.start(source);
  await exp.stop();
  const r = server.requests[0]!;
  t.is(r.headers['content-encoding'], 'gzip');
  t.is(decode(gunzipSync(r.body)).resource_profiles.length, 1);
});

test('a 503 is retried; a partial success is counted and logged', async (t) => {
  const T = otlpProfileTypes().ExportProfilesServiceResponse;
  const partial = T.encode(T.fromObject({ partial_success: { rejected_profiles: 2, error_message: 'too many samples' } })).finish();
  const server = await startServer((_r, i) => (i === 0 ? 503 : { status: 200, body: partial, headers: { 'Content-Type': 'application/x-protobuf' } }));
  t.teardown(() => server.close());
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 11 }), stacks: [{ ...HOT }] }]);
  const { exp, logs } = exporter(server);
  exp.start(source);
  await exp.pushNow();
  await until('sent', () => exp.stats().sent === 1);
  t.like(exp.stats(), { retried: 1, rejectedProfiles: 2, errors: { http_503: 1 } });
  t.true(logs.some((l) => /only in part/.test(l)));
  await exp.stop();
});
