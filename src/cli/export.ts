// heaptap export: a profile's stacks in the text formats other tools read.
//   folded     one line per distinct stack, `root;caller;...;leaf value` (Brendan Gregg's
//              stackcollapse output): flamegraph.pl, inferno-flamegraph, speedscope
//   callgrind  the format of valgrind's callgrind (docs: valgrind.org/docs/manual/cl-format.html):
//              KCachegrind, QCachegrind, callgrind_annotate. Each function's self cost is
//              what its samples hold as leaf; each call edge carries the inclusive cost of
//              the samples that went through it.
// Frames are the profile's, innermost (inlined) ones included; nothing is skipped, so the
// values of either output add up to the profile's total for the sample type.
import type { Profile } from 'pprof-format';

import { str } from '../profile.ts';
import { ProfileStacks, frameName, shortName, type StackFrame } from '../sites.ts';

export type ExportFormat = 'folded' | 'callgrind';

/** Folded stacks: root first, one line per distinct stack (values summed), sorted. Names
 * are short (templates and parameters elided) unless full; `;` in a name becomes `:`, and
 * newlines spaces, so that every line splits the same way. */
export function foldedStacks(profile: Profile, valueIndex: number, full = false): string {
  const stacks = new ProfileStacks(profile);
  const sums = new Map<string, number>();
  for (const s of profile.sample) {
    const v = Number(s.value[valueIndex] ?? 0);
    if (!v) continue;
    const names = stacks.frames(s).map((f) => {
      const n = f.name ? (full ? f.name : shortName(f.name)) : frameName(f);
      return n.replace(/;/g, ':').replace(/[\r\n]+/g, ' ') || '?';
    });
    const key = names.reverse().join(';') || '?';
    sums.set(key, (sums.get(key) ?? 0) + v);
  }
  return [...sums].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([k, v]) => `${k} ${v}\n`).join('');
}

/** The callgrind format: one event (the sample type), positions by source line. */
export function callgrind(profile: Profile, valueIndex: number, command = 'heaptap'): string {
  const stacks = new ProfileStacks(profile);
  const type = str(profile, profile.sampleType[valueIndex]!.type);
  // per function (file + name): self cost per line, and calls per (line, callee) with their
  // inclusive cost and count of samples
  interface Fn { file: string; name: string; self: Map<number, number>; calls: Map<string, { line: number; callee: string; calleeLine: number; cost: number; count: number }> }
  const fns = new Map<string, Fn>();
  const fnOf = (f: StackFrame): Fn => {
    const name = (f.name || frameName(f)).replace(/[\r\n]+/g, ' ');
    const file = f.file || f.module || '???';
    const key = `${file}\0${name}`;
    let fn = fns.get(key);
    if (!fn) fns.set(key, (fn = { file, name, self: new Map(), calls: new Map() }));
    return fn;
  };
  let total = 0;
  for (const s of profile.sample) {
    const v = Number(s.value[valueIndex] ?? 0);
    if (!v) continue;
    total += v;
    const frames = stacks.frames(s);
    if (!frames.length) continue;
    const leaf = fnOf(frames[0]!);
    const l0 = frames[0]!.line ?? 0;
    leaf.self.set(l0, (leaf.self.get(l0) ?? 0) + v);
    // an edge counted once per sample, even when recursion repeats it
    const seen = new Set<string>();
    for (let i = 1; i < frames.length; i++) {
      const caller = fnOf(frames[i]!);
      const callee = fnOf(frames[i - 1]!);
      const line = frames[i]!.line ?? 0;
      const calleeKey = `${callee.file}\0${callee.name}`;
      const k = `${line}\0${calleeKey}`;
      const edge = `${caller.file}\0${caller.name}\0${k}`;
      if (seen.has(edge)) continue;
      seen.add(edge);
      let c = caller.calls.get(k);
      if (!c) caller.calls.set(k, (c = { line, callee: calleeKey, calleeLine: frames[i - 1]!.line ?? 0, cost: 0, count: 0 }));
      c.cost += v;
      c.count++;
    }
  }
  // name compression: (id) name the first time, (id) after
  const fileIds = new Map<string, number>();
  const fnIds = new Map<string, number>();
  const fl = (file: string) => {
    let id = fileIds.get(file);
    if (id !== undefined) return `(${id})`;
    fileIds.set(file, (id = fileIds.size + 1));
    return `(${id}) ${file}`;
  };
  const fnName = (key: string, name: string) => {
    let id = fnIds.get(key);
    if (id !== undefined) return `(${id})`;
    fnIds.set(key, (id = fnIds.size + 1));
    return `(${id}) ${name}`;
  };
  const out: string[] = [
    '# callgrind format',
    'version: 1',
    'creator: heaptap',
    `cmd: ${command}`,
    'positions: line',
    `events: ${type}`,
    `summary: ${total}`,
    '',
  ];
  for (const [key, fn] of fns) {
    out.push(`fl=${fl(fn.file)}`, `fn=${fnName(key, fn.name)}`);
    for (const [line, v] of [...fn.self].sort((a, b) => a[0] - b[0])) out.push(`${line} ${v}`);
    for (const c of fn.calls.values()) {
      const callee = fns.get(c.callee)!;
      if (callee.file !== fn.file) out.push(`cfi=${fl(callee.file)}`);
      out.push(`cfn=${fnName(c.callee, callee.name)}`, `calls=${c.count} ${c.calleeLine}`, `${c.line} ${c.cost}`);
    }
    out.push('');
  }
  return out.join('\n');
}
