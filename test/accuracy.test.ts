// How right the profiles of `heaptap run` are, against churn's exact per-site truth
// (test/fixtures/churn.c): estimates at the default rate, and exact figures at rate 1.
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { decodeProfile, str } from '../src/profile.ts';
import { fixtures, heaptap, profilesIn, removeDir, tempDir, truths } from './helpers/heaptap.ts';

interface SiteValues {
  allocObjects: number;
  allocBytes: number;
  inuseObjects: number;
  inuseBytes: number;
}

/** Sums a profile's samples by their innermost frame's function (churn's sites are
 * noinline leaves: malloc's own frame is never recorded). */
async function bySite(file: string): Promise<Map<string, SiteValues>> {
  const p = await decodeProfile(await readFile(file));
  const fnName = new Map(p.function.map((f) => [Number(f.id), str(p, f.name)]));
  const leaf = new Map(p.location.map((l) => [Number(l.id), l.line[0] ? fnName.get(Number(l.line[0].functionId)) ?? '?' : '?']));
  const out = new Map<string, SiteValues>();
  for (const s of p.sample) {
    const name = leaf.get(Number(s.locationId[0])) ?? '?';
    const v = out.get(name) ?? { allocObjects: 0, allocBytes: 0, inuseObjects: 0, inuseBytes: 0 };
    const [ao, ab, io, ib] = s.value.map(Number) as [number, number, number, number];
    v.allocObjects += ao;
    v.allocBytes += ab;
    v.inuseObjects += io;
    v.inuseBytes += ib;
    out.set(name, v);
  }
  return out;
}

async function runChurn(args: string[], env: Record<string, string> = {}) {
  const dir = await tempDir('heaptap-accuracy-');
  const r = await heaptap(['run', ...args.slice(0, args.indexOf('--')), '-o', dir, '--', join(fixtures, 'churn'), ...args.slice(args.indexOf('--') + 1), '--truth', '-'], {
    env: { HEAPTAP_SEED: '20261122', ...env },
    timeoutMs: 180_000,
  });
  const { heap } = await profilesIn(dir);
  const sites = await bySite(heap);
  await removeDir(dir);
  return { r, truth: truths(r.stdout)[0]!, sites };
}

test.serial('estimates every site within 10% at the default rate (fixed seed)', async (t) => {
  // One thread and HEAPTAP_SEED make the run repeatable. The sampler takes each allocation
  // of s bytes with probability p = 1 - exp(-s/R) (R = 512 KiB) and counts it as 1/p
  // objects and s/p bytes, so a site of n objects of s bytes has a relative standard
  // deviation of sqrt((1 - p) / (n p)): about 1/sqrt(B/R) for small objects (B bytes in
  // all). Every site here allocates 1 GiB: 2048 expected samples, sd 2.2%, and 10% is 4.5
  // sd, a false failure about 7e-6 per site (two-sided normal tail), 1e-4 for the nine
  // sites and the in-use check together, for a random seed. (At 64 MiB, 128 samples, the
  // sd would be 8.8% and a 10% bound would fail about one site in four.) In use at exit
  // is site_leak's 1 GiB of 64 KiB blocks: p = 0.1175, n = 16384, sd 2.1%, 10% = 4.7 sd.
  const { r, truth, sites } = await runChurn(['--', '--threads', '1', '--mib', '1024', '--leak-mib', '1024']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /sampled every 512 KiB on average/);
  for (const [name, want] of Object.entries(truth.sites)) {
    t.true(want.alloc_bytes >= 64 << 20);
    const got = sites.get(name)?.allocBytes ?? 0;
    const rel = got / want.alloc_bytes - 1;
    t.true(Math.abs(rel) < 0.1, `${name} alloc_space: ${got} vs ${want.alloc_bytes} (${(rel * 100).toFixed(1)}%)`);
  }
  let inuse = 0;
  for (const v of sites.values()) inuse += v.inuseBytes;
  const leaked = truth.sites.site_leak!.inuse_bytes;
  const rel = inuse / leaked - 1;
  t.true(Math.abs(rel) < 0.1, `inuse_space at exit: ${inuse} vs ${leaked} leaked (${(rel * 100).toFixed(1)}%)`);
});

test.serial('every figure is byte-exact at --rate 1', async (t) => {
  const { r, truth, sites } = await runChurn(['--rate', '1', '--', '--threads', '4', '--mib', '8', '--leak-mib', '2']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /every allocation recorded/);
  for (const [name, want] of Object.entries(truth.sites)) {
    const got = sites.get(name);
    t.deepEqual(got, {
      allocObjects: want.alloc_objects,
      allocBytes: want.alloc_bytes,
      inuseObjects: want.inuse_bytes / 65536,
      inuseBytes: want.inuse_bytes,
    }, name);
  }
});
