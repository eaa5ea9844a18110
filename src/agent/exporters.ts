// The push exporters the agent starts from its configuration: Pyroscope (--pyroscope-url),
// OTLP profiles (--otlp-profiles-url) and OpenTelemetry metrics (OTEL_* / --otel-metrics).
// Each is an Exporter (types.ts) that reads the HeapSource; none may block the agent.
//
// INTEGRATION POINT: the exporter classes live in src/exporters/** (written separately).
// Until they exist, a configured exporter is reported as unavailable (logged once) and the
// agent runs without it.
import type { AgentConfig } from './config.ts';
import type { Logger } from './log.ts';
import type { Exporter } from './types.ts';

export async function createExporters(config: AgentConfig, log: Logger): Promise<Exporter[]> {
  const out: Exporter[] = [];
  const want: string[] = [];
  if (config.pyroscopeUrl) want.push('pyroscope');
  if (config.otlpProfilesUrl) want.push('otlp-profiles');
  if (config.otelMetrics) want.push('otel-metrics');
  for (const name of want) {
    log.once(`exporter-missing:${name}`, 'warn', 'exporter not available in this build', { exporter: name });
  }
  return out;
}
