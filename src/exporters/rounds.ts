// When push exporters ask the HeapSource for profiles: a round every interval over the
// live processes, a final profile for each process that ends, a last round at stop. Both
// profile exporters (Pyroscope, OTLP profiles) use it and differ only in what they make of
// the profiles (deliver).
//
// A round builds profiles one at a time (the agent symbolizes; a burst would compete with
// its scans for nothing). A round still running when the next interval comes is not
// doubled: that interval is skipped and counted. Rounds never wait for the network:
// deliver only queues.
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
}

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
  readonly #stats: RoundStats = { profiles: 0, profileErrors: 0, skippedRounds: 0, deliverErrors: 0 };
  #stopped = false;

  constructor(opts: RoundsOptions, deliver: (built: BuiltProfile[]) => void | Promise<void>) {
    this.#opts = opts;
    this.#deliver = deliver;
    this.#now = opts.now ?? Date.now;
  }

  start(source: HeapSource): void {
    if (this.#source) throw new Error(`${this.#opts.name} exporter already started`);
    this.#source = source;
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
    for (const p of source.processes()) {
      if (!p.alive) continue;
      const b = await this.#build(p, false);
      if (b) built.push(b);
    }
    if (built.length > 0) {
      try {
        await this.#deliver(built);
      } catch (e) {
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
    const delta = this.#build(p, true);
    const peak = p.peakBytes !== null ? this.#build(p, true, 'peak') : Promise.resolve(null);
    const job: Promise<void> = Promise.all([delta, peak])
      .then((bs) => bs.filter((b): b is BuiltProfile => b !== null))
      .then((bs) => (bs.length ? this.#deliver(bs) : undefined))
      .catch((e: unknown) => {
        this.#stats.deliverErrors++;
        this.#opts.log('error', `${this.#opts.name}: could not encode or queue a final profile`, { pid: p.pid, error: String(e) });
      })
      .finally(() => { this.#finals.delete(job); });
    this.#finals.add(job);
  }

  async #build(p: HeapProcess, final: boolean, kind: 'delta' | 'peak' = 'delta'): Promise<BuiltProfile | null> {
    const atMs = this.#now();
    try {
      const bytes = await this.#source!.encodedProfile(p.key, kind, this.#opts.consumer);
      this.#stats.profiles++;
      return { process: p, bytes, atMs, final, kind };
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

  start(source: HeapSource): void {
    this.#rounds.start(source);
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
