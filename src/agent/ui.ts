// GET /ui: the agent's processes in a browser. One page (the report page of
// src/report/, everything inlined) with the processes served on top and, for the one
// chosen (?pid=N or ?region=FILE; else the live process holding the most), its timeline and
// a flame graph of in use now, in use at its own peak, its growth over the last minutes
// (in use now minus a snapshot of about GROWTH_MS ago, the stacks that grew), and what it
// allocated. The same token rule as every other endpoint (src/agent/http.ts).
import type { RegionSnapshot } from '../region.ts';
import { decodeProfile } from '../profile.ts';
import { reportHtml } from '../report/html.ts';
import { buildReport, thinTimeline, type ViewSource } from '../report/model.ts';
import { formatBytes, formatSeconds } from '../cli/common.ts';
import type { Tracked, Watcher } from './processes.ts';
import type { AgentSource } from './source.ts';
import type { HeapProcess } from './types.ts';

/** The growth view compares with a snapshot at least this old (when the agent has one). */
export const GROWTH_MS = 5 * 60_000;
/** How often a snapshot is kept for it: the growth window is GROWTH_MS to GROWTH_MS + this. */
const KEEP_EVERY_MS = 60_000;

/** Per process, a snapshot a minute over the last GROWTH_MS (counters only: the stacks stay
 * in the Watcher). */
export class UiHistory {
  private readonly kept = new Map<string, { ms: number; snap: RegionSnapshot }[]>();
  private readonly off: () => void;
  private readonly watcher: Watcher;

  constructor(watcher: Watcher) {
    this.watcher = watcher;
    this.off = watcher.onRead((p: Tracked, snap: RegionSnapshot) => this.add(p.key, snap, Date.now()));
  }

  add(key: string, snap: RegionSnapshot, now: number): void {
    let list = this.kept.get(key);
    if (!list) {
      this.kept.set(key, (list = []));
      for (const k of [...this.kept.keys()]) if (!this.watcher.get(k) && k !== key) this.kept.delete(k);
    }
    if (list.length && now - list.at(-1)!.ms < KEEP_EVERY_MS) return;
    // Only what a growth delta reads of its base (encodeSamples: ids, alloc, free, in use):
    // the samples and peak columns, 24 of a row's 76 bytes, and the timeline's points
    // are not kept (up to six snapshots a process).
    const none = new BigUint64Array(0);
    const c = snap.counters;
    list.push({
      ms: now,
      snap: {
        ...snap,
        stacks: { ...snap.stacks, ids: new Uint32Array(0), depths: new Uint32Array(0), flags: new Uint32Array(0), frameStart: new Uint32Array(0), frames: none },
        counters: { ...c, samples: none, peakObjects: none, peakBytes: none },
        timeline: { index: none, ns: none, inuseBytes: new BigInt64Array(0), allocBytes: none, rssBytes: none, next: snap.timeline.next },
      },
    });
    // keep the newest one at least GROWTH_MS old, and those after it
    while (list.length > 1 && now - list[1]!.ms >= GROWTH_MS) list.shift();
  }

  /** The snapshot the growth is measured from: the newest at least GROWTH_MS old, else the
   * oldest kept. */
  baseOf(key: string): { ms: number; snap: RegionSnapshot } | undefined {
    return this.kept.get(key)?.[0];
  }

  dispose(): void {
    this.off();
    this.kept.clear();
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function header(procs: HeapProcess[], chosen: HeapProcess | undefined, dir: string): string {
  const rows = procs.map((p) => {
    const state = p.alive ? 'running' : p.end ? p.end.reason : p.exited ? 'exited' : 'ended';
    const href = `/ui?region=${encodeURIComponent(p.key)}`;
    return `<tr${p === chosen ? ' class="on"' : ''}><td><a href="${escapeHtml(href)}">${p.pid}</a></td><td>${escapeHtml(p.exeName)}</td>` +
      `<td>${escapeHtml(p.service)}</td><td>${escapeHtml(state)}</td><td>${formatBytes(p.inuseBytes)}</td>` +
      `<td>${p.peakBytes !== null ? formatBytes(p.peakBytes) : ''}</td><td>${formatBytes(p.allocatedBytes)}</td></tr>`;
  });
  return `<nav class="procs"><p><b>heaptap agent</b> &middot; ${escapeHtml(dir)} &middot; ${procs.length} process${procs.length === 1 ? '' : 'es'} &middot;
<label><input type="checkbox" id="live"> reload every 10 s</label> &middot; <a href="/debug/pprof/">/debug/pprof/</a></p>
<table><tr><th>pid</th><th>exe</th><th>service</th><th>state</th><th>in use</th><th>peak</th><th>allocated</th></tr>
${rows.join('\n')}</table></nav>
<script>(function(){var c=document.getElementById('live');c.checked=sessionStorage.getItem('heaptap-live')==='1';
var t=null;function arm(){clearTimeout(t);if(c.checked)t=setTimeout(function(){location.reload();},10000);}
c.addEventListener('change',function(){sessionStorage.setItem('heaptap-live',c.checked?'1':'0');arm();});arm();})();</script>`;
}

/** The page for GET /ui. */
export async function uiPage(source: AgentSource, history: UiHistory, url: URL, pick: (url: URL) => HeapProcess[]): Promise<string> {
  const procs = source.processes().sort((a, b) => a.pid - b.pid || a.startMs - b.startMs);
  let chosen: HeapProcess | undefined;
  if (url.searchParams.has('pid') || url.searchParams.has('region')) chosen = pick(url)[0];
  else chosen = [...procs].sort((a, b) => Number(b.alive) - Number(a.alive) || b.inuseBytes - a.inuseBytes)[0];
  const head = header(procs, chosen, source.watcher.dir);
  if (!chosen) {
    return reportHtml(buildReport({ title: 'heaptap: no process yet', views: [], notes: [`No profiled process in ${source.watcher.dir} yet.`] }), { headerHtml: head });
  }
  const key = chosen.key;
  const now = await decodeProfile(await source.profileBytes([key], 'heap'));
  const views: ViewSource[] = [{ id: 'inuse_space', profile: now, sampleType: 'inuse_space', label: 'in use now' }];
  const notes: string[] = [];
  const facts: string[] = [];
  if (chosen.peakBytes !== null) {
    const peak = await decodeProfile(await source.profileBytes([key], 'peak'));
    views.push({ id: 'peak_space', profile: peak, sampleType: 'inuse_space' });
  }
  const base = history.baseOf(key);
  const tracked = source.watcher.get(key);
  if (base && tracked?.snapshot && base.snap !== tracked.snapshot) {
    const growth = await decodeProfile(await source.growthBytes(key, base.snap));
    const ago = formatSeconds(Date.now() - base.ms);
    views.push({ id: 'growth_space', profile: growth, sampleType: 'inuse_space', label: `growth over the last ${ago}` });
    facts.push(`growth: in use now minus in use ${ago} ago (the stacks that grew)`);
  } else {
    notes.push('No growth view yet: the agent keeps a snapshot a minute; reload in a minute.');
  }
  views.push({ id: 'alloc_space', profile: now, sampleType: 'alloc_space' },
    { id: 'inuse_objects', profile: now, sampleType: 'inuse_objects', label: 'objects in use now' },
    { id: 'alloc_objects', profile: now, sampleType: 'alloc_objects' });
  const tl = source.timeline(key);
  if (tl.ms.length && chosen.alive) {
    // in use as the last read saw it, now: the chart runs to the present
    tl.ms.push(Date.now());
    tl.inuse_bytes.push(chosen.inuseBytes);
    tl.rss_bytes.push(tl.rss_bytes.at(-1)!);
  }
  const timeline = tl.ms.length ? thinTimeline(chosen.startMs, tl.ms, tl.inuse_bytes, tl.rss_bytes, tl.peak && tl.peak.ms !== null ? { ms: tl.peak.ms, bytes: tl.peak.bytes } : null) : null;
  const state = chosen.alive ? 'running' : chosen.end ? chosen.end.reason : 'ended';
  facts.unshift(
    `pid ${chosen.pid} ${chosen.exe} (${state}), service ${chosen.service}`,
    `in use now ${formatBytes(chosen.inuseBytes)}${chosen.peakBytes !== null ? `, peak ${formatBytes(chosen.peakBytes)}` : ''}, allocated ${formatBytes(chosen.allocatedBytes)}`,
  );
  const data = buildReport({ title: `heaptap: ${chosen.exeName} (pid ${chosen.pid})`, facts, views, timeline, notes });
  return reportHtml(data, { headerHtml: head });
}
