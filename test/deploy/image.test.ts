// The container image, without a Docker engine: scripts/image-build.sh (the steps the
// Dockerfile's build stage runs) stages the image's tree into a temporary directory, and
// these tests check that tree and the Dockerfile around it: libheaptap.so where the init
// step copies it from, needing only glibc; the addon loading with the staged dependencies
// and reading a region the staged library wrote; the entrypoint running the CLI; the
// runtime stage installing what the addon links; the user the manifests run as. (The image
// itself is built and run by test/deploy/pod.test.ts, in a Docker engine of its own.)
import { accessSync, constants as fsConstants, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

import test from 'ava';

import { IMAGE_UID, exec, kustomizeBuild, parseYamlDocs, root } from './helpers.ts';

const node = process.execPath;
/** PATH for the staged tree: the Node running these tests (>= 22.18) is the image's node. */
const PATH = `${dirname(node)}:${process.env.PATH ?? '/usr/bin:/bin'}`;

let staging = '';
let prefix = '';

test.before(async () => {
  staging = await mkdtemp(join(tmpdir(), 'heaptap-image-'));
  prefix = join(staging, 'opt/heaptap');
  // The typecheck step is skipped: npm test runs the same `tsc --noEmit` before ava.
  await exec('bash', [join(root, 'scripts/image-build.sh'), staging], {
    env: { ...process.env, PATH, HEAPTAP_IMAGE_TYPECHECK: '0' },
    maxBuffer: 16 << 20,
  });
});

test.after.always(async () => {
  if (staging) await rm(staging, { recursive: true, force: true });
});

// ---- the Dockerfile, parsed ----

interface Instruction { cmd: string; args: string }
interface Stage { from: string; name?: string; body: Instruction[] }

function dockerfile(): { args: Record<string, string>; stages: Stage[] } {
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8');
  const lines: string[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) { cur += `${line.slice(0, -1)} `; continue; }
    cur += line;
    if (cur.trim()) lines.push(cur.trim());
    cur = '';
  }
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const l of lines) {
    const [, cmd, rest] = /^(\S+)\s*(.*)$/.exec(l)!;
    const ins = { cmd: cmd!.toUpperCase(), args: rest!.replace(/\s+/g, ' ') };
    if (ins.cmd === 'ARG' && stages.length === 0) {
      const [k, v] = ins.args.split('=');
      args[k!] = (v ?? '').replace(/\$\{(\w+)\}/g, (_, a: string) => args[a] ?? '');
    } else if (ins.cmd === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      const from = m[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? '');
      stages.push({ from, name: m[2], body: [] });
    } else {
      stages.at(-1)!.body.push(ins);
    }
  }
  return { args, stages };
}

function aptPackages(stage: Stage): string[] {
  return stage.body
    .filter((i) => i.cmd === 'RUN')
    .flatMap((i) => [...i.args.matchAll(/apt-get install ((?:-\S+\s+)*)([^&;|]+)/g)].map((m) => m[2]!.trim().split(' ')))
    .flat();
}

test('the Dockerfile builds with scripts/image-build.sh and copies the tree it stages', (t) => {
  const { args, stages } = dockerfile();
  // The base images are build arguments (the image test builds on local stand-ins),
  // defaulting to the official Node.js images.
  t.is(args.BUILD_IMAGE, `node:${args.NODE_MAJOR}-bookworm`);
  t.is(args.RUNTIME_IMAGE, `node:${args.NODE_MAJOR}-bookworm-slim`);
  t.is(stages.length, 2);
  const [build, runtime] = stages as [Stage, Stage];
  t.regex(build.from, /^node:\d+-bookworm$/);
  t.is(build.name, 'build');
  const run = build.body.filter((i) => i.cmd === 'RUN' && i.args.includes('image-build.sh'));
  t.deepEqual(run.map((i) => i.args), ['scripts/image-build.sh /image-root']);
  t.true(build.body.some((i) => i.cmd === 'RUN' && /^npm ci\b/.test(i.args)), 'node_modules from the lockfile');
  // The addon's build dependencies, as scripts/setup.sh installs them.
  for (const p of ['libdw-dev', 'libelf-dev', 'musl-tools']) t.true(aptPackages(build).includes(p), p);

  const m = /^node:(\d+)-bookworm-slim$/.exec(runtime.from);
  t.truthy(m, runtime.from);
  t.true(Number(m![1]) >= 22, 'a Node that runs TypeScript without a compile step');
  t.deepEqual(runtime.body.filter((i) => i.cmd === 'COPY').map((i) => i.args), ['--from=build /image-root/ /']);
});

test('the image runs as the numeric non-root user the manifests use, the agent by default', async (t) => {
  const { stages } = dockerfile();
  const runtime = stages[1]!;
  const last = (cmd: string) => runtime.body.filter((i) => i.cmd === cmd).at(-1)?.args;
  t.is(last('USER'), `${IMAGE_UID}:${IMAGE_UID}`);
  t.true(runtime.body.some((i) => i.cmd === 'RUN' && i.args.includes(`useradd --uid ${IMAGE_UID} --gid ${IMAGE_UID}`)));
  t.deepEqual(JSON.parse(last('ENTRYPOINT')!), ['/opt/heaptap/bin/heaptap']);
  t.deepEqual(JSON.parse(last('CMD')!), ['agent']);

  const docs = parseYamlDocs(await kustomizeBuild('base'), 'deploy/base');
  const agent = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers.find((c: any) => c.name === 'heaptap');
  t.is(last('EXPOSE'), String(agent.ports[0].containerPort));
});

test('the .dockerignore keeps node_modules and build outputs out of the build context', (t) => {
  const ignored = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const p of ['.git', 'node_modules', 'preload/build', 'src/addon/build', 'test/fixtures/build', '**/*.so', '**/*.o']) {
    t.true(ignored.includes(p), p);
  }
});

// ---- the staged tree ----

function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

test('the staged tree has the entrypoint, the init step and both libraries at their documented paths', (t) => {
  for (const f of ['bin/heaptap', 'bin/heaptap-init', 'lib/libheaptap.so', 'lib/libheaptap-musl.so', 'src/addon/build/heaptap.node']) {
    t.true(isExecutable(join(prefix, f)), f);
  }
  for (const f of ['src/cli.ts', 'src/native.ts', 'src/region.ts', 'package.json']) t.true(existsSync(join(prefix, f)), f);
  t.is(JSON.parse(readFileSync(join(prefix, 'package.json'), 'utf8')).type, 'module');
  // `heaptap run` preloads from preload/build/ beside src/.
  t.true(existsSync(join(prefix, 'preload/build/libheaptap.so')));
  // Nothing writable by the image's user.
  for (const f of ['bin/heaptap', 'lib/libheaptap.so', 'lib/libheaptap-musl.so', 'src/cli.ts']) t.is(statSync(join(prefix, f)).mode & 0o022, 0, f);
  // No C sources, no tests.
  t.false(existsSync(join(prefix, 'src/addon/reader.c')));
  t.false(existsSync(join(prefix, 'test')));
});

test('libheaptap.so needs nothing but glibc 2.17 or older symbol versions', async (t) => {
  const lib = join(prefix, 'lib/libheaptap.so');
  const { stdout: dyn } = await exec('readelf', ['-d', lib]);
  const needed = [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
  t.true(needed.includes('libc.so.6'));
  const glibc = /^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|ld-linux[-\w]*\.so\.\d)$/;
  t.deepEqual(needed.filter((n) => !glibc.test(n)), [], `NEEDED: ${needed.join(', ')}`);
  const { stdout: ver } = await exec('readelf', ['-V', lib]);
  const versions = [...new Set([...ver.matchAll(/Name: GLIBC_([\d.]+)/g)].map((m) => m[1]!))];
  const newer = versions.filter((v) => {
    const [a, b] = v.split('.').map(Number);
    return a! > 2 || (a === 2 && b! > 17);
  });
  t.deepEqual(newer, [], 'glibc 2.17 is the documented minimum');
});

test('libheaptap-musl.so needs nothing but musl and exports only the allocator API', async (t) => {
  const lib = join(prefix, 'lib/libheaptap-musl.so');
  const { stdout: dyn } = await exec('readelf', ['-d', lib]);
  t.deepEqual([...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!), ['libc.so']);
  const { stdout: ver } = await exec('readelf', ['-V', lib]);
  t.notRegex(ver, /GLIBC_/);
  const { stdout: nm } = await exec('nm', ['-D', '--defined-only', lib]);
  t.deepEqual(nm.trim().split('\n').map((l) => l.split(' ').pop()).sort(), [
    'aligned_alloc', 'calloc', 'free', 'malloc', 'malloc_usable_size', 'memalign', 'posix_memalign', 'pvalloc', 'realloc',
    'reallocarray', 'valloc',
  ]);
});

test('the staged node_modules holds production dependencies only', (t) => {
  const mods = readdirSync(join(prefix, 'node_modules'));
  for (const dep of Object.keys(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).dependencies ?? {})) {
    t.true(existsSync(join(prefix, 'node_modules', dep, 'package.json')), dep);
  }
  for (const dev of ['typescript', 'ava', 'node', 'kubernetes-models', '@types']) t.false(mods.includes(dev), dev);
});

test('the runtime stage installs every library the addon links, beyond the base image', async (t) => {
  // What node:<n>-bookworm-slim (debian:bookworm-slim plus Node) already has.
  const base = new Set(['libc6', 'libgcc-s1', 'libstdc++6']);
  const runtime = new Set(aptPackages(dockerfile().stages[1]!));
  const addon = join(prefix, 'src/addon/build/heaptap.node');
  // The addon's own NEEDED entries (their dependencies come with their packages), resolved
  // to files by ldd.
  const needed = [...(await exec('readelf', ['-d', addon])).stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
  const resolved = new Map([...(await exec('ldd', [addon])).stdout.matchAll(/^\s*(\S+) => (\/\S+)/gm)].map((m) => [m[1]!, m[2]!]));
  t.true(needed.length > 0);
  const missing: string[] = [];
  for (const soname of needed) {
    const path = resolved.get(soname);
    t.truthy(path, `ldd resolves ${soname}`);
    if (!path) continue;
    let pkg = '';
    for (const candidate of [path, path.replace(/^\/usr\/lib\//, '/lib/'), path.replace(/^\/lib\//, '/usr/lib/')]) {
      try {
        pkg = (await exec('dpkg', ['-S', candidate])).stdout.split(':')[0]!.trim();
        break;
      } catch { /* try the next spelling of the path (usrmerge) */ }
    }
    t.truthy(pkg, `${soname} (${path}) belongs to a Debian package`);
    if (!base.has(pkg) && !runtime.has(pkg)) missing.push(`${soname} from ${pkg}`);
  }
  t.deepEqual(missing, [], `the runtime stage installs ${[...runtime].join(' ')}`);
  t.true(runtime.has('libdw1') && runtime.has('libelf1'));
});

test('heaptap-init copies both libraries into a volume, whose glibc one then profiles a program the staged addon reads', async (t) => {
  const parent = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const volume = await mkdtemp(join(parent, 'heaptap-volume-'));
  try {
    const { stdout } = await exec(join(prefix, 'bin/heaptap-init'), [volume], { env: { PATH } });
    t.regex(stdout, /libheaptap\.so \(glibc\) or \S+libheaptap-musl\.so \(musl\) for LD_PRELOAD/);
    t.is(statSync(join(volume, 'regions')).mode & 0o777, 0o700);
    for (const name of ['libheaptap.so', 'libheaptap-musl.so']) {
      t.true(isExecutable(join(volume, name)), name);
      t.deepEqual(readFileSync(join(volume, name)), readFileSync(join(prefix, 'lib', name)), name);
    }
    t.deepEqual(readdirSync(volume).filter((n) => n.startsWith('.')), [], 'no temporary file left');

    // The application container: any dynamically linked program, preloading from the volume.
    const ls = existsSync('/usr/bin/ls') ? '/usr/bin/ls' : '/bin/ls';
    await exec(ls, ['/'], {
      env: { PATH, LD_PRELOAD: join(volume, 'libheaptap.so'), HEAPTAP_DIR: join(volume, 'regions'), HEAPTAP_SAMPLE_RATE: '1' },
    });
    const regions = readdirSync(join(volume, 'regions')).filter((f) => f.endsWith('.heaptap'));
    t.is(regions.length, 1);

    // The agent's side: the staged sources, addon and node_modules, from the staged tree.
    const script = `
      const region = await import(${JSON.stringify(pathToFileURL(join(prefix, 'src/region.ts')).href)});
      const [path] = await region.listRegions(process.argv[1]);
      const snap = region.readRegion(path);
      console.log(JSON.stringify({ exe: snap.header.exe, pid: snap.header.pid, stacks: snap.header.stacksUsed }));`;
    const out = await exec(node, ['--input-type=module', '-e', script, join(volume, 'regions')], { cwd: prefix, env: { PATH } });
    const info = JSON.parse(out.stdout);
    t.regex(info.exe, /\/ls$/);
    t.true(info.pid > 0);
    t.true(info.stacks > 0, 'the region has sampled stacks');
  } finally {
    await rm(volume, { recursive: true, force: true });
  }
});

test('the entrypoint runs the heaptap command line from the staged tree', async (t) => {
  const { stdout } = await exec(join(prefix, 'bin/heaptap'), ['--help'], { cwd: '/', env: { PATH } });
  t.regex(stdout, /^Usage: heaptap <command>/m);
});

test('heaptap agent in the staged tree accepts every HEAPTAP_ variable the manifests set', async (t) => {
  // The image's default command is `heaptap agent`: the staged CLI must list it.
  const usage = (await exec(join(prefix, 'bin/heaptap'), ['--help'], { cwd: '/', env: { PATH } })).stdout;
  t.regex(usage, /^\s+agent\b/m, '`heaptap --help` lists the agent command');
  const { stdout } = await exec(join(prefix, 'bin/heaptap'), ['agent', '--help'], { cwd: '/', env: { PATH } });
  const known = new Set([...stdout.matchAll(/\b(HEAPTAP_[A-Z0-9_]+)\b/g)].map((m) => m[1]!));
  t.true(known.has('HEAPTAP_DIR'), stdout);
  for (const dir of ['base', 'overlays/example', 'overlays/push']) {
    const docs = parseYamlDocs(await kustomizeBuild(dir), dir);
    const agent = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers.find((c: any) => c.name === 'heaptap');
    for (const e of agent.env) if (e.name.startsWith('HEAPTAP_')) t.true(known.has(e.name), `${dir}: ${e.name}`);
  }
});
