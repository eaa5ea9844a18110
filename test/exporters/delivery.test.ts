// Pushed allocations are neither lost nor doubled, with a real profiled process (the stepper
// fixture at sampling rate 1: every allocation counted, so sums are exact) and the agent
// pushing to a loopback server that answers as Pyroscope's /ingest does: a delta the
// backend could not store goes out inside the next one; two agents on one region directory
// push once; an agent restarted on a directory does not push the processes' history again.
// The check each time: what the server accepted, summed, is what the process allocated.
import { join } from 'node:path';

import test from 'ava';

import { PyroscopeExporter } from '../../src/exporters/pyroscope.ts';
import { fixtures, inProcessAgent, spawnAgent, startFixture, tempDir, until } from '../agent/helpers.ts';
import { allocsAt, step } from '../helpers/stepper.ts';
import { decodeIngest, startServer, type Recorded, type TestServer } from './helpers.ts';

const INGESTER_DOWN = 'too many unhealthy instances in the ring';

const allocSpace = (profile: { sample: { value: (number | bigint)[] }[] }) =>
  profile.sample.reduce((a, s) => a + Number(s.value[1]), 0);

/** alloc_space summed over the requests the server accepted (200), for one pid. */
function accepted(server: TestServer, pid: number, from = 0): number {
  return server.requests.slice(from)
    .filter((r: Recorded) => r.status === 200)
    .map(decodeIngest)
    .filter((d) => d.labels.pid === String(pid) && d.labels.profile !== 'peak')
    .reduce((a, d) => a + allocSpace(d.profile), 0);
}

/** The process's cumulative alloc_space as the agent serves it, once the agent has seen the
 * stepper's site_step reach `stepBytes`. */
/** The process's whole alloc_space as the agent serves it, once site_step reached stepBytes. */
async function cumulative(agentUrl: string, pid: number, stepBytes: number): Promise<number> {
  return allocSpace(await allocsAt(agentUrl, pid, stepBytes));
}

test('a delta Pyroscope answered 422 "too many unhealthy instances in the ring" for goes out inside the next push, counted once', async (t) => {
  const { dir, cleanup } = await tempDir();
  const server = await startServer(() => ({ status: 422, body: INGESTER_DOWN }));
  const fx = await startFixture([join(fixtures, 'stepper')], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  const exp = new PyroscopeExporter({ url: server.url, intervalMs: 3_600_000, maxAttempts: 2, initialBackoffMs: 10, maxBackoffMs: 20 });
  const agent = await inProcessAgent(dir, [], { exporters: [exp] });
  t.teardown(async () => {
    await agent.stop();
    fx.kill();
    await server.close();
    await cleanup();
  });
  await step(fx, 'a 100 10');
  const c1 = await cumulative(agent.url, fx.pid, 1000);
  await exp.pushNow();
  await until(() => exp.stats().failed === 1, 10_000, 'the first delta to fail');
  t.like(exp.stats(), { sent: 0, failed: 1, rewound: 1, errors: { http_422: 2 } });
  const failedFrom = decodeIngest(server.requests[0]!).from;

  // The ingesters are back; meanwhile the process allocated more.
  server.behaviour = () => 200;
  await step(fx, 'a 3000 5');
  const c2 = await cumulative(agent.url, fx.pid, 16_000);
  t.is(c2, c1 + 15_000);
  await exp.pushNow();
  await until(() => exp.stats().sent === 1, 10_000, 'the next delta to be sent');
  t.is(accepted(server, fx.pid), c2, 'the accepted push holds both spans: everything the process allocated');
  const sent = decodeIngest(server.requests.find((r) => r.status === 200)!);
  t.is(sent.from, failedFrom, 'its time range starts where the failed one did');

  // Nothing allocated since: the next push adds nothing.
  await exp.pushNow();
  await until(() => exp.stats().sent === 2, 10_000, 'a third push');
  t.is(accepted(server, fx.pid), c2, 'not counted twice');
});

test('two agents on one region directory: one pushes, the other says at start that it will not, and the allocations arrive once', async (t) => {
  const { dir, cleanup } = await tempDir();
  const server = await startServer();
  t.teardown(async () => {
    await server.close();
    await cleanup();
  });
  const fx = await startFixture([join(fixtures, 'stepper')], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  t.teardown(() => fx.kill());
  const args = ['--pyroscope-url', server.url, '--push-interval', '1s', '--poll', '200ms'];
  const a = await spawnAgent(dir, args, {}, t);
  await a.waitLog((l) => l.msg === 'push lease taken');
  const b = await spawnAgent(dir, args, {}, t);
  const refusal = await b.waitLog((l) => /not pushing profiles/.test(String(l.msg)));
  t.is(refusal.level, 'warn');
  t.is(refusal.holder_pid, a.child.pid, 'it names the agent that pushes');
  t.false(b.logs.some((l) => l.msg === 'exporter started' && l.exporter === 'pyroscope'));

  await step(fx, 'a 100 10');
  await step(fx, 'a 3000 5');
  const total = await cumulative(a.url, fx.pid, 16_000);
  await until(() => accepted(server, fx.pid) >= total, 15_000, 'the pushes to add up to what was allocated');
  // A few more intervals: still once, not twice.
  const n = server.requests.length;
  await until(() => server.requests.length >= n + 3, 15_000, 'three more pushes');
  t.is(accepted(server, fx.pid), total);
  await a.stop();
  await b.stop();
});

test('an agent restarted on a directory pushes what processes allocate from then on, not their history again', async (t) => {
  const { dir, cleanup } = await tempDir();
  const server = await startServer();
  t.teardown(async () => {
    await server.close();
    await cleanup();
  });
  const fx = await startFixture([join(fixtures, 'stepper')], dir, { HEAPTAP_SAMPLE_RATE: '1' }, t);
  t.teardown(() => fx.kill());
  const args = ['--pyroscope-url', server.url, '--push-interval', '1s', '--poll', '200ms'];
  const a = await spawnAgent(dir, args, {}, t);
  await step(fx, 'a 100 10');
  const before = await cumulative(a.url, fx.pid, 1000);
  await until(() => accepted(server, fx.pid) >= before, 15_000, 'the first agent to push it all');
  t.is(await a.stop(), 0);
  t.is(accepted(server, fx.pid), before);

  const mark = server.requests.length;
  const b = await spawnAgent(dir, args, {}, t);
  const taken = await b.waitLog((l) => l.msg === 'push lease taken');
  t.not(taken.pushed_until, null, 'it reads how far the first agent pushed');
  await until(() => server.requests.slice(mark).some((r) => decodeIngest(r).labels.pid === String(fx.pid)), 15_000, 'a push from the second agent');
  t.is(accepted(server, fx.pid, mark), 0, 'its first push is no spike of the history');

  await step(fx, 'a 3000 5');
  const after = await cumulative(b.url, fx.pid, 16_000);
  await until(() => accepted(server, fx.pid, mark) >= 15_000, 15_000, 'the second agent to push the new allocations');
  t.is(accepted(server, fx.pid, mark), 15_000);
  t.is(accepted(server, fx.pid), after, 'across both agents: everything once');
  await b.stop();
});
