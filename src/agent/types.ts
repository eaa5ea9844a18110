// The agent's typed view of the processes it watches. Exporters (Prometheus, OpenTelemetry
// metrics, Pyroscope, OTLP profiles) see only this: never region files or raw offsets.
import type { PushLease } from '../exporters/lease.ts';

/** One process image the agent watches (a region file). Figures are unsampled estimates
 * from the region's counters, summed over all stacks; bytes and objects are numbers. */
export interface HeapProcess {
  /** Stable id for this process image: the region file's name (pid alone can be reused). */
  key: string;
  pid: number;
  ppid: number;
  /** Executable path as the process saw it, and its base name. */
  exe: string;
  exeName: string;
  /** HEAPTAP_SERVICE_NAME / OTEL_SERVICE_NAME of the process, else the executable name. */
  service: string;
  /** CLOCK_REALTIME when the region was made, in ms since the epoch. */
  startMs: number;
  /** The process image still runs (it holds its region's lock). */
  alive: boolean;
  /** It exited normally (false while running, and after kill -9). */
  exited: boolean;
  /** Sampling interval in effect (bytes; 1 = exact). */
  sampleRate: number;
  paused: boolean;
  inuseBytes: number;
  inuseObjects: number;
  allocatedBytes: number;
  allocatedObjects: number;
  freedBytes: number;
  /** Highest in use: peakBytes where the region has it, else the highest inuseBytes the
   * agent's reads saw. */
  peakInuseBytes: number;
  /** The library's high-water mark of its in-use estimate, kept at every sampled
   * allocation and free (exact at rate 1, however short the peak), and when it was reached
   * (ms since the epoch); null for a region from a writer without it. */
  peakBytes: number | null;
  peakMs: number | null;
  /** How it ended (null while it runs): src/ends.ts's reason (exited, exec, oom_kill,
   * signal, no_exit, removed), the exit code or signal when seen, and a phrase. */
  end: { reason: string; code?: number; signal?: string; text: string } | null;
  /** VmRSS from /proc/<pid>/status; null when unreadable or the process is gone. */
  residentBytes: number | null;
  /** Raw sample count. */
  samples: number;
  /** Drop counters by reason name (constants.dropReasons). */
  drops: Record<string, number>;
}

/** A heap site: a stack's innermost named function and its in-use bytes. */
export interface HeapSite {
  function: string;
  inuseBytes: number;
}

/** What exporters read. The agent implements it over the regions it watches. */
export interface HeapSource {
  /** Current processes, cheap (no symbolization, no file reads). */
  processes(): HeapProcess[];
  /** The top n sites of one process by in-use bytes (symbolized; cached by the agent). */
  topSites(key: string, n: number): Promise<HeapSite[]>;
  /** A symbolized pprof profile of one process (Go heap-profile conventions, WIRE.md), as
   * protobuf bytes (not gzipped): what Pyroscope is sent as it is, and what an exporter
   * that needs the structure decodes (pprof-format's Profile.decode).
   * view 'heap': cumulative alloc_*, absolute inuse_*; 'allocs': same data, default
   * sample type alloc_space; 'delta': alloc_* since the previous 'delta' call for the same
   * consumer, inuse_* absolute; 'peak': inuse_* at the process's own peak (HT_FEATURE_PEAK;
   * rejects for a region without it), alloc_* cumulative now. */
  encodedProfile(key: string, view: 'heap' | 'allocs' | 'delta' | 'peak', consumer?: string): Promise<Uint8Array>;
  /** Sets a consumer's 'delta' baseline of a process to what the process holds now, so that
   * its next 'delta' profile has only what it allocates from now on (a push exporter's first
   * look at a process an earlier agent pushed already). False for an unknown process. */
  primeDelta?(key: string, consumer: string): boolean;
  /** From now on, remembers for this consumer the baseline each 'delta' call replaced, until
   * settleDelta says what became of that call's profile. */
  trackDelta?(consumer: string): void;
  /** The consumer's last 'delta' profile of a process was delivered (true), or never reached
   * the backend (false): then the baseline goes back to where it was before that call, and
   * the next 'delta' profile holds both spans. False when nothing was remembered. */
  settleDelta?(key: string, consumer: string, delivered: boolean): boolean;
  /** Subscribe to processes that ended (exited or killed): called once per process image
   * after its final snapshot, before the agent forgets it. */
  onProcessEnd(listener: (p: HeapProcess) => void): () => void;
}

/** An exporter the agent starts and stops. It must never block the agent: slow or dead
 * backends are the exporter's problem (bounded queues, timeouts, backoff). */
export interface Exporter {
  readonly name: string;
  /** It pushes profiles: the agent starts it only while it holds the directory's push
   * lease (src/exporters/lease.ts), which it passes to start(). */
  readonly pushesProfiles?: boolean;
  start(source: HeapSource, lease?: PushLease): void;
  /** Flush what is pending (bounded in time) and stop. */
  stop(): Promise<void>;
}
