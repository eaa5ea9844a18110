// When the agent closes the symbolizer's files (src/agent/source.ts, ReleaseTimer): soon
// after the background builds drain, later each time builds came back soon after a
// release, soon again once they have stayed away.
import test from 'ava';

import { ReleaseTimer } from '../../src/agent/source.ts';
import { until } from '../helpers/procs.ts';

/** A ReleaseTimer on a clock the test moves (the waits themselves are real timers, a few
 * ms long: only their order matters, not their length). */
function timer(minMs: number, maxMs: number) {
  let clock = 1_000_000;
  let releases = 0;
  const r = new ReleaseTimer(() => releases++, minMs, maxMs, () => clock);
  return {
    r,
    released: () => releases,
    advance: (ms: number) => (clock += ms),
    /** idle(), then waits for the release it schedules */
    async drain(): Promise<void> {
      const n = releases;
      r.idle();
      await until(() => releases > n, 10_000, 'the release');
    },
  };
}

test('the files are released the shortest wait after the builds drain, and not while builds are queued', async (t) => {
  const x = timer(5, 1000);
  t.is(x.r.delayMs, 5);
  x.r.idle();
  x.r.busy(); // a build queued before the wait ran out: no release
  await new Promise((res) => setTimeout(res, 50));
  t.is(x.released(), 0, 'busy() cancels the scheduled release');
  await x.drain();
  t.is(x.released(), 1);
});

test('builds that come back soon after a release double the wait, up to the longest', async (t) => {
  const x = timer(5, 40);
  const waits: number[] = [];
  for (let i = 0; i < 5; i++) {
    await x.drain();
    x.advance(10); // new stacks 10 ms after the release: it was too soon
    x.r.busy();
    waits.push(x.r.delayMs);
  }
  t.deepEqual(waits, [10, 20, 40, 40, 40]);
});

test('builds that stay away the longest wait or more bring the wait back to the shortest', async (t) => {
  const x = timer(5, 40);
  await x.drain();
  x.advance(1);
  x.r.busy();
  await x.drain();
  x.advance(1);
  x.r.busy();
  t.is(x.r.delayMs, 20);
  await x.drain();
  x.advance(40);
  x.r.busy();
  t.is(x.r.delayMs, 5, 'a release that held for the longest wait was not too soon');
  // Builds while the files are still open (no release since) do not change the wait.
  x.r.idle();
  x.r.busy();
  x.advance(1);
  x.r.idle();
  x.r.busy();
  t.is(x.r.delayMs, 5);
  t.is(x.released(), 3);
});
