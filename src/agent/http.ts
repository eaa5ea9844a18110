// The agent's HTTP server (node:http), shaped as net/http/pprof serves Go programs so that
// go tool pprof, Alloy and Pyroscope scrape it as they scrape Go (WIRE.md):
//   GET  /debug/pprof/                   HTML index: every process, with links
//   GET  /debug/pprof/heap               cumulative alloc_*, absolute inuse_* (gzipped pprof)
//   GET  /debug/pprof/allocs             the same, default sample type alloc_space
//   GET  /debug/pprof/delta_heap         alloc_* since this consumer's previous call
//        ?pid=N      one process (else: the one live process, or all of them merged, with
//                    pid and exe labels on every sample); ?region=FILE names a region file
//        ?seconds=N  heap/allocs: p1 - p0 over N seconds (every value, as Go does)
//        ?peak=1     heap: in use at each process's own peak (kept by the library at every
//                    sampled event), alloc_* as now
//        ?debug=1    text (src/agent/text.ts); ?gc=1 accepted and ignored
//        ?consumer=NAME  delta_heap's key (default: remote address + User-Agent)
//   GET  /metrics                        Prometheus text format (prom-client)
//   GET  /healthz, /readyz               liveness; readiness after the first scan, while the
//                                        region directory exists
//   GET  /debug/heaptap/processes        JSON: the processes served
//   GET  /debug/heaptap/timeline         JSON: in use, allocated and RSS over time and the
//                                        peak, per process (?pid=N / ?region=FILE: one)
//   GET  /ui                             HTML: the processes, each one's timeline and flame
//                                        graphs (now, peak, growth; src/agent/ui.ts)
//   POST /debug/heaptap/control          ?pid=N&action=pause|resume|rate&bytes=N (or the
//                                        same fields form- or JSON-encoded in the body)
// Errors are text/plain, with X-Go-Pprof: 1 (pprof shows the body only then). With a
// token, every endpoint but /healthz and /readyz wants `Authorization: Bearer <token>`.
// Without one, what changes anything (control) is answered only when the server listens
// on loopback alone; beyond loopback (--insecure-no-token) it is a 403 and reads stay open.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Profile } from 'pprof-format';
import type { Registry } from 'prom-client';

import { applyControl, ControlError, describeControl, parseControl } from './control.ts';
import type { Logger } from './log.ts';
import { freeEncoded } from './pprof.ts';
import { NotFound, type AgentSource, type View } from './source.ts';
import { profileText } from './text.ts';
import type { HeapProcess } from './types.ts';
import { UiHistory, uiPage } from './ui.ts';

export interface ServerOptions {
  source: AgentSource;
  registry: Registry;
  log: Logger;
  /** '' = no authentication */
  token: string;
  /** the server listens on loopback only: without a token, control is then allowed (a
   * process on this machine could write the region's control area anyway); beyond
   * loopback control needs the token */
  loopbackOnly: boolean;
  maxSeconds: number;
  /** true, or why not (the text /readyz answers with 503) */
  isReady: () => true | string;
  /** profile builds at once; more wait their turn (bounds the memory they take) */
  maxBuilds?: number;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const PROFILES: Record<string, View> = { heap: 'heap', allocs: 'allocs', delta_heap: 'delta' };

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Compares in constant time (digests of equal length, whatever the inputs' lengths).
 * `Authorization: Bearer <token>`; with allowBasic also `Basic base64(<any user>:<token>)`,
 * which is what a browser sends after its own password prompt: that is how a person opens
 * /ui on an agent with a token. Basic is for reads only (GET, HEAD): a browser re-sends
 * remembered Basic credentials on any page's cross-site form POST, so control wants Bearer,
 * which no page can make a browser send. */
export function tokenMatches(header: string | undefined, token: string, allowBasic = false): boolean {
  let given = '';
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (bearer) given = bearer[1]!;
  else if (allowBasic) {
    const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
    if (basic) {
      const pair = Buffer.from(basic[1]!, 'base64').toString('utf8');
      given = pair.slice(pair.indexOf(':') + 1);
    }
  }
  return timingSafeEqual(digest(given), digest(token)) && given.length > 0;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

export function createAgentServer(opts: ServerOptions): Server {
  const builds = new Semaphore(opts.maxBuilds ?? 2);
  const ui = new UiHistory(opts.source.watcher);
  const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      const status = e instanceof HttpError ? e.status : e instanceof NotFound ? 404 : 500;
      if (status === 500) opts.log.once(`http500:${(e as Error).message}`, 'error', 'request failed', { path: req.url, error: (e as Error).message });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendText(res, status, (e as Error).message, true);
    });
  });
  // Profiles with ?seconds=N keep a request open for up to --max-seconds.
  server.requestTimeout = (opts.maxSeconds + 120) * 1000;
  server.headersTimeout = 30_000;
  server.keepAliveTimeout = 65_000;
  server.on('close', () => ui.dispose());

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    if (path === '/healthz') return sendText(res, 200, 'ok');
    if (path === '/readyz') {
      const ready = opts.isReady();
      return ready === true ? sendText(res, 200, 'ready') : sendText(res, 503, `not ready: ${ready}`);
    }
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (opts.token && !tokenMatches(req.headers.authorization, opts.token, read)) {
      // /ui is opened by a person in a browser: a Basic challenge makes it ask for the
      // token (any user name, the token as password)
      res.setHeader('WWW-Authenticate', path === '/ui' ? ['Bearer realm="heaptap"', 'Basic realm="heaptap", charset="UTF-8"'] : 'Bearer realm="heaptap"');
      throw new HttpError(401, path === '/ui' ? 'unauthorized: give the agent\'s token as the password (any user name)' : 'unauthorized: send Authorization: Bearer <token>');
    }
    if (path === '/debug/heaptap/control') {
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        throw new HttpError(405, 'use POST');
      }
      if (!opts.token && !opts.loopbackOnly) {
        throw new HttpError(403, 'forbidden: control needs a token when the agent listens beyond loopback (it was started with --insecure-no-token); start it with --token or --token-file');
      }
      return control(req, res, url);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      throw new HttpError(405, `method ${req.method} not allowed`);
    }
    if (path === '/metrics') {
      const body = await opts.registry.metrics();
      res.writeHead(200, { 'Content-Type': opts.registry.contentType, 'Cache-Control': 'no-store' });
      res.end(body);
      return;
    }
    if (path === '/debug/pprof' || path === '/debug/pprof/') return index(res);
    if (path === '/ui' || path === '/ui/') {
      const html = await builds.run(() => uiPage(opts.source, ui, url, select));
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : html);
      return;
    }
    if (path === '/debug/heaptap/processes') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(opts.source.processes(), null, 1));
      return;
    }
    if (path === '/debug/heaptap/timeline') {
      const one = url.searchParams.has('pid') || url.searchParams.has('region');
      const procs = one ? select(url) : opts.source.processes().sort((a, b) => a.pid - b.pid || a.startMs - b.startMs);
      const body = procs.map((p) => opts.source.timeline(p.key));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(one ? body[0] : body) + '\n');
      return;
    }
    const m = /^\/debug\/pprof\/([a-z_]+)$/.exec(path);
    if (m && PROFILES[m[1]!]) return profile(req, res, url, m[1]!);
    if (m) throw new HttpError(404, `unknown profile: ${m[1]} (heaptap serves heap, allocs and delta_heap)`);
    throw new HttpError(404, `not found: ${path}`);
  }

  /** The processes a request is about: ?pid=N, ?region=FILE, else the default set. */
  function select(url: URL): HeapProcess[] {
    const pid = url.searchParams.get('pid');
    const region = url.searchParams.get('region');
    if (pid !== null && region !== null) throw new HttpError(400, 'give pid or region, not both');
    if (pid !== null) {
      if (!/^\d{1,10}$/.test(pid)) throw new HttpError(400, `bad pid '${pid}'`);
      const p = opts.source.byPid(Number(pid));
      if (!p) throw new HttpError(404, `no heaptap process with pid ${pid}`);
      return [p];
    }
    if (region !== null) {
      const p = opts.source.processes().find((x) => x.key === region);
      if (!p) throw new HttpError(404, `no region ${region}`);
      return [p];
    }
    const procs = opts.source.defaultProcesses();
    if (procs.length === 0) throw new HttpError(404, `no heaptap process yet in ${opts.source.watcher.dir}`);
    return procs.sort((a, b) => a.pid - b.pid || a.startMs - b.startMs);
  }

  async function profile(req: IncomingMessage, res: ServerResponse, url: URL, name: string): Promise<void> {
    const view = PROFILES[name]!;
    const q = url.searchParams;
    const debug = q.get('debug');
    if (debug !== null && !/^\d{1,3}$/.test(debug)) throw new HttpError(400, `bad debug '${debug}'`);
    const gc = q.get('gc');
    if (gc !== null && !/^\d{1,3}$/.test(gc)) throw new HttpError(400, `bad gc '${gc}'`);
    const secondsText = q.get('seconds');
    let seconds = 0;
    if (secondsText !== null) {
      if (view === 'delta') throw new HttpError(400, 'delta_heap takes no seconds: it is a delta since your previous call already');
      if (!/^\d{1,7}$/.test(secondsText) || Number(secondsText) < 1) throw new HttpError(400, `bad seconds '${secondsText}': a whole number of seconds, at least 1`);
      seconds = Number(secondsText);
      if (seconds > opts.maxSeconds) throw new HttpError(400, `seconds ${seconds} is more than the limit of ${opts.maxSeconds} (--max-seconds)`);
    }
    const peakText = q.get('peak');
    if (peakText !== null && peakText !== '0' && peakText !== '1') throw new HttpError(400, `bad peak '${peakText}': 1 (in use at the peak) or 0`);
    const atPeak = peakText === '1';
    if (atPeak && view !== 'heap') throw new HttpError(400, 'peak=1 goes with /debug/pprof/heap only');
    if (atPeak && seconds > 0) throw new HttpError(400, 'peak=1 takes no seconds: the peak is one moment');
    const procs = select(url);
    const keys = procs.map((p) => p.key);
    const consumer = q.get('consumer') ?? `${req.socket.remoteAddress ?? ''} ${req.headers['user-agent'] ?? ''}`;

    let raw: Uint8Array;
    if (seconds > 0) {
      const abort = new AbortController();
      const onClose = () => abort.abort();
      res.on('close', onClose);
      try {
        raw = await opts.source.deltaBytes(keys, view === 'allocs' ? 'allocs' : 'heap', seconds * 1000, abort.signal);
      } catch (e) {
        if (abort.signal.aborted) return; // the client went away
        throw e;
      } finally {
        res.off('close', onClose);
      }
    } else if (view === 'delta' && req.method === 'HEAD') {
      // A HEAD gets no body: building one would move this consumer's baseline, and the
      // allocations since its previous call would reach nobody.
      res.writeHead(200, {
        'Content-Type': debug !== null && Number(debug) > 0 ? 'text/plain; charset=utf-8' : 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      res.end();
      return;
    } else {
      raw = await builds.run(() => opts.source.profileBytes(keys, atPeak ? 'peak' : view, consumer));
    }
    // The process list again, after the build: the same data the profile was made from.
    const shown = procs.map((p) => opts.source.processes().find((x) => x.key === p.key) ?? p);
    if (debug !== null && Number(debug) > 0) {
      const what = procs.length === 1 ? `pid ${procs[0]!.pid}` : `${procs.length} processes merged`;
      const title = `${name} profile, ${what}${seconds ? `, delta over ${seconds} s` : view === 'delta' ? ', allocations since your previous delta_heap call' : atPeak ? `, in use at ${procs.length === 1 ? 'its' : 'each one\'s own'} peak` : ''}`;
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(profileText(Profile.decode(raw), { title, processes: shown, sortBy: view === 'allocs' ? 'alloc_space' : 'inuse_space' }));
      return;
    }
    const body = await opts.source.gzip(raw);
    freeEncoded(raw);
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream',
      'Content-Disposition': `attachment; filename="${name}"`,
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
      'Content-Length': body.length,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  function index(res: ServerResponse): void {
    const procs = opts.source.processes().sort((a, b) => a.pid - b.pid || a.startMs - b.startMs);
    const link = (name: string, query: string, text = name) => `<a href="${name}${query ? `?${escapeHtml(query)}` : ''}">${text}</a>`;
    const rows = procs.map((p) => {
      const q = `pid=${p.pid}`;
      const status = p.alive ? 'running' : p.end ? escapeHtml(p.end.reason) : p.exited ? 'exited' : 'ended';
      return `<tr><td>${p.pid}</td><td>${escapeHtml(p.exeName)}</td><td>${escapeHtml(p.service)}</td><td>${status}</td>` +
        `<td align="right">${p.inuseBytes}</td><td align="right">${p.allocatedBytes}</td>` +
        `<td align="right">${p.peakBytes ?? ''}</td>` +
        `<td>${link('heap', q)} ${link('allocs', q)} ${link('delta_heap', q)} ` +
        `(${link('heap', `${q}&debug=1`, 'text')})` +
        (p.peakBytes !== null ? ` ${link('heap', `${q}&peak=1`, 'peak')} (${link('heap', `${q}&peak=1&debug=1`, 'text')})` : '') +
        ` ${link('/debug/heaptap/timeline', q, 'timeline')}</td></tr>`;
    });
    const html = `<!DOCTYPE html>
<html><head><title>/debug/pprof/</title></head>
<body>
<h1>/debug/pprof/</h1>
<p>heaptap: heap profiles of the processes in ${escapeHtml(opts.source.watcher.dir)}.
Without ?pid= a profile is the one running process's, or all of them merged (with pid and exe labels).</p>
<p>Types of profiles available (all processes):</p>
<table>
<tr><td>${link('heap', '')}</td><td>in use and allocated memory (${link('heap', 'debug=1', 'text')})</td></tr>
<tr><td>${link('allocs', '')}</td><td>allocated memory, default sample type alloc_space (${link('allocs', 'debug=1', 'text')})</td></tr>
<tr><td>${link('delta_heap', '')}</td><td>allocations since your previous delta_heap call, in use absolute</td></tr>
<tr><td>${link('heap', 'peak=1', 'heap?peak=1')}</td><td>in use at each process's own peak, kept by the heaptap library at every sampled allocation and free (${link('heap', 'peak=1&debug=1', 'text')})</td></tr>
</table>
<p>Processes:</p>
<table border="1" cellspacing="0" cellpadding="3">
<tr><th>pid</th><th>exe</th><th>service</th><th>state</th><th>in use (bytes)</th><th>allocated (bytes)</th><th>peak (bytes)</th><th>profiles</th></tr>
${rows.join('\n')}
</table>
<p><a href="/ui">/ui</a> (timeline and flame graphs in the browser) &middot; <a href="/metrics">/metrics</a> &middot; <a href="/debug/heaptap/processes">/debug/heaptap/processes</a> &middot; <a href="/debug/heaptap/timeline">/debug/heaptap/timeline</a> (in use, allocated and RSS over time, JSON)</p>
</body></html>
`;
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  }

  async function control(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const fields = new Map(url.searchParams);
    const body = await readBody(req, 4096);
    if (body.trim()) {
      const type = req.headers['content-type'] ?? '';
      if (type.includes('json')) {
        let obj: unknown;
        try {
          obj = JSON.parse(body);
        } catch {
          throw new HttpError(400, 'body is not JSON');
        }
        if (typeof obj !== 'object' || obj === null) throw new HttpError(400, 'body must be a JSON object');
        for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined) fields.set(k, String(v));
      } else {
        for (const [k, v] of new URLSearchParams(body)) fields.set(k, v);
      }
    }
    const pidText = fields.get('pid');
    if (pidText === undefined) throw new HttpError(400, 'pid is required');
    if (!/^\d{1,10}$/.test(pidText)) throw new HttpError(400, `bad pid '${pidText}'`);
    let action;
    try {
      action = parseControl(fields.get('action'), fields.get('bytes') ?? fields.get('rate'));
    } catch (e) {
      if (e instanceof ControlError) throw new HttpError(400, e.message);
      throw e;
    }
    const p = opts.source.byPid(Number(pidText));
    if (!p) throw new HttpError(404, `no heaptap process with pid ${pidText}`);
    if (!p.alive) throw new HttpError(409, `process ${pidText} is not running`);
    const t = opts.source.watcher.get(p.key);
    if (!t) throw new HttpError(404, `no heaptap process with pid ${pidText}`);
    try {
      applyControl(t.path, action);
    } catch (e) {
      throw new HttpError(500, `cannot write the control area of ${p.key}: ${(e as Error).message}`);
    }
    opts.log.info('control', { pid: p.pid, region: p.key, action: action.action, bytes: action.action === 'rate' ? action.bytes : undefined });
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ pid: p.pid, region: p.key, ...action, result: describeControl(action) }) + '\n');
  }

  return server;
}

function sendText(res: ServerResponse, status: number, text: string, pprofError = false): void {
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' };
  if (pprofError) headers['X-Go-Pprof'] = '1';
  res.writeHead(status, headers);
  res.end(text.endsWith('\n') ? text : text + '\n');
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new HttpError(413, `body larger than ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
