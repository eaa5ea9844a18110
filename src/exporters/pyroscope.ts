// Pushes heap profiles to Grafana Pyroscope (or Alloy's pyroscope.receive_http), the way
// Pyroscope's own SDKs do (WIRE.md):
//   POST <url>/ingest?name=<app>{pid=..,exe=..,k=v}&from=<unix s>&until=<unix s>
//        &format=pprof&spyName=heaptap
//   body: the gzipped pprof, Content-Type application/octet-stream
// <app> becomes Pyroscope's service_name: the process's service (identity.ts serviceOf).
//
// Which profile: the 'delta' view, godeltaprof's convention, which is what Pyroscope's Go
// SDK pushes for memory: alloc_objects/alloc_space are what was allocated during
// [from, until], inuse_objects/inuse_space are absolute. Pyroscope stores each pushed
// profile as the data of its time range and sums alloc_* over the range a user queries;
// cumulative alloc_* would be counted again at every push. (Pulling is the other way:
// Alloy scrapes the cumulative /debug/pprof/allocs and subtracts itself.) The profile
// keeps period type space/bytes, so the series are memory:alloc_space:bytes:space:bytes etc.
//
// Every interval each live process's delta profile is built and queued; when a process
// ends its final delta is queued too, so the allocations of its last seconds are not lost
// (rounds.ts). Delivery (bounded queue, timeouts, retries, counts, logging once) is
// push.ts's.
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

import type { Exporter, HeapSource } from '../agent/types.ts';
import { serviceOf } from './identity.ts';
import type { PushLease } from './lease.ts';
import type { ExportLog, PushStats } from './push.ts';
import { ProfilePusher, type BuiltProfile, type RoundStats } from './rounds.ts';

const gzipAsync = promisify(gzip);

/** The HeapSource consumer name of this exporter's delta baseline. */
export const PYROSCOPE_CONSUMER = 'pyroscope';

export interface PyroscopeOptions {
  /** Pyroscope's base URL (http://pyroscope:4040, or with a path prefix); /ingest is
   * appended. user:password@ in it is sent as basic auth. */
  url: string;
  /** push period, ms; default 15000 */
  intervalMs?: number;
  /** extra labels on every profile (--label k=v); pid and exe are always set */
  labels?: Record<string, string>;
  /** the app name for processes that declare no service (default: their executable's name) */
  serviceName?: string;
  basicAuth?: { username: string; password: string };
  /** Authorization: Bearer <token> (Grafana Cloud access policy token, a proxy's token) */
  bearerToken?: string;
  /** X-Scope-OrgID: the tenant of a multi-tenant Pyroscope */
  tenantId?: string;
  /** any other request headers */
  headers?: Record<string, string>;
  /** default 'heaptap' */
  spyName?: string;
  /** per request, ms; default 10000 */
  timeoutMs?: number;
  /** profiles waiting to be sent; default 32 */
  maxQueue?: number;
  /** tries per profile; default 5 */
  maxAttempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** how long stop() may spend sending what is queued, ms; default 5000 */
  stopDeadlineMs?: number;
  log?: ExportLog;
  /** for tests */
  fetch?: typeof fetch;
  now?: () => number;
}

export interface PyroscopeStats extends PushStats, RoundStats {}

/** Pyroscope app names: letters, digits and `_ . - /`; anything else becomes `_`. */
export function sanitizeAppName(name: string): string {
  const s = name.trim().replace(/[^A-Za-z0-9_.\-/]/g, '_');
  return s === '' ? 'unknown' : s;
}

/** Label names: [A-Za-z_][A-Za-z0-9_]* (Prometheus rules, which Pyroscope applies). */
export function sanitizeLabelName(name: string): string {
  const s = name.trim().replace(/[^A-Za-z0-9_]/g, '_');
  return /^[0-9]/.test(s) ? `_${s}` : s;
}

/** Label values may not contain the key syntax `{ } , =` (Pyroscope's parser splits on
 * them) and are trimmed. */
export function sanitizeLabelValue(value: string): string {
  return value.replace(/[{},=]/g, '_').trim();
}

/** `app{k=v,...}` as Pyroscope's /ingest parses it (labels sorted by name). */
export function pyroscopeName(app: string, labels: Record<string, string>): string {
  const parts = Object.entries(labels)
    .map(([k, v]) => [sanitizeLabelName(k), sanitizeLabelValue(v)] as const)
    .filter(([k, v]) => k !== '' && v !== '')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`);
  return `${sanitizeAppName(app)}{${parts.join(',')}}`;
}

/** Splits user:password@ out of a URL (fetch refuses URLs with credentials). */
export function splitCredentials(url: string): { url: string; basicAuth?: { username: string; password: string } } {
  const u = new URL(url);
  if (!u.username && !u.password) return { url: u.toString() };
  const basicAuth = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = '';
  u.password = '';
  return { url: u.toString(), basicAuth };
}

export class PyroscopeExporter implements Exporter {
  readonly name = 'pyroscope';
  readonly #opts: PyroscopeOptions;
  readonly #intervalMs: number;
  readonly #ingest: string;
  readonly #headers: Record<string, string>;
  readonly #push: ProfilePusher;
  /** per process image: the `until` of its last push (unix s) */
  readonly #lastUntil = new Map<string, number>();

  constructor(opts: PyroscopeOptions) {
    this.#opts = opts;
    this.#intervalMs = opts.intervalMs ?? 15_000;
    const { url, basicAuth: fromUrl } = splitCredentials(opts.url);
    const base = new URL(url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error(`pyroscope: URL must be http or https: ${opts.url}`);
    base.search = '';
    base.hash = '';
    this.#ingest = base.toString().replace(/\/+$/, '') + '/ingest';
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream', ...opts.headers };
    const auth = opts.basicAuth ?? fromUrl;
    if (auth) headers.Authorization = 'Basic ' + Buffer.from(`${auth.username}:${auth.password}`).toString('base64');
    if (opts.bearerToken) headers.Authorization = `Bearer ${opts.bearerToken}`;
    if (opts.tenantId) headers['X-Scope-OrgID'] = opts.tenantId;
    this.#headers = headers;
    const log = opts.log ?? (() => {});
    this.#push = new ProfilePusher({
      rounds: { name: 'pyroscope', intervalMs: this.#intervalMs, consumer: PYROSCOPE_CONSUMER, log, now: opts.now },
      queue: {
        name: 'pyroscope',
        maxQueue: opts.maxQueue,
        maxAttempts: opts.maxAttempts,
        timeoutMs: opts.timeoutMs,
        initialBackoffMs: opts.initialBackoffMs,
        maxBackoffMs: opts.maxBackoffMs,
        log,
        fetch: opts.fetch,
      },
      stopDeadlineMs: opts.stopDeadlineMs,
    }, (built) => this.#enqueue(built));
  }

  readonly pushesProfiles = true;

  start(source: HeapSource, lease?: PushLease): void {
    this.#push.start(source, lease);
  }

  /** One round now: every live process's profile is built and queued (not yet sent). */
  pushNow(): Promise<void> {
    return this.#push.pushNow();
  }

  /** A last round and the final profiles of ended processes, then what is queued is sent,
   * all within stopDeadlineMs (default 5 s). */
  stop(): Promise<void> {
    return this.#push.stop();
  }

  stats(): PyroscopeStats {
    return this.#push.stats();
  }

  async #enqueue(built: BuiltProfile[]): Promise<void> {
    for (const b of built) {
      const { process: p, bytes, atMs, final, kind } = b;
      // The agent's bytes as they are: decoding and re-encoding them with pprof-format
      // would cost seconds and hundreds of MB for a process of 100k stacks.
      const body = await gzipAsync(bytes);
      let from: number, until: number;
      if (kind === 'peak') {
        // the second of the peak, labelled profile=peak beside the process's deltas
        from = Math.floor((p.peakMs ?? atMs) / 1000);
        until = from + 1;
      } else {
        until = Math.floor(atMs / 1000);
        const first = Math.max(Math.floor(p.startMs / 1000), until - Math.ceil(this.#intervalMs / 1000));
        const last = this.#lastUntil.get(p.key);
        from = Math.min(last ?? first, until);
        if (final) this.#lastUntil.delete(p.key);
        else this.#lastUntil.set(p.key, until);
        // Not delivered: the next delta holds this span too (rounds.ts), so its `from` is
        // this one's.
        const settle = b.settle;
        b.settle = (outcome) => {
          if ((outcome === 'failed' || outcome === 'dropped') && !final && this.#lastUntil.get(p.key) === until) {
            if (last === undefined) this.#lastUntil.delete(p.key);
            else this.#lastUntil.set(p.key, last);
          }
          settle(outcome);
        };
      }
      const app = serviceOf(p, this.#opts.serviceName);
      // pid and exe identify the process; a user label of the same name does not replace them.
      const labels: Record<string, string> = { ...this.#opts.labels, pid: String(p.pid), exe: p.exeName };
      if (kind === 'peak') labels.profile = 'peak';
      // a process's last profiles say how it ended (exited, oom_kill, no_exit...)
      if (final && p.end) labels.end = p.end.reason;
      const q = new URLSearchParams({
        name: pyroscopeName(app, labels),
        from: String(from),
        until: String(until),
        format: 'pprof',
        spyName: this.#opts.spyName ?? 'heaptap',
      });
      this.#push.queue.enqueue({
        url: `${this.#ingest}?${q.toString()}`,
        body,
        headers: this.#headers,
        describe: { pid: p.pid, service: app },
        settle: (_delivered, outcome) => b.settle(outcome),
      });
    }
    if (!built.some((b) => b.final)) {
      // A round: forget processes that went away without an end event.
      const seen = new Set(built.map((b) => b.process.key));
      for (const k of this.#lastUntil.keys()) if (!seen.has(k)) this.#lastUntil.delete(k);
    }
  }
}
