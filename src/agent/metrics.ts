// Prometheus metrics for /metrics, with prom-client, collected at scrape time from the
// HeapSource (nothing is updated between scrapes). One Registry per agent.
//
// Cumulative region counters are exported as Prometheus counters: each is a prom-client
// Counter whose collect() resets it and adds the current cumulative value, so the type
// line says `counter` and the value is the region's own total (which only grows; a new
// process image is a new series, since pid is a label). prom-client has no settable
// counter; this is its documented way to report an externally kept count.
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Registry,
  type CounterConfiguration,
  type GaugeConfiguration,
} from 'prom-client';

import { constants } from '../region.ts';
import { END_REASONS } from '../ends.ts';
import { labelName } from '../sites.ts';
import type { HeapProcess, HeapSite, HeapSource } from './types.ts';

export const METRIC = {
  inuseBytes: 'heaptap_heap_inuse_bytes',
  inuseObjects: 'heaptap_heap_inuse_objects',
  allocatedBytes: 'heaptap_heap_allocated_bytes_total',
  allocatedObjects: 'heaptap_heap_allocated_objects_total',
  freedBytes: 'heaptap_heap_freed_bytes_total',
  peakInuseBytes: 'heaptap_heap_peak_inuse_bytes',
  peakBytes: 'heaptap_heap_peak_bytes',
  resident: 'heaptap_process_resident_memory_bytes',
  unattributed: 'heaptap_unattributed_resident_bytes',
  samples: 'heaptap_samples_total',
  dropped: 'heaptap_samples_dropped_total',
  info: 'heaptap_process_info',
  alive: 'heaptap_process_alive',
  sampleRate: 'heaptap_sample_rate_bytes',
  paused: 'heaptap_sampling_paused',
  siteInuse: 'heaptap_site_inuse_bytes',
  buildInfo: 'heaptap_build_info',
  agentProcesses: 'heaptap_agent_processes',
  agentScans: 'heaptap_agent_scans_total',
  agentScanSeconds: 'heaptap_agent_scan_duration_seconds',
  agentReadErrors: 'heaptap_agent_region_read_errors_total',
  processEnds: 'heaptap_process_ends_total',
} as const;

const PROC_LABELS = ['pid', 'exe', 'service'] as const;
type ProcLabels = Record<(typeof PROC_LABELS)[number], string>;

export interface AgentStats {
  scans: number;
  lastScanMs: number;
  readErrors: number;
  /** processes that ended, by reason (src/ends.ts END_REASONS) */
  ends?: Record<string, number>;
}

export interface MetricsOptions {
  source: HeapSource;
  /** heaptap_site_inuse_bytes series per process; 0 = none */
  topSites: number;
  version: string;
  stats?: () => AgentStats;
  /** the longest a scrape waits for sites being symbolized before it reports the last
   * ones it had, ms */
  siteDeadlineMs?: number;
  /** the sidecar's own process_* and nodejs_* metrics (default on) */
  defaultMetrics?: boolean;
}

function labels(p: HeapProcess): ProcLabels {
  return { pid: String(p.pid), exe: p.exeName, service: p.service };
}

export function createMetrics(opts: MetricsOptions): Registry {
  const { source } = opts;
  const registry = new Registry();
  const deadline = opts.siteDeadlineMs ?? 2000;
  const lastSites = new Map<string, HeapSite[]>();

  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (g: Gauge<L>) => void | Promise<void>) => {
    const config: GaugeConfiguration<L> = {
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        return fill(this);
      },
    };
    return new Gauge<L>(config);
  };
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (c: Counter<L>) => void) => {
    const config: CounterConfiguration<L> = {
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    };
    return new Counter<L>(config);
  };
  const perProcess = (name: string, help: string, value: (p: HeapProcess) => number | null) =>
    gauge(name, help, PROC_LABELS, (g) => {
      for (const p of source.processes()) {
        const v = value(p);
        if (v !== null) g.set(labels(p), v);
      }
    });
  const perProcessTotal = (name: string, help: string, value: (p: HeapProcess) => number) =>
    counter(name, help, PROC_LABELS, (c) => {
      for (const p of source.processes()) c.inc(labels(p), Math.max(0, value(p)));
    });

  perProcess(METRIC.inuseBytes, 'Estimated heap bytes in use (allocated and not yet freed), from sampled allocations.', (p) => p.inuseBytes);
  perProcess(METRIC.inuseObjects, 'Estimated heap objects in use.', (p) => p.inuseObjects);
  perProcessTotal(METRIC.allocatedBytes, 'Estimated heap bytes allocated since the process started.', (p) => p.allocatedBytes);
  perProcessTotal(METRIC.allocatedObjects, 'Estimated heap objects allocated since the process started.', (p) => p.allocatedObjects);
  perProcessTotal(METRIC.freedBytes, 'Estimated heap bytes freed since the process started.', (p) => p.freedBytes);
  perProcess(METRIC.peakBytes, 'Highest estimated heap bytes in use the process reached, kept by the heaptap library at every sampled allocation and free (exact at rate 1, however short).', (p) => p.peakBytes);
  perProcess(METRIC.peakInuseBytes, 'heaptap_heap_peak_bytes where the process\'s library keeps it, else the highest heaptap_heap_inuse_bytes the agent has seen.', (p) => p.peakInuseBytes);
  perProcess(METRIC.resident, 'Resident set size of the process (VmRSS from /proc), when the agent can see it.', (p) => p.residentBytes);
  perProcess(METRIC.unattributed, 'Resident bytes not explained by the estimated heap in use (resident minus in use, at least 0).',
    (p) => (p.residentBytes === null ? null : Math.max(0, p.residentBytes - p.inuseBytes)));
  perProcessTotal(METRIC.samples, 'Allocations sampled (raw count, not an estimate).', (p) => p.samples);
  counter(METRIC.dropped, 'Sampling events the preload could not record in full, by reason (bytes are still counted under an overflow stack where possible).',
    [...PROC_LABELS, 'reason'], (c) => {
      for (const p of source.processes()) {
        for (const reason of constants.dropReasons) c.inc({ ...labels(p), reason }, p.drops[reason] ?? 0);
      }
    });
  gauge(METRIC.info, 'Facts about a profiled process image; always 1.', [...PROC_LABELS, 'ppid', 'exe_path', 'region'], (g) => {
    for (const p of source.processes()) g.set({ ...labels(p), ppid: String(p.ppid), exe_path: p.exe, region: p.key }, 1);
  });
  perProcess(METRIC.alive, '1 while the process runs; 0 once it ended (it is still served for --retention).', (p) => (p.alive ? 1 : 0));
  perProcess(METRIC.sampleRate, 'Mean bytes between samples in effect (1 = every allocation).', (p) => p.sampleRate);
  perProcess(METRIC.paused, '1 while sampling is paused through the control area.', (p) => (p.paused ? 1 : 0));

  if (opts.topSites > 0) {
    gauge(METRIC.siteInuse, `Estimated heap bytes in use per allocation site (the first function past allocator and standard-library plumbing, short name), top ${opts.topSites} per process.`,
      [...PROC_LABELS, 'function'], async (g) => {
        const procs = source.processes();
        const seen = new Set(procs.map((p) => p.key));
        for (const k of [...lastSites.keys()]) if (!seen.has(k)) lastSites.delete(k);
        await Promise.all(procs.map(async (p) => {
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), deadline)));
          const fresh = source.topSites(p.key, opts.topSites).catch(() => null);
          const sites = (await Promise.race([fresh, late])) ?? lastSites.get(p.key) ?? [];
          clearTimeout(timer);
          // A late answer still lands in the cache for the next scrape.
          void fresh.then((s) => s && lastSites.set(p.key, s));
          for (const s of sites) g.set({ ...labels(p), function: labelName(s.function) }, s.inuseBytes);
        }));
      });
  }

  gauge(METRIC.buildInfo, 'heaptap build; always 1.', ['version', 'nodejs_version'], (g) => {
    g.set({ version: opts.version, nodejs_version: process.versions.node }, 1);
  });
  if (opts.stats) {
    const stats = opts.stats;
    gauge(METRIC.agentProcesses, 'Processes the agent serves, by state.', ['state'], (g) => {
      const procs = source.processes();
      g.set({ state: 'live' }, procs.filter((p) => p.alive).length);
      g.set({ state: 'ended' }, procs.filter((p) => !p.alive).length);
    });
    counter(METRIC.agentScans, 'Scans of the region directory.', [], (c) => c.inc(stats().scans));
    gauge(METRIC.agentScanSeconds, 'Duration of the last scan (list the directory, read every live region).', [], (g) => g.set(stats().lastScanMs / 1000));
    counter(METRIC.agentReadErrors, 'Region reads that failed (the region was kept at its last snapshot or skipped).', [], (c) => c.inc(stats().readErrors));
    counter(METRIC.processEnds, 'Profiled processes that ended, by how: exited (exit()), exec, oom_kill (its memory cgroup\'s OOM-kill count rose), signal (the exit status named one), no_exit (a signal or _exit(): not told apart), removed (its region file was deleted).',
      ['reason'], (c) => {
        const ends = stats().ends ?? {};
        for (const reason of END_REASONS) c.inc({ reason }, ends[reason] ?? 0);
      });
  }
  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // prom-client's sums of the per-type nodejs_active_* gauges are gauges named *_total,
    // which promtool rejects ("non-counter metrics should not have _total suffix"); the
    // per-type series stay.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      registry.removeSingleMetric(name);
    }
  }
  return registry;
}
