// `heaptap ctl <pid> pause|resume|rate <bytes>`: writes the control area of a running
// process's region directly (no agent needed). The preload applies it at the process's
// next sampled allocation.
import { basename } from 'node:path';

import { applyControl, ControlError, describeControl, parseControl } from '../agent/control.ts';
import { isRegionError, listRegions, readRegionAsync } from '../region.ts';
import { CTL_USAGE } from '../agent/usage.ts';
import { describeError, parse, regionDir, UsageError } from './common.ts';

export { CTL_USAGE };

export async function ctlCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('ctl', args, {
    dir: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(CTL_USAGE);
    return 0;
  }
  const [pidText, action, bytes, ...extra] = positionals;
  if (pidText === undefined || action === undefined) throw new UsageError('ctl: need <pid> and an action (see heaptap ctl --help)');
  if (!/^\d{1,10}$/.test(pidText) || Number(pidText) < 1) throw new UsageError(`ctl: bad pid '${pidText}'`);
  if (extra.length) throw new UsageError(`ctl: unexpected argument '${extra[0]}'`);
  let a;
  try {
    a = parseControl(action, bytes);
  } catch (e) {
    if (e instanceof ControlError) throw new UsageError(`ctl: ${e.message}`);
    throw e;
  }
  const dir = regionDir(values.dir);
  const pid = Number(pidText);
  // Region files are <pid>-<unique>.heaptap; after an exec a pid has several, and only
  // the running image's region is held by a writer.
  const candidates = (await listRegions(dir)).filter((p) => basename(p).startsWith(`${pid}-`));
  let target: string | undefined;
  let lastError = '';
  for (const path of candidates) {
    try {
      const snap = await readRegionAsync(path, 0xffffffff);
      if (snap.header.pid === pid && snap.alive) target = path;
    } catch (e) {
      if (isRegionError(e) && e.alive === true) target = path; // setting up: still controllable
      else lastError = describeError(e);
    }
  }
  if (!target) {
    const why = candidates.length === 0 ? `no region of pid ${pid} in ${dir}` : `pid ${pid} has no running region in ${dir}${lastError ? ` (${lastError})` : ' (the process ended)'}`;
    process.stderr.write(`heaptap: ctl: ${why}\n`);
    return 1;
  }
  try {
    applyControl(target, a);
  } catch (e) {
    process.stderr.write(`heaptap: ctl: cannot write the control area: ${describeError(e, target)}\n`);
    return 1;
  }
  process.stdout.write(`pid ${pid}: ${describeControl(a)} (${basename(target)})\n`);
  return 0;
}
