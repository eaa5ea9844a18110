// `heaptap agent` settings: flags, each with a HEAPTAP_* environment variable behind it
// (a flag wins over its variable), validated up front. A bad value is a ConfigError, which
// the CLI prints as one line and turns into exit code 2.
import { readFileSync } from 'node:fs';

export type LogFormat = 'text' | 'json';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface AgentConfig {
  /** region directory */
  dir: string;
  /** where the HTTP server listens */
  host: string;
  port: number;
  /** how often live regions are re-read, ms */
  pollMs: number;
  /** how long an ended process stays served before its region file is removed, ms */
  retentionMs: number;
  /** bearer token for everything but /healthz and /readyz; '' = none (then the agent
   * listens on loopback only, or insecureNoToken is set and control is refused) */
  token: string;
  /** listening beyond loopback without a token was asked for explicitly: reads are served
   * to anyone who can reach the port, control is refused */
  insecureNoToken: boolean;
  /** the listen address is a loopback one (127.0.0.0/8, ::1, localhost) */
  loopbackOnly: boolean;
  /** heaptap_site_inuse_bytes series per process; 0 turns them off */
  topSites: number;
  logFormat: LogFormat;
  logLevel: LogLevel;
  /** Grafana Pyroscope (or Alloy pyroscope.receive_http) base URL; '' = off */
  pyroscopeUrl: string;
  /** OTLP profiles endpoint base URL; '' = off */
  otlpProfilesUrl: string;
  /** OpenTelemetry metrics: on when OTEL_EXPORTER_OTLP(_METRICS)_ENDPOINT is set or
   * --otel-metrics is given */
  otelMetrics: boolean;
  /** extra labels on pushed Pyroscope profiles (--label k=v) */
  labels: Record<string, string>;
  /** how often push exporters send, ms */
  pushIntervalMs: number;
  /** upper bound for ?seconds=N, s */
  maxSeconds: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** One option: its flag, variable, value name (absent for a switch) and help line. */
interface Option {
  flag: string;
  env?: string;
  arg?: string;
  help: string;
  def?: string;
}

export const OPTIONS: readonly Option[] = [
  { flag: '--dir', env: 'HEAPTAP_DIR', arg: 'DIR', def: '/dev/shm/heaptap', help: 'region directory to watch' },
  { flag: '--listen', env: 'HEAPTAP_LISTEN', arg: 'HOST:PORT', def: '127.0.0.1:6060', help: 'HTTP address (":6060" = all interfaces, port 0 = any free port)' },
  { flag: '--poll', env: 'HEAPTAP_POLL', arg: 'DURATION', def: '1s', help: 'how often live regions are read (100ms..1m)' },
  { flag: '--retention', env: 'HEAPTAP_RETENTION', arg: 'DURATION', def: '10m', help: 'how long an ended process is still served before its region file is removed' },
  { flag: '--token', env: 'HEAPTAP_TOKEN', arg: 'TOKEN', help: 'require "Authorization: Bearer TOKEN" on every endpoint but /healthz and /readyz (needed to listen beyond loopback; an empty token is an error)' },
  { flag: '--token-file', env: 'HEAPTAP_TOKEN_FILE', arg: 'FILE', help: 'read the token from FILE (trailing newline ignored)' },
  { flag: '--insecure-no-token', env: 'HEAPTAP_INSECURE_NO_TOKEN', help: 'listen beyond loopback without a token: profiles and metrics are served to anyone who reaches the port, control is refused (403); logged as a warning' },
  { flag: '--top-sites', env: 'HEAPTAP_TOP_SITES', arg: 'N', def: '10', help: 'heaptap_site_inuse_bytes series per process (0..1000; 0 = none)' },
  { flag: '--log-format', env: 'HEAPTAP_LOG_FORMAT', arg: 'text|json', def: 'text', help: 'one line per event, as text or JSON' },
  { flag: '--log-level', env: 'HEAPTAP_LOG_LEVEL', arg: 'LEVEL', def: 'info', help: 'debug, info, warn or error' },
  { flag: '--pyroscope-url', env: 'HEAPTAP_PYROSCOPE_URL', arg: 'URL', help: 'push profiles to Grafana Pyroscope (or Alloy) at URL' },
  { flag: '--label', env: 'HEAPTAP_LABELS', arg: 'K=V', help: 'extra label on pushed Pyroscope profiles; repeat the flag (the variable takes K=V,K2=V2)' },
  { flag: '--otlp-profiles-url', env: 'HEAPTAP_OTLP_PROFILES_URL', arg: 'URL', help: 'push OTLP profiles to URL (a Collector with profiles enabled, or Pyroscope)' },
  { flag: '--otel-metrics', env: 'HEAPTAP_OTEL_METRICS', help: 'export OpenTelemetry metrics over OTLP/HTTP (also on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set; OTEL_* variables configure it)' },
  { flag: '--push-interval', env: 'HEAPTAP_PUSH_INTERVAL', arg: 'DURATION', def: '15s', help: 'how often Pyroscope and OTLP profiles are pushed' },
  { flag: '--max-seconds', env: 'HEAPTAP_MAX_SECONDS', arg: 'N', def: '600', help: 'largest ?seconds=N a profile request may ask for' },
];

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

export function usage(): string {
  const col = 28;
  const rows = OPTIONS.flatMap((o) => {
    const left = `  ${o.flag}${o.arg ? ` ${o.arg}` : ''}`;
    const extra = [o.def ? `default ${o.def}` : '', o.env ? `env ${o.env}` : ''].filter(Boolean).join('; ');
    const text = wrap(`${o.help}${extra ? ` (${extra})` : ''}`, 88 - col);
    const first = left.length < col ? `${left.padEnd(col)}${text[0]}` : `${left}\n${' '.repeat(col)}${text[0]}`;
    return [first, ...text.slice(1).map((t) => ' '.repeat(col) + t)];
  });
  return [
    'Usage: heaptap agent [options]',
    '',
    'The sidecar: watches the region directory and serves every profiled process\'s heap as',
    'pprof profiles at /debug/pprof/* and Prometheus metrics at /metrics, and pushes to',
    'Pyroscope, OTLP profiles and OpenTelemetry metrics when configured. Runs until SIGINT',
    'or SIGTERM. Each option can also be set by its environment variable; a flag wins.',
    '',
    'Options:',
    ...rows,
    `${'  -h, --help'.padEnd(col)}this text`,
    '',
    'Endpoints:',
    '  GET  /debug/pprof/            HTML index of the processes, with links',
    '  GET  /debug/pprof/heap        in use and allocated (pprof, gzipped protobuf)',
    '       ?peak=1  in use at each process\'s own peak (kept by the library)',
    '  GET  /debug/pprof/allocs      the same, default sample type alloc_space',
    '       ?seconds=N  the difference over the next N s (heap and allocs only)',
    '  GET  /debug/pprof/delta_heap  allocations since the previous call of this consumer',
    '       ?consumer=NAME  whose previous call (default: remote address and User-Agent)',
    '       all three: ?pid=N  one process (default: the one running, or all merged with',
    '       pid and exe labels); ?debug=1  text',
    '  GET  /metrics                 Prometheus; /healthz, /readyz (never need the token)',
    '  GET  /debug/heaptap/processes JSON list of the processes served',
    '  GET  /debug/heaptap/timeline  JSON: in use, allocated, RSS over time and the peak',
    '  POST /debug/heaptap/control?pid=N&action=pause|resume|rate[&bytes=N]',
    '       without a token only while listening on loopback (else 403)',
    '',
    'Exit codes: 0 after SIGINT/SIGTERM, 2 for an invalid option or value.',
  ].join('\n');
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "1s", "250ms", "10m", "1h", "1m30s", or a plain number of seconds, as ms. */
export function parseDuration(text: string, what: string): number {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t))) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    at = re.lastIndex;
  }
  if (at === 0 || at !== t.length) throw new ConfigError(`invalid ${what} '${text}': expected a duration such as 500ms, 1s, 10m or 1h`);
  return Math.round(total);
}

function parseInteger(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new ConfigError(`invalid ${what} '${text}': expected a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfigError(`invalid ${what} '${text}': must be between ${min} and ${max}`);
  return n;
}

/** "host:port", ":port" (all interfaces), "[v6]:port" or "port". */
export function parseListen(text: string): { host: string; port: number } {
  const t = text.trim();
  let host: string;
  let port: string;
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(t);
  if (v6) [host, port] = [v6[1]!, v6[2]!];
  else if (/^\d+$/.test(t)) [host, port] = ['127.0.0.1', t];
  else {
    const i = t.lastIndexOf(':');
    if (i < 0) throw new ConfigError(`invalid --listen '${text}': expected HOST:PORT`);
    host = t.slice(0, i) || '0.0.0.0';
    port = t.slice(i + 1);
    if (host.includes(':')) throw new ConfigError(`invalid --listen '${text}': write IPv6 addresses as [ADDR]:PORT`);
  }
  if (!/^\d+$/.test(port) || Number(port) > 65535) throw new ConfigError(`invalid --listen '${text}': bad port '${port}'`);
  if (!/^[A-Za-z0-9.:\-_]+$/.test(host)) throw new ConfigError(`invalid --listen '${text}': bad host '${host}'`);
  return { host, port: Number(port) };
}

/** A listen host that only this machine can reach: 127.0.0.0/8, ::1 (also as
 * ::ffff:127.x) or localhost. 0.0.0.0, :: and every other name or address are not. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.exec(h);
  return v4 !== null && v4[1] === '127';
}

function parseUrl(text: string, what: string): string {
  if (text === '') return '';
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new ConfigError(`invalid ${what} '${text}': not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`invalid ${what} '${text}': must be http:// or https://`);
  return text;
}

function parseBool(text: string, what: string): boolean {
  const t = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(t)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(t)) return false;
  throw new ConfigError(`invalid ${what} '${text}': expected true or false`);
}

export interface ParsedArgs {
  config: AgentConfig;
  help: boolean;
}

/** Parses `heaptap agent` arguments (without the subcommand) over the environment. */
export function parseAgentArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedArgs {
  const byFlag = new Map(OPTIONS.map((o) => [o.flag, o]));
  const given = new Map<string, string>();
  const labelArgs: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      help = true;
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const opt = byFlag.get(name);
    if (!opt) throw new ConfigError(a.startsWith('-') ? `unknown option '${a}'` : `unexpected argument '${a}'`);
    if (!opt.arg) {
      given.set(opt.flag, eq > 0 && name !== a ? a.slice(eq + 1) : 'true');
      continue;
    }
    let v: string | undefined;
    if (name !== a) v = a.slice(eq + 1);
    else {
      v = argv[++i];
      if (v === undefined) throw new ConfigError(`option ${opt.flag} needs a value (${opt.arg})`);
    }
    if (opt.flag === '--label') labelArgs.push(v);
    given.set(opt.flag, v);
  }
  const value = (flag: string): string => {
    const o = byFlag.get(flag)!;
    const fromFlag = given.get(flag);
    if (fromFlag !== undefined) return fromFlag;
    const fromEnv = o.env ? env[o.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
    return o.def ?? '';
  };
  const what = (flag: string): string => {
    const o = byFlag.get(flag)!;
    return given.has(flag) || !o.env || !env[o.env] ? flag : `${o.env}`;
  };

  const dir = value('--dir');
  if (dir === '') throw new ConfigError('invalid --dir: empty');
  const { host, port } = parseListen(value('--listen'));
  const pollMs = parseDuration(value('--poll'), what('--poll'));
  if (pollMs < 100 || pollMs > 60_000) throw new ConfigError(`invalid ${what('--poll')} '${value('--poll')}': must be between 100ms and 1m`);
  const retentionMs = parseDuration(value('--retention'), what('--retention'));
  if (retentionMs > 7 * 24 * 3_600_000) throw new ConfigError(`invalid ${what('--retention')} '${value('--retention')}': at most 168h`);
  // An empty token would turn authentication off without a word: refused wherever it
  // comes from (an empty variable counts as given, unlike for the other options).
  if (given.get('--token') === '') throw new ConfigError('invalid --token: empty (leave the option out for no token)');
  if (!given.has('--token') && env.HEAPTAP_TOKEN === '') throw new ConfigError('invalid HEAPTAP_TOKEN: set but empty (unset it for no token)');
  if (given.get('--token-file') === '') throw new ConfigError('invalid --token-file: empty file name');
  if (!given.has('--token-file') && env.HEAPTAP_TOKEN_FILE === '') throw new ConfigError('invalid HEAPTAP_TOKEN_FILE: set but empty (unset it for no token)');
  let token = value('--token');
  const tokenFile = value('--token-file');
  if (tokenFile !== '') {
    if (token !== '') throw new ConfigError('give --token or --token-file, not both');
    try {
      token = readFileSync(tokenFile, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new ConfigError(`cannot read ${what('--token-file')} '${tokenFile}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (token === '') throw new ConfigError(`${what('--token-file')} '${tokenFile}' is empty`);
  }
  if (/[\s]/.test(token)) throw new ConfigError('invalid token: must not contain white space');
  const insecureNoToken = parseBool(value('--insecure-no-token'), what('--insecure-no-token'));
  const loopbackOnly = isLoopbackHost(host);
  if (!loopbackOnly && token === '' && !insecureNoToken) {
    throw new ConfigError(`listening on ${host.includes(':') ? `[${host}]` : host}:${port} (beyond loopback) needs a token: give --token-file or --token, or --insecure-no-token to serve profiles and metrics without one (control is then refused)`);
  }
  const topSites = parseInteger(value('--top-sites'), what('--top-sites'), 0, 1000);
  const logFormat = value('--log-format');
  if (logFormat !== 'text' && logFormat !== 'json') throw new ConfigError(`invalid ${what('--log-format')} '${logFormat}': expected text or json`);
  const logLevel = value('--log-level');
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) throw new ConfigError(`invalid ${what('--log-level')} '${logLevel}': expected debug, info, warn or error`);
  const pyroscopeUrl = parseUrl(value('--pyroscope-url'), what('--pyroscope-url'));
  const otlpProfilesUrl = parseUrl(value('--otlp-profiles-url'), what('--otlp-profiles-url'));
  const otelMetrics = parseBool(value('--otel-metrics'), what('--otel-metrics')) ||
    !!env.OTEL_EXPORTER_OTLP_ENDPOINT || !!env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT;
  const labels: Record<string, string> = {};
  const labelTexts = labelArgs.length ? labelArgs : (env.HEAPTAP_LABELS ?? '').split(',').filter((x) => x.trim() !== '');
  for (const text of labelTexts) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(text);
    if (!m) throw new ConfigError(`invalid ${labelArgs.length ? '--label' : 'HEAPTAP_LABELS'} '${text}': expected NAME=VALUE (NAME: letters, digits, _)`);
    labels[m[1]!] = m[2]!.trim();
  }
  const pushIntervalMs = parseDuration(value('--push-interval'), what('--push-interval'));
  if (pushIntervalMs < 1000 || pushIntervalMs > 3_600_000) throw new ConfigError(`invalid ${what('--push-interval')} '${value('--push-interval')}': must be between 1s and 1h`);
  const maxSeconds = parseInteger(value('--max-seconds'), what('--max-seconds'), 1, 86_400);
  return {
    help,
    config: {
      dir, host, port, pollMs, retentionMs, token, insecureNoToken, loopbackOnly, topSites,
      logFormat, logLevel: logLevel as LogLevel,
      pyroscopeUrl, otlpProfilesUrl, otelMetrics, labels, pushIntervalMs, maxSeconds,
    },
  };
}
