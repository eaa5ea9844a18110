// OpenTelemetry metrics: the per-process figures of the Prometheus endpoint
// (src/agent/metrics.ts), through @opentelemetry/sdk-metrics and OTLP/HTTP protobuf
// (@opentelemetry/exporter-metrics-otlp-proto), configured by the OTEL_* variables:
//   endpoint  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT +
//             /v1/metrics, else http://localhost:4318/v1/metrics (env.ts otlpEndpoint)
//   interval  OTEL_METRIC_EXPORT_INTERVAL (ms, default 60000); OTEL_METRIC_EXPORT_TIMEOUT
//   resource  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, k8s.* (env.ts otelResource)
//   headers, timeout, compression, temporality: OTEL_EXPORTER_OTLP_* as the SDK reads them
//
// Every instrument is observable and reads source.processes() once per collection (one
// batch callback): nothing is kept between exports. Points carry process.pid,
// process.executable.name and service.name (identity.ts serviceOf). Names follow the
// semantic conventions where one exists (process.memory.usage) and live under heaptap.*
// otherwise; units are UCUM, unprefixed (By, {allocation}).
import { ValueType, type Attributes, type BatchObservableResult, type Observable } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import {
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';

import type { Exporter, HeapProcess, HeapSource } from '../agent/types.ts';
import { envMillis, otelResource, otlpEndpoint, resourceAttributes, DEFAULT_SERVICE_NAME, type Env } from './env.ts';
import { serviceOf } from './identity.ts';
import type { ExportLog } from './push.ts';

type ExportResult = Parameters<Parameters<PushMetricExporter['export']>[1]>[0];

/** Metric names, as constants (the Prometheus names are in src/agent/metrics.ts). */
export const OTEL_METRIC = {
  /** semconv: physical memory of the process (VmRSS) */
  memoryUsage: 'process.memory.usage',
  inuse: 'heaptap.heap.inuse',
  inuseObjects: 'heaptap.heap.inuse_objects',
  allocated: 'heaptap.heap.allocated',
  allocations: 'heaptap.heap.allocations',
  freed: 'heaptap.heap.freed',
  peakInuse: 'heaptap.heap.peak_inuse',
  peak: 'heaptap.heap.peak',
  unattributedResident: 'heaptap.unattributed_resident',
  samples: 'heaptap.samples',
  samplesDropped: 'heaptap.samples.dropped',
  samplingInterval: 'heaptap.sampling.interval',
  samplingPaused: 'heaptap.sampling.paused',
} as const;

type Kind = 'counter' | 'updown' | 'gauge';
interface Def {
  name: string;
  kind: Kind;
  unit: string;
  description: string;
  value: (p: HeapProcess) => number | null;
}

const DEFS: readonly Def[] = [
  { name: OTEL_METRIC.memoryUsage, kind: 'updown', unit: 'By', description: 'The amount of physical memory in use (resident set, VmRSS).', value: (p) => p.residentBytes },
  { name: OTEL_METRIC.inuse, kind: 'updown', unit: 'By', description: 'Estimated heap bytes in use (allocated and not yet freed), from sampled allocations.', value: (p) => p.inuseBytes },
  { name: OTEL_METRIC.inuseObjects, kind: 'updown', unit: '{object}', description: 'Estimated heap objects in use.', value: (p) => p.inuseObjects },
  { name: OTEL_METRIC.allocated, kind: 'counter', unit: 'By', description: 'Estimated heap bytes allocated since the process started.', value: (p) => p.allocatedBytes },
  { name: OTEL_METRIC.allocations, kind: 'counter', unit: '{allocation}', description: 'Estimated heap allocations since the process started.', value: (p) => p.allocatedObjects },
  { name: OTEL_METRIC.freed, kind: 'counter', unit: 'By', description: 'Estimated heap bytes freed since the process started.', value: (p) => p.freedBytes },
  { name: OTEL_METRIC.peak, kind: 'gauge', unit: 'By', description: 'Highest estimated heap bytes in use the process reached, kept by the heaptap library at every sampled allocation and free.', value: (p) => p.peakBytes },
  { name: OTEL_METRIC.peakInuse, kind: 'gauge', unit: 'By', description: 'heaptap.heap.peak where the library keeps it, else the highest heaptap.heap.inuse the agent has seen.', value: (p) => p.peakInuseBytes },
  {
    name: OTEL_METRIC.unattributedResident, kind: 'updown', unit: 'By',
    description: 'Resident bytes not explained by the estimated heap in use (resident minus in use, at least 0).',
    value: (p) => (p.residentBytes === null ? null : Math.max(0, p.residentBytes - p.inuseBytes)),
  },
  { name: OTEL_METRIC.samples, kind: 'counter', unit: '{sample}', description: 'Allocations sampled (raw count, not an estimate).', value: (p) => p.samples },
  { name: OTEL_METRIC.samplingInterval, kind: 'gauge', unit: 'By', description: 'Mean bytes between samples in effect (1 = every allocation).', value: (p) => p.sampleRate },
  { name: OTEL_METRIC.samplingPaused, kind: 'gauge', unit: '1', description: '1 while sampling is paused, else 0.', value: (p) => (p.paused ? 1 : 0) },
];

export interface OtelMetricsOptions {
  /** the metrics endpoint (a flag); default from OTEL_EXPORTER_OTLP_METRICS_ENDPOINT etc. */
  url?: string;
  /** default process.env */
  env?: Env;
  /** export period, ms; default OTEL_METRIC_EXPORT_INTERVAL or 60000 */
  intervalMs?: number;
  /** per export, ms; default OTEL_METRIC_EXPORT_TIMEOUT or 30000 (at most the interval) */
  timeoutMs?: number;
  /** resource service.name (beats OTEL_SERVICE_NAME) */
  serviceName?: string;
  resourceAttributes?: Record<string, string | number | boolean>;
  /** heaptap's version: the meter's version */
  version?: string;
  /** how long stop() may spend on the final export, ms; default 5000 */
  stopDeadlineMs?: number;
  log?: ExportLog;
  /** the push exporter (default OTLPMetricExporter to the endpoint); tests pass the SDK's
   * InMemoryMetricExporter */
  exporter?: PushMetricExporter;
}

export interface OtelMetricsStats {
  /** exports the backend accepted */
  exports: number;
  /** exports that failed, by kind (the error's name or code) */
  failures: Record<string, number>;
  /** collections (callbacks run) */
  collections: number;
}

/** Counts and logs (once per kind until a success) the results of the wrapped exporter. */
class CountingExporter implements PushMetricExporter {
  readonly #inner: PushMetricExporter;
  readonly #log: ExportLog;
  readonly stats: OtelMetricsStats = { exports: 0, failures: {}, collections: 0 };
  readonly #logged = new Set<string>();

  constructor(inner: PushMetricExporter, log: ExportLog) {
    this.#inner = inner;
    this.#log = log;
    if (inner.selectAggregationTemporality) this.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
    if (inner.selectAggregation) this.selectAggregation = inner.selectAggregation.bind(inner);
  }

  selectAggregationTemporality?: PushMetricExporter['selectAggregationTemporality'];
  selectAggregation?: PushMetricExporter['selectAggregation'];

  export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    this.#inner.export(metrics, (result) => {
      if (result.code === 0 /* ExportResultCode.SUCCESS */) {
        this.stats.exports++;
        if (this.#logged.size > 0) {
          this.#logged.clear();
          this.#log('info', 'otel-metrics: exports succeed again');
        }
      } else {
        const err = result.error as (Error & { code?: string | number }) | undefined;
        const kind = String(err?.code ?? err?.name ?? 'error');
        this.stats.failures[kind] = (this.stats.failures[kind] ?? 0) + 1;
        if (!this.#logged.has(kind)) {
          this.#logged.add(kind);
          this.#log('warn', 'otel-metrics: export failed', { kind, error: err?.message ?? 'unknown' });
        }
      }
      done(result);
    });
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }
}

export class OtelMetricsExporter implements Exporter {
  readonly name = 'otel-metrics';
  /** where metrics go ('(custom exporter)' when one was passed), and what said so */
  readonly endpoint: string;
  readonly endpointFrom: string;
  readonly intervalMs: number;
  readonly #opts: OtelMetricsOptions;
  readonly #exporter: CountingExporter;
  readonly #provider: MeterProvider;
  readonly #configuredService: string | undefined;
  #source: HeapSource | null = null;
  #stopping: Promise<void> | null = null;

  constructor(opts: OtelMetricsOptions = {}) {
    this.#opts = opts;
    const env = opts.env ?? process.env;
    const log = opts.log ?? (() => {});
    const warn = (msg: string) => log('warn', `otel-metrics: ${msg}`);
    this.intervalMs = opts.intervalMs ?? envMillis(env, 'OTEL_METRIC_EXPORT_INTERVAL', 60_000, warn);
    const timeoutMs = Math.min(opts.timeoutMs ?? envMillis(env, 'OTEL_METRIC_EXPORT_TIMEOUT', 30_000, warn), this.intervalMs);
    let inner = opts.exporter;
    if (inner) {
      this.endpoint = '(custom exporter)';
      this.endpointFrom = 'option';
    } else {
      const ep = otlpEndpoint('metrics', env, opts.url);
      this.endpoint = ep.url;
      this.endpointFrom = ep.from;
      // Headers, timeout, compression and temporality come from the OTEL_EXPORTER_OTLP_*
      // variables, which the OTLP exporter reads itself (from process.env).
      inner = new OTLPMetricExporter({ url: ep.url });
    }
    this.#exporter = new CountingExporter(inner, log);
    const resource = otelResource({ serviceName: opts.serviceName, attributes: opts.resourceAttributes, env });
    const svc = resourceAttributes(resource)['service.name'];
    this.#configuredService = typeof svc === 'string' && svc !== DEFAULT_SERVICE_NAME ? svc : undefined;
    this.#provider = new MeterProvider({
      resource,
      readers: [new PeriodicExportingMetricReader({
        exporter: this.#exporter,
        exportIntervalMillis: this.intervalMs,
        exportTimeoutMillis: timeoutMs,
      })],
    });
  }

  start(source: HeapSource): void {
    if (this.#source) throw new Error('otel-metrics exporter already started');
    this.#source = source;
    const meter = this.#provider.getMeter('heaptap', this.#opts.version);
    const instruments = new Map<Def, Observable>();
    for (const d of DEFS) {
      const o = { unit: d.unit, description: d.description, valueType: ValueType.DOUBLE };
      instruments.set(d, d.kind === 'counter' ? meter.createObservableCounter(d.name, o)
        : d.kind === 'updown' ? meter.createObservableUpDownCounter(d.name, o)
          : meter.createObservableGauge(d.name, o));
    }
    const dropped = meter.createObservableCounter(OTEL_METRIC.samplesDropped, {
      unit: '{sample}',
      description: 'Sampling events the preload could not record in full, by reason (bytes are still counted under an overflow stack where possible).',
      valueType: ValueType.DOUBLE,
    });
    meter.addBatchObservableCallback((result: BatchObservableResult) => {
      this.#exporter.stats.collections++;
      for (const p of source.processes()) {
        const attrs: Attributes = {
          'process.pid': p.pid,
          'process.executable.name': p.exeName,
          'service.name': serviceOf(p, this.#configuredService),
        };
        for (const [d, inst] of instruments) {
          const v = d.value(p);
          if (v !== null && Number.isFinite(v)) result.observe(inst, d.kind === 'counter' ? Math.max(0, v) : v, attrs);
        }
        for (const [reason, n] of Object.entries(p.drops)) {
          result.observe(dropped, Math.max(0, n), { ...attrs, reason });
        }
      }
    }, [...instruments.values(), dropped]);
  }

  /** Collects and exports now (tests; a ctl command). */
  flush(): Promise<void> {
    return this.#provider.forceFlush();
  }

  /** A final export, then shutdown, within stopDeadlineMs (default 5 s). */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const deadline = this.#opts.stopDeadlineMs ?? 5000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.#provider.shutdown({ timeoutMillis: deadline }).catch(() => {}),
        new Promise((r) => { timer = setTimeout(r, deadline); }),
      ]);
      clearTimeout(timer);
    })();
    return this.#stopping;
  }

  stats(): OtelMetricsStats {
    const s = this.#exporter.stats;
    return { exports: s.exports, failures: { ...s.failures }, collections: s.collections };
  }
}
