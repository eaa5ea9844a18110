// The delivery discipline every push exporter shares (Pyroscope, OTLP profiles): a bounded
// queue, one request in flight, a timeout per request, retries with backoff, counts by
// outcome, and each kind of failure logged once. A slow or dead backend costs a few queued
// buffers and one pending request: enqueue() never waits and never throws, and close()
// returns by its deadline whatever the backend does.
//
// Outcomes of one request (classify()):
//   2xx                      ok: counted as sent
//   408, 429, 5xx            retried after a backoff (Retry-After honoured, capped)
//   network error, timeout   retried likewise
//   422 saying the backend's own storage is unreachable (transient422(): Pyroscope's /ingest
//                            answers 422 for any failure to hand a profile to its ingesters,
//                            a ring without healthy ingesters included) retried likewise
//   other 4xx (400, 413, 422 ...) rejected: the payload is bad for this backend, so sending
//                            it again cannot help; dropped at once and logged
// An item that still fails after maxAttempts is counted as failed. When the queue is full
// the oldest waiting item is dropped (counted): fresh data is worth more than old. Each
// item's settle() learns its end once: delivered or not (rounds.ts puts a delta that was not
// delivered back into the next one).

/** Where exporter messages go; the agent adapts its logger (levels as in src/agent/log.ts). */
export type ExportLog = (
  level: 'debug' | 'info' | 'warn' | 'error',
  msg: string,
  fields?: Record<string, string | number | boolean | null | undefined>,
) => void;

export interface PushItem {
  url: string;
  body: Uint8Array;
  headers: Record<string, string>;
  /** for logs: what this is (e.g. pid=12 service=api) */
  describe: Record<string, string | number>;
  /** called once when the item ends: true when the backend accepted it; false when it was
   * rejected, failed after its attempts, or dropped (queue full, closed) */
  settle?: (delivered: boolean, outcome: 'sent' | 'rejected' | 'failed' | 'dropped') => void;
}

export interface PushOptions {
  /** exporter name, for log messages */
  name: string;
  /** waiting items (not counting the one in flight); default 32 */
  maxQueue?: number;
  /** tries per item, the first included; default 5 */
  maxAttempts?: number;
  /** per request, ms; default 10000 */
  timeoutMs?: number;
  /** first backoff, doubled each retry up to maxBackoffMs, with jitter; default 1000 */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  log?: ExportLog;
  /** sees the body of each accepted request (OTLP partial success) */
  onSuccess?: (body: Uint8Array, item: PushItem) => void;
  /** for tests: the HTTP client (default: global fetch) */
  fetch?: typeof fetch;
}

/** Counts by outcome since start. `errors` counts failed attempts by kind: timeout, network,
 * http_<status>. Every item ends in exactly one of sent, rejected, failed, dropped (or is
 * still queued / in flight). */
export interface PushStats {
  enqueued: number;
  sent: number;
  rejected: number;
  failed: number;
  dropped: number;
  /** attempts that failed and were tried again */
  retried: number;
  /** waiting now (gauge) */
  queued: number;
  inFlight: number;
  errors: Record<string, number>;
  /** bytes of the requests the backend accepted */
  sentBytes: number;
}

type Kind = { retry: boolean; kind: string; status?: number; detail: string; retryAfterMs?: number };

/** What the body of a 422 says when the backend could not store the payload for a reason of
 * its own, which passes: Grafana Pyroscope's /ingest answers 422 with the error text for
 * every failure to hand a profile on (pkg/ingester/pyroscope/ingest_handler.go: anything
 * but a conversion error -> httputil.ErrorWithStatus(w, err, 422)), so an ingester ring
 * without enough healthy members comes back as 422 too. The texts are dskit's ring errors
 * (ring/ring.go ErrEmptyRing, ErrTooManyUnhealthyInstances, ErrInstanceNotFound;
 * ring/replication_strategy.go "at least %d live replicas required, could only find %d"),
 * the transport's errors reaching an ingester, and the distributor's rate limit ("push
 * rate limit (...) exceeded", connect's ResourceExhausted). A 422 for a bad profile (parse
 * errors, limits on size, samples, labels) says none of these and stays final. */
export const TRANSIENT_422 = new RegExp([
  'empty ring',
  'too many unhealthy instances in the ring',
  'live replicas required',
  'instance [^ ]+ not found in the ring',
  'instance not found in the ring',
  'connection refused',
  'connection reset',
  'context deadline exceeded',
  'i/o timeout',
  'no such host',
  'code = Unavailable',
  '\\bunavailable\\b',
  'rate limit \\(.*\\) exceeded',
].join('|'), 'i');

/** Whether a 422 with this body is worth sending again (TRANSIENT_422). */
export function transient422(bodyText: string): boolean {
  return TRANSIENT_422.test(bodyText);
}

/** What a response (or an error) means for the item. */
export function classify(res: { status: number; headers?: Headers } | Error, bodyText = ''): Kind | null {
  if (res instanceof Error) {
    const timeout = res.name === 'TimeoutError' || res.name === 'AbortError';
    const cause = (res as Error & { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.code ?? cause?.message ?? res.message;
    return { retry: true, kind: timeout ? 'timeout' : 'network', detail };
  }
  const { status } = res;
  if (status >= 200 && status < 300) return null;
  const detail = `HTTP ${status}${bodyText ? `: ${bodyText.slice(0, 200).replace(/\s+/g, ' ').trim()}` : ''}`;
  const retry = status === 408 || status === 429 || status >= 500 || (status === 422 && transient422(bodyText));
  const kind: Kind = { retry, kind: `http_${status}`, status, detail };
  const ra = res.headers?.get('retry-after');
  if (retry && ra) {
    const secs = Number(ra);
    if (Number.isFinite(secs) && secs >= 0) kind.retryAfterMs = secs * 1000;
    else {
      const at = Date.parse(ra);
      if (Number.isFinite(at)) kind.retryAfterMs = Math.max(0, at - Date.now());
    }
  }
  return kind;
}

export class PushQueue {
  readonly #opts: Required<Omit<PushOptions, 'log' | 'fetch' | 'onSuccess'>>;
  readonly #onSuccess: PushOptions['onSuccess'];
  readonly #log: ExportLog;
  readonly #fetch: typeof fetch;
  readonly #queue: { item: PushItem; attempts: number }[] = [];
  readonly #stats: PushStats = {
    enqueued: 0, sent: 0, rejected: 0, failed: 0, dropped: 0, retried: 0, queued: 0, inFlight: 0,
    errors: {}, sentBytes: 0,
  };
  /** failure kinds logged since the last success */
  readonly #logged = new Set<string>();
  #running = false;
  #closed = false;
  #deadline = false;
  #inFlight: AbortController | null = null;
  #wake: (() => void) | null = null;
  #sleepTimer: NodeJS.Timeout | null = null;
  #idle: Promise<void> = Promise.resolve();

  constructor(opts: PushOptions) {
    this.#opts = {
      name: opts.name,
      maxQueue: Math.max(1, opts.maxQueue ?? 32),
      maxAttempts: Math.max(1, opts.maxAttempts ?? 5),
      timeoutMs: opts.timeoutMs ?? 10_000,
      initialBackoffMs: opts.initialBackoffMs ?? 1000,
      maxBackoffMs: opts.maxBackoffMs ?? 30_000,
    };
    this.#log = opts.log ?? (() => {});
    this.#fetch = opts.fetch ?? fetch;
    this.#onSuccess = opts.onSuccess;
  }

  stats(): PushStats {
    return { ...this.#stats, errors: { ...this.#stats.errors }, queued: this.#queue.length };
  }

  /** Queues an item; drops the oldest waiting one if full. Never blocks, never throws. */
  enqueue(item: PushItem): void {
    this.#stats.enqueued++;
    if (this.#closed) {
      this.#stats.dropped++;
      settle(item, false, 'dropped');
      return;
    }
    if (this.#queue.length >= this.#opts.maxQueue) {
      const old = this.#queue.shift()!;
      this.#stats.dropped++;
      settle(old.item, false, 'dropped');
      this.#once('dropped', 'warn', `${this.#opts.name}: queue full, dropping the oldest payload (backend slow or down)`,
        { ...old.item.describe, maxQueue: this.#opts.maxQueue });
    }
    this.#queue.push({ item, attempts: 0 });
    if (!this.#running) {
      this.#running = true;
      this.#idle = this.#run().finally(() => { this.#running = false; });
    }
  }

  /** Stops taking items and tries what is queued, once more each and without backoff,
   * until deadlineMs has passed; then aborts the request in flight. What is left is
   * counted as failed. Resolves by the deadline (plus the abort's tick). */
  async close(deadlineMs = 5000): Promise<void> {
    this.#closed = true;
    this.#wakeUp();
    const timer = setTimeout(() => {
      this.#deadline = true;
      this.#inFlight?.abort(new DOMException('exporter stopping', 'AbortError'));
      this.#wakeUp();
    }, deadlineMs);
    try {
      await this.#idle;
    } finally {
      clearTimeout(timer);
    }
  }

  async #run(): Promise<void> {
    while (this.#queue.length > 0) {
      if (this.#deadline) {
        const left = this.#queue.splice(0);
        this.#stats.failed += left.length;
        for (const e of left) settle(e.item, false, 'failed');
        break;
      }
      // The item in flight is out of the queue, so a full queue never drops it mid-request.
      const entry = this.#queue.shift()!;
      entry.attempts++;
      const outcome = await this.#send(entry.item);
      if (outcome === null) {
        settle(entry.item, true, 'sent');
        continue;
      }
      const fields = { ...entry.item.describe, error: outcome.detail, url: redact(entry.item.url) };
      if (!outcome.retry) {
        this.#stats.rejected++;
        this.#once(`rejected:${outcome.kind}`, 'error', `${this.#opts.name}: backend rejected a payload (not retried)`, fields);
        settle(entry.item, false, 'rejected');
      } else if (entry.attempts >= this.#opts.maxAttempts || this.#closed) {
        this.#stats.failed++;
        this.#once(`failed:${outcome.kind}`, 'warn',
          `${this.#opts.name}: giving up on a payload after ${entry.attempts} attempt(s)`, fields);
        settle(entry.item, false, 'failed');
      } else {
        this.#stats.retried++;
        this.#once(`retry:${outcome.kind}`, 'warn', `${this.#opts.name}: push failed, retrying with backoff`, fields);
        if (this.#queue.length >= this.#opts.maxQueue) {
          // Newer payloads filled the queue meanwhile: this one is the oldest.
          this.#stats.dropped++;
          this.#once('dropped', 'warn', `${this.#opts.name}: queue full, dropping the oldest payload (backend slow or down)`,
            { ...entry.item.describe, maxQueue: this.#opts.maxQueue });
          settle(entry.item, false, 'dropped');
          continue;
        }
        this.#queue.unshift(entry);
        await this.#sleep(this.#backoff(entry.attempts, outcome.retryAfterMs));
      }
    }
  }

  /** null on success; else the failure kind. Counts errors and logs recovery. */
  async #send(item: PushItem): Promise<Kind | null> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new DOMException('request timed out', 'TimeoutError')), this.#opts.timeoutMs);
    this.#inFlight = ac;
    this.#stats.inFlight = 1;
    let kind: Kind | null;
    try {
      const res = await this.#fetch(item.url, {
        method: 'POST',
        headers: item.headers,
        body: item.body as Uint8Array<ArrayBuffer>,
        signal: ac.signal,
      });
      // Read the body (bounded by the same timeout) so the connection can be reused.
      let body = new Uint8Array(0);
      try {
        body = new Uint8Array(await res.arrayBuffer());
      } catch {
        // the status is what matters
      }
      kind = classify(res, res.ok ? '' : new TextDecoder().decode(body));
      if (kind === null) {
        try {
          this.#onSuccess?.(body, item);
        } catch {
          // an inspector's bug is not the backend's failure
        }
      }
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      const reason = ac.signal.reason as Error | undefined;
      kind = classify(ac.signal.aborted && reason instanceof Error ? reason : err);
    } finally {
      clearTimeout(timer);
      this.#inFlight = null;
      this.#stats.inFlight = 0;
    }
    if (kind === null) {
      this.#stats.sent++;
      this.#stats.sentBytes += item.body.byteLength;
      if (this.#logged.size > 0) {
        this.#logged.clear();
        this.#log('info', `${this.#opts.name}: backend accepts pushes again`, { url: redact(item.url) });
      }
    } else {
      this.#stats.errors[kind.kind] = (this.#stats.errors[kind.kind] ?? 0) + 1;
    }
    return kind;
  }

  #backoff(attempts: number, retryAfterMs?: number): number {
    const { initialBackoffMs, maxBackoffMs } = this.#opts;
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, maxBackoffMs);
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (attempts - 1));
    // "Equal jitter": at least half the ceiling, so retries never hammer a backend.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#sleepTimer = setTimeout(() => this.#wakeUp(), ms);
      this.#sleepTimer.unref();
    });
  }

  #wakeUp(): void {
    if (this.#sleepTimer) clearTimeout(this.#sleepTimer);
    this.#sleepTimer = null;
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #once(kind: string, level: 'warn' | 'error', msg: string, fields: Record<string, string | number>): void {
    if (this.#logged.has(kind)) return;
    this.#logged.add(kind);
    this.#log(level, msg, fields);
  }
}

function settle(item: PushItem, delivered: boolean, outcome: 'sent' | 'rejected' | 'failed' | 'dropped'): void {
  try {
    item.settle?.(delivered, outcome);
  } catch {
    // the owner's bug must not stop the queue
  }
}

/** A URL without credentials, for logs. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '';
      u.password = '';
    }
    return u.origin + u.pathname;
  } catch {
    return '(invalid url)';
  }
}
