// The exporters the agent constructs from its flags (src/agent/exporters.ts). Each is an
// Exporter (src/agent/types.ts) reading only a HeapSource; docs/exporters.md describes
// their settings.
export { OtelMetricsExporter, OTEL_METRIC, type OtelMetricsOptions, type OtelMetricsStats } from './otel-metrics.ts';
export { PyroscopeExporter, PYROSCOPE_CONSUMER, pyroscopeName, type PyroscopeOptions, type PyroscopeStats } from './pyroscope.ts';
export {
  OtlpProfilesExporter,
  OTLP_PROFILES_CONSUMER,
  pprofToOtlp,
  buildExportRequest,
  encodeExportRequest,
  type OtlpProfilesOptions,
  type OtlpProfilesStats,
} from './otlp-profiles.ts';
export { otelResource, otlpEndpoint, k8sAttributes, K8S_ENV, type Env } from './env.ts';
export { serviceOf } from './identity.ts';
export type { ExportLog, PushStats } from './push.ts';
