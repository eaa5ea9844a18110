// The help texts of heaptap and its subcommands (no imports that load the addon: --help
// and usage errors work before anything is built).
import { DEFAULT_REGION_DIR } from './common.ts';

export const USAGE = `Usage: heaptap <command> [options]

Sampled heap profiles of any program that allocates with malloc, as pprof files.

Commands:
  run [options] -- <command> [args]   run a command under heaptap; write its heap
                                      profiles (at exit and at the peak) and a summary
  list [--dir DIR]                    the regions in the directory: pid, state, samples
  snapshot <pid|region|profile>       write a pprof profile of a region as it is now
  top <pid|region|profile>            the top sites, as go tool pprof -top prints them
  diff OLD NEW                        the sites whose in use (or allocated) grew most
  export --format folded|callgrind P  a profile's stacks for flame graphs (folded) or
                                      KCachegrind / callgrind_annotate (callgrind)
  report PROFILE [--base OLD] [-o F]  an HTML page: timeline, flame graph, top sites
  agent [options]                     the sidecar: pprof endpoints, metrics, exporters
  ctl <pid> pause|resume|rate <bytes> control sampling in a running process
  help [command]                      the options of a command (also: <command> --help)

A <profile> is a pprof file (heaptap.<pid>.heap.pb.gz from run, or what the agent's
/debug/pprof/heap serves, saved or as an http:// URL). Nothing here needs Go.
Environment: HEAPTAP_DIR is where list, snapshot, top, diff and export look for a pid's
region (default /dev/shm/heaptap).
Exit codes: 2 for a usage error, an unreadable region or a directory that does not
exist; 1 for a failure while running; run exits with its command's.
`;

export const RUN_USAGE = `Usage: heaptap run [options] [--] <command> [args...]

Runs <command> with the heaptap preload library (prepended to any LD_PRELOAD already
set), follows every process it starts (fork, exec), and when the command ends writes

  heaptap.<pid>.heap.pb.gz   in use at exit and everything allocated (cumulative)
  heaptap.<pid>.peak.pb.gz   in use at the moment the total in use was highest
  heaptap.<pid>.html         a page for a browser: the timeline, flame graphs, top sites

(<pid> is the command's pid), then prints a summary: the peak and when it happened,
the bytes and objects allocated, what was still in use at exit, each large process's
own peak and how it ended (when there were several), the top 10 sites by bytes
allocated and by bytes in use at the peak (each with the callers on its heaviest path
and file:line where known), and what to run to explore them. A
command killed by the OOM killer is said to be (its memory cgroup's OOM-kill count,
read while it ran, went up).

The peak is kept by the library at every sampled allocation and free (exact at --rate 1,
however short it was), not by polling. With several processes it is the highest total
of those that ran together, from each one's timeline (a point every 10 ms at most) and
its own exact peak; the peak profile has the stacks of the process whose peak made that
moment as they were at its peak, and the others' at the last poll before it. Its
alloc_* values are the totals at the end of the run.
Read them with \`heaptap top <file>\`, \`heaptap diff <old> <new>\`, \`heaptap export\`
(folded stacks for flame graphs, callgrind for KCachegrind), or any pprof reader (go
tool pprof, if you have Go; Pyroscope, Parca). The profiles merge all processes of the
tree; each sample has a \`pid\` label.

Options:
  -o, --output DIR     directory for the profiles (default: the current directory);
                       made if missing, when its parent exists
  --rate BYTES         mean bytes between samples (default 512k, the preload's);
                       1 records every allocation exactly; k/m/g suffixes (binary)
  --depth N            frames kept per stack, 1..256 (default 64)
  --interval TIME      how often the regions are read (live line, other processes'
                       stacks at the peak; default 100ms; "250", "250ms", "1s")
  --chart, --no-chart  a small chart of in use and RSS over time in the summary
                       (default: when stderr is a terminal)
  --keep-regions       keep every region file (their directory is printed)
  -h, --help           this text

Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to heaptap are passed to the command
(except SIGINT and SIGQUIT while heaptap runs in the foreground of a terminal: there the
terminal already sends them to the command, which shares heaptap's process group).
heaptap exits with the command's exit code, or 128 + the signal number if a signal
killed it, after writing the profiles. The command's stdin, stdout and stderr are its
own; heaptap writes to stderr only: on a terminal a live line (elapsed time, in use now,
peak, allocation rate) on the terminal's last row, which the command's output scrolls
above, and the summary at the end. A setuid, setgid or file-capability command cannot be
profiled by another user (the dynamic loader ignores LD_PRELOAD for it): heaptap says so.

Environment:
  HEAPTAP_DIR is set, for the command, to a fresh private directory (removed at the end
  unless --keep-regions; the region of a process that ended is read one last time and
  deleted at once, so that thousands of short processes do not fill /dev/shm). Other HEAPTAP_* variables (HEAPTAP_SEED, HEAPTAP_UNWINDER,
  HEAPTAP_MAX_STACKS, HEAPTAP_MAX_THREADS, HEAPTAP_FOLLOW_CHILDREN...) pass through to
  the preload; --rate and --depth set HEAPTAP_SAMPLE_RATE and HEAPTAP_MAX_DEPTH.

Exit codes: the command's; 2 for a usage error; 127 if the command is not found, 126
if it cannot be executed.
`;

const DIR_HELP = `  --dir DIR            where the regions are (default: $HEAPTAP_DIR, else ${DEFAULT_REGION_DIR})`;
const TARGET_HELP = `<pid|region> is a pid (its newest region in the directory: after an exec a pid has
several) or the path of a region file.`;
const PROFILE_HELP = `<profile> is a pprof file, gzipped or not (heaptap.<pid>.heap.pb.gz from heaptap run,
a snapshot, or what the agent's /debug/pprof/heap serves), or an http(s):// URL of one.`;
const SITE_HELP = `A site is the first frame that is not allocator or standard-library plumbing
(malloc, operator new, std::..., Rust's alloc::/core::/std::, Perl_safesysmalloc, sqlite3Malloc,
PyObject_Malloc, g_malloc...), named short (template arguments and parameters elided).`;

export const LIST_USAGE = `Usage: heaptap list [--dir DIR]

Lists the regions (one per process image the preload saw) in the directory: pid,
state (running; exited; gone: it ended without exiting normally, killed or exec'd),
samples recorded, events dropped (all drop counters added up), executable and file.

Options:
${DIR_HELP}
  -h, --help           this text

Environment: HEAPTAP_DIR (see --dir).
`;

export const SNAPSHOT_USAGE = `Usage: heaptap snapshot <pid|region|profile> [-o FILE] [--view heap|allocs] [--dir DIR]

Writes a gzipped pprof heap profile of a region as it is now (cumulative allocations, and
what is in use), symbolized, for heaptap top, go tool pprof, Pyroscope or Parca. Given a
profile (a file or URL), writes it again with the view's default sample type.
${TARGET_HELP}
${PROFILE_HELP}

Options:
  -o, --output FILE    where to write it (default heaptap.<pid>.<view>.pb.gz; - for stdout;
                       an existing directory: that name, in it)
  --view heap|allocs   heap (default): consumers show inuse_space first;
                       allocs: the same data with alloc_space as the default sample type
${DIR_HELP}
  -h, --help           this text

Environment: HEAPTAP_DIR (see --dir).
`;

export const TOP_USAGE = `Usage: heaptap top <pid|region|profile> [--sample-index TYPE] [-n N] [--dir DIR]

Prints the top sites of a region as it is now, or of a profile, as \`go tool pprof -top\`
does: flat is what a site allocated itself, cum what it and the functions it called did.
${SITE_HELP}
${TARGET_HELP}
${PROFILE_HELP}

Options:
  --sample-index TYPE  inuse_space (default), inuse_objects, alloc_space or alloc_objects
  -n, --nodes N        rows to show (default 20)
${DIR_HELP}
  -h, --help           this text

Environment: HEAPTAP_DIR (see --dir).
`;

export const DIFF_USAGE = `Usage: heaptap diff OLD NEW [--sample-index TYPE] [-n N] [--dir DIR]

Prints the sites whose in use (or, with --sample-index alloc_space, allocated bytes) grew
most from OLD to NEW, then those that shrank most: change, old and new value per site.
OLD and NEW are each a <profile>, a pid or a region (two profiles of one program, such as
a snapshot now and one later, or the heap profiles of two runs).
${SITE_HELP}
${PROFILE_HELP}

Options:
  --sample-index TYPE  inuse_space (default), inuse_objects, alloc_space or alloc_objects
  -n, --nodes N        rows to show (default 20)
${DIR_HELP}
  -h, --help           this text
`;

export const EXPORT_USAGE = `Usage: heaptap export --format folded|callgrind <profile|pid|region> [-o FILE] [--type TYPE]

Writes a profile's stacks as text for other tools (to stdout, or -o FILE):
  folded     one line per stack, root first: \`main;handle;SessionCache::remember;... 123\`,
             as flamegraph.pl, inferno-flamegraph and speedscope read it (names short;
             --full-names for the profile's full names)
  callgrind  valgrind's callgrind format: open it in KCachegrind or QCachegrind, or
             print it with callgrind_annotate (self cost per function and line, the
             inclusive cost of each call)
Every frame is kept (plumbing too), so the values add up to the profile's total.
${PROFILE_HELP}

Options:
  -f, --format F       folded or callgrind
  -o, --output FILE    where to write (default: stdout)
  --type TYPE          the sample type: inuse_space (default), inuse_objects, alloc_space,
                       alloc_objects
  --full-names         folded: the full names (template arguments, parameters)
${DIR_HELP}
  -h, --help           this text
`;
