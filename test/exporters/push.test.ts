// Tests of src/exporters/push.ts on its own: how responses are classified, and that every
// payload is accounted for whatever happens (the exporters' tests cover the rest).
import test from 'ava';

import { classify, PushQueue, redact, type PushItem } from '../../src/exporters/push.ts';
import { startServer, until } from './helpers.ts';

const item = (url: string, n = 0): PushItem => ({ url, body: new Uint8Array([n]), headers: {}, describe: { n } });

test('2xx is success; 408, 429 and 5xx are retried; other 4xx are not', (t) => {
  t.is(classify({ status: 200 }), null);
  t.is(classify({ status: 204 }), null);
  for (const s of [408, 429, 500, 502, 503, 504]) t.true(classify({ status: s })!.retry, String(s));
  for (const s of [400, 401, 403, 404, 413, 422]) t.false(classify({ status: s })!.retry, String(s));
  t.like(classify({ status: 400 }, 'bad\n  app name'), { kind: 'http_400', detail: 'HTTP 400: bad app name' });
});

// Bodies as Grafana Pyroscope's /ingest writes them with status 422 (its ingest handler puts
// the error text in the body, src/exporters/push.ts TRANSIENT_422 names the sources): the
// ingester ring without healthy members, the transport to an ingester, and a profile over
// a tenant's limit (pkg/validation ProfileTooBigErrorMsg).
const INGESTER_DOWN = 'too many unhealthy instances in the ring';
const NO_REPLICAS = 'at least 2 live replicas required, could only find 1';
const UNREACHABLE = 'unavailable: dial tcp 10.0.3.7:9095: connect: connection refused';
const TOO_BIG = 'invalid_argument: the profile with labels \'{service_name="api"}\' exceeds the size limit (max_profile_size_byte, actual: 4194304, limit: 1048576)';

test('a 422 is retried when its body says the backend\'s ingesters are unreachable, and final for a bad profile', (t) => {
  for (const body of [INGESTER_DOWN, NO_REPLICAS, 'empty ring', UNREACHABLE, 'rpc error: code = Unavailable desc = ingester is shutting down', 'context deadline exceeded']) {
    t.true(classify({ status: 422 }, body)!.retry, body);
  }
  for (const body of [TOO_BIG, 'failed to parse pprof: proto: cannot parse invalid wire-format data', '']) {
    t.false(classify({ status: 422 }, body)!.retry, body);
  }
  t.false(classify({ status: 400 }, INGESTER_DOWN)!.retry, 'only a 422 is read for it');
});

test('a 422 "too many unhealthy instances in the ring" then a 200: the payload is delivered once, settled as sent', async (t) => {
  const server = await startServer((_r, i) => (i < 2 ? { status: 422, body: INGESTER_DOWN } : 200));
  t.teardown(() => server.close());
  const outcomes: string[] = [];
  const q = new PushQueue({ name: 'test', initialBackoffMs: 10, maxBackoffMs: 20 });
  q.enqueue({ ...item(server.url, 1), settle: (delivered, outcome) => outcomes.push(`${delivered}:${outcome}`) });
  await until('sent', () => q.stats().sent === 1);
  await q.close(1000);
  t.is(server.requests.length, 3, 'two 422s, then the 200');
  t.like(q.stats(), { sent: 1, rejected: 0, failed: 0, retried: 2, errors: { http_422: 2 } });
  t.deepEqual(outcomes, ['true:sent']);
});

test('a 422 for a profile over the size limit is final: one request, settled as rejected', async (t) => {
  const server = await startServer(() => ({ status: 422, body: TOO_BIG }));
  t.teardown(() => server.close());
  const outcomes: string[] = [];
  const q = new PushQueue({ name: 'test', initialBackoffMs: 10, maxBackoffMs: 20 });
  q.enqueue({ ...item(server.url, 1), settle: (delivered, outcome) => outcomes.push(`${delivered}:${outcome}`) });
  await until('rejected', () => q.stats().rejected === 1);
  await q.close(1000);
  t.is(server.requests.length, 1);
  t.deepEqual(outcomes, ['false:rejected']);
});

test('retries are bounded: an ingester that stays down fails the payload after maxAttempts, settled as failed', async (t) => {
  const server = await startServer(() => ({ status: 422, body: INGESTER_DOWN }));
  t.teardown(() => server.close());
  const outcomes: string[] = [];
  const q = new PushQueue({ name: 'test', maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 20 });
  q.enqueue({ ...item(server.url, 1), settle: (delivered, outcome) => outcomes.push(`${delivered}:${outcome}`) });
  await until('failed', () => q.stats().failed === 1);
  await q.close(1000);
  t.is(server.requests.length, 3);
  t.deepEqual(outcomes, ['false:failed']);
});

test('Retry-After in seconds or as a date sets the wait', (t) => {
  t.is(classify({ status: 429, headers: new Headers({ 'Retry-After': '3' }) })!.retryAfterMs, 3000);
  const at = new Date(Date.now() + 5000).toUTCString();
  const ms = classify({ status: 503, headers: new Headers({ 'Retry-After': at }) })!.retryAfterMs!;
  t.true(ms > 3000 && ms <= 5000, String(ms));
  t.is(classify({ status: 400, headers: new Headers({ 'Retry-After': '3' }) })!.retryAfterMs, undefined);
});

test('errors are network errors, or timeouts when aborted by the timer', (t) => {
  t.like(classify(new DOMException('x', 'TimeoutError')), { retry: true, kind: 'timeout' });
  t.like(classify(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNRESET' } })), { retry: true, kind: 'network', detail: 'ECONNRESET' });
});

test('a payload queued after close is dropped and still counted', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const q = new PushQueue({ name: 'test' });
  q.enqueue(item(server.url, 1));
  await q.close(1000);
  q.enqueue(item(server.url, 2));
  t.like(q.stats(), { enqueued: 2, sent: 1, dropped: 1, queued: 0, inFlight: 0 });
});

test('close gives queued payloads one more try without backoff, then counts the rest as failed', async (t) => {
  const server = await startServer(() => 503);
  t.teardown(() => server.close());
  const q = new PushQueue({ name: 'test', initialBackoffMs: 60_000, maxBackoffMs: 60_000 });
  for (let i = 0; i < 3; i++) q.enqueue(item(server.url, i));
  await until('the first try', () => q.stats().retried === 1);
  const t0 = performance.now();
  await q.close(2000);
  t.true(performance.now() - t0 < 1500, 'no minute-long backoff at close');
  const s = q.stats();
  t.like(s, { enqueued: 3, sent: 0, failed: 3, queued: 0 });
  t.is(server.requests.length, 4, 'one try each, the first item twice');
});

test('credentials never reach the logs', (t) => {
  t.is(redact('https://user:secret@host:4040/ingest?name=x'), 'https://host:4040/ingest');
});
