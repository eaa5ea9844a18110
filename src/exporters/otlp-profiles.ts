// Pushes heap profiles as OTLP profiles (the development signal, opentelemetry-proto
// v1development, v1.10+ shapes; WIRE.md) over OTLP/HTTP: POST application/x-protobuf
// ExportProfilesServiceRequest to <endpoint>/v1development/profiles. A Collector accepts
// it when started with --feature-gates=+service.profilesSupport (v0.148+); Pyroscope serves
// the same path.
//
// The conversion from pprof (pprofToOtlp) follows the data model:
//   - one OTLP Profile per pprof sample type: alloc_objects/count, alloc_space/bytes,
//     inuse_objects/count, inuse_space/bytes, each with the pprof's period type
//     (space/bytes), period (the sampling rate), time and duration;
//   - every table (strings, functions, mappings, locations, stacks, attributes, links)
//     lives once in the request's ProfilesDictionary, shared by all profiles and all
//     processes, element 0 being the zero value, no duplicates;
//   - a pprof sample becomes, in each profile, a Sample{stack_index, attribute_indices,
//     values:[v]}; pprof labels become attributes (numeric ones as int with their unit);
//     samples of value 0 are left out and equal {stack, attributes} are summed;
//   - mappings carry the build id as process.executable.build_id.gnu; has_* flags, the
//     comments and default_sample_type have no OTLP field and are dropped.
// Each process is one ResourceProfiles: the resource attributes of the metrics (service.name,
// k8s.*, OTEL_RESOURCE_ATTRIBUTES) plus process.pid, process.executable.name/path, and
// service.name chosen by identity.ts serviceOf.
//
// Which profile: the 'delta' view, as for Pyroscope: alloc_* are allocations since the
// previous push, inuse_* absolute. v1.10 has no aggregation-temporality field, and a
// consumer that sums profiles over time (Pyroscope does) needs deltas.
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

import { Profile as PprofProfile } from 'pprof-format';

import type { Exporter, HeapProcess, HeapSource } from '../agent/types.ts';
import { otelResource, otlpEndpoint, otlpHttpSettings, resourceAttributes, DEFAULT_SERVICE_NAME, type Env } from './env.ts';
import { processAttributes, serviceOf } from './identity.ts';
import type { PushLease } from './lease.ts';
import { otlpProfileTypes } from './otlp-proto.ts';
import type { ExportLog, PushStats } from './push.ts';
import { ProfilePusher, type BuiltProfile, type RoundStats } from './rounds.ts';

const gzipAsync = promisify(gzip);

export const OTLP_PROFILES_CONSUMER = 'otlp-profiles';
const SCOPE_NAME = 'heaptap';
const BUILD_ID_ATTRIBUTE = 'process.executable.build_id.gnu';

// ---------------------------------------------------------------------------------------
// Messages as protobufjs objects (field names as in the .proto: keepCase). 64-bit integers
// are decimal strings, which protobufjs encodes exactly.

type Int64 = string;
export interface AnyValueMsg { string_value?: string; bool_value?: boolean; int_value?: Int64; double_value?: number }
export interface KeyValueMsg { key: string; value: AnyValueMsg }
interface ValueTypeMsg { type_strindex: number; unit_strindex: number }
interface SampleMsg { stack_index: number; attribute_indices: number[]; values: Int64[] }
export interface OtlpProfileMsg {
  sample_type: ValueTypeMsg;
  samples: SampleMsg[];
  time_unix_nano: Int64;
  duration_nano: Int64;
  period_type?: ValueTypeMsg;
  period: Int64;
  profile_id: Uint8Array;
}
interface MappingMsg { memory_start?: Int64; memory_limit?: Int64; file_offset?: Int64; filename_strindex?: number; attribute_indices?: number[] }
interface LineMsg { function_index: number; line?: Int64; column?: Int64 }
interface LocationMsg { mapping_index?: number; address?: Int64; lines?: LineMsg[]; attribute_indices?: number[] }
interface FunctionMsg { name_strindex?: number; system_name_strindex?: number; filename_strindex?: number; start_line?: Int64 }
interface KeyValueAndUnitMsg { key_strindex?: number; value?: AnyValueMsg; unit_strindex?: number }
interface StackMsg { location_indices?: number[] }
interface LinkMsg { trace_id?: Uint8Array; span_id?: Uint8Array }

export interface ProfilesDictionaryMsg {
  mapping_table: MappingMsg[];
  location_table: LocationMsg[];
  function_table: FunctionMsg[];
  link_table: LinkMsg[];
  string_table: string[];
  attribute_table: KeyValueAndUnitMsg[];
  stack_table: StackMsg[];
}

export interface ResourceProfilesMsg {
  resource: { attributes: KeyValueMsg[] };
  scope_profiles: { scope: { name: string; version: string }; profiles: OtlpProfileMsg[] }[];
}

export interface ExportProfilesRequestMsg {
  resource_profiles: ResourceProfilesMsg[];
  dictionary: ProfilesDictionaryMsg;
}

/** A ProfilesDictionary being filled: each add returns the item's index, the same index
 * for the same value. Element 0 of every table is the zero value. */
export class ProfilesDictionary {
  readonly msg: ProfilesDictionaryMsg = {
    mapping_table: [{}],
    location_table: [{}],
    function_table: [{}],
    // The spec's preferred zero link: 16 and 8 zero bytes.
    link_table: [{ trace_id: new Uint8Array(16), span_id: new Uint8Array(8) }],
    string_table: [''],
    attribute_table: [{}],
    stack_table: [{}],
  };
  readonly #strings = new Map<string, number>([['', 0]]);
  readonly #index = new Map<string, number>();

  str(s: string): number {
    let i = this.#strings.get(s);
    if (i === undefined) {
      i = this.msg.string_table.push(s) - 1;
      this.#strings.set(s, i);
    }
    return i;
  }

  #add<T>(table: T[], kind: string, key: string, item: T): number {
    const k = `${kind}\0${key}`;
    let i = this.#index.get(k);
    if (i === undefined) {
      i = table.push(item) - 1;
      this.#index.set(k, i);
    }
    return i;
  }

  func(name: string, systemName: string, filename: string, startLine: bigint): number {
    const f: FunctionMsg = { name_strindex: this.str(name), system_name_strindex: this.str(systemName), filename_strindex: this.str(filename) };
    if (startLine !== 0n) f.start_line = startLine.toString();
    if (!f.name_strindex && !f.system_name_strindex && !f.filename_strindex) return 0;
    return this.#add(this.msg.function_table, 'f', `${f.name_strindex},${f.system_name_strindex},${f.filename_strindex},${startLine}`, f);
  }

  mapping(start: bigint, limit: bigint, offset: bigint, filename: string, attributes: number[]): number {
    const m: MappingMsg = {
      memory_start: start.toString(), memory_limit: limit.toString(), file_offset: offset.toString(),
      filename_strindex: this.str(filename), attribute_indices: attributes,
    };
    return this.#add(this.msg.mapping_table, 'm', `${start},${limit},${offset},${m.filename_strindex},${attributes.join(':')}`, m);
  }

  location(mapping: number, address: bigint, lines: LineMsg[]): number {
    const l: LocationMsg = { mapping_index: mapping, address: address.toString(), lines };
    const key = `${mapping},${address},${lines.map((x) => `${x.function_index}:${x.line ?? 0}:${x.column ?? 0}`).join(';')}`;
    return this.#add(this.msg.location_table, 'l', key, l);
  }

  stack(locations: number[]): number {
    if (locations.length === 0) return 0;
    return this.#add(this.msg.stack_table, 's', locations.join(','), { location_indices: locations });
  }

  attribute(key: string, value: AnyValueMsg, unit = ''): number {
    const a: KeyValueAndUnitMsg = { key_strindex: this.str(key), value };
    const u = this.str(unit);
    if (u) a.unit_strindex = u;
    const v = value.string_value !== undefined ? `s${value.string_value}`
      : value.int_value !== undefined ? `i${value.int_value}`
        : value.bool_value !== undefined ? `b${value.bool_value}` : `d${value.double_value}`;
    return this.#add(this.msg.attribute_table, 'a', `${a.key_strindex}\0${v}\0${u}`, a);
  }
}

const big = (n: number | bigint): bigint => (typeof n === 'bigint' ? n : BigInt(Math.trunc(n)));

/** Converts one pprof profile into OTLP Profiles (one per sample type), adding its tables to
 * dict. */
export function pprofToOtlp(p: PprofProfile, dict: ProfilesDictionary): OtlpProfileMsg[] {
  const strs = p.stringTable.strings;
  const s = (i: number | bigint) => strs[Number(i)] ?? '';

  const functions = new Map<string, number>();
  for (const f of p.function) {
    functions.set(String(f.id), dict.func(s(f.name), s(f.systemName), s(f.filename), big(f.startLine)));
  }
  const mappings = new Map<string, number>();
  for (const m of p.mapping) {
    const buildId = s(m.buildId);
    const attrs = buildId ? [dict.attribute(BUILD_ID_ATTRIBUTE, { string_value: buildId })] : [];
    mappings.set(String(m.id), dict.mapping(big(m.memoryStart), big(m.memoryLimit), big(m.fileOffset), s(m.filename), attrs));
  }
  const locations = new Map<string, number>();
  for (const l of p.location) {
    const lines: LineMsg[] = l.line.map((ln) => {
      const out: LineMsg = { function_index: functions.get(String(ln.functionId)) ?? 0 };
      if (big(ln.line) !== 0n) out.line = big(ln.line).toString();
      if (big(ln.column) !== 0n) out.column = big(ln.column).toString();
      return out;
    });
    locations.set(String(l.id), dict.location(mappings.get(String(l.mappingId)) ?? 0, big(l.address), lines));
  }

  // Stack and attributes per pprof sample, computed once for all sample types.
  const keyed = p.sample.map((sample) => {
    const stack = dict.stack(sample.locationId.map((id) => locations.get(String(id)) ?? 0));
    const seen = new Set<string>();
    const attrs: number[] = [];
    for (const label of sample.label) {
      const key = s(label.key);
      if (!key || seen.has(key)) continue; // attribute keys are unique per sample
      seen.add(key);
      // A pprof label is a string (str set) or a number (num, with an optional unit).
      attrs.push(big(label.str) !== 0n
        ? dict.attribute(key, { string_value: s(label.str) })
        : dict.attribute(key, { int_value: big(label.num).toString() }, s(label.numUnit)));
    }
    attrs.sort((a, b) => a - b);
    return { stack, attrs, id: `${stack}|${attrs.join(',')}` };
  });

  const time = big(p.timeNanos) > 0n ? big(p.timeNanos) : BigInt(Date.now()) * 1_000_000n;
  const periodType = p.periodType
    ? { type_strindex: dict.str(s(p.periodType.type)), unit_strindex: dict.str(s(p.periodType.unit)) }
    : undefined;
  return p.sampleType.map((st, i) => {
    const sums = new Map<string, { stack: number; attrs: number[]; value: bigint }>();
    p.sample.forEach((sample, j) => {
      const v = big(sample.value[i] ?? 0);
      if (v === 0n) return;
      const k = keyed[j]!;
      const cur = sums.get(k.id);
      if (cur) cur.value += v;
      else sums.set(k.id, { stack: k.stack, attrs: k.attrs, value: v });
    });
    const profile: OtlpProfileMsg = {
      sample_type: { type_strindex: dict.str(s(st.type)), unit_strindex: dict.str(s(st.unit)) },
      samples: [...sums.values()].map((x) => ({ stack_index: x.stack, attribute_indices: x.attrs, values: [x.value.toString()] })),
      time_unix_nano: time.toString(),
      duration_nano: big(p.durationNanos).toString(),
      period: big(p.period).toString(),
      profile_id: randomProfileId(),
    };
    if (periodType) profile.period_type = periodType;
    return profile;
  });
}

function randomProfileId(): Uint8Array {
  let id: Buffer;
  do id = randomBytes(16); while (id.every((b) => b === 0));
  return id;
}

/** OTLP KeyValues from plain attributes. */
export function keyValues(attrs: Record<string, string | number | boolean>): KeyValueMsg[] {
  return Object.entries(attrs).map(([key, v]) => ({
    key,
    value: typeof v === 'string' ? { string_value: v }
      : typeof v === 'boolean' ? { bool_value: v }
        : Number.isInteger(v) ? { int_value: String(v) } : { double_value: v },
  }));
}

export interface ProcessProfile {
  process: HeapProcess;
  profile: PprofProfile;
  /** 'peak': in use at the process's own peak (resource attribute heaptap.profile.view) */
  kind?: 'delta' | 'peak';
}

/** The request for several processes' profiles: one ResourceProfiles per process, one
 * shared dictionary. */
export function buildExportRequest(
  items: readonly ProcessProfile[],
  opts: { resource: Record<string, string | number | boolean>; configuredService?: string; version?: string },
): ExportProfilesRequestMsg {
  const dict = new ProfilesDictionary();
  const resource_profiles = items.map(({ process, profile, kind }) => ({
    resource: {
      attributes: keyValues({
        ...opts.resource,
        ...processAttributes(process),
        'service.name': serviceOf(process, opts.configuredService),
        // a process's peak (pushed when it ends) beside its deltas
        ...(kind === 'peak' ? { 'heaptap.profile.view': 'peak' } : {}),
        // a process's last profiles say how it ended (src/ends.ts)
        ...(process.end ? { 'heaptap.process.end': process.end.reason } : {}),
      }),
    },
    scope_profiles: [{ scope: { name: SCOPE_NAME, version: opts.version ?? '' }, profiles: pprofToOtlp(profile, dict) }],
  }));
  return { resource_profiles, dictionary: dict.msg };
}

export function encodeExportRequest(req: ExportProfilesRequestMsg): Uint8Array {
  const T = otlpProfileTypes().ExportProfilesServiceRequest;
  return T.encode(T.fromObject(req)).finish();
}

// ---------------------------------------------------------------------------------------

export interface OtlpProfilesOptions {
  /** --otlp-profiles-url: the endpoint (a URL with no path gets /v1development/profiles);
   * default from OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, or
   * http://localhost:4318 */
  url?: string;
  /** default process.env */
  env?: Env;
  /** push period, ms; default 15000 */
  intervalMs?: number;
  /** service.name for processes that declare none and for the resource (beats OTEL_SERVICE_NAME) */
  serviceName?: string;
  /** more resource attributes */
  resourceAttributes?: Record<string, string | number | boolean>;
  /** more headers, over OTEL_EXPORTER_OTLP_(PROFILES_)HEADERS */
  headers?: Record<string, string>;
  /** per request, ms; default OTEL_EXPORTER_OTLP_(PROFILES_)TIMEOUT or 10000 */
  timeoutMs?: number;
  /** default OTEL_EXPORTER_OTLP_(PROFILES_)COMPRESSION or none */
  compression?: 'gzip' | 'none';
  /** heaptap's version, for the instrumentation scope */
  version?: string;
  maxQueue?: number;
  maxAttempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** how long stop() may spend, ms; default 5000 */
  stopDeadlineMs?: number;
  log?: ExportLog;
  /** for tests */
  fetch?: typeof fetch;
  now?: () => number;
}

export interface OtlpProfilesStats extends PushStats, RoundStats {
  /** profiles the backend said it rejected in an accepted request (partial success) */
  rejectedProfiles: number;
}

export class OtlpProfilesExporter implements Exporter {
  readonly name = 'otlp-profiles';
  /** where requests go, and which setting said so */
  readonly endpoint: string;
  readonly endpointFrom: string;
  readonly #opts: OtlpProfilesOptions;
  readonly #resource: Record<string, string | number | boolean>;
  readonly #configuredService: string | undefined;
  readonly #headers: Record<string, string>;
  readonly #gzip: boolean;
  readonly #push: ProfilePusher;
  readonly #log: ExportLog;
  #rejectedProfiles = 0;

  constructor(opts: OtlpProfilesOptions = {}) {
    this.#opts = opts;
    const env = opts.env ?? process.env;
    this.#log = opts.log ?? (() => {});
    const warn = (msg: string) => this.#log('warn', `otlp-profiles: ${msg}`);
    const ep = otlpEndpoint('profiles', env, opts.url);
    this.endpoint = ep.url;
    this.endpointFrom = ep.from;
    const http = otlpHttpSettings('profiles', env, warn);
    const resource = otelResource({ serviceName: opts.serviceName, attributes: opts.resourceAttributes, env });
    this.#resource = resourceAttributes(resource);
    const svc = this.#resource['service.name'];
    // A service name someone configured (not heaptap's default) names processes that
    // declare none.
    this.#configuredService = typeof svc === 'string' && svc !== DEFAULT_SERVICE_NAME ? svc : undefined;
    this.#gzip = (opts.compression ?? http.compression) === 'gzip';
    this.#headers = {
      ...http.headers,
      ...opts.headers,
      'Content-Type': 'application/x-protobuf',
      ...(this.#gzip ? { 'Content-Encoding': 'gzip' } : {}),
    };
    this.#push = new ProfilePusher({
      rounds: { name: 'otlp-profiles', intervalMs: opts.intervalMs ?? 15_000, consumer: OTLP_PROFILES_CONSUMER, log: this.#log, now: opts.now },
      queue: {
        name: 'otlp-profiles',
        maxQueue: opts.maxQueue,
        maxAttempts: opts.maxAttempts,
        timeoutMs: opts.timeoutMs ?? http.timeoutMs,
        initialBackoffMs: opts.initialBackoffMs,
        maxBackoffMs: opts.maxBackoffMs,
        log: this.#log,
        fetch: opts.fetch,
        onSuccess: (body) => this.#partialSuccess(body),
      },
      stopDeadlineMs: opts.stopDeadlineMs,
    }, (built) => this.#enqueue(built));
  }

  readonly pushesProfiles = true;

  start(source: HeapSource, lease?: PushLease): void {
    this.#push.start(source, lease);
  }

  /** One round now: the live processes' profiles, built and queued (not yet sent). */
  pushNow(): Promise<void> {
    return this.#push.pushNow();
  }

  stop(): Promise<void> {
    return this.#push.stop();
  }

  stats(): OtlpProfilesStats {
    return { ...this.#push.stats(), rejectedProfiles: this.#rejectedProfiles };
  }

  async #enqueue(built: BuiltProfile[]): Promise<void> {
    // OTLP needs the profile's structure: decoded here, the one exporter that needs it.
    const req = buildExportRequest(built.map((b) => ({ process: b.process, profile: PprofProfile.decode(b.bytes), kind: b.kind })), {
      resource: this.#resource,
      configuredService: this.#configuredService,
      version: this.#opts.version,
    });
    let body = encodeExportRequest(req);
    if (this.#gzip) body = await gzipAsync(body);
    const first = built[0]!.process;
    this.#push.queue.enqueue({
      url: this.endpoint,
      body,
      headers: this.#headers,
      describe: built.length === 1 ? { pid: first.pid, service: serviceOf(first, this.#configuredService) } : { processes: built.length },
      settle: (_delivered, outcome) => { for (const b of built) b.settle(outcome); },
    });
  }

  #partialSuccess(body: Uint8Array): void {
    if (body.byteLength === 0) return;
    const T = otlpProfileTypes().ExportProfilesServiceResponse;
    const res = T.toObject(T.decode(body), { longs: Number }) as { partial_success?: { rejected_profiles?: number; error_message?: string } };
    const ps = res.partial_success;
    if (!ps || (!ps.rejected_profiles && !ps.error_message)) return;
    const firstTime = this.#rejectedProfiles === 0;
    this.#rejectedProfiles += ps.rejected_profiles ?? 0;
    this.#log(firstTime ? 'warn' : 'debug', 'otlp-profiles: backend accepted the request only in part', {
      rejected: ps.rejected_profiles ?? 0, error: ps.error_message ?? '',
    });
  }
}
