// Run-time control of a profiled process through its region's control area: pause and
// resume sampling, or change the mean sampling interval. The preload reads the area at
// each sample point (core.c apply_control), so a change takes effect at the process's next
// sampled allocation. Shared by POST /debug/heaptap/control and `heaptap ctl`.
import { writeControl, type ControlUpdate } from '../region.ts';

export type ControlAction =
  | { action: 'pause' }
  | { action: 'resume' }
  | { action: 'rate'; bytes: number };

export class ControlError extends Error {
  override name = 'ControlError';
}

/** The preload ignores a rate above 2^40 bytes (core.c). */
export const MAX_RATE = 2 ** 40;

/** A byte count: a whole number with an optional binary k/m/g suffix (512k = 524288). */
export function parseBytes(text: string): number {
  const m = /^(\d+)(?:([kmg])i?b?)?$/i.exec(text.trim());
  if (!m) throw new ControlError(`rate '${text}' is not a whole number of bytes (like 1, 4096, 512k, 1m)`);
  const shift = { '': 0, k: 10, m: 20, g: 30 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g'];
  const v = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(v) || v < 1 || v > MAX_RATE) throw new ControlError(`rate '${text}' is out of range [1, ${MAX_RATE}]`);
  return v;
}

export function parseControl(action: string | undefined, bytes?: string): ControlAction {
  switch (action) {
    case 'pause':
    case 'resume':
      if (bytes !== undefined && bytes !== '') throw new ControlError(`${action} takes no byte count`);
      return { action };
    case 'rate':
      if (bytes === undefined || bytes === '') throw new ControlError('rate needs a byte count (the mean bytes between samples; 1 = every allocation)');
      return { action, bytes: parseBytes(bytes) };
    default:
      throw new ControlError(action ? `unknown action '${action}' (expected pause, resume or rate)` : 'no action (expected pause, resume or rate)');
  }
}

export function controlUpdate(a: ControlAction): ControlUpdate {
  return a.action === 'rate' ? { rate: a.bytes } : { paused: a.action === 'pause' };
}

/** Writes the control area of the region at path. */
export function applyControl(path: string, a: ControlAction): void {
  writeControl(path, controlUpdate(a));
}

export function describeControl(a: ControlAction): string {
  return a.action === 'rate' ? `sampling rate set to ${a.bytes} bytes` : a.action === 'pause' ? 'sampling paused' : 'sampling resumed';
}
