#!/usr/bin/env python3
"""Turns bench/run.sh's raw numbers into the Markdown of bench/RESULTS.md.

    summarize.py report OUT MODE            Markdown for the run in OUT (stdout); exit 1 when
                                            a configuration has no number
    summarize.py splice RESULTS_PART FILE [accuracy]
                                            puts RESULTS_PART between this harness's markers
                                            in FILE (with "accuracy": bench/accuracy.ts's
                                            markers), leaving every other section as it is
    summarize.py callgrind-row CONFIG N CALLGRIND_OUT
                                            one row of callgrind.tsv: the Ir total of a
                                            callgrind output file and libheaptap's self Ir
    summarize.py callgrind-total CONFIG FILE...
                                            one row of callgrind_gcc.tsv: Ir summed over the
                                            files of a process tree
    summarize.py callgrind-breakdown LABEL CALLGRIND_OUT
                                            Markdown: libheaptap's Ir per allocation by source
                                            file (for the rate-1 runs)

Ratios are paired by round: a configuration's run in round r is divided by the baseline's
run in the same round (the runs alternate, so both saw the same state of the machine),
and the median, min and max of those per-round ratios are reported."""
import os
import re
import statistics
import sys

BEGIN = "<!-- bench/run.sh: begin (generated; edit bench/summarize.py or bench/notes/) -->"
END = "<!-- bench/run.sh: end -->"
# The accuracy section (bench/accuracy.ts writes its Markdown whole).
MARKERS = {
    None: (BEGIN, END),
    "accuracy": ("<!-- bench/accuracy.ts: begin (generated; edit bench/accuracy.ts or bench/notes/accuracy-*.md) -->",
                 "<!-- bench/accuracy.ts: end -->"),
}
HERE = os.path.dirname(os.path.abspath(__file__))

# What each configuration is compared with besides "none": the same allocator without
# its profiler, so the profiler's own cost shows apart from the allocator change.
OWN_BASE = {"jemalloc-prof": "jemalloc", "tcmalloc-heapprof": "tcmalloc-small"}
SMALL = ("none-small", "heaptap-r1-small", "tcmalloc-small", "tcmalloc-heapprof", "massif")


def is_small(w, c):
    """Runs at the reduced size (see bench/run.sh): compared with none-small."""
    return c in SMALL or (w == "gcc" and c == "heaptrack")
LABEL = {
    "none": "none (glibc malloc)",
    "heaptap": "heaptap, default rate (512 KiB)",
    "heaptap-r1": "heaptap, rate 1 (every allocation)",
    "heaptap-fp": "heaptap, default rate, fp unwinder",
    "heaptap-fp-r1": "heaptap, rate 1, fp unwinder",
    "jemalloc": "jemalloc (no profiling)",
    "jemalloc-prof": "jemalloc prof:true, lg_prof_sample:19",
    "tcmalloc": "tcmalloc (no profiling)",
    "heaptrack": "heaptrack",
    "none-small": "none, reduced size (baseline of the reduced-size runs)",
    "heaptap-r1-small": "heaptap, rate 1, reduced size",
    "tcmalloc-small": "tcmalloc (no profiling), reduced size",
    "tcmalloc-heapprof": "tcmalloc + HEAPPROFILE, reduced size",
    "massif": "valgrind massif, reduced size",
}
TITLE = {
    "churn": "churn (test/fixtures/build/churn, 2 threads)",
    "churn-fp": "churn-fp (churn built with frame pointers): DWARF vs frame-pointer unwinder",
    "gcc": "gcc -O2 -c on a generated C file (gcc forks cc1 and as)",
    "python": "python3 with PYTHONMALLOC=malloc (bench/pychurn.py)",
    "redis": "redis-server under redis-benchmark (loopback, fixed request count)",
    "mallocloop": "mallocloop: malloc(32)/free pairs, one thread (wall time)",
}
ORDER = ["churn", "churn-fp", "gcc", "python", "redis", "mallocloop"]


def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    head = lines[0]
    return [dict(zip(head, l)) for l in lines[1:]]


def fmt_ratio(vals):
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return "%.2f×" % med
    return "%.2f× (%.2f–%.2f)" % (med, min(vals), max(vals))


def paired(runs, w, c, base, key):
    """Per-round ratios of configuration c to base on workload w."""
    by = {}
    for r in runs:
        if r["workload"] == w and r["status"] == "ok":
            by[(r["config"], r["round"])] = r[key]
    out = []
    for (cfg, rnd), v in by.items():
        if cfg == c and (base, rnd) in by and by[(base, rnd)] > 0:
            out.append(v / by[(base, rnd)])
    return out


def load_runs(out):
    runs = read_tsv(os.path.join(out, "runs.tsv"))
    for r in runs:
        r["wall"] = int(r["wall_ns"]) / 1e9
        r["cpu"] = float(r["user_s"]) + float(r["sys_s"])
        r["rss"] = int(r["maxrss_kb"]) / 1024.0
    return runs


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def workload_table(runs, w):
    configs = []
    for r in runs:
        if r["workload"] == w and r["config"] not in configs:
            configs.append(r["config"])
    rows = ["| configuration | wall s, median | wall × none, median (min–max) | "
            "fastest ÷ fastest | wall × same allocator unprofiled | CPU × none | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    missing = []
    for c in configs:
        ok = [r for r in runs if r["workload"] == w and r["config"] == c and r["status"] == "ok"]
        if not ok:
            missing.append(c)
            rows.append("| %s | FAILED | | | | | |" % LABEL.get(c, c))
            continue
        base = "none-small" if is_small(w, c) else "none"
        wall = statistics.median(r["wall"] for r in ok)
        rss = statistics.median(r["rss"] for r in ok)
        ratio = "1" if c == base else fmt_ratio(paired(runs, w, c, base, "wall"))
        if c == "none-small":
            ratio = "(baseline)"
        own = fmt_ratio(paired(runs, w, c, OWN_BASE[c], "wall")) if c in OWN_BASE else ""
        cpu = "" if c == base else fmt_ratio(paired(runs, w, c, base, "cpu"))
        label = LABEL.get(c, c)
        if w == "gcc" and c == "heaptrack":
            label = "heaptrack, reduced size"
        if w == "redis" and c == "none":
            label = "none (redis's own allocator: Debian's libjemalloc.so.2)"
        fastest = ""
        if c != base:
            b = [r["wall"] for r in runs if r["workload"] == w and r["config"] == base and r["status"] == "ok"]
            if b:
                fastest = "%.2f×" % (min(r["wall"] for r in ok) / min(b))
        rows.append("| %s | %.3f | %s | %s | %s | %s | %.1f |" % (label, wall, ratio, fastest, own, cpu, rss))
    return "\n".join(rows), missing


def fastest_ratio(runs, w, c, base, key="wall"):
    a = [r[key] for r in runs if r["workload"] == w and r["config"] == c and r["status"] == "ok"]
    b = [r[key] for r in runs if r["workload"] == w and r["config"] == base and r["status"] == "ok"]
    return min(a) / min(b) if a and b and min(b) > 0 else None


def read_gcc_callgrind(out):
    rows = {}
    path = os.path.join(out, "callgrind_gcc.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                c, nfiles, total, ht, allocs = line.rstrip("\n").split("\t")
                rows[c] = (int(nfiles), int(total), int(ht), int(allocs))
    return rows


def targets(runs, out):
    lines = ["| target | per-round ratio, median (min–max) | fastest ÷ fastest | verdict (on the median) |",
             "|---|---|---|---|"]

    def one(name, w, c, base, limit, key="wall", better_low=True):
        if not any(r["workload"] == w for r in runs):
            return  # workload not run (--only)
        vals = paired(runs, w, c, base, key)
        if not vals:
            lines.append("| %s | no numbers | | FAILED |" % name)
            return
        med = statistics.median(vals)
        ok = med <= limit if better_low else med >= limit
        fr = fastest_ratio(runs, w, c, base, key)
        lines.append("| %s | %s | %s | %s |" % (name, fmt_ratio(vals), "%.2f×" % fr if fr else "",
                                               "met" if ok else "missed"))

    one("churn, heaptap default rate ≤ 1.10× none", "churn", "heaptap", "none", 1.10)
    one("gcc, heaptap default rate ≤ 1.02× none", "gcc", "heaptap", "none", 1.02)
    g = read_gcc_callgrind(out)
    if "none" in g and "heaptap" in g:
        ratio = g["heaptap"][1] / g["none"][1]
        lines.append("| gcc, the same in instructions (callgrind, reduced size, every process) | %.4f× | "
                     "(deterministic) | %s |" % (ratio, "met" if ratio <= 1.02 else "missed"))
    for w in ("churn", "gcc", "python", "redis"):
        r1 = "heaptap-r1-small" if w == "gcc" else "heaptap-r1"
        one("%s, heaptrack wall ÷ heaptap rate-1 wall ≥ 3%s" % (w, " (reduced size)" if w == "gcc" else ""),
            w, "heaptrack", r1, 3.0, better_low=False)
    for w in ("churn", "gcc", "python", "redis"):
        r1 = "heaptap-r1-small" if w == "gcc" else "heaptap-r1"
        one("%s, heaptrack CPU ÷ heaptap rate-1 CPU ≥ 3%s" % (w, " (the server's CPU)" if w == "redis" else
                                                             " (reduced size)" if w == "gcc" else ""),
            w, "heaptrack", r1, 3.0, key="cpu", better_low=False)
    return "\n".join(lines)


def callgrind_section(out):
    path = os.path.join(out, "callgrind.tsv")
    if not os.path.exists(path):
        return "", []
    rows = read_tsv(path)
    by = {(r["config"], int(r["n"])): r for r in rows}
    ns = sorted({int(r["n"]) for r in rows if int(r["n"]) > 0})
    missing = []
    if not ns:
        return "(no callgrind numbers)", ["callgrind"]
    n = ns[0]
    per = {}
    text = ["| | Ir total (N = %d) | Ir at N = 0 (start-up, exit) | Ir per malloc+free pair |" % n,
            "|---|---:|---:|---:|"]
    for c in ("none", "heaptap"):
        a, z = by.get((c, n)), by.get((c, 0))
        if not a or not z:
            missing.append("callgrind " + c)
            text.append("| %s | FAILED | | |" % c)
            continue
        per[c] = (int(a["ir_total"]) - int(z["ir_total"])) / n
        text.append("| %s | %s | %s | %.2f |" % (
            "no preload" if c == "none" else "LD_PRELOAD=libheaptap.so (default rate)",
            format(int(a["ir_total"]), ","), format(int(z["ir_total"]), ","), per[c]))
    if "none" in per and "heaptap" in per:
        h = by[("heaptap", n)]
        m, f, o = (int(h["ir_heaptap_malloc"]), int(h["ir_heaptap_free"]), int(h["ir_heaptap_other"]))
        tot = int(h["ir_total"])
        text.append("")
        text.append("- extra instructions per pair with heaptap: **%.2f** (%.2f → %.2f)"
                    % (per["heaptap"] - per["none"], per["none"], per["heaptap"]))
        text.append("- inside libheaptap (self Ir): `malloc` %.2f per call, "
                    "`free` %.2f per call, everything else in libheaptap (slow path: sampling, "
                    "unwinding, recording) %.3f per pair" % (m / n, f / n, o / n))
        text.append("- libheaptap's share of all instructions: %.1f%% (malloc %.1f%%, free %.1f%%, rest %.2f%%)"
                    % (100.0 * (m + f + o) / tot, 100.0 * m / tot, 100.0 * f / tot, 100.0 * o / tot))
    return "\n".join(text), missing


def report(out, mode):
    runs = load_runs(out)
    parts = []
    machine = read_text(os.path.join(out, "machine.txt"))
    date = re.search(r"^date: (.*)$", machine, re.M)
    parts.append("## Overhead: heaptap against no profiler and other heap profilers")
    parts.append("")
    parts.append("Run %s by `%s` (%s mode). Generated by bench/summarize.py from bench/out/%s/; "
                 "the notes under each table are hand-written (bench/notes/) for the run they name."
                 % (date.group(1) if date else "?", "npm run bench" if mode == "full" else "npm run bench:quick",
                    mode, mode))
    parts.append("")
    parts.append("### Machine and tools\n\n```\n%s\n```" % machine)
    parts.append("")
    parts.append("### Sizes\n\n```\n%s\n```" % read_text(os.path.join(out, "sizes.txt")))
    parts.append("")
    parts.append("Wall time is the median over rounds of the whole command (for redis: of "
                 "redis-benchmark's run; CPU and RSS are the server's). Ratios are per round "
                 "against that round's baseline run, median (min–max); \"fastest ÷ fastest\" "
                 "divides the configuration's fastest run by the baseline's fastest, which is "
                 "the steadier figure when other work shares the machine (see the load "
                 "average above). CPU is user+sys of the whole process tree. Peak RSS is GNU time's "
                 "maxrss: the largest single process of the tree (cc1 for gcc; valgrind's own "
                 "process for massif; heaptrack's interpreter counts when it is the largest).")
    parts.append("")
    parts.append("### Targets from the tracker\n\n" + targets(runs, out))
    missing_all = []
    for w in ORDER:
        if not any(r["workload"] == w for r in runs):
            continue
        table, missing = workload_table(runs, w)
        missing_all += ["%s %s" % (w, c) for c in missing]
        parts.append("")
        parts.append("### %s\n\n%s" % (TITLE.get(w, w), table))
        if w == "redis":
            alloc = read_text(os.path.join(out, "redis_allocator.txt"))
            if alloc:
                parts.append("\nredis INFO memory: `%s`" % alloc)
        note = read_text(os.path.join(HERE, "notes", w + ".md"))
        if note and mode == "full":
            parts.append("\n" + note)
    cg, missing = callgrind_section(out)
    missing_all += missing
    if cg:
        parts.append("")
        parts.append("### Fast path: instructions per malloc/free pair (valgrind --tool=callgrind)\n\n" + cg)
        gcc_rows = read_gcc_callgrind(out)
        if "none" in gcc_rows and "heaptap" in gcc_rows:
            n0, t0, _, _ = gcc_rows["none"]
            n1, t1, h1, a1 = gcc_rows["heaptap"]
            sizes = read_text(os.path.join(out, "sizes.txt"))
            m = re.search(r"reduced size[^:]*: (\d+) lines", sizes)
            parts.append("\n#### gcc -O2 -c at the reduced size (%s lines), all processes, under callgrind\n\n"
                         "| | processes | Ir total | calls to allocation functions |\n|---|---:|---:|---:|\n"
                         "| none | %d | %s | |\n| heaptap, default rate | %d | %s | %s |\n\n"
                         "Instructions with heaptap ÷ without: **%.4f×** (+%s); libheaptap's own "
                         "instructions are %.2f%% of the total, %.1f per allocation call."
                         % (m.group(1) if m else "?", n0, format(t0, ","), n1, format(t1, ","), format(a1, ","),
                            t1 / t0, format(t1 - t0, ","), 100.0 * h1 / t1, h1 / a1 if a1 else 0))
        elif mode == "full":
            missing_all.append("callgrind gcc")  # quick mode skips it (valgrind on cc1 is slow)
        for name in ("churn", "python"):
            r1 = read_text(os.path.join(out, "callgrind_r1_%s.md" % name))
            if r1:
                parts.append("\n#### heaptap at rate 1 under callgrind: %s\n\n%s" % (name, r1))
            else:
                missing_all.append("callgrind rate-1 " + name)
        note = read_text(os.path.join(HERE, "notes", "callgrind.md"))
        if note and mode == "full":
            parts.append("\n" + note)
    cmds = os.path.join(out, "commands.tsv")
    if os.path.exists(cmds):
        parts.append("")
        parts.append("### Commands\n")
        parts.append("Everything is run by `bash bench/run.sh` (`npm run bench`); `--quick` "
                     "(`npm run bench:quick`) runs the same at small sizes, one round. Each run "
                     "is `/usr/bin/time -f '%U %S %M' env ...` around the commands below, "
                     "with a fresh profile directory each time.\n")
        parts.append("```")
        for r in read_tsv(cmds):
            parts.append("[%s/%s] %s" % (r["workload"], r["config"], r["command"]))
        parts.append("```")
    fails = read_text(os.path.join(out, "failures.txt"))
    if fails:
        parts.append("\n### Failures\n\n```\n%s\n```" % fails)
    print("\n".join(parts))
    if missing_all:
        sys.stderr.write("summarize: no numbers for: %s\n" % ", ".join(missing_all))
        return 1
    return 0


def splice(part_path, results_path, section=None):
    begin, end = MARKERS[section]
    part = read_text(part_path)
    block = "%s\n%s\n%s\n" % (begin, part, end)
    if os.path.exists(results_path):
        with open(results_path) as f:
            text = f.read()
    else:
        text = "# heaptap benchmark results\n\n"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        post = rest.split(end, 1)[1].lstrip("\n")
        text = pre + block + ("\n" + post if post else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(results_path, "w") as f:
        f.write(text)
    return 0


def callgrind_parse(path):
    """Self Ir per (object, function) and per (object, source file), call counts per
    (object, function) called, and the total, from a callgrind output file.

    Read from the file itself, not callgrind_annotate's listing, which names the object
    only on some lines (an inlined file's part of a function has none)."""
    names = {"ob": {}, "fn": {}, "fl": {}}
    ob = fn = fl = cur_file = ""
    cob = cfn = None
    skip_next = False
    by_fn, by_file, calls = {}, {}, {}
    total = None

    def name(kind, v):
        m = re.match(r"^\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), v)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if skip_next:
                skip_next = False
                continue
            if line.startswith("ob="):
                ob = name("ob", line[3:])
            elif line.startswith("fl="):
                fl = cur_file = name("fl", line[3:])
            elif line.startswith(("fi=", "fe=")):
                cur_file = name("fl", line[3:])
            elif line.startswith("fn="):
                fn = name("fn", line[3:])
                cur_file = fl
            elif line.startswith("cob="):
                cob = name("ob", line[4:])
            elif line.startswith(("cfi=", "cfl=")):
                name("fl", line[4:])
            elif line.startswith("cfn="):
                cfn = name("fn", line[4:])
            elif line.startswith("calls="):
                key = (cob if cob is not None else ob, cfn)
                calls[key] = calls.get(key, 0) + int(line[6:].split()[0])
                cob = cfn = None
                skip_next = True  # the next line is the call's inclusive cost
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if len(parts) >= 2:
                    ir = int(parts[1])
                    by_fn[(ob, fn)] = by_fn.get((ob, fn), 0) + ir
                    k = (ob, os.path.basename(cur_file))
                    by_file[k] = by_file.get(k, 0) + ir
    return {"by_fn": by_fn, "by_file": by_file, "calls": calls, "total": total}


ALLOC_FNS = ("malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
             "memalign", "valloc", "pvalloc")


def callgrind_row(config, n, out_file):
    cg = callgrind_parse(out_file)
    if cg["total"] is None:
        return 1
    mal = fre = other = 0
    for (ob, fn), ir in cg["by_fn"].items():
        if "libheaptap" not in ob:
            continue
        if fn == "malloc":
            mal += ir
        elif fn == "free":
            fre += ir
        else:
            other += ir
    print("%s\t%s\t%d\t%d\t%d\t%d" % (config, n, cg["total"], mal, fre, other))
    return 0


def callgrind_total(config, files):
    """One row of callgrind_gcc.tsv: instructions summed over a process tree's files, with
    libheaptap's self Ir and the calls into its allocation functions."""
    total = ht = allocs = 0
    for path in files:
        cg = callgrind_parse(path)
        if cg["total"] is None:
            return 1
        total += cg["total"]
        ht += sum(v for (ob, fn), v in cg["by_fn"].items() if "libheaptap" in ob)
        allocs += sum(v for (ob, fn), v in cg["calls"].items() if "libheaptap" in ob and fn in ALLOC_FNS)
    if not files:
        return 1
    print("%s\t%d\t%d\t%d\t%d" % (config, len(files), total, ht, allocs))
    return 0


def callgrind_breakdown(label, out_file):
    """A Markdown table: where heaptap's instructions go per allocation, by source file."""
    cg = callgrind_parse(out_file)
    allocs = sum(v for (ob, fn), v in cg["calls"].items() if "libheaptap" in ob and fn in ALLOC_FNS)
    frees = sum(v for (ob, fn), v in cg["calls"].items() if "libheaptap" in ob and fn == "free")
    if not allocs or cg["total"] is None:
        sys.stderr.write("summarize: no calls into libheaptap in %s\n" % out_file)
        return 1
    files = sorted(((v, f) for (ob, f), v in cg["by_file"].items() if "libheaptap" in ob), reverse=True)
    ht = sum(v for v, f in files)
    print("%s: %d allocations, %d frees; %s Ir in all, %.0f per allocation, of which "
          "libheaptap %.0f (%.0f%%)." % (label, allocs, frees, format(cg["total"], ","),
                                         cg["total"] / allocs, ht / allocs, 100.0 * ht / cg["total"]))
    print("")
    print("| libheaptap source file | Ir per allocation | share of libheaptap |")
    print("|---|---:|---:|")
    for v, f in files[:10]:
        print("| %s | %.0f | %.1f%% |" % (f or "?", v / allocs, 100.0 * v / ht))
    top = sorted(((v, fn) for (ob, fn), v in cg["by_fn"].items() if "libheaptap" in ob), reverse=True)[:6]
    print("")
    print("Top functions (self Ir per allocation): " + ", ".join(
        "`%s` %.0f" % (fn, v / allocs) for v, fn in top))
    return 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "report":
        return report(argv[2], argv[3])
    if len(argv) in (4, 5) and argv[1] == "splice":
        if len(argv) == 5 and argv[4] not in MARKERS:
            sys.stderr.write("summarize: unknown section %s\n" % argv[4])
            return 2
        return splice(argv[2], argv[3], argv[4] if len(argv) == 5 else None)
    if len(argv) >= 4 and argv[1] == "callgrind-total":
        return callgrind_total(argv[2], argv[3:])
    if len(argv) >= 4 and argv[1] == "callgrind-breakdown":
        return callgrind_breakdown(argv[2], argv[3])
    if len(argv) >= 5 and argv[1] == "callgrind-row":
        return callgrind_row(argv[2], argv[3], argv[4])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
