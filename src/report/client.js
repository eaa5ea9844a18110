// The report page's script (inlined into every report by src/report/html.ts; plain browser
// JavaScript, no build step). It reads the data from <script id="heaptap-data">, draws the
// timeline with uPlot (inlined beside it) and the flame graph with its own canvas renderer:
// an icicle (callers above callees), click to zoom, search to highlight. A canvas rather
// than d3-flame-graph: that one needs d3 (several hundred KiB more in every file) and makes
// one SVG element per node, which is slow past a few thousand nodes; the canvas draws the
// 12,000 nodes a view may hold in a few milliseconds.
// window.heaptap exposes what was drawn (tests read it; nothing else uses it).
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('heaptap-data').textContent);
  const state = (window.heaptap = { ready: false, view: null, focus: null, drawn: [], search: '', matched: 0, peakMarker: null });

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  function fmtBytes(v) {
    const neg = v < 0;
    let x = Math.abs(v), u = 0;
    while (x >= 1024 && u < UNITS.length - 1) { x /= 1024; u++; }
    const s = u === 0 ? String(Math.round(x)) : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
    return (neg ? '-' : '') + s + ' ' + UNITS[u];
  }
  function fmtCount(v) {
    return Math.round(v).toLocaleString('en-US');
  }
  function fmt(v, unit) { return unit === 'bytes' ? fmtBytes(v) : fmtCount(v); }
  function pct(v, total) { return total > 0 ? (100 * v / total).toFixed(v / total < 0.001 ? 3 : 1) + '%' : '-'; }
  function fmtSecs(ms) { return ms >= 1000 ? (ms / 1000).toFixed(ms >= 10000 ? 1 : 2) + ' s' : ms.toFixed(ms >= 10 ? 0 : 1) + ' ms'; }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  // ---------------------------------------------------------------- timeline (uPlot)
  function drawTimeline() {
    const box = document.getElementById('timeline');
    const tl = D.timeline;
    if (!tl || !tl.t.length) {
      box.append(el('p', { class: 'empty' }, 'No timeline: only heaptap run\'s profiles carry one (and the agent\'s /ui shows each process\'s).'));
      return;
    }
    // the peak as a point of its own, so that it is inside the chart (the library writes a
    // point at most every 10 ms; a peak after the last one would fall off the end)
    if (tl.peak) {
      let i = tl.t.findIndex((t) => t > tl.peak.t);
      if (i < 0) i = tl.t.length;
      if (tl.t[i - 1] !== tl.peak.t) {
        const rss = i > 0 ? tl.rss[i - 1] : 0;
        tl.t.splice(i, 0, tl.peak.t);
        tl.inuse.splice(i, 0, tl.peak.bytes);
        tl.rss.splice(i, 0, rss);
      }
    }
    const xs = tl.t.map((t) => t / 1000);
    const hasRss = tl.rss.some((v) => v > 0);
    const series = [{ label: 'time' }, { label: 'in use', stroke: '#c0392b', fill: 'rgba(192,57,43,0.25)', width: 1.5, value: (u, v) => (v == null ? '-' : fmtBytes(v)) }];
    const data = [xs, tl.inuse];
    if (hasRss) {
      series.push({ label: 'resident (RSS)', stroke: '#2c6fbb', width: 1.5, value: (u, v) => (v == null ? '-' : fmtBytes(v)) });
      data.push(tl.rss.map((v) => (v > 0 ? v : null)));
    }
    if (uPlot.paths && uPlot.paths.stepped) {
      const step = uPlot.paths.stepped({ align: 1 });
      for (let i = 1; i < series.length; i++) series[i].paths = step;
    }
    const peak = tl.peak;
    const marker = el('div', { id: 'peak-marker', class: 'peak-marker' });
    const opts = {
      width: Math.max(300, box.clientWidth),
      height: 260,
      scales: { x: { time: false } },
      series,
      axes: [
        { values: (u, vals) => vals.map((v) => fmtSecs(v * 1000)) },
        // ticks at powers of two (4 MiB, 8 MiB...), not at decimal steps of binary units
        { size: 70, incrs: Array.from({ length: 60 }, (_, i) => 2 ** i), values: (u, vals) => vals.map((v) => fmtBytes(v)) },
      ],
      cursor: { drag: { x: true, y: false } },
      hooks: {
        draw: [(u) => {
          if (!peak) return;
          const x = u.valToPos(peak.t / 1000, 'x', true);
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = '#000';
          ctx.setLineDash([4, 3]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.restore();
          const left = u.valToPos(peak.t / 1000, 'x');
          marker.style.left = left + 'px';
          // near the right edge the label goes on the line's left
          marker.style.transform = left > u.over.clientWidth - 180 ? 'translateX(calc(-100% - 4px))' : 'translateX(4px)';
          marker.style.display = left >= 0 && left <= u.over.clientWidth ? '' : 'none';
        }],
      },
    };
    const u = new uPlot(opts, data, box);
    state.chart = u;
    if (peak) {
      marker.textContent = 'peak ' + fmtBytes(peak.bytes) + ' at ' + fmtSecs(peak.t);
      u.over.append(marker);
      state.peakMarker = marker.textContent;
      // (no u.redraw() here: before uPlot's first commit it leaves the scales unset)
    }
    window.addEventListener('resize', () => u.setSize({ width: Math.max(300, box.clientWidth), height: 260 }));
  }

  // ---------------------------------------------------------------- flame graph (canvas)
  const ROW = 18;
  const trees = new Map();
  /** view -> root node; node = {n: name, v: value, c: children, p: parent, x: offset in value units, d: depth} */
  function treeOf(view) {
    let root = trees.get(view.id);
    if (root) return root;
    const a = view.nodes;
    let i = 0;
    function read(parent, x, depth) {
      const node = { n: a[i] < 0 ? 'all' : D.short[a[i]], f: a[i] < 0 ? 'all' : D.names[a[i]], v: a[i + 1], c: [], p: parent, x, d: depth };
      const kids = a[i + 2];
      i += 3;
      let cx = x;
      for (let k = 0; k < kids; k++) {
        const ch = read(node, cx, depth + 1);
        node.c.push(ch);
        cx += ch.v;
      }
      return node;
    }
    // iterative would be safer for very deep trees; stacks are at most 256 frames deep
    root = read(null, 0, 0);
    trees.set(view.id, root);
    return root;
  }

  function hue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
    return h;
  }
  function color(name) {
    if (name.startsWith('[heaptap')) return '#bbbbbb';
    const h = hue(name);
    const r = 205 + (h & 0x31), g = 80 + ((h >> 6) & 0x7f), b = 40 + ((h >> 13) & 0x3f);
    return 'rgb(' + Math.min(r, 255) + ',' + g + ',' + b + ')';
  }

  let view = null, root = null, focus = null, searchRx = null;
  const canvas = document.getElementById('flame');
  const tip = document.getElementById('tip');
  const ctx = canvas.getContext('2d');
  let rows = [];

  function matches(name) { return searchRx !== null && searchRx.test(name); }

  function draw() {
    const width = canvas.parentElement.clientWidth; // (deep stacks scroll inside the box: max-height)
    let depth = 0;
    (function walk(n) { if (n.d > depth) depth = n.d; for (const c of n.c) walk(c); })(focus); // as tall as what is shown
    const height = (depth + 1) * ROW;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr;
    canvas.height = height * dpr;
    canvas.style.width = width + 'px';
    canvas.style.height = height + 'px';
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    const drawn = [];
    rows = [];
    const scale = width / focus.v;
    function box(n, x, w) {
      const y = n.d * ROW;
      const hit = matches(n.n) || matches(n.f);
      ctx.fillStyle = hit ? '#c233d6' : color(n.n);
      ctx.fillRect(x, y, Math.max(w - 1, 0.5), ROW - 1);
      if (w > 24) {
        ctx.fillStyle = hit ? '#fff' : '#000';
        let label = n.n;
        const room = w - 6;
        if (ctx.measureText(label).width > room) {
          let lo = 0, hi = label.length;
          while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (ctx.measureText(label.slice(0, mid) + '…').width <= room) lo = mid; else hi = mid - 1; }
          label = lo > 0 ? label.slice(0, lo) + '…' : '';
        }
        if (label) ctx.fillText(label, x + 3, y + ROW / 2);
      }
      const r = { name: n.n, full: n.f, x, y, w, h: ROW - 1, node: n };
      drawn.push(r);
      (rows[n.d] || (rows[n.d] = [])).push(r);
    }
    // the focus's ancestors, full width
    for (let a = focus.p; a; a = a.p) box(a, 0, width);
    (function walk(n) {
      const x = (n.x - focus.x) * scale, w = n.v * scale;
      if (w < 0.3) return;
      box(n, x, w);
      for (const c of n.c) walk(c);
    })(focus);
    state.drawn = drawn.map((r) => ({ name: r.name, full: r.full, x: r.x, y: r.y, w: r.w, h: r.h, value: r.node.v }));
    state.focus = focus.n;
    // search: the share of the view's total under matching frames (each counted once)
    let matched = 0;
    if (searchRx) (function walk(n) { if (n !== root && (matches(n.n) || matches(n.f))) { matched += n.v; return; } for (const c of n.c) walk(c); })(root);
    state.matched = matched;
    document.getElementById('match').textContent = searchRx ? 'matched: ' + fmt(matched, view.unit) + ' (' + pct(matched, root.v) + ' of ' + view.label + ')' : '';
    const crumbs = [];
    for (let a = focus; a; a = a.p) crumbs.unshift(a.n);
    document.getElementById('crumbs').textContent = focus === root ? 'Click a frame to zoom in; click a frame above it to zoom out.' : 'Zoomed: ' + crumbs.join(' → ');
  }

  function at(ev) {
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const row = rows[Math.floor(y / ROW)] || [];
    return row.find((r) => x >= r.x && x < r.x + r.w) || null;
  }

  canvas.addEventListener('click', (ev) => {
    const r = at(ev);
    if (!r) return;
    focus = r.node;
    draw();
  });
  canvas.addEventListener('mousemove', (ev) => {
    const r = at(ev);
    if (!r) { tip.style.display = 'none'; return; }
    const n = r.node;
    tip.textContent = '';
    tip.append(el('b', {}, n.n), el('br'), n.f !== n.n ? el('span', { class: 'where' }, n.f) : '', n.f !== n.n ? el('br') : '', fmt(n.v, view.unit) + ' ' + view.label + ' (' + pct(n.v, root.v) + ' of all' + (focus !== root ? ', ' + pct(n.v, focus.v) + ' of the zoomed frame' : '') + ')');
    tip.style.display = 'block';
    const host = canvas.parentElement.getBoundingClientRect();
    tip.style.left = Math.min(ev.clientX - host.left + 12, host.width - 320) + 'px';
    tip.style.top = (ev.clientY - host.top + canvas.parentElement.scrollTop + 16) + 'px';
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  document.getElementById('reset').addEventListener('click', () => { focus = root; draw(); });
  document.getElementById('search').addEventListener('input', (ev) => {
    const q = ev.target.value.trim();
    state.search = q;
    if (!q) searchRx = null;
    else {
      try { searchRx = new RegExp(q, 'i'); } catch { searchRx = new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i'); }
    }
    draw();
  });
  window.addEventListener('resize', () => { if (root) draw(); });

  function selectView(id) {
    view = D.views.find((v) => v.id === id) || D.views[0];
    root = treeOf(view);
    focus = root;
    state.view = view.id;
    for (const b of document.querySelectorAll('#views button')) b.classList.toggle('on', b.dataset.view === view.id);
    const note = document.getElementById('flame-note');
    note.textContent = 'Total ' + fmt(view.total, view.unit) + ' ' + view.label + '.' +
      (view.hiddenNodes > 0 ? ' ' + fmtCount(view.hiddenNodes) + ' call-tree nodes smaller than ' + (view.nodes.length / 3 >= view.maxNodes ? 'the ' + fmtCount(view.maxNodes) + ' largest' : (100 * view.minFraction) + '% of the total') + ' are left out of this page (their bytes still count in their callers).' : '');
    draw();
    drawSites();
  }

  // ---------------------------------------------------------------- sites
  function paths(s) {
    if (!s.paths.length) return null;
    const d = el('details', {}, el('summary', {}, 'call paths'));
    for (const p of s.paths) {
      const ol = el('ol', { class: 'path' });
      for (const f of p.frames.slice(0, 12)) ol.append(el('li', {}, f));
      if (p.frames.length > 12) ol.append(el('li', { class: 'more' }, '… ' + (p.frames.length - 12) + ' more callers'));
      const pv = D.views.find((v) => v.id === D.pathView) || D.views[0];
      d.append(el('div', { class: 'pathval' }, fmt(p.value, pv.unit) + ' ' + pv.label + ':'), ol);
    }
    return d;
  }
  function drawSites() {
    const t = document.getElementById('sites');
    t.textContent = '';
    const shown = D.views.filter((v) => v.id !== 'growth_space' || D.diff);
    const head = el('tr', {}, el('th', {}, '#'), el('th', { class: 'name' }, 'site (sorted by ' + view.label + ')'));
    for (const v of shown) head.append(el('th', { class: v.id === view.id ? 'num on' : 'num' }, v.label));
    t.append(head);
    const rows = D.sites.filter((s) => (s.values[view.id] || 0) > 0).sort((a, b) => (b.values[view.id] || 0) - (a.values[view.id] || 0)).slice(0, 30);
    rows.forEach((s, i) => {
      const tr = el('tr', {}, el('td', {}, String(i + 1)), el('td', { class: 'name' }, el('span', { class: 'fn', title: s.full }, s.name), s.where ? el('span', { class: 'where' }, ' ' + s.where) : null, paths(s)));
      for (const v of shown) tr.append(el('td', { class: 'num' }, fmt(s.values[v.id] || 0, v.unit)));
      t.append(tr);
    });
    if (!rows.length) t.append(el('tr', {}, el('td', { colspan: String(shown.length + 2) }, 'nothing in this view')));
  }

  function drawDiff() {
    if (!D.diff) return;
    const sec = document.getElementById('diff-section');
    sec.hidden = false;
    document.getElementById('diff-label').textContent = D.diff.label;
    const t = document.getElementById('diff');
    t.append(el('tr', {}, el('th', {}, '#'), el('th', { class: 'name' }, 'site (largest growth of in use first)'), el('th', { class: 'num' }, 'in use before'), el('th', { class: 'num' }, 'in use now'), el('th', { class: 'num' }, 'growth'), el('th', { class: 'num' }, 'allocated since')));
    D.diff.rows.forEach((r, i) => {
      let d = null;
      if (r.path.length) {
        d = el('details', {}, el('summary', {}, 'call path'));
        const ol = el('ol', { class: 'path' });
        for (const f of r.path.slice(0, 12)) ol.append(el('li', {}, f));
        d.append(ol);
      }
      t.append(el('tr', { class: r.growth > 0 ? 'grew' : r.growth < 0 ? 'shrank' : '' }, el('td', {}, String(i + 1)),
        el('td', { class: 'name' }, el('span', { class: 'fn', title: r.full }, r.name), r.where ? el('span', { class: 'where' }, ' ' + r.where) : null, d),
        el('td', { class: 'num' }, fmtBytes(r.base)), el('td', { class: 'num' }, fmtBytes(r.now)),
        el('td', { class: 'num' }, (r.growth > 0 ? '+' : '') + fmtBytes(r.growth)), el('td', { class: 'num' }, (r.allocGrowth > 0 ? '+' : '') + fmtBytes(r.allocGrowth))));
    });
    if (!D.diff.rows.length) t.append(el('tr', {}, el('td', { colspan: '6' }, 'no site changed')));
  }

  // ---------------------------------------------------------------- page
  const vbox = document.getElementById('views');
  for (const v of D.views) vbox.append(el('button', { 'data-view': v.id, onclick: () => selectView(v.id) }, v.label));
  const notes = document.getElementById('notes');
  for (const n of D.notes) notes.append(el('li', {}, n));
  drawTimeline();
  drawDiff();
  if (D.views.length) selectView(D.views[0].id);
  else {
    canvas.hidden = true;
    document.getElementById('flame-note').textContent = 'Nothing to show: no samples.';
  }
  state.ready = true;
})();
