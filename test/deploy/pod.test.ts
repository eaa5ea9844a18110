// The image, built and run for real: the repository's Dockerfile built by a private Docker
// engine on local stand-ins for its base images (scripts/peers/image-bases.sh; no registry
// is reachable here), then the pod that `kustomize build deploy/base` describes run as the
// kubelet would run it (test/deploy/pod.ts): the pause container's namespaces, the emptyDir
// in memory, heaptap-init to completion, then the demo application and the agent, each
// with its user, read-only root, dropped capabilities and no-new-privileges. Checked: the
// libraries in the volume with their mode and owner, the application's region, the agent's
// /readyz, /metrics and heap profile (function names from the application's debug files),
// nobody root, every root file system read-only; the application running on when the agent
// is killed, and without heaptap's library at all.
//
// Time: the first run on a machine makes the stand-ins (about 4 to 8 minutes) and builds the
// image (3 to 5 minutes); later runs reuse both from ~/.cache/heaptap/docker and rebuild
// only the image's last steps (about a minute), then about 2 minutes of pods.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';
import type { Profile } from 'pprof-format';

import { decodeProfile, str } from '../../src/profile.ts';
import { readRegion } from '../../src/region.ts';
import { pprof } from '../helpers/heaptap.ts';
import { until } from '../helpers/procs.ts';
import { HELM_DEMO_ARGS, IMAGE_UID, exec, helmTemplate, kustomizeBuild, kustomizeFiles, parseYamlDocs, peer, postRendered, root, type Doc } from './helpers.ts';
import { buildImage, imageBases, podProcesses, rootReadOnly, runPod, startEngine, type Engine, type Pod } from './pod.ts';

const TAG = 'heaptap:0.1.0';
const PORT = 6060;
const BUILD_TIMEOUT = 60 * 60_000;
/** In-use bytes a profile must reach before its shares are checked. The demo's cache of
 * bytes objects grows by about 32 KiB per 10 ms tick; its live bytearrays are at most 1 MiB
 * (about 0.6 samples at the default mean of 512 KiB between samples). At 16 MiB the bytes
 * objects are over 90% of the estimate; for their share to fall under the 50% the tests ask,
 * 32 or more bytearray samples would have to be live at once (Poisson with mean under 2:
 * a false failure well under 1e-9 per run). At 4 MiB one of the first runs here failed. */
const MIN_INUSE = 16 << 20;

let engine: Engine | undefined;
let bases: Record<string, string> = {};

test.before(async (t) => {
  t.timeout(BUILD_TIMEOUT, 'the first run makes the stand-in images and builds the image');
  let start = Date.now();
  bases = await imageBases();
  t.log(`stand-in base images ready in ${((Date.now() - start) / 1000).toFixed(0)} s`);
  engine = await startEngine();
  start = Date.now();
  await buildImage(engine, bases, TAG);
  t.log(`docker build (legacy builder, on the stand-ins) in ${((Date.now() - start) / 1000).toFixed(0)} s`);
});

test.after.always(async () => {
  await engine?.stop();
});

async function render(dir: string): Promise<{ deployment: Doc; configMaps: Doc[] }> {
  const docs = parseYamlDocs(await kustomizeBuild(dir), dir);
  return { deployment: docs.find((d) => d.kind === 'Deployment')!, configMaps: docs.filter((d) => d.kind === 'ConfigMap') };
}

async function renderFiles(files: Record<string, string>): Promise<{ deployment: Doc; configMaps: Doc[] }> {
  const docs = parseYamlDocs(await kustomizeFiles(files), 'a kustomization over deploy/base');
  return { deployment: docs.find((d) => d.kind === 'Deployment')!, configMaps: docs.filter((d) => d.kind === 'ConfigMap') };
}

function images(app: string): Record<string, string> {
  // The manifests' images -> the local ones. An image the manifests start naming that is not
  // here fails the run (runPod), so the mapping cannot silently go stale.
  return { [TAG]: TAG, 'python:3.12-slim-bookworm': app };
}

async function regionFiles(pod: Pod): Promise<string[]> {
  const dir = join(await pod.volumePath('heaptap'), 'regions');
  return readdirSync(dir).filter((f) => f.endsWith('.heaptap')).map((f) => join(dir, f));
}

function allocatedBytes(path: string): bigint {
  const snap = readRegion(path);
  let sum = 0n;
  for (const b of snap.counters.allocBytes) sum += b;
  return sum;
}

/** In-use (or another sample type's) bytes per function name over the samples (each sample counted once per distinct
 * function on its stack), the total, and per innermost frame. A location without a function
 * is named as pprof shows it: [<its module's file name>]. */
function inuse(p: Profile, type = 'inuse_space'): { total: number; byFunction: Map<string, number>; leaves: Map<string, number> } {
  const idx = p.sampleType.findIndex((st) => str(p, st.type) === type);
  if (idx < 0) throw new Error(`no ${type} in the profile`);
  const fnName = new Map(p.function.map((f) => [Number(f.id), str(p, f.name)]));
  const loc = new Map(p.location.map((l) => [Number(l.id), l]));
  const mapName = new Map(p.mapping.map((m) => [Number(m.id), `[${str(p, m.filename).split('/').pop()}]`]));
  const byFunction = new Map<string, number>();
  const leaves = new Map<string, number>();
  let total = 0;
  for (const s of p.sample) {
    const v = Number(s.value[idx]);
    total += v;
    const names = new Set<string>();
    s.locationId.forEach((id, i) => {
      const l = loc.get(Number(id))!;
      const lines = l.line.length ? l.line.map((ln) => fnName.get(Number(ln.functionId)) ?? '') : [mapName.get(Number(l.mappingId)) ?? '[unknown]'];
      for (const n of lines) names.add(n);
      if (i === 0) leaves.set(lines[0]!, (leaves.get(lines[0]!) ?? 0) + v);
    });
    for (const n of names) byFunction.set(n, (byFunction.get(n) ?? 0) + v);
  }
  return { total, byFunction, leaves };
}

async function heapProfile(pod: Pod, minBytes: number): Promise<{ raw: Buffer; profile: Profile }> {
  return until(async () => {
    const r = await pod.get(PORT, '/debug/pprof/heap');
    if (r.status !== 200) return undefined;
    const profile = await decodeProfile(r.body);
    return inuse(profile).total >= minBytes ? { raw: r.body, profile } : undefined;
  }, 60_000, `a heap profile of ${minBytes} bytes in use`, 1000);
}

async function topLines(raw: Buffer, n: number): Promise<string[]> {
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'pod-profile-'));
  try {
    const file = join(dir, 'heap.pb.gz');
    await writeFile(file, raw);
    const r = await pprof(['-top', '-nodecount', String(n), '-sample_index=inuse_space', file]);
    if (r.code !== 0) throw new Error(`go tool pprof: ${r.stderr}`);
    return r.stdout.trim().split('\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function running(e: Engine, id: string): Promise<boolean> {
  return (await e.docker(['inspect', '-f', '{{.State.Running}}', id])).stdout.trim() === 'true';
}

test.serial('deploy/base runs as the pod it describes: libraries copied, the region written, the agent serving a symbolized heap, nobody root, roots read-only', async (t) => {
  t.timeout(10 * 60_000);
  const e = engine!;
  const { deployment, configMaps } = await render('base');
  const pod = await runPod(e, deployment, {
    images: images(bases['python-dbg']!), pauseImage: bases.debian!, configMaps, name: 'heaptap-demo',
  });
  t.teardown(() => pod.remove());

  // heaptap-init: both libraries in the volume, 0755 and owned by the pod's user, and the
  // region directory 0700.
  t.log(`heaptap-init: ${pod.initLogs['heaptap-init']!.trim()}`);
  t.regex(pod.initLogs['heaptap-init']!, /libheaptap\.so \(glibc\) or \/heaptap\/libheaptap-musl\.so \(musl\) for LD_PRELOAD; regions in \/heaptap\/regions \(mode 0700, uid 10001, gid 10001\)/);
  const vol = await pod.volumePath('heaptap');
  for (const name of ['libheaptap.so', 'libheaptap-musl.so']) {
    const st = statSync(join(vol, name));
    t.is(st.mode & 0o7777, 0o755, `${name} mode`);
    t.is(st.uid, IMAGE_UID, `${name} owner`);
    t.is(st.gid, IMAGE_UID, `${name} group`);
    t.log(`volume: ${name} ${(st.mode & 0o777).toString(8)} ${st.uid}:${st.gid} ${st.size} bytes`);
  }
  // (0700 and the setgid bit the directory inherits from the volume, which fsGroup makes
  // setgid, as the kubelet does.)
  const regionsDir = statSync(join(vol, 'regions'));
  t.is(regionsDir.mode & 0o777, 0o700);
  t.log(`volume: regions/ ${(regionsDir.mode & 0o7777).toString(8)} ${regionsDir.uid}:${regionsDir.gid}`);
  t.is(regionsDir.uid, IMAGE_UID);

  // The application's region.
  const [region] = await until(async () => {
    const f = await regionFiles(pod);
    return f.length ? f : undefined;
  }, 30_000, 'the application\'s region file');
  const header = readRegion(region!).header;
  t.log(`region: ${region!.slice(vol.length + 1)} pid ${header.pid} exe ${header.exe} service ${header.service}`);
  t.regex(header.exe, /\/python3\.11$/);
  t.is(header.service, 'heaptap-demo', 'HEAPTAP_SERVICE_NAME from the pod label');
  t.is(statSync(region!).uid, IMAGE_UID);

  // The agent: ready, metrics for the application's process, a heap profile.
  const ready = await until(async () => {
    const r = await pod.get(PORT, '/readyz').catch(() => undefined);
    return r?.status === 200 ? r : undefined;
  }, 60_000, 'the agent\'s /readyz');
  t.log(`/readyz: ${ready.status} ${ready.body.toString().trim()}`);
  const metrics = await until(async () => {
    const r = await pod.get(PORT, '/metrics');
    const text = r.body.toString();
    const m = /^heaptap_heap_inuse_bytes\{[^}]*service="heaptap-demo"[^}]*\} (\S+)$/m.exec(text);
    return m && Number(m[1]) > 1 << 20 ? text : undefined;
  }, 60_000, 'heaptap_heap_inuse_bytes of the demo above 1 MiB');
  for (const line of metrics.split('\n').filter((l) => /^heaptap_(heap_inuse_bytes|process_resident_memory_bytes)\{/.test(l))) t.log(`/metrics: ${line}`);

  // Stripped python3.11 of the stand-in image, with python3.11-dbg's
  // /usr/lib/debug/.build-id/ files in the application's image: the agent finds them through
  // /proc/<pid>/root and names CPython's own functions: the bytes objects of load_entry()
  // and the bytearrays of handle_request() in app.py.
  const { raw, profile } = await heapProfile(pod, MIN_INUSE);
  const { total, byFunction, leaves } = inuse(profile);
  for (const line of await topLines(raw, 8)) t.log(`go tool pprof -top: ${line}`);
  // In use: the cache's bytes objects. Allocated so far: the bytearrays too (each request's
  // are dropped at the next tick, so few are in use at any moment).
  t.true((byFunction.get('_PyBytes_FromSize') ?? 0) / total > 0.5, `bytes objects in use: ${byFunction.get('_PyBytes_FromSize')} of ${total}`);
  const allocated = inuse(profile, 'alloc_space');
  const arrays = (allocated.byFunction.get('PyByteArray_Resize') ?? 0) / allocated.total;
  t.true(arrays > 0.1, `bytearrays allocated: ${(100 * arrays).toFixed(1)}% of ${allocated.total} bytes`);
  const unnamed = [...leaves].filter(([n]) => /^\[/.test(n)).reduce((a, [, v]) => a + v, 0);
  t.true(unnamed / total < 0.05, `in-use bytes with an unnamed innermost frame: ${(100 * unnamed / total).toFixed(1)}%`);

  // Every process of the pod (pause, application, agent) as a non-root user, with no
  // capabilities, no_new_privs and a seccomp filter; every root file system read-only.
  const procs = await podProcesses(pod);
  t.true(procs.length >= 3, procs.map((p) => p.name).join(' '));
  for (const p of procs) {
    t.true(p.uids.every((u) => u !== 0) && p.gids.every((g) => g !== 0), `${p.name} (${p.pid}): uid ${p.uids} gid ${p.gids}`);
    t.is(p.capEff, 0n, `${p.name}: effective capabilities`);
    t.is(p.capPrm, 0n, `${p.name}: permitted capabilities`);
    t.is(p.noNewPrivs, 1, `${p.name}: no_new_privs`);
    t.is(p.seccomp, 2, `${p.name}: seccomp filter`);
  }
  t.log(`processes: ${procs.map((p) => `${p.name}(uid ${p.uids[0]})`).join(' ')}`);
  for (const c of ['app', 'heaptap']) {
    t.true(await rootReadOnly(await pod.pid(c)), `${c}: / is mounted read-only`);
    const w = await e.docker(['exec', pod.containers.get(c)!.id, 'sh', '-c', 'echo x > /heaptap-test-write']).then(() => '', (err) => String(err.stderr));
    t.regex(w, /Read-only file system/, `${c}: writing to / fails`);
  }

  // The agent killed: the application runs on and keeps allocating into its region.
  await e.docker(['kill', '--signal', 'KILL', pod.containers.get('heaptap')!.id]);
  const before = allocatedBytes(region!);
  await until(() => allocatedBytes(region!) > before, 30_000, 'the application allocating after the agent died');
  t.true(await running(e, pod.containers.get('app')!.id), 'the application still runs');
  // And it stops as it would without heaptap: SIGTERM, its last line, exit 0.
  await e.docker(['stop', '-t', '20', pod.containers.get('app')!.id], { timeout: 60_000 });
  t.is((await e.docker(['inspect', '-f', '{{.State.ExitCode}}', pod.containers.get('app')!.id])).stdout.trim(), '0');
  const logs = await pod.logs('app');
  t.regex(logs, /demo: stopping with \d+ cache entries/);
  t.log(`app after the agent was killed: ${logs.trim().split('\n').at(-1)}`);
});

test.serial('the application runs unchanged without heaptap: no init container, no library in the volume, no agent', async (t) => {
  t.timeout(5 * 60_000);
  const e = engine!;
  const { deployment, configMaps } = await render('base');
  const pod = await runPod(e, deployment, {
    images: images(bases.python!), pauseImage: bases.debian!, configMaps, name: 'heaptap-absent', without: ['heaptap-init', 'heaptap'],
  });
  t.teardown(() => pod.remove());
  const app = pod.containers.get('app')!.id;
  // The dynamic loader says why it did not preload, once, and goes on.
  const warning = await until(async () => {
    const l = await pod.logs('app');
    return /cannot be preloaded/.test(l) ? l : undefined;
  }, 30_000, 'the loader\'s warning');
  t.log(`app without the library: ${warning.trim().split('\n')[0]}`);
  // Still running a few seconds later, no region anywhere.
  await new Promise((r) => setTimeout(r, 3000));
  t.true(await running(e, app));
  t.false(existsSync(join(await pod.volumePath('heaptap'), 'regions')));
  await e.docker(['stop', '-t', '20', app], { timeout: 60_000 });
  t.is((await e.docker(['inspect', '-f', '{{.State.ExitCode}}', app])).stdout.trim(), '0');
  t.regex(await pod.logs('app'), /demo: stopping with \d+ cache entries/);
});

test.serial('heaptap added by the component follows the pod\'s user, and a stripped program without debug files is profiled by address', async (t) => {
  t.timeout(10 * 60_000);
  const e = engine!;
  // A user's kustomization over the demo: the pod runs as uid/gid 1000; heaptap's containers
  // set no user, so they run as 1000 too.
  const { deployment, configMaps } = await renderFiles({
    'kustomization.yaml': `resources:\n  - ../../deploy/base\npatches:\n  - path: user.yaml\n`,
    'user.yaml': 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: heaptap-demo\nspec:\n  template:\n    spec:\n' +
      '      securityContext:\n        runAsUser: 1000\n        runAsGroup: 1000\n        fsGroup: 1000\n',
  });
  const pod = await runPod(e, deployment, {
    images: images(bases.python!), pauseImage: bases.debian!, configMaps, name: 'heaptap-uid1000',
  });
  t.teardown(() => pod.remove());
  t.regex(pod.initLogs['heaptap-init']!, /uid 1000, gid 1000/);
  const vol = await pod.volumePath('heaptap');
  t.is(statSync(join(vol, 'libheaptap.so')).uid, 1000);
  t.is(statSync(join(vol, 'regions')).uid, 1000);
  for (const c of ['app', 'heaptap']) t.is(pod.containers.get(c)!.user, '1000:1000');

  const { raw, profile } = await heapProfile(pod, MIN_INUSE);
  const { total, leaves } = inuse(profile);
  for (const line of await topLines(raw, 5)) t.log(`go tool pprof -top (stripped python3.11): ${line}`);
  // Without symbols for CPython's static functions, most in-use bytes end in a frame named
  // only by its module: what docs/kubernetes.md says users of stripped binaries get.
  const [topLeaf, topBytes] = [...leaves].sort((a, b) => b[1] - a[1])[0]!;
  t.is(topLeaf, '[python3.11]', `the top innermost frame: ${topLeaf}`);
  t.true(topBytes / total > 0.5);
  // The mapping still carries the build id, for symbolizing later elsewhere.
  const py = profile.mapping.find((m) => /python3\.11$/.test(str(profile, m.filename)));
  t.truthy(py && str(profile, py.buildId).length >= 40, 'python3.11\'s mapping has its build id');
});

for (const [what, rendered] of [
  ['deploy/helm/heaptap with the demo values', () => helmTemplate('heaptap-demo', HELM_DEMO_ARGS)],
  ['a plain chart of the demo through deploy/helm/heaptap-post-renderer', () => postRendered()],
] as const) {
  test.serial(`${what} runs as a pod whose agent serves the application's heap`, async (t) => {
    t.timeout(5 * 60_000);
    const docs = parseYamlDocs(await rendered(), what);
    const pod = await runPod(engine!, docs.find((d) => d.kind === 'Deployment')!, {
      images: images(bases['python-dbg']!), pauseImage: bases.debian!, configMaps: docs.filter((d) => d.kind === 'ConfigMap'),
      name: what.startsWith('deploy/helm/heaptap ') ? 'heaptap-helm' : 'heaptap-post',
    });
    t.teardown(() => pod.remove());
    t.regex(pod.initLogs['heaptap-init']!, /uid 10001, gid 10001/);
    await until(async () => (await regionFiles(pod)).length > 0, 30_000, 'the application\'s region file');
    await until(async () => (await pod.get(PORT, '/readyz').catch(() => undefined))?.status === 200, 60_000, '/readyz');
    const { profile } = await heapProfile(pod, MIN_INUSE);
    const { total, byFunction } = inuse(profile);
    t.true((byFunction.get('_PyBytes_FromSize') ?? 0) / total > 0.5);
  });
}

/** The shell block under the heading `## From a Deployment to a flame graph` in
 * docs/kubernetes.md, as command lines. */
function walkthrough(): string[] {
  const doc = readFileSync(join(root, 'docs/kubernetes.md'), 'utf8');
  const m = /^## From a Deployment to a flame graph\n[\s\S]*?```sh\n([\s\S]*?)```/m.exec(doc);
  if (!m) throw new Error('docs/kubernetes.md has no "From a Deployment to a flame graph" block');
  return m[1]!.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

test.serial('the walkthrough of docs/kubernetes.md, run: a plain Deployment, the component added with kustomize edit, the pod, heaptap top on its heap', async (t) => {
  t.timeout(5 * 60_000);
  const lines = walkthrough();
  const at = (re: RegExp) => {
    const l = lines.find((x) => re.test(x));
    if (!l) throw new Error(`the walkthrough has no line matching ${re}: ${lines.join(' | ')}`);
    return l;
  };
  // Step 1, the image: the same Dockerfile the before hook built (on the stand-ins; no
  // registry to push to here).
  t.regex(at(/^docker build /), /^docker build -t \S+\/heaptap:0\.1\.0 \. && docker push \S+\/heaptap:0\.1\.0$/);

  // "You have": my-app/ with a Deployment and its kustomization, heaptap's checkout beside it.
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'walkthrough-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const app = join(dir, 'my-app');
  await mkdir(app);
  await symlink(root, join(dir, 'heaptap'));
  await writeFile(join(app, 'deployment.yaml'), readFileSync(join(root, 'deploy/base/deployment.yaml')));
  await writeFile(join(app, 'app.py'), readFileSync(join(root, 'deploy/base/app.py')));
  await writeFile(join(app, 'kustomization.yaml'), 'resources:\n  - deployment.yaml\nconfigMapGenerator:\n  - name: heaptap-demo-app\n    files:\n      - app.py\n');

  // Step 2, as written: kustomize edit, twice.
  const kustomize = await peer('kustomize');
  t.is(at(/^cd /), 'cd my-app');
  const edits = lines.filter((l) => l.startsWith('kustomize edit '));
  t.is(edits.length, 2);
  for (const l of edits) await exec(kustomize, l.split(/\s+/).slice(1), { cwd: app });
  // Step 3: what `kubectl apply -k .` applies, run as the kubelet would run it.
  t.is(at(/^kubectl apply /), 'kubectl apply -k .');
  const docs = parseYamlDocs((await exec(kustomize, ['build', '.'], { cwd: app })).stdout, 'my-app');
  const deployment = docs.find((d) => d.kind === 'Deployment')!;
  const image = deployment.spec.template.spec.containers.find((c: Doc) => c.name === 'heaptap').image as string;
  t.regex(image, /^registry\.example\.com\/heaptap:0\.1\.0$/);
  const pod = await runPod(engine!, deployment, {
    images: { [image]: TAG, 'python:3.12-slim-bookworm': bases['python-dbg']! }, pauseImage: bases.debian!,
    configMaps: docs.filter((d) => d.kind === 'ConfigMap'), name: 'heaptap-walkthrough',
  });
  t.teardown(() => pod.remove());
  // Step 4: the port-forward's end is the pod's network namespace; heaptap top (from the
  // clone beside my-app: no Go needed) as written, from there (after the heap has grown
  // past 4 MiB).
  t.regex(at(/^kubectl port-forward /), /^kubectl port-forward deploy\/\S+ 6060:heaptap &$/);
  const pprofLine = at(/^\.\.\/heaptap\/heaptap top /).replace(/\s+#.*$/, '');
  const [, ...topArgs] = pprofLine.split(/\s+/);
  await heapProfile(pod, MIN_INUSE);
  const { stdout } = await exec('nsenter', ['-t', String(pod.pausePid), '-n', '--', process.execPath, join(root, 'src/cli.ts'), ...topArgs.map((a) => a.replace('localhost', '127.0.0.1'))],
    { env: { ...process.env }, timeout: 120_000 });
  for (const l of stdout.trim().split('\n').slice(0, 10)) t.log(`${pprofLine}: ${l}`);
  t.regex(stdout, /_PyBytes_FromSize/);
  // Step 5, Grafana: what Alloy's pull.alloy keys on is on the pod (Alloy, Pyroscope and
  // Grafana themselves cannot run here).
  const a = deployment.spec.template.metadata.annotations;
  t.is(a['profiles.grafana.com/memory.scrape'], 'true');
  t.is(a['profiles.grafana.com/memory.port_name'], 'heaptap');
  const alloy = readFileSync(join(root, 'deploy/configs/alloy/pull.alloy'), 'utf8');
  t.regex(alloy, /profiles_grafana_com_memory_scrape/);
  t.true(at(/alloy/).includes('deploy/configs/alloy/pull.alloy'));
});

/** An application image based on musl, as an Alpine one is: the stand-in Debian with
 * Debian's musl (its loader is /lib/ld-musl-x86_64.so.1) and the churn fixture built with
 * musl-gcc (make -C test/fixtures musl). */
async function muslApp(): Promise<string> {
  await exec('make', ['-s', '-C', join(root, 'test/fixtures'), 'musl'], { timeout: 300_000 });
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'musl-app-'));
  try {
    await writeFile(join(dir, 'churn'), readFileSync(join(root, 'test/fixtures/build-musl/churn')), { mode: 0o755 });
    await writeFile(join(dir, 'Dockerfile'), `FROM ${bases.debian}\n` +
      'RUN apt-get update && apt-get install -y --no-install-recommends musl && rm -rf /var/lib/apt/lists/*\n' +
      'COPY churn /usr/local/bin/churn\n');
    const tag = 'heaptap-test/musl-app:1';
    await engine!.docker(['build', '-q', '--network', 'host', '-t', tag, dir], { timeout: 10 * 60_000 });
    return tag;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const MUSL_DEPLOYMENT = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: churn
spec:
  selector:
    matchLabels: {app: churn}
  template:
    metadata:
      labels: {app: churn}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001}
      containers:
        - name: churn
          image: musl-app:1
          # 4 threads leaving 8 MiB each in use, then waiting for a line on stdin.
          command: [/usr/local/bin/churn, --threads, "4", --mib, "2", --leak-mib, "8", --hold]
          stdin: true
`;

test.serial('a musl application with deploy/components/heaptap-musl is profiled; with the glibc library it cannot start', async (t) => {
  t.timeout(10 * 60_000);
  const e = engine!;
  const app = await muslApp();
  const render = async (component: string) => {
    const docs = parseYamlDocs(await kustomizeFiles({
      'deployment.yaml': MUSL_DEPLOYMENT,
      'kustomization.yaml': `resources: [deployment.yaml]\ncomponents: [../../deploy/components/${component}]\n`,
    }), component);
    return docs.find((d) => d.kind === 'Deployment')!;
  };

  const pod = await runPod(e, await render('heaptap-musl'), {
    images: { [TAG]: TAG, 'musl-app:1': app }, pauseImage: bases.debian!, configMaps: [], name: 'heaptap-musl',
  });
  t.teardown(() => pod.remove());
  const [region] = await until(async () => {
    const f = await regionFiles(pod);
    return f.length ? f : undefined;
  }, 30_000, 'the musl program\'s region');
  t.regex(readRegion(region!).header.exe, /\/churn$/);
  await until(async () => (await pod.get(PORT, '/readyz').catch(() => undefined))?.status === 200, 60_000, '/readyz');
  // churn prints "ready" when its threads are done and it holds (only site_leak in use).
  await until(async () => /^ready$/m.test(await pod.logs('churn')), 60_000, 'churn to hold');
  // site_leak holds 4 x 8 MiB once the threads are done: 512 blocks of 64 KiB, about 60
  // samples. Waiting for 8 MiB of the 32 (an estimate that low is over 6 standard
  // deviations off) rather than for most of it: the estimate stops changing once the
  // program holds, so a wait for 24 MiB failed whenever it came out under (about 2%).
  const { raw, profile } = await heapProfile(pod, 8 << 20);
  for (const line of (await topLines(raw, 4)).slice(-3)) t.log(`go tool pprof -top (musl): ${line}`);
  const { total, byFunction } = inuse(profile);
  t.true((byFunction.get('site_leak') ?? 0) / total > 0.9, `site_leak: ${byFunction.get('site_leak')} of ${total}`);
  await pod.remove();

  // The glibc build preloaded into a musl program: every program of the container fails to
  // start (docs/kubernetes.md, section 3), which the kubelet would restart in a loop.
  const wrong = await runPod(e, await render('heaptap'), {
    images: { [TAG]: TAG, 'musl-app:1': app }, pauseImage: bases.debian!, configMaps: [], name: 'heaptap-wronglibc', without: ['heaptap'],
  });
  t.teardown(() => wrong.remove());
  const id = wrong.containers.get('churn')!.id;
  await until(async () => !(await running(e, id)), 30_000, 'the musl program to fail');
  const code = (await e.docker(['inspect', '-f', '{{.State.ExitCode}}', id])).stdout.trim();
  const logs = await wrong.logs('churn');
  t.log(`musl program under the glibc library: exit ${code}: ${logs.trim().split('\n')[0]}`);
  t.is(code, '127');
});
