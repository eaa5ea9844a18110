// One line per event, on stderr: `time level message key=value ...` as text, or one JSON
// object with time, level and msg. Repeated failures of one kind (an exporter whose
// backend is down, a region that stays unreadable) are logged once through once().
import type { LogFormat, LogLevel } from './config.ts';

export type Fields = Record<string, string | number | boolean | null | undefined>;

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** Logs at `level` the first time `kind` is seen; returns whether it logged. reset(kind)
   * lets it log again (e.g. after the failing thing recovered). */
  once(kind: string, level: LogLevel, msg: string, fields?: Fields): boolean;
  reset(kind: string): void;
}

function textValue(v: string | number | boolean | null): string {
  const s = String(v);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

export function createLogger(opts: {
  format?: LogFormat;
  level?: LogLevel;
  write?: (line: string) => void;
  now?: () => Date;
} = {}): Logger {
  const format = opts.format ?? 'text';
  const min = RANK[opts.level ?? 'info'];
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const now = opts.now ?? (() => new Date());
  const seen = new Set<string>();
  const log = (level: LogLevel, msg: string, fields: Fields = {}) => {
    if (RANK[level] < min) return;
    const time = now().toISOString();
    const entries = Object.entries(fields).filter(([, v]) => v !== undefined) as [string, string | number | boolean | null][];
    if (format === 'json') {
      write(JSON.stringify({ time, level, msg, ...Object.fromEntries(entries) }));
    } else {
      // Messages are one line by construction; fold any newline a system error brings.
      const parts = [time, level.padEnd(5), msg.replace(/\s*\n\s*/g, ' ')];
      for (const [k, v] of entries) parts.push(`${k}=${textValue(v)}`);
      write(parts.join(' '));
    }
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    once(kind, level, msg, fields) {
      if (seen.has(kind)) return false;
      seen.add(kind);
      log(level, msg, fields);
      return true;
    },
    reset(kind) {
      seen.delete(kind);
    },
  };
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = createLogger({ write: () => {} , level: 'error' });
