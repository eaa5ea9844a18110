// The image test's machinery (test/deploy/pod.test.ts): a private Docker engine
// (scripts/peers/dockerd.sh), the stand-in base images (scripts/peers/image-bases.sh), the
// heaptap image built by the repository's Dockerfile on them, and a pod run from a rendered
// Deployment the way the kubelet runs it:
//
// - a "pause" container holds the pod's network, IPC and (with shareProcessNamespace) PID
//   namespaces; every other container joins them;
// - emptyDir volumes are tmpfs volumes (mode 0777, or 2777 and group fsGroup with an
//   fsGroup, as the kubelet makes them), configMap volumes the ConfigMap's files, read-only;
// - init containers run in order, each to exit 0, before the containers start;
// - command/args, env (values, $(VAR) references, fieldRefs to the pod's labels, name and
//   namespace), volumeMounts, and the security context (runAsUser/runAsGroup/fsGroup,
//   runAsNonRoot checked as the kubelet checks it, readOnlyRootFilesystem, capabilities,
//   allowPrivilegeEscalation, seccomp RuntimeDefault = the engine's default profile) and
//   the memory and CPU limits, as docker run options.
//
// Probes are not run by anything here: the test asks the endpoints itself, from inside the
// pod's network namespace (nsenter), as the kubelet's prober does from the node.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { bound, killGroup, spawnGroup, within } from '../helpers/procs.ts';
import { exec, root, type Doc } from './helpers.ts';

export const DOCKER = '/usr/bin/docker';
/** The label every container and volume of these tests carries: scripts/peers/dockerd.sh
 * removes what a killed run left. */
export const LABEL = 'heaptap-test';

/** Runs scripts/peers/image-bases.sh (makes the stand-ins the first time, then only checks
 * them; it runs the engine itself, so before startEngine) and returns name -> image. */
export async function imageBases(): Promise<Record<string, string>> {
  try {
    const { stdout } = await exec('bash', [join(root, 'scripts/peers/image-bases.sh')], { timeout: 30 * 60_000, maxBuffer: 1 << 20 });
    const out: Record<string, string> = {};
    for (const line of stdout.trim().split('\n')) {
      const m = /^([\w-]+)=(\S+)$/.exec(line);
      if (m) out[m[1]!] = m[2]!;
    }
    for (const k of ['debian', 'node-slim', 'node', 'python', 'python-dbg']) {
      if (!out[k]) throw new Error(`it printed no ${k}= line`);
    }
    return out;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`scripts/peers/image-bases.sh failed (run \`npm run peers\` to see why): ${err.message}\n${err.stderr ?? ''}`);
  }
}

export interface Engine {
  host: string;
  docker(args: readonly string[], opts?: { timeout?: number; input?: string }): Promise<{ stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

/** Starts the private engine (scripts/peers/dockerd.sh run); stop() removes the test
 * containers and stops it. If this process dies, the script sees its stdin close and does
 * the same. */
export async function startEngine(): Promise<Engine> {
  const child: ChildProcess = spawnGroup(null, 'bash', [join(root, 'scripts/peers/dockerd.sh'), 'run'], {
    env: { ...process.env, HEAPTAP_DOCKERD_STDIN: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const host = await within(new Promise<string>((res, rej) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^ready (\S+)$/m.exec(out);
      if (m) res(m[1]!);
    });
    child.once('exit', (code) => rej(new Error(`scripts/peers/dockerd.sh exited (${code}): ${stderr}`)));
  }), 35 * 60_000, 'the Docker engine (another test run may hold it)').catch(async (e) => {
    killGroup(child);
    throw e;
  });
  const env = { ...process.env, DOCKER_HOST: host, DOCKER_BUILDKIT: '0' };
  return {
    host,
    docker: (args, opts = {}) => exec(DOCKER, args, { env, timeout: opts.timeout ?? 120_000, input: opts.input, maxBuffer: 64 << 20 }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin!.end();
      try {
        child.kill('SIGTERM');
      } catch { /* gone */ }
      // It removes the containers, then stops the engine (up to 30 s for that).
      await within(exited, 90_000, 'the Docker engine to stop').catch(() => killGroup(child));
    },
  };
}

/** Builds the repository's Dockerfile on the stand-ins; returns the build's output. The
 * build stage is tagged too (heaptap-test/build-stage): its layers (the apt-get and npm ci
 * steps) are then the next build's cache, and survive the prune of the untagged layers that
 * earlier builds left, which keeps the engine's disk bounded. */
export async function buildImage(engine: Engine, bases: Record<string, string>, tag: string): Promise<string> {
  const common = ['build', '--network', 'host', '--force-rm',
    '--build-arg', `BUILD_IMAGE=${bases.node}`, '--build-arg', `RUNTIME_IMAGE=${bases['node-slim']}`];
  const stage = await engine.docker([...common, '--target', 'build', '-t', 'heaptap-test/build-stage', root], { timeout: 30 * 60_000 });
  const { stdout } = await engine.docker([...common, '-t', tag, root], { timeout: 30 * 60_000 });
  await engine.docker(['image', 'prune', '-f']).catch(() => undefined);
  return stage.stdout + stdout;
}

// ---- quantities ----

/** A Kubernetes memory quantity in bytes ("256Mi", "1G", "512"). */
export function bytes(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) throw new Error(`memory quantity ${q}`);
  const mult: Record<string, number> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Math.round(Number(m[1]) * mult[m[2] ?? '']!);
}

/** A CPU quantity in cores ("500m", "1"). */
export function cores(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(q);
  if (!m) throw new Error(`cpu quantity ${q}`);
  return m[2] ? Number(m[1]) / 1000 : Number(m[1]);
}

// ---- the pod ----

export interface PodOptions {
  /** image in the manifest -> local image (every image must be mapped) */
  images: Record<string, string>;
  /** the pause container's image */
  pauseImage: string;
  /** ConfigMaps of the render (for configMap volumes) */
  configMaps: Doc[];
  /** containers to leave out (the agent, heaptap-init), by name */
  without?: string[];
  /** a name for this run (container names are <name>-<container>) */
  name: string;
}

export interface Container {
  name: string;
  id: string;
  /** the effective uid:gid it runs as */
  user: string;
}

export interface Pod {
  name: string;
  pause: string;
  /** the pause container's pid on the host (the pod's namespaces) */
  pausePid: number;
  initLogs: Record<string, string>;
  containers: Map<string, Container>;
  /** volume name -> docker volume name (emptyDir) */
  volumes: Map<string, string>;
  /** the host path of an emptyDir volume (its tmpfs, while a container uses it) */
  volumePath(volume: string): Promise<string>;
  /** the host pid of a container's first process */
  pid(container: string): Promise<number>;
  /** HTTP GET from inside the pod's network namespace */
  get(port: number, path: string): Promise<{ status: number; body: Buffer; type: string }>;
  logs(container: string): Promise<string>;
  remove(): Promise<void>;
}

function fieldRef(path: string, meta: Doc, podName: string): string {
  const label = /^metadata\.labels\['([^']+)'\]$/.exec(path);
  if (label) return meta.labels?.[label[1]!] ?? '';
  const ann = /^metadata\.annotations\['([^']+)'\]$/.exec(path);
  if (ann) return meta.annotations?.[ann[1]!] ?? '';
  if (path === 'metadata.name') return podName;
  if (path === 'metadata.namespace') return meta.namespace ?? 'default';
  throw new Error(`fieldRef ${path} is not supported by the test's pod runner`);
}

/** The environment of a container, as the kubelet computes it: in order, $(VAR) expanded
 * from the variables before it. */
export function containerEnv(c: Doc, meta: Doc, podName: string): [string, string][] {
  const out: [string, string][] = [];
  const seen = new Map<string, string>();
  for (const e of c.env ?? []) {
    let v: string;
    if (e.valueFrom) {
      if (!e.valueFrom.fieldRef) throw new Error(`env ${e.name}: only fieldRef is supported by the test's pod runner`);
      v = fieldRef(e.valueFrom.fieldRef.fieldPath, meta, podName);
    } else {
      v = String(e.value ?? '').replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name?: string) =>
        all === '$$' ? '$' : seen.has(name!) ? seen.get(name!)! : all);
    }
    seen.set(e.name, v);
    out.push([e.name, v]);
  }
  return out;
}

async function imageUser(engine: Engine, image: string): Promise<string> {
  const { stdout } = await engine.docker(['image', 'inspect', '-f', '{{.Config.User}}', image]);
  return stdout.trim();
}

export async function runPod(engine: Engine, deployment: Doc, opts: PodOptions): Promise<Pod> {
  const template = deployment.spec.template;
  const meta = { ...template.metadata, namespace: deployment.metadata.namespace };
  const spec = template.spec;
  const podName = opts.name;
  const psc = spec.securityContext ?? {};
  const without = new Set(opts.without ?? []);
  const created: string[] = [];
  const volumes = new Map<string, string>();
  const cleanup: (() => Promise<unknown>)[] = [];
  const containers = new Map<string, Container>();
  const initLogs: Record<string, string> = {};

  const remove = async () => {
    if (created.length) await engine.docker(['rm', '-f', '-v', ...created.reverse()]).catch(() => undefined);
    created.length = 0;
    if (volumes.size) await engine.docker(['volume', 'rm', '-f', ...volumes.values()]).catch(() => undefined);
    volumes.clear();
    for (const f of cleanup.splice(0)) await f().catch(() => undefined);
  };

  try {
    // Volumes.
    const hostDirs = new Map<string, string>();
    for (const v of spec.volumes ?? []) {
      if (v.emptyDir) {
        const name = `${podName}-${v.name}`;
        const o = [`size=${v.emptyDir.sizeLimit ? bytes(v.emptyDir.sizeLimit) : 64 << 20}`];
        if (psc.fsGroup !== undefined) o.push(`gid=${psc.fsGroup}`, 'mode=2777');
        else o.push('mode=0777');
        await engine.docker(['volume', 'create', '--label', LABEL, '--driver', 'local',
          '--opt', 'type=tmpfs', '--opt', 'device=tmpfs', '--opt', `o=${o.join(',')}`, name]);
        volumes.set(v.name, name);
      } else if (v.configMap) {
        const cm = opts.configMaps.find((d) => d.metadata.name === v.configMap.name);
        if (!cm) throw new Error(`volume ${v.name}: no ConfigMap ${v.configMap.name} in the render`);
        const dir = await mkdtemp(join(tmpdir(), 'heaptap-pod-cm-'));
        cleanup.push(() => rm(dir, { recursive: true, force: true }));
        await chmod(dir, 0o755);
        for (const [k, text] of Object.entries(cm.data ?? {})) {
          await writeFile(join(dir, k), String(text), { mode: 0o644 });
        }
        hostDirs.set(v.name, dir);
      } else {
        throw new Error(`volume ${v.name}: only emptyDir and configMap are supported by the test's pod runner`);
      }
    }

    // The pod sandbox.
    const pause = `${podName}-pause`;
    // It also mounts every emptyDir: the engine unmounts a tmpfs volume that no running
    // container uses (and so loses its files), an emptyDir lives as long as the pod.
    const holds = [...volumes.values()].flatMap((v) => ['--mount', `type=volume,source=${v},target=/pod-volumes/${v}`]);
    await engine.docker(['run', '-d', '--name', pause, '--label', LABEL, '--network', 'none', '--ipc', 'shareable',
      '--user', '65535:65535', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', ...holds,
      opts.pauseImage, 'sleep', 'infinity']);
    created.push(pause);
    const pausePid = Number((await engine.docker(['inspect', '-f', '{{.State.Pid}}', pause])).stdout.trim());

    const dockerArgs = async (c: Doc, name: string): Promise<{ args: string[]; user: string }> => {
      const image = opts.images[c.image];
      if (!image) throw new Error(`container ${c.name}: no local image for ${c.image}`);
      const sc = { ...psc, ...(c.securityContext ?? {}) };
      const args = ['--name', name, '--label', LABEL, '--network', `container:${pause}`, '--ipc', `container:${pause}`];
      if (spec.shareProcessNamespace) args.push('--pid', `container:${pause}`);
      // The user: runAsUser/runAsGroup, else the image's; runAsNonRoot as the kubelet checks it.
      const [imgUid = '0', imgGid] = (await imageUser(engine, image)).split(':');
      const uid = sc.runAsUser ?? (imgUid === '' ? 0 : Number(imgUid));
      if (!Number.isInteger(uid)) throw new Error(`container ${c.name}: image user ${imgUid} is not numeric`);
      // runAsGroup, else the image's group when the image's user is used, else 0 (a numeric
      // runAsUser has no group of its own).
      const gid = sc.runAsGroup ?? (sc.runAsUser === undefined && imgGid !== undefined ? Number(imgGid) : 0);
      if (sc.runAsNonRoot && uid === 0) throw new Error(`container ${c.name}: runAsNonRoot and the image runs as root (the kubelet refuses to start it)`);
      args.push('--user', `${uid}:${gid}`);
      if (psc.fsGroup !== undefined) args.push('--group-add', String(psc.fsGroup));
      for (const g of psc.supplementalGroups ?? []) args.push('--group-add', String(g));
      if (sc.readOnlyRootFilesystem) args.push('--read-only');
      for (const cap of sc.capabilities?.drop ?? []) args.push('--cap-drop', cap);
      for (const cap of sc.capabilities?.add ?? []) args.push('--cap-add', cap);
      if (sc.allowPrivilegeEscalation === false) args.push('--security-opt', 'no-new-privileges');
      if (sc.privileged) throw new Error(`container ${c.name}: privileged`);
      if (sc.seccompProfile && sc.seccompProfile.type !== 'RuntimeDefault') throw new Error(`container ${c.name}: seccomp ${sc.seccompProfile.type}`);
      // stdin: true keeps the container's stdin open (the kubelet's -i).
      if (c.stdin) args.push('--interactive');
      if (c.tty) throw new Error(`container ${c.name}: tty is not supported by the test's pod runner`);
      if (c.resources?.limits?.memory) args.push('--memory', String(bytes(c.resources.limits.memory)));
      if (c.resources?.limits?.cpu) args.push('--cpus', String(cores(c.resources.limits.cpu)));
      for (const [k, v] of containerEnv(c, meta, podName)) args.push('--env', `${k}=${v}`);
      for (const m of c.volumeMounts ?? []) {
        const vol = volumes.get(m.name);
        const dir = hostDirs.get(m.name);
        if (vol) args.push('--mount', `type=volume,source=${vol},target=${m.mountPath}${m.readOnly ? ',readonly' : ''}`);
        else if (dir) args.push('--mount', `type=bind,source=${dir},target=${m.mountPath},readonly`);
        else throw new Error(`container ${c.name}: no volume ${m.name}`);
      }
      // command replaces the image's entrypoint and drops its CMD; args replace the CMD.
      const tail: string[] = [];
      if (c.command?.length) {
        args.push('--entrypoint', c.command[0]);
        tail.push(...c.command.slice(1), ...(c.args ?? []));
      } else {
        tail.push(...(c.args ?? []));
      }
      return { args: [...args, image, ...tail], user: `${uid}:${gid}` };
    };

    for (const c of spec.initContainers ?? []) {
      if (without.has(c.name)) continue;
      const name = `${podName}-${c.name}`;
      const { args, user } = await dockerArgs(c, name);
      await engine.docker(['create', ...args]);
      created.push(name);
      const started = await engine.docker(['start', '-a', name], { timeout: 120_000 }).catch((e) => e as { stdout: string; stderr: string; message: string });
      const code = Number((await engine.docker(['inspect', '-f', '{{.State.ExitCode}}', name])).stdout.trim());
      initLogs[c.name] = `${started.stdout}${started.stderr}`;
      if (code !== 0) throw new Error(`init container ${c.name} exited ${code}: ${initLogs[c.name]}`);
      containers.set(c.name, { name: c.name, id: name, user });
    }
    for (const c of spec.containers) {
      if (without.has(c.name)) continue;
      const name = `${podName}-${c.name}`;
      const { args, user } = await dockerArgs(c, name);
      await engine.docker(['run', '-d', ...args]);
      created.push(name);
      containers.set(c.name, { name: c.name, id: name, user });
    }
  } catch (e) {
    await remove();
    throw e;
  }

  const pod: Pod = {
    name: podName,
    pause: `${podName}-pause`,
    pausePid: Number((await engine.docker(['inspect', '-f', '{{.State.Pid}}', `${podName}-pause`])).stdout.trim()),
    initLogs,
    containers,
    volumes,
    async volumePath(volume) {
      const v = volumes.get(volume);
      if (!v) throw new Error(`no volume ${volume}`);
      return (await engine.docker(['volume', 'inspect', '-f', '{{.Mountpoint}}', v])).stdout.trim();
    },
    async pid(container) {
      const c = containers.get(container);
      if (!c) throw new Error(`no container ${container}`);
      return Number((await engine.docker(['inspect', '-f', '{{.State.Pid}}', c.id])).stdout.trim());
    },
    async get(port, path) {
      // Node's fetch, run by this Node inside the pod's network namespace.
      const script = `const r = await fetch(process.argv[1], { signal: AbortSignal.timeout(${bound(10_000)}) });
        const b = Buffer.from(await r.arrayBuffer());
        process.stdout.write(JSON.stringify({ status: r.status, type: r.headers.get('content-type') ?? '', body: b.toString('base64') }));`;
      const { stdout } = await exec('nsenter', ['-t', String(pod.pausePid), '-n', '--', process.execPath,
        '--input-type=module', '-e', script, `http://127.0.0.1:${port}${path}`], { timeout: 30_000 });
      const r = JSON.parse(stdout) as { status: number; type: string; body: string };
      return { status: r.status, type: r.type, body: Buffer.from(r.body, 'base64') };
    },
    async logs(container) {
      const c = containers.get(container);
      if (!c) throw new Error(`no container ${container}`);
      const { stdout, stderr } = await engine.docker(['logs', c.id]);
      return stdout + stderr;
    },
    remove,
  };
  return pod;
}

/** A process of the pod, as /proc/<pid>/status on the host shows it. */
export interface PodProcess {
  pid: number;
  name: string;
  uids: number[];
  gids: number[];
  capEff: bigint;
  capPrm: bigint;
  noNewPrivs: number;
  seccomp: number;
}

/** Every process in the pod's PID namespace (the pause container's). */
export async function podProcesses(pod: Pod): Promise<PodProcess[]> {
  const { readdir, readFile, readlink } = await import('node:fs/promises');
  const ns = await readlink(`/proc/${pod.pausePid}/ns/pid`);
  const out: PodProcess[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if ((await readlink(`/proc/${e}/ns/pid`)) !== ns) continue;
      const status = await readFile(`/proc/${e}/status`, 'utf8');
      const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
      out.push({
        pid: Number(e),
        name: field('Name'),
        uids: field('Uid').split(/\s+/).map(Number),
        gids: field('Gid').split(/\s+/).map(Number),
        capEff: BigInt(`0x${field('CapEff')}`),
        capPrm: BigInt(`0x${field('CapPrm')}`),
        noNewPrivs: Number(field('NoNewPrivs')),
        seccomp: Number(field('Seccomp')),
      });
    } catch { /* gone */ }
  }
  return out;
}

/** Whether a process's root file system is mounted read-only (its mountinfo's "/" line). */
export async function rootReadOnly(pid: number): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  const info = await readFile(`/proc/${pid}/mountinfo`, 'utf8');
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    if (f[4] === '/') return f[5]!.split(',').includes('ro');
  }
  throw new Error(`no / in /proc/${pid}/mountinfo`);
}

