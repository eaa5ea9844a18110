// Shared by the tests of the image and deploy/: paths, the real peer tools (kustomize,
// promtool, the OpenTelemetry Collector; scripts/peers/*.sh build them once into
// ~/.cache/heaptap), YAML loading, a TypeScript typecheck of generated files, and the
// metric names the agent exposes.
import { mkdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import ts from 'typescript';
import { parseAllDocuments } from 'yaml';

import { execGroup } from '../helpers/procs.ts';

/** execFile's promise form, in a process group that a timeout (default 5 min) kills */
export const exec = execGroup;
export const root = resolve(import.meta.dirname, '../..');
export const deployDir = join(root, 'deploy');

/** The uid and gid of the image's user (Dockerfile `USER`), which the manifests must use. */
export const IMAGE_UID = 10001;

/** Metric names `heaptap agent` serves on /metrics (its contract; the agent's own tests
 * check /metrics itself). Dashboards and rules may name only these. */
export const AGENT_METRICS = new Set([
  'heaptap_heap_inuse_bytes',
  'heaptap_heap_allocated_bytes_total',
  'heaptap_heap_peak_inuse_bytes',
  'heaptap_process_resident_memory_bytes',
  'heaptap_unattributed_resident_bytes',
  'heaptap_site_inuse_bytes',
  'heaptap_samples_dropped_total',
]);

/** Labels those metrics carry (pid, exe, service; function on sites; reason on drops),
 * plus the target labels deploy/configs/prometheus/prometheus.yml adds. */
export const METRIC_LABELS = new Set([
  'pid', 'exe', 'service', 'function', 'reason',
  'namespace', 'pod', 'app', 'job', 'instance',
]);

/** Runs scripts/peers/<name>.sh (builds the tool the first time, a no-op later) and
 * returns the path it prints. */
export async function peer(name: 'kustomize' | 'promtool' | 'otelcol' | 'helm'): Promise<string> {
  const script = join(root, 'scripts/peers', `${name}.sh`);
  try {
    const { stdout } = await exec('bash', [script], { maxBuffer: 1 << 20, timeout: 15 * 60_000 });
    const path = stdout.trim().split('\n').at(-1) ?? '';
    if (!path) throw new Error('it printed no path');
    return path;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`scripts/peers/${name}.sh failed (run \`npm run peers\` to see why): ${err.message}\n${err.stderr ?? ''}`);
  }
}

const renders = new Map<string, Promise<string>>();
/** `kustomize build deploy/<dir>`, once per directory and process. */
export function kustomizeBuild(dir: string): Promise<string> {
  let p = renders.get(dir);
  if (!p) {
    p = (async () => {
      const kustomize = await peer('kustomize');
      const { stdout } = await exec(kustomize, ['build', join(deployDir, dir)], { maxBuffer: 16 << 20 });
      return stdout;
    })();
    renders.set(dir, p);
  }
  return p;
}

/** `helm template <release> deploy/helm/heaptap <args>` (or another chart), once per
 * argument list and process. */
const helmRenders = new Map<string, Promise<string>>();
export function helmTemplate(release: string, args: readonly string[] = [], chart = join(deployDir, 'helm/heaptap')): Promise<string> {
  const key = JSON.stringify([release, chart, args]);
  let p = helmRenders.get(key);
  if (!p) {
    p = (async () => {
      const helm = await peer('helm');
      const { stdout } = await exec(helm, ['template', release, chart, ...args], { maxBuffer: 16 << 20, cwd: root });
      return stdout;
    })();
    helmRenders.set(key, p);
  }
  return p;
}

/** The demo of deploy/base as a release of the chart (deploy/helm/demo-values.yaml). */
export const HELM_DEMO_ARGS = ['-f', join(deployDir, 'helm/demo-values.yaml'), '--set-file', `app.files.app\\.py=${join(deployDir, 'base/app.py')}`];

/** A chart of the demo's plain Deployment (deploy/base/deployment.yaml, no heaptap in it)
 * and its ConfigMap, rendered through deploy/helm/heaptap-post-renderer with these arguments: what a user's
 * existing chart gets. */
export async function postRendered(args: readonly string[] = []): Promise<string> {
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'chart-'));
  try {
    await mkdir(join(dir, 'templates'));
    await writeFile(join(dir, 'Chart.yaml'), 'apiVersion: v2\nname: heaptap-demo\nversion: 1.0.0\n');
    await writeFile(join(dir, 'templates/deployment.yaml'), await readFile(join(deployDir, 'base/deployment.yaml')));
    const app = await readFile(join(deployDir, 'base/app.py'), 'utf8');
    if (app.includes('{{')) throw new Error('deploy/base/app.py has {{, which Helm would take for a template');
    await writeFile(join(dir, 'templates/configmap.yaml'), JSON.stringify({
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'heaptap-demo-app' }, data: { 'app.py': app },
    }));
    const kustomize = await peer('kustomize');
    const helm = await peer('helm');
    const postArgs = args.flatMap((a) => ['--post-renderer-args', a]);
    const { stdout } = await exec(helm, ['template', 'heaptap-demo', dir, '--post-renderer', join(deployDir, 'helm/heaptap-post-renderer'), ...postArgs], {
      maxBuffer: 16 << 20, env: { ...process.env, KUSTOMIZE: kustomize },
    });
    return stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `kustomize build` of a kustomization written to a temporary directory under build/,
 * given as file name -> text: what a user's own kustomization over deploy/ renders (paths
 * in it are relative to build/<tmp>/, so deploy/ is ../../deploy). */
export async function kustomizeFiles(files: Record<string, string>): Promise<string> {
  await mkdir(join(root, 'build'), { recursive: true });
  const dir = await mkdtemp(join(root, 'build', 'kustomization-'));
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
    const kustomize = await peer('kustomize');
    const { stdout } = await exec(kustomize, ['build', dir], { maxBuffer: 16 << 20 });
    return stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface Kubeconform { bin: string; schemas: string; kubernetes: string }
let kc: Promise<Kubeconform> | undefined;
/** scripts/peers/kubeconform.sh: the binary and the offline, strict schemas. */
export function kubeconformPeer(): Promise<Kubeconform> {
  kc ??= (async () => {
    const script = join(root, 'scripts/peers/kubeconform.sh');
    try {
      const { stdout } = await exec('bash', [script], { maxBuffer: 1 << 20, timeout: 15 * 60_000 });
      const get = (k: string) => new RegExp(`^${k}=(.+)$`, 'm').exec(stdout)?.[1] ?? '';
      const out = { bin: get('kubeconform'), schemas: get('schemas'), kubernetes: get('kubernetes') };
      if (!out.bin || !out.schemas) throw new Error(`it printed no paths: ${stdout}`);
      return out;
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(`scripts/peers/kubeconform.sh failed (run \`npm run peers\` to see why): ${err.message}\n${err.stderr ?? ''}`);
    }
  })();
  return kc;
}

/** kubeconform -strict over a YAML stream: { ok, output } (ok false on any invalid or
 * unknown resource: a kind without a schema is an error, not skipped). */
export async function kubeconform(yaml: string): Promise<{ ok: boolean; output: string }> {
  const { bin, schemas, kubernetes } = await kubeconformPeer();
  try {
    const { stdout, stderr } = await exec(bin, ['-strict', '-summary', '-output', 'text', '-kubernetes-version', kubernetes,
      '-schema-location', `${schemas}/{{ .ResourceKind }}{{ .KindSuffix }}.json`, '-'], { input: yaml });
    return { ok: true, output: stdout + stderr };
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    if (err.stdout === undefined) throw e;
    return { ok: false, output: `${err.stdout}${err.stderr ?? ''}` };
  }
}

export type Doc = Record<string, any>;

/** Every document of a YAML stream; a syntax error or warning fails. */
export function parseYamlDocs(text: string, what: string): Doc[] {
  const docs = parseAllDocuments(text, { strict: true, prettyErrors: true, uniqueKeys: true });
  const out: Doc[] = [];
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    const problems = [...d.errors, ...d.warnings];
    if (problems.length > 0) throw new Error(`${what}: ${problems.map((p) => p.message).join('; ')}`);
    const value = d.toJS({ maxAliasCount: 0 });
    if (value !== null && value !== undefined) out.push(value as Doc);
  }
  return out;
}

/** The kubernetes-models module and interface of a resource: apps/v1 Deployment ->
 * kubernetes-models/apps/v1/Deployment, IDeployment; v1 Namespace -> kubernetes-models/v1/Namespace. */
export function k8sModel(apiVersion: string, kind: string): { module: string; iface: string } {
  return { module: `kubernetes-models/${apiVersion}/${kind}`, iface: `I${kind}` };
}

/** Validates a resource with kubernetes-models (its JSON schema, compiled with ajv);
 * throws with the schema's messages. */
export async function validateK8s(doc: Doc): Promise<void> {
  const { module } = k8sModel(doc.apiVersion, doc.kind);
  const mod = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[doc.kind];
  if (!Model) throw new Error(`kubernetes-models has no ${doc.apiVersion} ${doc.kind}`);
  new Model(doc).validate();
}

export interface TypecheckFile {
  name: string;
  /** TypeScript source */
  source: string;
}

/** Typechecks generated TypeScript files (written to a temporary directory under build/,
 * where they resolve this repository's node_modules) and returns the diagnostics as text,
 * one per line, '' when there are none. Object literals typed with an interface get
 * TypeScript's excess property check: a field the type does not have is an error. */
export async function typecheck(files: TypecheckFile[]): Promise<string> {
  const parent = join(root, 'build');
  mkdirSync(parent, { recursive: true });
  const dir = await mkdtemp(join(parent, 'deploy-typecheck-'));
  try {
    const paths: string[] = [];
    for (const f of files) {
      const path = join(dir, f.name);
      await writeFile(path, f.source);
      paths.push(path);
    }
    const program = ts.createProgram(paths, {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2023,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      skipLibCheck: true,
      types: [],
    });
    const diagnostics = ts.getPreEmitDiagnostics(program);
    return diagnostics
      .map((d) => {
        const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
        if (!d.file || d.start === undefined) return text;
        const { line } = d.file.getLineAndCharacterOfPosition(d.start);
        const lineText = d.file.text.split('\n')[line]?.trim() ?? '';
        return `${d.file.fileName.slice(dir.length + 1)}:${line + 1}: ${text} [${lineText.slice(0, 120)}]`;
      })
      .join('\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The metric names a PromQL expression reads. Strings, label matchers, ranges, grouping
 * clauses and function calls are removed first; what is left that looks like a name and
 * is not a keyword is a metric. */
export function promqlMetricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const keywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right',
    'and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan']);
  const names: string[] = [];
  // Numbers (1e6, 0.5, 5m after offset) are consumed whole, so their letters are no names.
  for (const m of s.matchAll(/(\d[\w.]*)|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, number, name, call] = m;
    if (number || call || keywords.has(name!.toLowerCase())) continue;
    names.push(name!);
  }
  return names;
}

/** The label names a PromQL expression uses in matchers and grouping clauses. */
export function promqlLabelNames(expr: string): string[] {
  const s = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const labels: string[] = [];
  for (const m of s.matchAll(/\{([^}]*)\}/g)) {
    for (const lm of m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) labels.push(lm[1]!);
  }
  for (const m of s.matchAll(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g)) {
    for (const l of m[1]!.split(',').map((x) => x.trim()).filter(Boolean)) labels.push(l);
  }
  return labels;
}
