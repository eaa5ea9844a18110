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
