// The agent: a Watcher over the region directory, the HeapSource over it, the HTTP server
// with /metrics, and the push exporters, started and stopped together.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

import { acquirePushLease, type HeldLease } from '../exporters/lease.ts';
import type { AsyncProfileSymbolizer } from '../profile.ts';
import type { AgentConfig } from './config.ts';
import { createExporters } from './exporters.ts';
import { createAgentServer } from './http.ts';
import type { Logger } from './log.ts';
import { createMetrics } from './metrics.ts';
import { Watcher } from './processes.ts';
import { AgentSource } from './source.ts';
import type { Exporter } from './types.ts';

/** package.json's version. */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface AgentHandle {
  source: AgentSource;
  server: Server;
  /** where the server listens (port resolved when --listen had port 0) */
  address: { host: string; port: number };
  url: string;
  exporters: Exporter[];
  stop(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  symbolizer?: AsyncProfileSymbolizer & { close?(): void };
  /** replace the exporters made from config (tests) */
  exporters?: Exporter[];
  /** idle time before the symbolizer's files are closed, at first (SourceOptions; tests, benchmarks) */
  releaseFilesAfterMs?: number;
}

export async function startAgent(config: AgentConfig, opts: StartOptions): Promise<AgentHandle> {
  const { log } = opts;
  const watcher = new Watcher({ dir: config.dir, pollMs: config.pollMs, retentionMs: config.retentionMs, log });
  const source = new AgentSource(watcher, { symbolizer: opts.symbolizer, log, ...(opts.releaseFilesAfterMs !== undefined ? { releaseFilesAfterMs: opts.releaseFilesAfterMs } : {}) });
  const registry = createMetrics({
    source,
    topSites: config.topSites,
    version: VERSION,
    stats: () => ({ scans: watcher.scans, lastScanMs: watcher.lastScanMs, readErrors: watcher.readErrors, ends: watcher.ends }),
  });
  const server = createAgentServer({
    source, registry, log, token: config.token, loopbackOnly: config.loopbackOnly, maxSeconds: config.maxSeconds, isReady: () =>
      !watcher.isReady ? 'first scan of the region directory not done' :
      watcher.dirMissing ? `the region directory ${config.dir} does not exist` : true,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  log.info('listening', { url, dir: config.dir, poll_ms: config.pollMs, retention_s: Math.round(config.retentionMs / 1000), token: config.token ? 'required' : 'none' });
  if (!config.token && !config.loopbackOnly) {
    log.warn('no token: profiles and metrics are served to anyone who can reach this port; control is refused (--insecure-no-token)', { url });
  }

  const pruneTimer = setInterval(() => source.prune(), 10_000);
  pruneTimer.unref();
  watcher.start();

  const exporters = opts.exporters ?? (await createExporters(config, log, VERSION));
  // Profile pushers run only with the directory's push lease (src/exporters/lease.ts): a
  // second agent on the same directory would send the same allocations again.
  let lease: HeldLease | undefined;
  let pushRefused = false;
  if (exporters.some((e) => e.pushesProfiles)) {
    try {
      const got = acquirePushLease(config.dir);
      if (got.held) {
        lease = got.lease;
        log.info('push lease taken', { lease: lease.path, pushed_until: lease.pushedUntilMs === null ? null : new Date(lease.pushedUntilMs).toISOString() });
      } else {
        pushRefused = true;
        log.warn('not pushing profiles: another agent holds the push lease of this directory and pushes them', {
          lease: got.path, holder_pid: got.holder?.pid ?? null,
          exporters: exporters.filter((e) => e.pushesProfiles).map((e) => e.name).join(','),
        });
      }
    } catch (err) {
      // A directory we cannot write to: no lease to share, so no second agent to fear.
      log.warn('push lease unavailable; pushing without one', { dir: config.dir, error: (err as Error).message });
    }
  }
  for (const e of exporters) {
    if (e.pushesProfiles && pushRefused) continue;
    try {
      e.start(source, e.pushesProfiles ? lease : undefined);
      log.info('exporter started', { exporter: e.name });
    } catch (err) {
      log.error('exporter failed to start', { exporter: e.name, error: (err as Error).message });
    }
  }

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      clearInterval(pruneTimer);
      await watcher.stop();
      // Exporters flush within their own time bound; the server stops taking requests.
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await Promise.allSettled(exporters.map((e) => e.stop()));
      lease?.release();
      setTimeout(() => server.closeAllConnections(), 2000).unref();
      await closed;
      opts.symbolizer?.close?.();
      log.info('stopped');
    })();
    return stopping;
  };
  return { source, server, address: { host: addr.address, port: addr.port }, url, exporters, stop };
}
