// The push exporters the agent starts from its configuration (src/exporters/, one class
// each; docs/exporters.md):
//   --pyroscope-url URL        PyroscopeExporter, every --push-interval, with --label k=v
//   --otlp-profiles-url URL    OtlpProfilesExporter, every --push-interval
//   --otel-metrics, or OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
//                              OtelMetricsExporter (its OTEL_* variables configure it)
// Each reads only the HeapSource and bounds its own queue and requests, so a slow or dead
// backend never blocks the agent. Their modules are loaded only when configured (the
// OpenTelemetry SDK is not needed for a pull-only agent).
import type { AgentConfig } from './config.ts';
import type { Logger } from './log.ts';
import type { Exporter } from './types.ts';

export async function createExporters(config: AgentConfig, log: Logger, version: string, env: NodeJS.ProcessEnv = process.env): Promise<Exporter[]> {
  const out: Exporter[] = [];
  const exportLog = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, string | number | boolean | null | undefined>) =>
    log[level](msg, fields);
  if (config.pyroscopeUrl) {
    const { PyroscopeExporter } = await import('../exporters/pyroscope.ts');
    out.push(new PyroscopeExporter({ url: config.pyroscopeUrl, intervalMs: config.pushIntervalMs, labels: config.labels, log: exportLog }));
  }
  if (config.otlpProfilesUrl) {
    const { OtlpProfilesExporter } = await import('../exporters/otlp-profiles.ts');
    out.push(new OtlpProfilesExporter({ url: config.otlpProfilesUrl, env, intervalMs: config.pushIntervalMs, version, log: exportLog }));
  }
  if (config.otelMetrics) {
    const { OtelMetricsExporter } = await import('../exporters/otel-metrics.ts');
    out.push(new OtelMetricsExporter({ env, version, log: exportLog }));
  }
  return out;
}
