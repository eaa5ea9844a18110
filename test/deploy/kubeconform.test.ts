// Every manifest this repository ships, validated by kubeconform in strict mode against the
// Kubernetes schemas (scripts/peers/kubeconform.sh generates them offline from the
// k8s.io/kubernetes module's OpenAPI spec, with additionalProperties: false): the kustomize
// base and overlays, the Helm chart with the values a user sets, and a chart of the user's
// own run through the post-renderer. Planted mistakes (a misspelt field, a wrong type, an
// unknown kind, a typo in a chart template) must fail it, and helm lint must pass the chart.
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { HELM_DEMO_ARGS, deployDir, exec, helmTemplate, kubeconform, kustomizeBuild, parseYamlDocs, peer, postRendered, root } from './helpers.ts';

const KUSTOMIZE = ['base', 'overlays/example', 'overlays/push'] as const;
const HELM: Record<string, string[]> = {
  'the demo values': HELM_DEMO_ARGS,
  'heaptap.libc=musl': [...HELM_DEMO_ARGS, '--set', 'heaptap.libc=musl', '--set', 'app.image=alpine:3.20'],
  'only app.image set': ['--set', 'app.image=registry.example.com/shop:1.2'],
  'every option changed': [...HELM_DEMO_ARGS, '--set', 'heaptap.sampleRate=65536', '--set', 'heaptap.scrape.profiles=false',
    '--set', 'heaptap.env[0].name=HEAPTAP_PYROSCOPE_URL', '--set', 'heaptap.env[0].value=http://alloy:9999',
    '--set', 'heaptap.port=7070', '--set', 'replicas=3', '--set', 'heaptap.image.repository=registry.example.com/heaptap'],
};

for (const dir of KUSTOMIZE) {
  test(`kubeconform -strict: deploy/${dir} is valid`, async (t) => {
    const yaml = await kustomizeBuild(dir);
    const r = await kubeconform(yaml);
    t.log(r.output.trim().split('\n').at(-1));
    t.true(r.ok, r.output);
    t.regex(r.output, new RegExp(`Valid: ${parseYamlDocs(yaml, dir).length}, Invalid: 0, Errors: 0, Skipped: 0`));
  });
}

for (const [what, args] of Object.entries(HELM)) {
  test(`kubeconform -strict: deploy/helm/heaptap rendered with ${what} is valid`, async (t) => {
    const yaml = await helmTemplate('heaptap-demo', args);
    const r = await kubeconform(yaml);
    t.true(r.ok, r.output);
    t.regex(r.output, /Invalid: 0, Errors: 0, Skipped: 0/);
    t.true(parseYamlDocs(yaml, what).some((d) => d.kind === 'Deployment'));
  });
}

test('kubeconform -strict: a chart of the plain demo Deployment through heaptap-post-renderer is valid', async (t) => {
  for (const args of [[], ['musl', 'registry.example.com/heaptap:0.1.0']]) {
    const yaml = await postRendered(args);
    const r = await kubeconform(yaml);
    t.true(r.ok, `${args}: ${r.output}`);
    t.regex(r.output, /Valid: 2, Invalid: 0, Errors: 0, Skipped: 0/);
  }
});

test('kubeconform rejects a misspelt field, a wrong type and a kind it has no schema for', async (t) => {
  const base = await kustomizeBuild('base');
  const misspelt = base.replace('readOnlyRootFilesystem: true', 'readOnlyRootFilesytem: true');
  t.not(misspelt, base);
  const r1 = await kubeconform(misspelt);
  t.false(r1.ok);
  t.regex(r1.output, /additional properties 'readOnlyRootFilesytem' not allowed/);

  const wrongType = base.replace(/containerPort: 6060/, 'containerPort: "6060"');
  t.not(wrongType, base);
  const r2 = await kubeconform(wrongType);
  t.false(r2.ok);
  t.regex(r2.output, /containerPort': got string, want integer/);

  const unknown = `${base}---\napiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: x\n`;
  const r3 = await kubeconform(unknown);
  t.false(r3.ok);
  t.regex(r3.output, /Deploymnet/);
});

test('kubeconform rejects a typo planted in the chart\'s template', async (t) => {
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'chart-typo-'));
  try {
    await cp(join(deployDir, 'helm/heaptap'), dir, { recursive: true });
    const tpl = join(dir, 'templates/deployment.yaml');
    const text = await readFile(tpl, 'utf8');
    await writeFile(tpl, text.replace('          livenessProbe:', '          livenesProbe:'));
    const yaml = await helmTemplate('heaptap-demo', HELM_DEMO_ARGS, dir);
    const r = await kubeconform(yaml);
    t.false(r.ok);
    t.regex(r.output, /additional properties 'livenesProbe' not allowed/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('helm lint --strict passes the chart, and a libc other than glibc or musl is refused', async (t) => {
  const helm = await peer('helm');
  const chart = join(deployDir, 'helm/heaptap');
  const { stdout } = await exec(helm, ['lint', '--strict', chart, ...HELM_DEMO_ARGS]);
  t.regex(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  const bad = await exec(helm, ['template', 'x', chart, '--set', 'app.image=a', '--set', 'heaptap.libc=uclibc']).then(() => '', (e) => String(e.stderr));
  t.regex(bad, /heaptap\/libc.*glibc.*musl/);
  const noImage = await exec(helm, ['template', 'x', chart]).then(() => '', (e) => String(e.stderr));
  t.regex(noImage, /at '\/app\/image': minLength/, 'the application\'s image is required');
});
