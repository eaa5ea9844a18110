// What the /ui growth history keeps of a snapshot (src/agent/ui.ts): only the columns a
// delta's base is read for, so six snapshots a process do not hold every counter column
// and the timeline's points; the growth encoded from the kept copy is the one from the
// whole snapshot.
import test from 'ava';

import { encodeHeapProfile, SymbolTables } from '../../src/agent/pprof.ts';
import { createLogger } from '../../src/agent/log.ts';
import { Watcher } from '../../src/agent/processes.ts';
import { StackStore } from '../../src/agent/stackStore.ts';
import { UiHistory } from '../../src/agent/ui.ts';
import { readRegion } from '../../src/region.ts';
import { buildRegion, sampleSpec, tempDir, writeRegion } from '../helpers/regionBuilder.ts';

test('the /ui history keeps a snapshot without its samples, peak and timeline columns, and a growth from it is the same as from the whole snapshot', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const path = writeRegion(dir, '4242-1.heaptap', buildRegion(sampleSpec()).buf);
  const snap = readRegion(path);
  t.true(snap.counters.ids.length > 0);
  // not started: the history only asks it which processes it still has
  const watcher = new Watcher({ dir, pollMs: 1000, retentionMs: 60_000, log: createLogger({ write: () => {} }) });
  const history = new UiHistory(watcher);
  t.teardown(() => history.dispose());
  history.add('k', snap, 0);
  const kept = history.baseOf('k')!.snap;
  const c = kept.counters;
  t.is(c.samples.length, 0);
  t.is(c.peakObjects.length, 0);
  t.is(c.peakBytes.length, 0);
  t.is(kept.timeline.index.length + kept.timeline.ns.length + kept.timeline.inuseBytes.length + kept.timeline.allocBytes.length + kept.timeline.rssBytes.length, 0);
  t.is(kept.stacks.frames.length, 0);
  for (const k of ['ids', 'allocObjects', 'allocBytes', 'freeObjects', 'freeBytes', 'inuseObjects', 'inuseBytes'] as const) {
    t.deepEqual([...c[k]], [...snap.counters[k]], k);
  }
  const store = new StackStore();
  store.append(snap.stacks);
  const tables = new SymbolTables();
  await tables.update(store, snap.modules, snap.header.pid, undefined, () => {});
  for (const fullDelta of [true, false]) {
    const whole = encodeHeapProfile([{ snapshot: snap, tables, base: snap }], { view: 'heap', exeLabel: false, fullDelta, timeNanos: 1_700_000_000_000_000_000n });
    const fromKept = encodeHeapProfile([{ snapshot: snap, tables, base: kept }], { view: 'heap', exeLabel: false, fullDelta, timeNanos: 1_700_000_000_000_000_000n });
    t.deepEqual(Buffer.from(fromKept), Buffer.from(whole), `fullDelta ${fullDelta}`);
  }
});
