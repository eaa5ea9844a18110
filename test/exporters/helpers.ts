// Shared by the exporter tests: a loopback HTTP server that records requests and decodes
// them as Pyroscope's /ingest does, a free port, a dead port, polling, and the real
// OpenTelemetry Collector (built by scripts/peers/otelcol.sh, started on loopback with file
// exporters).
import { type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';

import { bound, execGroup, killGroup, spawnGroup } from '../helpers/procs.ts';

import { Profile } from 'pprof-format';

import { otlpProfileTypes } from '../../src/exporters/otlp-proto.ts';

export const root = resolve(import.meta.dirname, '../..');

export interface Recorded {
  method: string;
  url: URL;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** what the server answered */
  status: number;
  at: number;
}

/** What the server does with a request: a status (and optional body), or 'hang' (never
 * answers until the server closes). */
export type Behaviour = (req: Recorded, index: number) => number | { status: number; body?: string | Uint8Array; headers?: Record<string, string> } | 'hang';

export interface TestServer {
  url: string;
  port: number;
  requests: Recorded[];
  behaviour: Behaviour;
  close(): Promise<void>;
}

export async function startServer(behaviour: Behaviour = () => 200): Promise<TestServer> {
  const requests: Recorded[] = [];
  const hanging = new Set<ServerResponse>();
  const state = { behaviour };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: Recorded = {
        method: req.method ?? '',
        url: new URL(req.url ?? '/', 'http://127.0.0.1'),
        headers: req.headers,
        body: Buffer.concat(chunks),
        status: 0,
        at: Date.now(),
      };
      const index = requests.length;
      requests.push(rec);
      const b = state.behaviour(rec, index);
      if (b === 'hang') {
        rec.status = -1;
        hanging.add(res);
        return;
      }
      const r = typeof b === 'number' ? { status: b } : b;
      rec.status = r.status;
      res.writeHead(r.status, { 'Content-Type': 'text/plain', ...r.headers });
      res.end(r.body ?? '');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    get behaviour() { return state.behaviour; },
    set behaviour(b: Behaviour) { state.behaviour = b; },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A port nothing listens on (bound, then released). */
export async function deadPort(): Promise<number> {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export const freePort = deadPort;

/** timeoutMs is the limit on an idle machine, scaled by how busy it is (bound()). */
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, idleMs = 10_000, stepMs = 50): Promise<T> {
  const timeoutMs = bound(idleMs);
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export interface Ingest {
  /** the app name (becomes service_name) */
  app: string;
  labels: Record<string, string>;
  from: number;
  until: number;
  format: string | null;
  spyName: string | null;
  profile: Profile;
  gzipped: boolean;
}

/** Pyroscope's key syntax `app{k=v,...}` (pkg/og/storage/segment/key.go ParseKey): the app
 * name up to `{`, then `key=value` pairs split on `,` up to `}`, trimmed. Throws where
 * Pyroscope would reject the key. */
export function parseKey(name: string): { app: string; labels: Record<string, string> } {
  const open = name.indexOf('{');
  const app = (open < 0 ? name : name.slice(0, open)).trim();
  if (!app) throw new Error('empty app name');
  const labels: Record<string, string> = {};
  if (open >= 0) {
    const close = name.indexOf('}', open);
    if (close < 0) throw new Error(`no closing brace in ${name}`);
    const body = name.slice(open + 1, close);
    for (const part of body === '' ? [] : body.split(',')) {
      const eq = part.indexOf('=');
      if (eq < 0) throw new Error(`label without '=' in ${name}`);
      const k = part.slice(0, eq).trim();
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(k)) throw new Error(`invalid label name '${k}'`);
      labels[k] = part.slice(eq + 1).trim();
    }
  }
  return { app, labels };
}

/** Decodes a request as Pyroscope's /ingest handler does for format=pprof. */
export function decodeIngest(r: Recorded): Ingest {
  const q = r.url.searchParams;
  const { app, labels } = parseKey(q.get('name') ?? '');
  const gzipped = r.body[0] === 0x1f && r.body[1] === 0x8b;
  const raw = gzipped ? gunzipSync(r.body) : r.body;
  return {
    app,
    labels,
    from: Number(q.get('from')),
    until: Number(q.get('until')),
    format: q.get('format'),
    spyName: q.get('spyName'),
    profile: Profile.decode(raw),
    gzipped,
  };
}

export function str(p: Profile, i: number | bigint): string {
  return p.stringTable.strings[Number(i)] ?? '';
}

/** Total of sample type `type` per innermost function name. */
export function byLeaf(p: Profile, type: string): Map<string, number> {
  const i = p.sampleType.findIndex((st) => str(p, st.type) === type);
  const locs = new Map(p.location.map((l) => [String(l.id), l]));
  const fns = new Map(p.function.map((f) => [String(f.id), f]));
  const out = new Map<string, number>();
  for (const s of p.sample) {
    const loc = locs.get(String(s.locationId[0]));
    const fn = fns.get(String(loc?.line[0]?.functionId));
    const name = fn ? str(p, fn.name) : '?';
    out.set(name, (out.get(name) ?? 0) + Number(s.value[i] ?? 0));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// OTLP profiles requests, decoded.

// The decoded request, as plain objects (keepCase field names, 64-bit values as numbers).
export interface Decoded {
  resource_profiles: {
    resource: { attributes: { key: string; value: Record<string, unknown> }[] };
    scope_profiles: { scope: { name: string; version?: string }; profiles: DecodedProfile[] }[];
  }[];
  dictionary: {
    mapping_table: Record<string, unknown>[];
    location_table: { mapping_index?: number; address?: number; lines?: { function_index: number; line?: number }[] }[];
    function_table: { name_strindex?: number; system_name_strindex?: number; filename_strindex?: number; start_line?: number }[];
    link_table: { trace_id?: Uint8Array; span_id?: Uint8Array }[];
    string_table: string[];
    attribute_table: { key_strindex?: number; value?: Record<string, unknown>; unit_strindex?: number }[];
    stack_table: { location_indices?: number[] }[];
  };
}
export interface DecodedProfile {
  sample_type: { type_strindex: number; unit_strindex: number };
  samples: { stack_index: number; attribute_indices?: number[]; values: number[] }[];
  time_unix_nano: number;
  period_type: { type_strindex: number; unit_strindex: number };
  period: number;
  profile_id: Uint8Array;
}

/** An OTLP ExportProfilesServiceRequest, decoded with the same .proto files. */
export function decodeOtlp(body: Uint8Array): Decoded {
  const T = otlpProfileTypes().ExportProfilesServiceRequest;
  return T.toObject(T.decode(body), { longs: Number, arrays: true, defaults: false }) as Decoded;
}

/** Per profile: sample type, and value per innermost function name. */
export function otlpSummary(d: Decoded, rp = 0): Map<string, Map<string, number>> {
  const dict = d.dictionary;
  const s = (i: number | undefined) => dict.string_table[i ?? 0] ?? '';
  const out = new Map<string, Map<string, number>>();
  for (const p of d.resource_profiles[rp]!.scope_profiles[0]!.profiles) {
    const type = `${s(p.sample_type.type_strindex)}/${s(p.sample_type.unit_strindex)}`;
    const m = new Map<string, number>();
    for (const sample of p.samples) {
      const loc = dict.location_table[dict.stack_table[sample.stack_index]!.location_indices![0]!]!;
      const fn = dict.function_table[loc.lines![0]!.function_index]!;
      m.set(s(fn.name_strindex), (m.get(s(fn.name_strindex)) ?? 0) + sample.values[0]!);
    }
    out.set(type, m);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The real OpenTelemetry Collector.

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;

let built: Promise<string> | undefined;

/** The collector binary: built by scripts/peers/otelcol.sh (cached under
 * ~/.cache/heaptap, so only the first run on a machine takes minutes). Rejects with the
 * script's output when it cannot be built: a missing peer is a failure, not a skip. */
export function collectorBinary(): Promise<string> {
  built ??= exec('bash', [join(root, 'scripts/peers/otelcol.sh')], { maxBuffer: 64 << 20, timeout: 30 * 60_000 })
    .then(({ stdout }) => stdout.trim().split('\n').pop()!)
    .catch((e: Error & { stderr?: string }) => {
      throw new Error(`cannot build the OpenTelemetry Collector (scripts/peers/otelcol.sh; npm run peers): ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
    });
  return built;
}

export interface Collector {
  /** http://127.0.0.1:<port> of the OTLP/HTTP receiver */
  endpoint: string;
  metricsFile: string;
  profilesFile: string;
  /** what the collector logged */
  output(): string;
  /** JSON documents the file exporter wrote (one per line) */
  read(file: string): Promise<unknown[]>;
  stop(): Promise<void>;
}

export async function startCollector(bin: string): Promise<Collector> {
  const dir = await mkdtemp(join(tmpdir(), 'heaptap-otelcol-'));
  const port = await freePort();
  const metricsFile = join(dir, 'metrics.jsonl');
  const profilesFile = join(dir, 'profiles.jsonl');
  const config = `
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${port}
exporters:
  file/metrics:
    path: ${metricsFile}
    flush_interval: 100ms
  file/profiles:
    path: ${profilesFile}
    flush_interval: 100ms
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [file/metrics]
    profiles:
      receivers: [otlp]
      exporters: [file/profiles, debug]
`;
  const configFile = join(dir, 'config.yaml');
  await writeFile(configFile, config);
  const child: ChildProcess = spawnGroup(null, bin, ['--config', configFile, '--feature-gates=+service.profilesSupport'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  let exited = false;
  child.on('exit', () => { exited = true; });
  await until('the collector to be ready', () => {
    if (exited) throw new Error(`the collector exited:\n${out}`);
    return out.includes('Everything is ready');
  }, 30_000).catch((e) => {
    killGroup(child);
    throw e;
  });
  const read = async (file: string): Promise<unknown[]> => {
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch {
      return [];
    }
    // The Collector may be part-way through writing its last line: only whole lines count.
    const whole = text.slice(0, text.lastIndexOf('\n') + 1);
    return whole.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as unknown);
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    metricsFile,
    profilesFile,
    output: () => out,
    read,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 5000))]);
        if (!exited) child.kill('SIGKILL');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
