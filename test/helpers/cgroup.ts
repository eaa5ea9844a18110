// A memory cgroup with a limit, made for a test: how the OOM killer is exercised for real.
import { existsSync } from 'node:fs';
import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A memory cgroup limited to `bytes` (v1 memory controller or v2), or why none can be
 * made here. */
export async function memoryCgroup(bytes: number): Promise<{ procs: string; remove: () => Promise<void>; kind: string } | string> {
  const name = `heaptap-test-${process.pid}-${Date.now()}`;
  const v1 = '/sys/fs/cgroup/memory';
  const v2 = '/sys/fs/cgroup';
  try {
    if (existsSync(join(v1, 'memory.limit_in_bytes'))) {
      const d = join(v1, name);
      await mkdir(d);
      await writeFile(join(d, 'memory.limit_in_bytes'), String(bytes));
      // with swap, the memory+swap limit too (no swap: the file may be missing)
      if (existsSync(join(d, 'memory.memsw.limit_in_bytes'))) await writeFile(join(d, 'memory.memsw.limit_in_bytes'), String(bytes));
      return { procs: join(d, 'cgroup.procs'), remove: () => rmdir(d), kind: 'cgroup v1 memory.limit_in_bytes' };
    }
    if (existsSync(join(v2, 'cgroup.subtree_control'))) {
      const d = join(v2, name);
      await mkdir(d);
      await writeFile(join(d, 'memory.max'), String(bytes));
      if (existsSync(join(d, 'memory.swap.max'))) await writeFile(join(d, 'memory.swap.max'), '0');
      return { procs: join(d, 'cgroup.procs'), remove: () => rmdir(d), kind: 'cgroup v2 memory.max' };
    }
    return 'no memory cgroup controller is mounted';
  } catch (e) {
    return `a memory cgroup cannot be made here: ${(e as Error).message}`;
  }
}

