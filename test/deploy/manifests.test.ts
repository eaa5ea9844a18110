// deploy/: the kustomize output of the base and the overlays, rendered by a real kustomize
// (scripts/peers/kustomize.sh), validated against the Kubernetes schemas of the
// kubernetes-models package and typechecked against its types (so an unknown or misspelt
// field fails too), and checked for what heaptap needs of the pod: the library copied into
// a shared memory volume, preloaded from there, one region directory on both sides, the
// agent's port where the annotations say, and the user arrangement of docs/kubernetes.md.
import test from 'ava';

import {
  HELM_DEMO_ARGS,
  IMAGE_UID,
  helmTemplate,
  kustomizeBuild,
  kustomizeFiles,
  postRendered,
  k8sModel,
  parseYamlDocs,
  typecheck,
  validateK8s,
  type Doc,
} from './helpers.ts';

/** Everything that renders a pod with heaptap: the kustomize base and overlays (heaptap
 * added by deploy/components/heaptap), the Helm chart, and a chart of the user's own through
 * the post-renderer (the same component). */
const RENDERS: Record<string, () => Promise<string>> = {
  base: () => kustomizeBuild('base'),
  'overlays/example': () => kustomizeBuild('overlays/example'),
  'overlays/push': () => kustomizeBuild('overlays/push'),
  'helm/heaptap': () => helmTemplate('heaptap-demo', HELM_DEMO_ARGS),
  'helm/heaptap-post-renderer': () => postRendered(),
};
const TARGETS = Object.keys(RENDERS);

const rendered = new Map<string, Promise<string>>();
async function render(dir: string): Promise<Doc[]> {
  let p = rendered.get(dir);
  if (!p) rendered.set(dir, (p = RENDERS[dir]!()));
  return parseYamlDocs(await p, `deploy/${dir}`);
}

/** The rendered Deployment and the containers heaptap's setup consists of. */
async function pod(dir: string) {
  const docs = await render(dir);
  const deployments = docs.filter((d) => d.kind === 'Deployment');
  if (deployments.length !== 1) throw new Error(`deploy/${dir}: expected one Deployment, got ${deployments.length}`);
  const deployment = deployments[0]!;
  const template = deployment.spec.template;
  const spec = template.spec;
  const byName = (list: Doc[] | undefined, name: string) => {
    const c = (list ?? []).find((x) => x.name === name);
    if (!c) throw new Error(`deploy/${dir}: no container ${name}`);
    return c;
  };
  return {
    docs,
    deployment,
    template,
    spec,
    init: byName(spec.initContainers, 'heaptap-init'),
    app: byName(spec.containers, 'app'),
    agent: byName(spec.containers, 'heaptap'),
    all: [...(spec.initContainers ?? []), ...spec.containers] as Doc[],
  };
}

function env(c: Doc, name: string): Doc | undefined {
  return (c.env ?? []).find((e: Doc) => e.name === name);
}

function mountOf(c: Doc, volume: string): string | undefined {
  return (c.volumeMounts ?? []).find((m: Doc) => m.name === volume)?.mountPath;
}

/** The volume a path lies in, for a container: [volume name, path inside the volume]. */
function volumeAt(c: Doc, path: string): [string, string] | undefined {
  let best: [string, string] | undefined;
  for (const m of c.volumeMounts ?? []) {
    const mp = m.mountPath.replace(/\/$/, '');
    if (path === mp || path.startsWith(`${mp}/`)) {
      if (!best || mp.length > best[1].length) best = [m.name, mp];
    }
  }
  return best && [best[0], path.slice(best[1].length).replace(/^\//, '')];
}

for (const dir of TARGETS) {
  test(`deploy/${dir}: every rendered resource validates against its Kubernetes schema`, async (t) => {
    const docs = await render(dir);
    t.true(docs.length >= 2);
    for (const doc of docs) {
      await t.notThrowsAsync(validateK8s(doc), `${doc.kind} ${doc.metadata?.name}`);
    }
  });

  test(`deploy/${dir}: every rendered resource has only fields its Kubernetes type knows`, async (t) => {
    const { files, diagnostics } = await typecheckAll();
    t.true(files.some((f) => f.startsWith(`${slug(dir)}-`)));
    t.deepEqual(diagnostics.filter((d) => d.startsWith(`${slug(dir)}-`)), []);
  });
}

const slug = (dir: string) => dir.replace(/[^\w]/g, '-');

let typechecked: Promise<{ files: string[]; diagnostics: string[] }> | undefined;
/** One TypeScript program over every rendered resource (each as an object literal typed
 * with its kubernetes-models interface) and a deliberately misspelt one. */
function typecheckAll() {
  typechecked ??= (async () => {
    const files = [];
    for (const dir of TARGETS) {
      for (const [i, doc] of (await render(dir)).entries()) {
        const { module, iface } = k8sModel(doc.apiVersion, doc.kind);
        files.push({
          name: `${slug(dir)}-doc${i}.ts`,
          source: `import type { ${iface} } from '${module}';\n` +
            `// ${doc.kind} ${doc.metadata?.name}\nexport const doc: ${iface} = ${JSON.stringify(doc, null, 2)};\n`,
        });
      }
    }
    const typo = structuredClone((await pod('base')).deployment);
    typo.spec.template.spec.containers[0].imagePullPolcy = 'Always';
    files.push({
      name: 'typo.ts',
      source: `import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';\n` +
        `export const doc: IDeployment = ${JSON.stringify(typo, null, 2)};\n`,
    });
    const out = await typecheck(files);
    return { files: files.map((f) => f.name), diagnostics: out ? out.split('\n') : [] };
  })();
  return typechecked;
}

test('the manifest checks reject a misspelt field and a wrong type', async (t) => {
  const { diagnostics } = await typecheckAll();
  t.true(diagnostics.some((d) => d.startsWith('typo.ts') && d.includes('imagePullPolcy')));
  const wrong = structuredClone((await pod('base')).deployment);
  wrong.spec.template.spec.containers.find((c: Doc) => c.name === 'heaptap').ports[0].containerPort = 'http';
  await t.throwsAsync(validateK8s(wrong), { message: /containerPort/ });
});

for (const dir of TARGETS) {
  test(`deploy/${dir}: the init container copies libheaptap.so into the memory volume the app preloads it from`, async (t) => {
    const { spec, init, app } = await pod(dir);
    const [script, target, ...rest] = init.command;
    t.is(script, '/opt/heaptap/bin/heaptap-init');
    t.deepEqual(rest, []);
    const initVolume = volumeAt(init, target);
    t.truthy(initVolume, 'heaptap-init writes into a mounted volume');
    const [volumeName, sub] = initVolume!;
    t.is(sub, '', 'heaptap-init is given the volume root');
    const volume = spec.volumes.find((v: Doc) => v.name === volumeName);
    t.is(volume?.emptyDir?.medium, 'Memory');
    t.truthy(volume?.emptyDir?.sizeLimit, 'the memory volume has a sizeLimit');

    const preload = env(app, 'LD_PRELOAD')?.value;
    t.truthy(preload);
    t.deepEqual(volumeAt(app, preload), [volumeName, 'libheaptap.so'], 'LD_PRELOAD names the file heaptap-init writes');
  });

  test(`deploy/${dir}: the app and the agent share one region directory, the one heaptap-init creates`, async (t) => {
    const { init, app, agent } = await pod(dir);
    const appDir = env(app, 'HEAPTAP_DIR')?.value;
    const agentDir = env(agent, 'HEAPTAP_DIR')?.value;
    t.truthy(appDir);
    t.truthy(agentDir);
    const [volumeName] = volumeAt(init, init.command[1])!;
    t.deepEqual(volumeAt(app, appDir), [volumeName, 'regions']);
    t.deepEqual(volumeAt(agent, agentDir), [volumeName, 'regions']);
    t.falsy(agent.volumeMounts.find((m: Doc) => m.name === volumeName).readOnly,
      'the agent writes the control area and deletes regions after retention');
  });

  test(`deploy/${dir}: HEAPTAP_SERVICE_NAME is set, or comes from a label the pod has`, async (t) => {
    const { template, app } = await pod(dir);
    const e = env(app, 'HEAPTAP_SERVICE_NAME');
    if (e?.value !== undefined) {
      t.regex(e.value, /^[\w.-]+$/);
      t.is(e.value, template.metadata.annotations['profiles.grafana.com/service_name'], 'the same name in Pyroscope');
      return;
    }
    const path: string | undefined = e?.valueFrom?.fieldRef?.fieldPath;
    const m = /^metadata\.labels\['([^']+)'\]$/.exec(path ?? '');
    t.truthy(m, `fieldPath ${path}`);
    t.truthy(template.metadata.labels[m![1]!], `the pod has the label ${m![1]}`);
  });

  test(`deploy/${dir}: the agent listens on its named port, with probes and annotations pointing there`, async (t) => {
    const { template, spec, agent } = await pod(dir);
    t.true(spec.shareProcessNamespace, 'the agent sees the app\'s /proc/<pid>');
    t.deepEqual(agent.args, ['agent']);
    t.is(agent.ports.length, 1);
    const port = agent.ports[0];
    t.true(typeof port.name === 'string' && port.name.length <= 15);
    t.is(port.protocol ?? 'TCP', 'TCP');
    t.is(env(agent, 'HEAPTAP_LISTEN')?.value, `0.0.0.0:${port.containerPort}`);
    // Beyond loopback the agent refuses to start without a token or the explicit switch.
    t.true(!!(env(agent, 'HEAPTAP_TOKEN')?.value || env(agent, 'HEAPTAP_TOKEN_FILE')?.value) ||
      env(agent, 'HEAPTAP_INSECURE_NO_TOKEN')?.value === 'true', 'a token or HEAPTAP_INSECURE_NO_TOKEN=true');
    t.is(agent.readinessProbe.httpGet.path, '/readyz');
    t.is(agent.livenessProbe.httpGet.path, '/healthz');
    for (const probe of [agent.readinessProbe, agent.livenessProbe]) {
      t.true(probe.httpGet.port === port.name || probe.httpGet.port === port.containerPort);
    }

    const a = template.metadata.annotations;
    t.is(a['profiles.grafana.com/memory.port_name'], port.name);
    t.truthy(a['profiles.grafana.com/service_name']);
    t.is(a['prometheus.io/port'], String(port.containerPort));
    t.is(a['prometheus.io/path'], '/metrics');
    for (const k of ['profiles.grafana.com/memory.scrape', 'prometheus.io/scrape']) t.regex(a[k], /^(true|false)$/);
    if (a['profiles.grafana.com/memory.scrape'] !== 'true') {
      t.truthy(env(agent, 'HEAPTAP_PYROSCOPE_URL')?.value || env(agent, 'HEAPTAP_OTLP_PROFILES_URL')?.value,
        'profiles that are not scraped are pushed');
    }
    if (a['prometheus.io/scrape'] !== 'true') {
      t.truthy(env(agent, 'OTEL_EXPORTER_OTLP_ENDPOINT')?.value, 'metrics that are not scraped are pushed');
    }
  });

  test(`deploy/${dir}: every container runs as the image's non-root user, with nothing it does not need`, async (t) => {
    const { spec, all, app, agent } = await pod(dir);
    const psc = spec.securityContext ?? {};
    t.false(!!spec.hostPID || !!spec.hostIPC || !!spec.hostNetwork);
    t.is(spec.automountServiceAccountToken, false);
    for (const c of all) {
      const sc = { ...psc, ...(c.securityContext ?? {}) };
      t.is(sc.runAsNonRoot, true, `${c.name}: runAsNonRoot`);
      t.is(sc.runAsUser, IMAGE_UID, `${c.name}: runAsUser`);
      t.is(sc.runAsGroup, IMAGE_UID, `${c.name}: runAsGroup`);
      t.is(sc.readOnlyRootFilesystem, true, `${c.name}: read-only root filesystem`);
      t.is(sc.allowPrivilegeEscalation, false, `${c.name}: no privilege escalation`);
      t.falsy(sc.privileged, `${c.name}: not privileged`);
      t.deepEqual(sc.capabilities, { drop: ['ALL'] }, `${c.name}: every capability dropped, none added`);
      t.is(sc.seccompProfile?.type, 'RuntimeDefault', `${c.name}: seccomp`);
      for (const kind of ['requests', 'limits']) {
        t.truthy(c.resources?.[kind]?.cpu && c.resources?.[kind]?.memory, `${c.name}: cpu and memory ${kind}`);
      }
    }
    // The agent reads /proc/<pid>/root of the app (ptrace-read access: the same uid, no
    // CAP_SYS_PTRACE) and the app's 0600 region files: the same user on both sides.
    const uid = (c: Doc) => c.securityContext?.runAsUser ?? psc.runAsUser;
    t.is(uid(agent), uid(app));
    t.is(env(app, 'HEAPTAP_FILE_MODE'), undefined, 'region files stay 0600, readable by the same user only');
    // The restricted Pod Security Standard's volume types.
    for (const v of spec.volumes) {
      const types = Object.keys(v).filter((k) => k !== 'name');
      t.true(types.every((k) => ['emptyDir', 'configMap', 'secret', 'projected', 'downwardAPI', 'ephemeral', 'persistentVolumeClaim', 'csi'].includes(k)), `volume ${v.name}: ${types}`);
    }
  });

  test(`deploy/${dir}: the init container and the agent run the same heaptap image, and referenced ConfigMaps exist`, async (t) => {
    const { docs, spec, init, agent } = await pod(dir);
    t.is(init.image, agent.image);
    t.regex(agent.image, /(^|\/)heaptap:[\w.-]+$/);
    const configMaps = new Set(docs.filter((d) => d.kind === 'ConfigMap').map((d) => d.metadata.name));
    for (const v of spec.volumes) if (v.configMap) t.true(configMaps.has(v.configMap.name), v.configMap.name);
  });
}

test('deploy/overlays/example: everything lands in its namespace, which enforces the restricted Pod Security Standard', async (t) => {
  const docs = await render('overlays/example');
  const ns = docs.find((d) => d.kind === 'Namespace');
  t.is(ns?.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');
  for (const d of docs) if (d.kind !== 'Namespace') t.is(d.metadata.namespace, ns!.metadata.name, `${d.kind} ${d.metadata.name}`);
  const { agent } = await pod('overlays/example');
  t.regex(agent.image, /^registry\.example\.com\/heaptap:/);
});

// ---- deploy/components/heaptap on a Deployment of a user's ----

const USER_DEPLOYMENTS = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
      initContainers:
        - name: migrate
          image: shop:1
          args: [migrate]
      volumes:
        - name: data
          emptyDir: {}
      containers:
        - name: web
          image: shop:1
          env:
            - {name: PORT, value: "8080"}
            - {name: PRELOAD_HINT, value: keep}
          volumeMounts:
            - {name: data, mountPath: /data}
        - name: proxy
          image: envoy:1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
spec:
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      containers:
        - name: worker
          image: worker:1
`;

async function withComponent(component: string): Promise<Doc[]> {
  return parseYamlDocs(await kustomizeFiles({
    'deployments.yaml': USER_DEPLOYMENTS,
    'kustomization.yaml': `resources: [deployments.yaml]\ncomponents: [../../deploy/components/${component}]\n` +
      'images:\n  - name: heaptap\n    newName: registry.example.com/heaptap\n    newTag: 0.1.0\n',
  }), component);
}

test('deploy/components/heaptap adds heaptap to every Deployment, preloading into the first container and keeping what was there', async (t) => {
  const docs = await withComponent('heaptap');
  t.deepEqual(docs.map((d) => `${d.kind}/${d.metadata.name}`), ['Deployment/shop', 'Deployment/worker'], 'no other resource (the settings are local config)');
  const [shop, worker] = docs.map((d) => d.spec.template.spec) as [Doc, Doc];
  // The application's own env and mounts first, heaptap's appended.
  const web = shop.containers[0];
  t.deepEqual(web.env.map((e: Doc) => e.name), ['PORT', 'PRELOAD_HINT', 'LD_PRELOAD', 'HEAPTAP_DIR']);
  t.is(env(web, 'LD_PRELOAD')!.value, '/heaptap/libheaptap.so');
  t.is(env(web, 'PRELOAD_HINT')!.value, 'keep');
  t.deepEqual(web.volumeMounts, [{ name: 'data', mountPath: '/data' }, { name: 'heaptap', mountPath: '/heaptap' }]);
  // Only the first container preloads; the agent comes last.
  t.deepEqual(shop.containers.map((c: Doc) => c.name), ['web', 'proxy', 'heaptap']);
  t.is(shop.containers[1].env, undefined);
  t.is(env(shop.containers[2], 'LD_PRELOAD'), undefined, 'the agent does not profile itself');
  t.is(env(shop.containers[2], 'HEAPTAP_DIR')!.value, env(web, 'HEAPTAP_DIR')!.value);
  // heaptap-init runs before the user's init containers; the user's volumes stay.
  t.deepEqual(shop.initContainers.map((c: Doc) => c.name), ['heaptap-init', 'migrate']);
  t.deepEqual(shop.volumes.map((v: Doc) => v.name).sort(), ['data', 'heaptap', 'heaptap-tmp']);
  t.true(shop.shareProcessNamespace);
  // heaptap's containers set no user: they run as the pod's (1000 here), the application's.
  for (const c of [shop.initContainers[0], shop.containers[2]]) {
    t.is(c.securityContext.runAsUser, undefined);
    t.is(c.image, 'registry.example.com/heaptap:0.1.0');
  }
  t.deepEqual(shop.securityContext, { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000 });
  // The second Deployment too, whose container had no env or mounts at all.
  t.deepEqual(worker.containers.map((c: Doc) => c.name), ['worker', 'heaptap']);
  t.deepEqual(worker.containers[0].env.map((e: Doc) => e.name), ['LD_PRELOAD', 'HEAPTAP_DIR']);
  t.deepEqual(worker.containers[0].volumeMounts, [{ name: 'heaptap', mountPath: '/heaptap' }]);
});

test('deploy/components/heaptap-musl preloads the musl build, and is otherwise the same', async (t) => {
  const glibc = await withComponent('heaptap');
  const musl = await withComponent('heaptap-musl');
  for (const [i, d] of musl.entries()) {
    const app = d.spec.template.spec.containers[0];
    t.is(env(app, 'LD_PRELOAD')!.value, '/heaptap/libheaptap-musl.so');
    const same = structuredClone(d);
    env(same.spec.template.spec.containers[0], 'LD_PRELOAD')!.value = '/heaptap/libheaptap.so';
    t.deepEqual(same, glibc[i]);
  }
});

test('deploy/helm/heaptap: heaptap.libc chooses the library the application preloads', async (t) => {
  for (const [libc, file] of [['glibc', 'libheaptap.so'], ['musl', 'libheaptap-musl.so']]) {
    const docs = parseYamlDocs(await helmTemplate('shop', ['--set', 'app.image=shop:1', '--set', `heaptap.libc=${libc}`]), libc!);
    const spec = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec;
    t.is(env(spec.containers[0], 'LD_PRELOAD')!.value, `/heaptap/${file}`);
    t.deepEqual(spec.initContainers[0].command, ['/opt/heaptap/bin/heaptap-init', '/heaptap']);
  }
});
