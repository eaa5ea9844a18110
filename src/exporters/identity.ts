// Who a process is, the same way in every exporter: its service name and its OpenTelemetry
// process.* attributes.
import type { HeapProcess } from '../agent/types.ts';

/** The service a process's data is filed under:
 *   1. the name the process declared itself (HEAPTAP_SERVICE_NAME / OTEL_SERVICE_NAME in its
 *      own environment; HeapProcess.service then differs from the executable's name)
 *   2. else the name configured for the sidecar, if any (a flag, or OTEL_SERVICE_NAME /
 *      OTEL_RESOURCE_ATTRIBUTES service.name for the OpenTelemetry exporters): in a pod the
 *      sidecar is usually told the app's name while the app says nothing
 *   3. else the executable's name (HeapProcess.service's own fallback). */
export function serviceOf(p: HeapProcess, configured?: string): string {
  const declared = p.service !== '' && p.service !== p.exeName;
  if (declared) return p.service;
  if (configured) return configured;
  return p.service || p.exeName;
}

/** OpenTelemetry semantic-convention attributes of a process (resource or point attributes). */
export function processAttributes(p: HeapProcess): Record<string, string | number> {
  const out: Record<string, string | number> = {
    'process.pid': p.pid,
    'process.executable.name': p.exeName,
  };
  if (p.exe) out['process.executable.path'] = p.exe;
  if (p.ppid > 0) out['process.parent_pid'] = p.ppid;
  return out;
}
