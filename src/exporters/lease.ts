// The push lease of a region directory: one agent at a time pushes profiles of the
// processes in a directory, so two agents on one directory (a second sidecar, a node agent
// beside a pod's own) never send the same allocations twice.
//
// The lease is an flock(2) on <dir>/.heaptap-push.lease (src/addon/addon.cc lockFile): the
// kernel releases it when its holder exits or is killed, so no stale lease outlives an
// agent. An agent that finds it held does not push profiles (the agent logs that at start)
// and serves pull requests as usual.
//
// The file also says how far its holders got: {pid, startedMs, pushedUntilMs}, where
// pushedUntilMs is the end of the span of the latest profile a backend accepted. The next
// holder (an agent restarted on the same directory) reads it: a process that was already
// running then had its allocations up to that time pushed, so its first push from the new
// agent starts from a baseline taken when the agent first sees it, not from the process's
// start (which would send its whole history again as one spike). What it allocated between
// the old agent's last push and the new agent's first look is not sent: a gap, never a
// double count (docs/exporters.md, "First push").
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { native } from '../native.ts';

export const LEASE_FILE = '.heaptap-push.lease';

/** What a push exporter needs of the lease (src/exporters/rounds.ts). */
export interface PushLease {
  /** Processes that started at or before this time (ms since the epoch) had their
   * allocations pushed up to it by an earlier holder; null when no earlier holder pushed
   * anything from this directory. */
  readonly pushedUntilMs: number | null;
  /** A backend accepted profiles that cover allocations up to atMs. */
  delivered(atMs: number): void;
}

export interface HeldLease extends PushLease {
  readonly path: string;
  release(): void;
}

interface LeaseRecord {
  pid: number;
  startedMs: number;
  pushedUntilMs: number | null;
}

export type LeaseResult = { held: true; lease: HeldLease } | { held: false; path: string; holder: Partial<LeaseRecord> | null };

function readRecord(path: string): Partial<LeaseRecord> | null {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<LeaseRecord>;
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

/** Takes the push lease of dir, or says who holds it. Throws when the lease file cannot be
 * opened at all (a read-only directory): the caller decides what that means. */
export function acquirePushLease(dir: string, now: () => number = Date.now): LeaseResult {
  const path = join(dir, LEASE_FILE);
  const fd = native.lockFile(path);
  if (fd < 0) return { held: false, path, holder: readRecord(path) };
  const before = readRecord(path);
  const pushedUntilMs = typeof before?.pushedUntilMs === 'number' ? before.pushedUntilMs : null;
  const record: LeaseRecord = { pid: process.pid, startedMs: now(), pushedUntilMs };
  const write = () => {
    try {
      writeFileSync(path, JSON.stringify(record) + '\n');
    } catch {
      // the lock is what matters; the record only helps the next holder
    }
  };
  write();
  let lastWrite = 0;
  let pending: NodeJS.Timeout | null = null;
  let released = false;
  return {
    held: true,
    lease: {
      path,
      pushedUntilMs,
      delivered(atMs: number) {
        if (released || (record.pushedUntilMs !== null && atMs <= record.pushedUntilMs)) return;
        record.pushedUntilMs = atMs;
        // At most a write a second (every push of every process reports here), the last
        // one a second later at most.
        const t = now();
        if (t - lastWrite >= 1000) {
          lastWrite = t;
          write();
        } else if (!pending) {
          pending = setTimeout(() => {
            pending = null;
            lastWrite = now();
            if (!released) write();
          }, 1000 - (t - lastWrite));
          pending.unref();
        }
      },
      release() {
        if (released) return;
        if (pending) clearTimeout(pending);
        write();
        released = true;
        native.unlockFile(fd);
      },
    },
  };
}
