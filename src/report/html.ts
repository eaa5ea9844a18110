// A report page as one self-contained HTML file: the data (src/report/model.ts) as JSON,
// uPlot (MIT; its dist file read from node_modules and inlined) for the timeline, and the
// page's own script (src/report/client.js) for the flame graph and the tables. Nothing is
// fetched: the file works opened from disk, offline, and the agent's /ui serves the same.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import type { ReportData } from './model.ts';

let assets: { uplotJs: string; uplotCss: string; client: string } | undefined;

function loadAssets(): NonNullable<typeof assets> {
  if (assets) return assets;
  const require = createRequire(import.meta.url);
  const dist = (f: string) => readFileSync(require.resolve(`uplot/dist/${f}`), 'utf8');
  assets = {
    uplotJs: dist('uPlot.iife.min.js'),
    uplotCss: dist('uPlot.min.css'),
    client: readFileSync(new URL('./client.js', import.meta.url), 'utf8'),
  };
  return assets;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside <script>: no '</script', no '<!--', no U+2028/9 surprises. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** Inline script text cannot contain '</script'. */
function scriptText(js: string): string {
  return js.replace(/<\/script/gi, '<\\/script');
}

const STYLE = `
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 24px 40px; color: #222; }
h1 { font-size: 20px; margin: 16px 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
ul.facts { margin: 4px 0; padding-left: 18px; color: #444; }
#notes { color: #8a5a00; }
#timeline { position: relative; }
.peak-marker { position: absolute; top: 2px; transform: translateX(4px); background: #fff; border: 1px solid #000; padding: 1px 4px; font-size: 12px; white-space: nowrap; pointer-events: none; }
.controls { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 6px; }
.controls button { font: inherit; padding: 3px 10px; border: 1px solid #999; background: #f4f4f4; border-radius: 3px; cursor: pointer; }
.controls button.on { background: #333; color: #fff; border-color: #333; }
#search { font: inherit; padding: 3px 6px; width: 220px; }
#match { color: #7a1f8a; }
#crumbs { font-size: 12px; color: #555; margin: 4px 0; word-break: break-all; }
.flamebox { position: relative; width: 100%; max-height: 75vh; overflow-y: auto; border-bottom: 1px solid #eee; }
#flame { display: block; cursor: pointer; }
#tip { display: none; position: absolute; max-width: 300px; background: #fffbe6; border: 1px solid #aaa; padding: 4px 6px; font-size: 12px; pointer-events: none; word-break: break-all; z-index: 5; }
#flame-note { font-size: 12px; color: #555; }
table.sites { border-collapse: collapse; width: 100%; }
table.sites th, table.sites td { border-bottom: 1px solid #eee; padding: 3px 6px; vertical-align: top; text-align: left; }
table.sites th.num, table.sites td.num { text-align: right; white-space: nowrap; }
table.sites th.on { text-decoration: underline; }
td.name { word-break: break-all; }
.fn { font-family: ui-monospace, monospace; }
.where { color: #666; font-size: 12px; }
ol.path { margin: 2px 0 6px; padding-left: 24px; font-family: ui-monospace, monospace; font-size: 12px; }
.pathval { font-size: 12px; color: #555; }
tr.grew td.num:nth-child(5) { color: #b00; font-weight: bold; }
tr.shrank td.num:nth-child(5) { color: #070; }
p.empty { color: #666; }
nav.procs table { border-collapse: collapse; }
nav.procs td, nav.procs th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
nav.procs tr.on { background: #fff3c4; }
`;

export interface PageOptions {
  /** HTML placed above the report (the agent's process list); trusted, already escaped */
  headerHtml?: string;
}

/** The whole page. */
export function reportHtml(data: ReportData, opts: PageOptions = {}): string {
  const a = loadAssets();
  const facts = data.facts.map((f) => `<li>${escapeHtml(f)}</li>`).join('');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${escapeHtml(data.title)}</title>
<style>${a.uplotCss}</style>
<style>${STYLE}</style>
</head><body>
${opts.headerHtml ?? ''}
<h1>${escapeHtml(data.title)}</h1>
<ul class="facts">${facts}</ul>
<ul id="notes"></ul>
<section id="timeline-section"><h2>Heap over time</h2>
<div id="timeline"></div>
</section>
<section id="flame-section"><h2>Flame graph</h2>
<div class="controls"><span id="views"></span>
<input id="search" type="search" placeholder="search functions (regex)" aria-label="search functions">
<button id="reset" type="button">reset zoom</button> <span id="match"></span></div>
<div id="crumbs"></div>
<div class="flamebox"><canvas id="flame" role="img" aria-label="flame graph"></canvas><div id="tip"></div></div>
<p id="flame-note"></p>
</section>
<section id="diff-section" hidden><h2>Growth since <span id="diff-label"></span></h2>
<table id="diff" class="sites"></table>
</section>
<section id="sites-section"><h2>Top sites</h2>
<p class="where">A site is the first function past allocator and standard-library plumbing (malloc, operator new, std:: containers, Rust's alloc, the allocation wrappers of CPython, Perl, sqlite and GLib: one list, src/sites.ts); call paths go from it out to main, with file:line where the debug information has it.</p>
<table id="sites" class="sites"></table>
</section>
<script id="heaptap-data" type="application/json">${scriptJson(data)}</script>
<script>${scriptText(a.uplotJs)}</script>
<script>${scriptText(a.client)}</script>
</body></html>
`;
}
