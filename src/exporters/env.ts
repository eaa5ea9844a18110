// How the exporters read their environment: the OTEL_* variables the OpenTelemetry spec
// defines (endpoints, export interval) and the Kubernetes downward-API variables heaptap
// documents for resource attributes. Pure functions of an env object, so tests pass one.
//
// The Node SDK does not read the resource variables by itself (WIRE.md): otelResource()
// merges, from lowest to highest precedence,
//   the SDK's defaultResource()              (telemetry.sdk.*)
//   service.name = "heaptap"                 (heaptap's default, not unknown_service:node)
//   k8s.* from K8S_* / POD_* variables       (the sidecar's own pod, see K8S_ENV)
//   OTEL_RESOURCE_ATTRIBUTES                 (the SDK's detectors)
//   OTEL_SERVICE_NAME                        (the SDK's detectors)
//   an explicit serviceName option           (a flag beats the environment)
import {
  defaultResource,
  detectResources,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
  serviceNameEnvDetector,
  type Resource,
} from '@opentelemetry/resources';

export type Env = Readonly<Record<string, string | undefined>>;

/** OTLP/HTTP default (spec): the local Collector. */
export const OTLP_DEFAULT_BASE = 'http://localhost:4318';
export const OTLP_METRICS_PATH = '/v1/metrics';
export const OTLP_PROFILES_PATH = '/v1development/profiles';

/** Kubernetes resource attributes and the downward-API variables they are read from, first
 * set wins. The K8S_ names follow the attribute; POD_NAME, POD_NAMESPACE, NODE_NAME and
 * CONTAINER_NAME are the names most manifests already use. */
export const K8S_ENV: ReadonlyArray<readonly [attribute: string, variables: readonly string[]]> = [
  ['k8s.pod.name', ['K8S_POD_NAME', 'POD_NAME']],
  ['k8s.namespace.name', ['K8S_NAMESPACE_NAME', 'K8S_POD_NAMESPACE', 'POD_NAMESPACE']],
  ['k8s.container.name', ['K8S_CONTAINER_NAME', 'CONTAINER_NAME']],
  ['k8s.pod.uid', ['K8S_POD_UID', 'POD_UID']],
  ['k8s.node.name', ['K8S_NODE_NAME', 'NODE_NAME']],
];

export const DEFAULT_SERVICE_NAME = 'heaptap';

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t ? t : undefined;
}

/** The k8s.* attributes the environment gives (absent variables give no attribute). */
export function k8sAttributes(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [attr, vars] of K8S_ENV) {
    for (const v of vars) {
      const value = nonEmpty(env[v]);
      if (value !== undefined) {
        out[attr] = value;
        break;
      }
    }
  }
  return out;
}

/** Appends a signal path to a base URL as the spec says for OTEL_EXPORTER_OTLP_ENDPOINT:
 * `http://c:4318` and `http://c:4318/` both give `http://c:4318/v1/metrics`; a base with a
 * path keeps it (`http://gw/otlp` gives `http://gw/otlp/v1/metrics`). */
export function appendSignalPath(base: string, path: string): string {
  return base.replace(/\/+$/, '') + path;
}

export interface EndpointChoice {
  url: string;
  /** where it came from: 'option', the variable's name, or 'default' */
  from: string;
}

/** The OTLP/HTTP endpoint of one signal, by the spec's precedence:
 *   explicit (a flag): used as given, except that a URL with no path (or '/') gets the
 *     signal path, so `--otlp-profiles-url http://c:4318` works
 *   OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT: used as given
 *   OTEL_EXPORTER_OTLP_ENDPOINT: a base URL; the signal path is appended
 *   default http://localhost:4318 + signal path
 * Throws on a value that is not an http(s) URL, naming its source. */
export function otlpEndpoint(signal: 'metrics' | 'profiles', env: Env, explicit?: string): EndpointChoice {
  const path = signal === 'metrics' ? OTLP_METRICS_PATH : OTLP_PROFILES_PATH;
  const specific = `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`;
  let choice: EndpointChoice;
  const given = nonEmpty(explicit);
  if (given !== undefined) {
    const u = checkUrl(given, 'option');
    choice = { url: u.pathname === '/' ? appendSignalPath(given, path) : given, from: 'option' };
  } else if (nonEmpty(env[specific]) !== undefined) {
    choice = { url: nonEmpty(env[specific])!, from: specific };
  } else if (nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT) !== undefined) {
    choice = { url: appendSignalPath(nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)!, path), from: 'OTEL_EXPORTER_OTLP_ENDPOINT' };
  } else {
    choice = { url: OTLP_DEFAULT_BASE + path, from: 'default' };
  }
  checkUrl(choice.url, choice.from);
  return choice;
}

function checkUrl(s: string, from: string): URL {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new Error(`invalid OTLP endpoint '${s}' (from ${from}): not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new Error(`invalid OTLP endpoint '${s}' (from ${from}): must be http or https`);
  }
  return u;
}

/** A duration variable in milliseconds (OTEL_METRIC_EXPORT_INTERVAL and _TIMEOUT are
 * integers in ms). Unset, empty or invalid gives the default; invalid also calls warn. */
export function envMillis(env: Env, name: string, def: number, warn?: (msg: string) => void): number {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || !/^\d+(\.\d+)?$/.test(raw)) {
    warn?.(`ignoring ${name}='${raw}': not a positive number of milliseconds; using ${def}`);
    return def;
  }
  return Math.round(n);
}

/** OTEL_EXPORTER_OTLP_HEADERS syntax: `k1=v1,k2=v2`, values percent-encoded. Malformed
 * entries are skipped. */
export function parseOtlpHeaders(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (raw ?? '').split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const key = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      // keep it as written
    }
    if (key) out[key] = value;
  }
  return out;
}

export interface OtlpHttpSettings {
  headers: Record<string, string>;
  timeoutMs: number;
  compression: 'gzip' | 'none';
}

/** Headers, timeout and compression of one OTLP/HTTP signal, from
 * OTEL_EXPORTER_OTLP_[<SIGNAL>_]HEADERS / _TIMEOUT / _COMPRESSION (the signal's own variable
 * wins; headers of both are merged, the signal's winning per key). Defaults: no headers,
 * 10000 ms, none. */
export function otlpHttpSettings(signal: 'metrics' | 'profiles', env: Env, warn?: (msg: string) => void): OtlpHttpSettings {
  const S = `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_`;
  const headers = { ...parseOtlpHeaders(env.OTEL_EXPORTER_OTLP_HEADERS), ...parseOtlpHeaders(env[`${S}HEADERS`]) };
  const timeoutMs = envMillis(env, `${S}TIMEOUT`, envMillis(env, 'OTEL_EXPORTER_OTLP_TIMEOUT', 10_000, warn), warn);
  const rawCompression = nonEmpty(env[`${S}COMPRESSION`]) ?? nonEmpty(env.OTEL_EXPORTER_OTLP_COMPRESSION) ?? 'none';
  let compression: 'gzip' | 'none' = 'none';
  if (rawCompression === 'gzip') compression = 'gzip';
  else if (rawCompression !== 'none') warn?.(`ignoring OTLP compression '${rawCompression}': only gzip and none are supported`);
  return { headers, timeoutMs, compression };
}

export interface ResourceOptions {
  /** beats OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES' service.name */
  serviceName?: string;
  /** more attributes, above the environment (e.g. heaptap's version) */
  attributes?: Record<string, string | number | boolean>;
  env?: Env;
}

/** The resource every heaptap exporter reports (service.name, k8s.*, OTEL_RESOURCE_ATTRIBUTES).
 * The SDK's detectors read process.env; with another env (tests) the same two variables are
 * read from it by the same detectors, run with process.env swapped for the call. */
export function otelResource(opts: ResourceOptions = {}): Resource {
  const env = opts.env ?? process.env;
  // The SDK's telemetry.sdk.* attributes, with heaptap's default name.
  let resource = defaultResource().merge(resourceFromAttributes({ 'service.name': DEFAULT_SERVICE_NAME }));
  resource = resource.merge(resourceFromAttributes(k8sAttributes(env)));
  resource = resource.merge(withEnv(env, () =>
    detectResources({ detectors: [resourceAttributesEnvDetector, serviceNameEnvDetector] })));
  if (opts.attributes) resource = resource.merge(resourceFromAttributes(opts.attributes));
  const explicit = nonEmpty(opts.serviceName);
  if (explicit !== undefined) resource = resource.merge(resourceFromAttributes({ 'service.name': explicit }));
  return resource;
}

/** Runs fn with the two resource variables of env in process.env (restored after). The
 * detectors are synchronous, so nothing else observes the swap. */
function withEnv<T>(env: Env, fn: () => T): T {
  if (env === process.env) return fn();
  const names = ['OTEL_RESOURCE_ATTRIBUTES', 'OTEL_SERVICE_NAME'];
  const saved = names.map((n) => process.env[n]);
  try {
    for (const n of names) {
      if (env[n] === undefined) delete process.env[n];
      else process.env[n] = env[n];
    }
    return fn();
  } finally {
    names.forEach((n, i) => {
      if (saved[i] === undefined) delete process.env[n];
      else process.env[n] = saved[i];
    });
  }
}

/** Resource attributes as plain values (no pending async detector values). */
export function resourceAttributes(resource: Resource): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(resource.attributes)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return out;
}
