// Tests of src/exporters/pyroscope.ts against a loopback server that decodes each request
// as Pyroscope's /ingest does (no Pyroscope server can be installed here): query
// parameters, the key `app{k=v,...}`, the gzipped pprof body. Then the delivery faults: a
// 500 then a 200, a 400, a server that never answers, a port nobody listens on.
import test from 'ava';

import { FakeHeapSource, fakeProcess, type FakeStack } from './fake-source.ts';
import { PyroscopeExporter, pyroscopeName, splitCredentials, type PyroscopeOptions } from '../../src/exporters/pyroscope.ts';
import { byLeaf, deadPort, decodeIngest, parseKey, startServer, str, until, type TestServer } from './helpers.ts';

const HOT: FakeStack = { frames: ['json_alloc', 'parse_request', 'main'], allocObjects: 4000, allocBytes: 4000 * 96, inuseObjects: 100, inuseBytes: 100 * 96 };
const BUF: FakeStack = { frames: ['grow_buffer', 'serve', 'main'], allocObjects: 20, allocBytes: 20 << 20, inuseObjects: 4, inuseBytes: 4 << 20 };

function twoProcesses(): FakeHeapSource {
  return new FakeHeapSource([
    { process: fakeProcess({ pid: 4101, exe: '/srv/bin/api', service: 'checkout' }), stacks: [{ ...HOT }, { ...BUF }] },
    { process: fakeProcess({ pid: 4102, exe: '/usr/bin/worker' }), stacks: [{ ...BUF }] },
  ]);
}

interface LogLine { level: string; msg: string; fields?: Record<string, unknown> }

function exporter(server: TestServer | string, over: Partial<PyroscopeOptions> = {}): { exp: PyroscopeExporter; logs: LogLine[] } {
  const logs: LogLine[] = [];
  const exp = new PyroscopeExporter({
    url: typeof server === 'string' ? server : server.url,
    intervalMs: 60_000,
    initialBackoffMs: 20,
    maxBackoffMs: 100,
    timeoutMs: 2000,
    stopDeadlineMs: 2000,
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    ...over,
  });
  return { exp, logs };
}

test('pushes each live process delta heap profile to /ingest, as Pyroscope decodes it', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  const { exp } = exporter(server, { labels: { env: 'staging', 'team.name': 'payments' } });
  const before = Math.floor(Date.now() / 1000);
  exp.start(source);
  await exp.pushNow();
  await until('two pushes', () => server.requests.length >= 2);
  await exp.stop();

  const byPid = new Map(server.requests.slice(0, 2).map((r) => {
    const d = decodeIngest(r);
    return [d.labels.pid, { r, d }] as const;
  }));
  const api = byPid.get('4101')!;
  t.truthy(api, 'a push for pid 4101');
  t.is(api.r.method, 'POST');
  t.is(api.r.url.pathname, '/ingest');
  t.is(api.r.headers['content-type'], 'application/octet-stream');
  t.is(api.d.format, 'pprof');
  t.is(api.d.spyName, 'heaptap');
  t.is(api.d.app, 'checkout', 'the service the process declared');
  t.deepEqual(api.d.labels, { env: 'staging', exe: 'api', pid: '4101', team_name: 'payments' });
  t.true(api.d.gzipped, 'the body is gzipped pprof');
  t.true(api.d.from <= api.d.until && api.d.until >= before && api.d.until <= Math.floor(Date.now() / 1000));

  const p = api.d.profile;
  t.deepEqual(p.sampleType.map((st) => `${str(p, st.type)}/${str(p, st.unit)}`),
    ['alloc_objects/count', 'alloc_space/bytes', 'inuse_objects/count', 'inuse_space/bytes']);
  t.is(`${str(p, p.periodType!.type)}/${str(p, p.periodType!.unit)}`, 'space/bytes');
  t.is(Number(p.period), 524288);
  const alloc = byLeaf(p, 'alloc_space');
  t.is(alloc.get('json_alloc'), HOT.allocBytes, 'the first delta holds everything since the start');
  t.is(alloc.get('grow_buffer'), BUF.allocBytes);
  t.is(byLeaf(p, 'inuse_space').get('grow_buffer'), BUF.inuseBytes);

  const worker = byPid.get('4102')!;
  t.is(worker.d.app, 'worker', 'no declared service: the executable name');
  t.deepEqual(source.calls.slice(0, 2).map((c) => [c.view, c.consumer]), [['delta', 'pyroscope'], ['delta', 'pyroscope']]);
});

test('the next push carries only what was allocated since the previous one; in-use stays absolute', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  const key = source.processes()[0]!.key;
  const { exp } = exporter(server);
  exp.start(source);
  await exp.pushNow();
  // A process's next delta is built once its previous one is delivered (rounds.ts).
  await until('the first two pushes', () => exp.stats().sent >= 2);
  source.allocate(key, HOT.frames, 500, 500 * 96, 0.5);
  await exp.pushNow();
  await until('four pushes', () => server.requests.length >= 4);
  await exp.stop();

  const api = server.requests.map(decodeIngest).filter((d) => d.labels.pid === '4101');
  t.true(api.length >= 2);
  const [first, second] = api;
  t.is(byLeaf(second!.profile, 'alloc_space').get('json_alloc'), 500 * 96);
  t.is(byLeaf(second!.profile, 'alloc_space').get('grow_buffer'), 0);
  t.is(byLeaf(second!.profile, 'inuse_space').get('json_alloc'), HOT.inuseBytes + 250 * 96);
  t.is(second!.from, first!.until, 'consecutive pushes cover adjacent time ranges');
});

test('pushes on its own every interval', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const { exp } = exporter(server, { intervalMs: 100 });
  exp.start(twoProcesses());
  await until('three rounds', () => server.requests.length >= 6, 5000);
  await exp.stop();
  t.pass();
});

test('pushes the final profile of a process that ends', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  const { exp } = exporter(server);
  exp.start(source);
  const worker = source.processes().find((p) => p.pid === 4102)!;
  source.allocate(worker.key, ['last_gasp', 'main'], 10, 10_000);
  source.end(worker.key);
  await until('the final push', () => server.requests.length >= 1);
  const d = decodeIngest(server.requests[0]!);
  t.is(d.labels.pid, '4102');
  t.is(byLeaf(d.profile, 'alloc_space').get('last_gasp'), 10_000);
  await exp.stop();
  t.is(source.listenerCount, 0, 'stop unsubscribes');
});

test('a process that ends gets its peak pushed too, labelled profile=peak at the second of the peak', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  const { exp } = exporter(server);
  exp.start(source);
  const worker = source.processes().find((p) => p.pid === 4102)!;
  const peakMs = Date.now() - 7_000;
  source.set({ ...worker, peakBytes: 1 << 30, peakMs });
  source.allocate(worker.key, ['spike', 'main'], 1, 1 << 30);
  source.stackOf(worker.key, ['spike', 'main'])!.peakBytes = 1 << 30;
  source.end(worker.key);
  await until('the final and the peak push', () => server.requests.length >= 2);
  const all = server.requests.map(decodeIngest);
  const peak = all.find((d) => d.labels.profile === 'peak')!;
  const final = all.find((d) => d.labels.profile === undefined)!;
  t.truthy(peak, 'a peak profile was pushed');
  t.truthy(final, 'and the final delta');
  t.is(peak.labels.pid, '4102');
  t.is(byLeaf(peak.profile, 'inuse_space').get('spike'), 1 << 30);
  // both say how the process ended
  t.is(peak.labels.end, 'exited');
  t.is(final.labels.end, 'exited');
  t.is(peak.from, Math.floor(peakMs / 1000));
  t.is(peak.until, Math.floor(peakMs / 1000) + 1);
  // a process whose library keeps no peak gets none
  const other = source.processes().find((p) => p.pid !== 4102)!;
  source.set({ ...other, peakBytes: null, peakMs: null });
  const before = server.requests.length;
  source.end(other.key);
  await until('the other final push', () => server.requests.length >= before + 1);
  await exp.stop();
  t.false(server.requests.slice(before).map(decodeIngest).some((d) => d.labels.profile === 'peak'));
});

test('stop sends a last round, so the last seconds of allocations are not lost', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  const { exp } = exporter(server);
  exp.start(source);
  await exp.stop();
  t.is(server.requests.length, 2);
  t.is(exp.stats().sent, 2);
});

test('sends basic auth from the URL, a bearer token and the tenant header', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const url = server.url.replace('http://', 'http://alice:s%3Acret@') + '/prefix/';
  const { exp } = exporter(url, { tenantId: 'team-a' });
  exp.start(twoProcesses());
  await exp.stop();
  const r = server.requests[0]!;
  t.is(r.url.pathname, '/prefix/ingest');
  t.is(r.headers.authorization, 'Basic ' + Buffer.from('alice:s:cret').toString('base64'));
  t.is(r.headers['x-scope-orgid'], 'team-a');

  const { exp: bearer } = exporter(server, { bearerToken: 'glc_token' });
  bearer.start(twoProcesses());
  await bearer.stop();
  t.is(server.requests.at(-1)!.headers.authorization, 'Bearer glc_token');
});

test('names and labels are sanitized the way Pyroscope parses keys', (t) => {
  const name = pyroscopeName('my app{x}', { 'k8s.pod': 'a,b}c', '1st': 'v', empty: ' ' });
  t.is(name, 'my_app_x_{_1st=v,k8s_pod=a_b_c}');
  t.deepEqual(parseKey(name), { app: 'my_app_x_', labels: { _1st: 'v', k8s_pod: 'a_b_c' } });
  t.deepEqual(splitCredentials('http://u:p@h:1/x'), { url: 'http://h:1/x', basicAuth: { username: 'u', password: 'p' } });
});

// ---------------------------------------------------------------------------------------
// Faults. Every item ends as sent, rejected, failed or dropped: the counts add up.

function accounted(s: ReturnType<PyroscopeExporter['stats']>): boolean {
  return s.enqueued === s.sent + s.rejected + s.failed + s.dropped + s.queued + s.inFlight;
}

test('a 500 is retried with backoff and the profile then delivered once', async (t) => {
  const server = await startServer((_r, i) => (i === 0 ? { status: 500, body: 'ingester unavailable' } : 200));
  t.teardown(() => server.close());
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 7 }), stacks: [{ ...HOT }] }]);
  const { exp, logs } = exporter(server);
  exp.start(source);
  await exp.pushNow();
  await until('the retry', () => exp.stats().sent === 1);
  const s = exp.stats();
  t.is(server.requests.length, 2);
  t.deepEqual(server.requests[0]!.body, server.requests[1]!.body, 'the same payload again');
  t.is(s.retried, 1);
  t.deepEqual(s.errors, { http_500: 1 });
  const warn = logs.filter((l) => l.level === 'warn');
  t.is(warn.length, 1);
  t.regex(String(warn[0]!.fields?.error), /HTTP 500: ingester unavailable/);
  t.true(logs.some((l) => l.level === 'info' && /again/.test(l.msg)), 'recovery is logged');
  await exp.stop();
  t.true(accounted(exp.stats()));
});

test('a 400 is not retried, is counted, and is logged once', async (t) => {
  const server = await startServer(() => ({ status: 400, body: 'invalid app name' }));
  t.teardown(() => server.close());
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 7 }), stacks: [{ ...HOT }] }]);
  const { exp, logs } = exporter(server);
  exp.start(source);
  for (let i = 0; i < 3; i++) {
    await exp.pushNow();
    await until(`rejection ${i + 1}`, () => exp.stats().rejected === i + 1);
  }
  t.is(server.requests.length, 3, 'one request per profile, no retries');
  const errors = logs.filter((l) => l.level === 'error');
  t.is(errors.length, 1);
  t.regex(errors[0]!.msg, /rejected/);
  t.regex(String(errors[0]!.fields?.error), /HTTP 400: invalid app name/);
  await exp.stop();
  t.true(accounted(exp.stats()));
});

test('413 and 422 are not retried; 429 is, after its Retry-After', async (t) => {
  const statuses = [413, 422, 429, 200];
  const server = await startServer((_r, i) => (statuses[i] === 429 ? { status: 429, headers: { 'Retry-After': '0' } } : statuses[i] ?? 200));
  t.teardown(() => server.close());
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 7 }), stacks: [{ ...HOT }] }]);
  const { exp } = exporter(server);
  exp.start(source);
  await exp.pushNow();
  await until('first rejected', () => exp.stats().rejected === 1);
  await exp.pushNow();
  await until('second rejected', () => exp.stats().rejected === 2);
  await exp.pushNow();
  await until('third sent after a 429', () => exp.stats().sent === 1);
  t.like(exp.stats(), { rejected: 2, retried: 1, sent: 1, errors: { http_413: 1, http_422: 1, http_429: 1 } });
  await exp.stop();
});

test('a server that never answers: requests time out, the queue stays bounded, start and stop never block', async (t) => {
  const server = await startServer(() => 'hang');
  t.teardown(() => server.close());
  const source = new FakeHeapSource([4, 5, 6, 7, 8].map((pid) => ({ process: fakeProcess({ pid }), stacks: [{ ...HOT }] })));
  const { exp, logs } = exporter(server, { timeoutMs: 800, maxQueue: 2, maxAttempts: 2, stopDeadlineMs: 600 });
  let t0 = performance.now();
  exp.start(source);
  t.true(performance.now() - t0 < 200, 'start returns at once');
  t0 = performance.now();
  for (let i = 0; i < 8; i++) await exp.pushNow();
  // Waiting for the backend would take 8 x 800 ms at least.
  t.true(performance.now() - t0 < 3000, 'rounds only queue: they do not wait for the backend');
  const s = exp.stats();
  t.true(s.queued <= 2, `queue bounded (${s.queued})`);
  // Five processes, one in flight and two waiting: the oldest were dropped (or, on a very
  // slow machine, timed out twice and failed); a process whose delta is still on its way
  // gets no new one (deferred), and one whose delta was dropped is built again whole.
  t.true(s.dropped >= 2, `oldest dropped and counted (${JSON.stringify(s)})`);
  t.true(s.deferred >= 3 * 7, `processes with a delta on its way are deferred (${JSON.stringify(s)})`);
  await until('a timeout', () => (exp.stats().errors.timeout ?? 0) >= 1, 5000);
  t0 = performance.now();
  await exp.stop();
  const took = performance.now() - t0;
  t.true(took < 2000, `stop returns by its deadline (${Math.round(took)} ms)`);
  const end = exp.stats();
  t.is(end.sent, 0);
  t.is(end.queued, 0);
  t.true(accounted(end), JSON.stringify(end));
  t.is(logs.filter((l) => /queue full/.test(l.msg)).length, 1, 'dropping is logged once');
  t.is(logs.filter((l) => /retrying/.test(l.msg)).length, 1, 'timeouts are logged once');
});

test('a dead port: connection errors are retried with backoff, counted, then given up', async (t) => {
  const port = await deadPort();
  const source = new FakeHeapSource([{ process: fakeProcess({ pid: 7 }), stacks: [{ ...HOT }] }]);
  const { exp, logs } = exporter(`http://127.0.0.1:${port}`, { maxAttempts: 3 });
  exp.start(source);
  await exp.pushNow();
  await until('given up', () => exp.stats().failed === 1, 5000);
  const s = exp.stats();
  t.is(s.errors.network, 3);
  t.is(s.retried, 2);
  t.is(logs.filter((l) => /retrying/.test(l.msg)).length, 1);
  t.regex(String(logs[0]!.fields?.error), /ECONNREFUSED/);
  t.is(logs.filter((l) => /giving up/.test(l.msg)).length, 1);
  const t0 = performance.now();
  await exp.stop();
  t.true(performance.now() - t0 < 2500);
});

test('a profile the source cannot give is counted and does not stop the others', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  source.failing.add(source.processes()[0]!.key);
  const { exp, logs } = exporter(server);
  exp.start(source);
  await exp.pushNow();
  await until('a push', () => exp.stats().sent >= 1);
  await exp.pushNow();
  await until('two pushes', () => server.requests.length >= 2);
  t.true(server.requests.every((r) => decodeIngest(r).labels.pid === '4102'));
  t.is(exp.stats().profileErrors, 2);
  t.is(logs.filter((l) => l.level === 'warn').length, 1, 'warned once');
  await exp.stop();
});

test('a slow source: an interval that finds the previous round running is skipped, not doubled', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const source = twoProcesses();
  source.delayMs = 120;
  const { exp } = exporter(server, { intervalMs: 50 });
  exp.start(source);
  await until('skipped rounds', () => exp.stats().skippedRounds >= 2, 5000);
  await exp.stop();
  t.pass();
});
