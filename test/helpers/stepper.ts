// The stepper fixture (test/fixtures/stepper.c: allocates at site_step on command) and the
// agent's view of it, shared by the tests of what consumers compute from its profiles
// (test/agent/consumers.test.ts, test/exporters/delivery.test.ts).
import type { Profile } from 'pprof-format';

import { decodeProfile, str } from '../../src/profile.ts';
import { get, until, type Fixture } from '../agent/helpers.ts';

/** Sends a command to the stepper and waits for its "done" line. */
export async function step(fx: Fixture, cmd: string): Promise<void> {
  const seen = fx.stdout.length;
  fx.child.stdin!.write(`${cmd}\n`);
  await until(() => fx.stdout.slice(seen).some((l) => l.startsWith('done')), 10_000, `stepper to do '${cmd}'`);
}

/** The alloc_space and alloc_objects of the samples whose stack passes through fn, and
 * each such sample's labels (k=v, sorted, comma-joined). */
export function siteIn(p: Profile, fn: string): { bytes: number; objects: number; labels: string[] } {
  const names = new Map(p.function.map((f) => [Number(f.id), str(p, f.name)]));
  const locFns = new Map(p.location.map((l) => [Number(l.id), l.line.map((ln) => names.get(Number(ln.functionId)))]));
  const out = { bytes: 0, objects: 0, labels: [] as string[] };
  for (const s of p.sample) {
    if (!s.locationId.some((id) => locFns.get(Number(id))?.includes(fn))) continue;
    out.objects += Number(s.value[0]);
    out.bytes += Number(s.value[1]);
    out.labels.push(s.label.map((l) => `${str(p, l.key)}=${Number(l.str) ? str(p, l.str) : String(l.num)}`).sort().join(','));
  }
  return out;
}

/** The agent's /debug/pprof/allocs of pid, once its poll has seen site_step reach `bytes`. */
export function allocsAt(agentUrl: string, pid: number, bytes: number): Promise<Profile> {
  return until(async () => {
    const p = await decodeProfile((await get(`${agentUrl}/debug/pprof/allocs?pid=${pid}`)).body);
    return siteIn(p, 'site_step').bytes === bytes ? p : null;
  }, 15_000, `/allocs to show site_step at ${bytes} bytes`);
}
