// When push exporters ask the HeapSource for profiles: a round every interval over the
// live processes, a final profile for each process that ends, a last round at stop. Both
// profile exporters (Pyroscope, OTLP profiles) use it and differ only in what they make of
// the profiles (deliver).
//
// A round builds profiles one at a time (the agent symbolizes; a burst would compete with
// its scans for nothing). A round still running when the next interval comes is not
// doubled: that interval is skipped and counted. Rounds never wait for the network:
// deliver only queues.
//
// Deltas are neither lost nor doubled on their way (docs/exporters.md, "Delivery"):
//   - each built delta is settled by the queue (push.ts PushItem.settle): delivered, its
//     baseline stays; not delivered (failed after its retries, dropped from a full queue,
//     left at stop), the source's baseline goes back (HeapSource.settleDelta), so the next
//     delta of that process holds both spans. A rejected payload (the backend said it is
//     bad) is not sent again, inside the next one either.
//   - while a process's delta is still queued or retried, rounds build none for it (counted
//     as deferred): the one after it covers the whole span, and a baseline that goes back
//     never undoes a later delta. A process's final delta is built when it ends, whatever
//     is pending (the agent forgets it right after).
//   - with a push lease (lease.ts) that an earlier agent held, a process that was already
//     running when that agent last delivered gets a baseline at its first round (counted as
//     primed): its first push holds what it allocated since, not its whole history again.
import type { PushLease } from './lease.ts';
import type { HeapProcess, HeapSource } from '../agent/types.ts';
import { PushQueue, type ExportLog, type PushOptions, type PushStats } from './push.ts';

export interface BuiltProfile {
  process: HeapProcess;
  /** the pprof profile as protobuf bytes (HeapSource.encodedProfile) */
  bytes: Uint8Array;
  /** when the profile was asked for (ms since the epoch): the end of the span it covers */
  atMs: number;
  /** the process had ended: this is its last profile */
  final: boolean;
  /** delta: allocations since the previous push, in use now (every round, and the final
   * one); peak: in use at the process's own peak (pushed once, when it ends) */
  kind: 'delta' | 'peak';
  /** the exporter calls it once with what became of the request that carried this profile
   * (push.ts PushItem.settle's outcome) */
  settle(outcome: SettleOutcome): void;
}

export type SettleOutcome = 'sent' | 'rejected' | 'failed' | 'dropped';

export interface RoundsOptions {
  name: string;
  intervalMs: number;
  /** HeapSource consumer of the 'delta' baseline */
  consumer: string;
  log: ExportLog;
  now?: () => number;
}

export interface RoundStats {
  /** profiles built */
  profiles: number;
  /** profiles the source could not give (region unreadable, process gone) */
  profileErrors: number;
  /** intervals skipped because the previous round was still building */
  skippedRounds: number;
  /** rounds whose profiles could not be encoded or queued (a bug: logged once) */
  deliverErrors: number;
  /** processes left out of a round because their previous delta was still on its way */
  deferred: number;
  /** processes whose first push starts from a baseline (an earlier agent pushed them) */
  primed: number;
  /** deltas not delivered, put back into the next one */
  rewound: number;
}

export class ProfileRounds {
  readonly #opts: RoundsOptions;
  readonly #deliver: (built: BuiltProfile[]) => void | Promise<void>;
  readonly #now: () => number;
  #source: HeapSource | null = null;
  #timer: NodeJS.Timeout | null = null;
  #unsubscribe: (() => void) | null = null;
  #round: Promise<void> | null = null;
  readonly #finals = new Set<Promise<void>>();
  readonly #stats: RoundStats = { profiles: 0, profileErrors: 0, skippedRounds: 0, deliverErrors: 0, deferred: 0, primed: 0, rewound: 0 };
  #stopped = false;
  #lease: PushLease | null = null;
  /** process keys seen by a round or a final profile */
  readonly #seen = new Set<string>();
  /** process keys whose delta is queued or being sent */
  readonly #outstanding = new Set<string>();

  constructor(opts: RoundsOptions, deliver: (built: BuiltProfile[]) => void | Promise<void>) {
    this.#opts = opts;
    this.#deliver = deliver;
    this.#now = opts.now ?? Date.now;
  }

  start(source: HeapSource, lease?: PushLease): void {
    if (this.#source) throw new Error(`${this.#opts.name} exporter already started`);
    this.#source = source;
    this.#lease = lease ?? null;
    source.trackDelta?.(this.#opts.consumer);
    this.#timer = setInterval(() => {
      if (this.#round) this.#stats.skippedRounds++;
      else void this.round();
    }, this.#opts.intervalMs);
    this.#timer.unref();
    this.#unsubscribe = source.onProcessEnd((p) => this.#final(p));
  }

  stats(): RoundStats {
    return { ...this.#stats };
  }

  /** One round now (or the one running): resolves when its profiles are delivered (queued).
   * Never rejects. */
  round(): Promise<void> {
    if (!this.#round) this.#round = this.#run().finally(() => { this.#round = null; });
    return this.#round;
  }

  /** Stops the timer and the subscription; then a last round and the pending final
   * profiles, given at most budgetMs to be built and delivered. */
  async stop(budgetMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#unsubscribe?.();
    if (!this.#source) return;
    const last = (this.#round ?? Promise.resolve()).then(() => this.#run());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([last, ...this.#finals]),
      new Promise((r) => { timer = setTimeout(r, budgetMs); }),
    ]);
    clearTimeout(timer);
  }

  async #run(): Promise<void> {
    const source = this.#source;
    if (!source) return;
    const built: BuiltProfile[] = [];
    const listed = source.processes();
    for (const p of listed) {
      if (!p.alive) continue;
      if (this.#outstanding.has(p.key)) {
        this.#stats.deferred++;
        continue;
      }
      this.#firstLook(p);
      const b = await this.#build(p, false);
      if (b) built.push(b);
    }
    const keys = new Set(listed.map((p) => p.key));
    for (const k of this.#seen) if (!keys.has(k)) this.#seen.delete(k);
    if (built.length > 0) {
      try {
        await this.#deliver(built);
      } catch (e) {
        for (const b of built) b.settle('failed');
        // Never an unhandled rejection from a timer: count it, say it once.
        this.#stats.deliverErrors++;
        if (this.#stats.deliverErrors === 1) {
          this.#opts.log('error', `${this.#opts.name}: could not encode or queue profiles`, { error: e instanceof Error ? e.message : String(e) });
        }
      }
    }
  }

  #final(p: HeapProcess): void {
    if (this.#stopped) return;
    // Asked for inside the listener: the agent forgets the process right after. Its
    // peak too, where its library keeps one: what it held at its worst moment.
    this.#firstLook(p);
    this.#seen.delete(p.key);
    const delta = this.#build(p, true);
    const peak = p.peakBytes !== null ? this.#build(p, true, 'peak') : Promise.resolve(null);
    let bs: BuiltProfile[] = [];
    const job: Promise<void> = Promise.all([delta, peak])
      .then((all) => { bs = all.filter((b): b is BuiltProfile => b !== null); })
      .then(() => (bs.length ? this.#deliver(bs) : undefined))
      .catch((e: unknown) => {
        for (const b of bs) b.settle('failed');
        this.#stats.deliverErrors++;
        this.#opts.log('error', `${this.#opts.name}: could not encode or queue a final profile`, { pid: p.pid, error: String(e) });
      })
      .finally(() => { this.#finals.delete(job); });
    this.#finals.add(job);
  }

  /** A process's first round: a baseline now if an earlier agent pushed it already. */
  #firstLook(p: HeapProcess): void {
    if (this.#seen.has(p.key)) return;
    this.#seen.add(p.key);
    const until = this.#lease?.pushedUntilMs;
    if (until === null || until === undefined || p.startMs > until) return;
    if (this.#source!.primeDelta?.(p.key, this.#opts.consumer)) this.#stats.primed++;
  }

  async #build(p: HeapProcess, final: boolean, kind: 'delta' | 'peak' = 'delta'): Promise<BuiltProfile | null> {
    const atMs = this.#now();
    const source = this.#source!;
    const consumer = this.#opts.consumer;
    try {
      const bytes = await source.encodedProfile(p.key, kind, consumer);
      this.#stats.profiles++;
      let settled = false;
      if (kind === 'delta') this.#outstanding.add(p.key);
      const settle = (outcome: SettleOutcome) => {
        if (settled) return;
        settled = true;
        if (outcome === 'sent') this.#lease?.delivered(atMs);
        if (kind !== 'delta') return;
        this.#outstanding.delete(p.key);
        // Rejected: the backend refuses this data, so it does not go out again either.
        const kept = outcome === 'sent' || outcome === 'rejected';
        if (source.settleDelta?.(p.key, consumer, kept) && !kept) this.#stats.rewound++;
      };
      return { process: p, bytes, atMs, final, kind, settle };
    } catch (e) {
      this.#stats.profileErrors++;
      // A process that ended between the listing and the read is ordinary: warn once.
      this.#opts.log(this.#stats.profileErrors === 1 ? 'warn' : 'debug', `${this.#opts.name}: could not get a profile`,
        { pid: p.pid, key: p.key, error: e instanceof Error ? e.message : String(e) });
      return null;
    }
  }
}

/** A profile exporter's moving parts, wired the one way both exporters need: rounds build
 * profiles and hand them to `deliver`, which queues requests on `queue`; stop() gives the
 * rounds half of the deadline (a last round, final profiles) and the queue the rest. */
export class ProfilePusher {
  readonly queue: PushQueue;
  readonly #rounds: ProfileRounds;
  readonly #stopDeadlineMs: number;
  #stopping: Promise<void> | null = null;

  constructor(
    opts: { rounds: RoundsOptions; queue: PushOptions; stopDeadlineMs?: number },
    deliver: (built: BuiltProfile[]) => void | Promise<void>,
  ) {
    this.queue = new PushQueue(opts.queue);
    this.#rounds = new ProfileRounds(opts.rounds, deliver);
    this.#stopDeadlineMs = opts.stopDeadlineMs ?? 5000;
  }

  start(source: HeapSource, lease?: PushLease): void {
    this.#rounds.start(source, lease);
  }

  /** One round now: the live processes' profiles, built and queued (not yet sent). */
  pushNow(): Promise<void> {
    return this.#rounds.round();
  }

  /** A last round and the final profiles of ended processes, then what is queued is sent,
   * all within stopDeadlineMs (default 5 s). */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const started = Date.now();
      await this.#rounds.stop(this.#stopDeadlineMs / 2);
      await this.queue.close(Math.max(0, this.#stopDeadlineMs - (Date.now() - started)));
    })();
    return this.#stopping;
  }

  stats(): PushStats & RoundStats {
    return { ...this.queue.stats(), ...this.#rounds.stats() };
  }
}
