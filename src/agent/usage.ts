// The help texts of `heaptap agent` and `heaptap ctl`, without imports that load the addon
// (src/cli.ts shows them before anything is built).
import { usage } from './config.ts';

export const AGENT_USAGE = usage() + '\n';

export const CTL_USAGE = `Usage: heaptap ctl <pid> pause|resume|rate <bytes> [--dir DIR]

Controls sampling in a running process through its region's control area:
  pause          stop sampling (allocations are still counted as dropped, reason "paused")
  resume         sample again
  rate <bytes>   mean bytes between samples (1 = every allocation; 512k, 4m accepted)
The process applies it at its next sampled allocation. No agent is needed; the agent
offers the same as POST /debug/heaptap/control?pid=N&action=...&bytes=N.

Options:
  --dir DIR      region directory (default $HEAPTAP_DIR, else /dev/shm/heaptap)
  -h, --help     this text

Exit codes: 0 done, 1 no running process with that pid, 2 usage error.
`;
