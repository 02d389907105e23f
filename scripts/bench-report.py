#!/usr/bin/env python3
"""Turns the raw samples of scripts/bench.sh into the results.

Reads OUT/raw/TRANSPORT/TEST/CLIENT-RUN.json (fio JSON, or
{"seconds", "bytes"} for dd and real-use, or {"error"}) and the FUSE queue
samples (*.waiting), and writes OUT/results.md (also printed), OUT/results.json
and OUT/chart.dat for scripts/bench-chart.gp.
"""
import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys

CLIENTS = ("nbdfs", "nbdfuse", "nbdfuse13", "ceiling")
# The clients nbdfs is judged against: nbdfuse from this host (1.14 on
# Debian 12) and nbdfuse 1.22 from the Debian 13 tree.
BASELINES = ("nbdfuse", "nbdfuse13")

# row -> (test, how to get the value, unit, higher is better, target)
# A target compares nbdfs with each nbdfuse: (">=", 2.5) means at least
# 2.5 times nbdfuse's figure; ("<=", 0.85) means at most 0.85 times it
# (latency, time). It is met only if met against every nbdfuse present.
ROWS = [
    ("seq-read-1M-qd1", "seq-read-1M-qd1", ("fio", "read", "bw"), "MiB/s", True, (">=", 1.2)),
    ("seq-read-1M-qd16", "seq-read-1M-qd16", ("fio", "read", "bw"), "MiB/s", True, (">=", 1.2)),
    ("seq-write-1M-qd1", "seq-write-1M-qd1", ("fio", "write", "bw"), "MiB/s", True, (">=", 1.2)),
    ("seq-write-1M-qd16", "seq-write-1M-qd16", ("fio", "write", "bw"), "MiB/s", True, (">=", 1.2)),
    ("rand-read-4k-qd32-j1", "rand-read-4k-qd32-j1", ("fio", "read", "iops"), "kIOPS", True, (">=", 2.5)),
    ("rand-read-4k-qd32-j2", "rand-read-4k-qd32-j2", ("fio", "read", "iops"), "kIOPS", True, (">=", 2.5)),
    ("rand-write-4k-qd32-j1", "rand-write-4k-qd32-j1", ("fio", "write", "iops"), "kIOPS", True, (">=", 2.5)),
    ("rand-write-4k-qd32-j2", "rand-write-4k-qd32-j2", ("fio", "write", "iops"), "kIOPS", True, (">=", 2.5)),
    ("lat-read-4k-qd1 p50", "lat-read-4k-qd1", ("fio", "read", "p50"), "µs", False, ("<=", 1.0)),
    ("lat-read-4k-qd1 p99", "lat-read-4k-qd1", ("fio", "read", "p99"), "µs", False, ("<=", 1.0)),
    ("dd-read (buffered)", "dd-read", ("rate",), "MiB/s", True, (">=", 1.5)),
    # The same with each nbdfuse's readahead set to nbdfs's: how much of
    # the dd-read gain is the larger readahead alone.
    ("dd-read (same readahead)", "dd-read-same-ra", ("rate",), "MiB/s", True, (">=", 1.0)),
    ("dd-write (buffered)", "dd-write", ("rate",), "MiB/s", True, (">=", 1.2)),
    ("real-use ext4 total", "real-use", ("seconds",), "s", False, ("<=", 0.85)),
    ("mount time", "mount-time", ("ms",), "ms", False, ("<=", 1.0)),
]
# Rows without a ceiling (nothing to mount without FUSE).
NO_CEILING = {"mount-time"}
# The TLS section (against nbdfuse 1.22 only): its tests and targets.
TLS_TARGETS = {
    "rand-read-4k-qd32-j1": (">=", 2.0), "rand-read-4k-qd32-j2": (">=", 2.0),
    "rand-write-4k-qd32-j1": (">=", 2.0),
    "seq-read-1M-qd1": (">=", 1.2), "seq-read-1M-qd16": (">=", 1.2),
    "seq-write-1M-qd1": (">=", 1.2), "seq-write-1M-qd16": (">=", 1.2),
}


def load_json(path):
    with open(path) as f:
        text = f.read()
    # fio's nbd engine prints "fio: connected to NBD server" on stdout,
    # which may precede the JSON.
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in %s" % path)
    return json.loads(text[start:])


def sample_value(doc, how):
    """One number from one raw sample, or raises with the reason."""
    if "error" in doc:
        raise ValueError(doc["error"])
    kind = how[0]
    if kind == "fio":
        job = doc["jobs"][0]
        if job.get("error"):
            raise ValueError("fio job error %s" % job["error"])
        d = job[how[1]]
        if how[2] == "bw":
            return d["bw_bytes"] / 1048576.0
        if how[2] == "iops":
            return d["iops"] / 1000.0
        pct = d["clat_ns"]["percentile"]
        key = {"p50": "50.000000", "p99": "99.000000"}[how[2]]
        return pct[key] / 1000.0
    if kind == "rate":
        return doc["bytes"] / 1048576.0 / doc["seconds"]
    if kind == "seconds":
        return doc["seconds"]
    if kind == "ms":
        return doc["seconds"] * 1000.0
    raise ValueError("unknown metric %r" % (how,))


def fmt(v, unit=None):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "kIOPS":
        return "%.2f" % v
    if unit == "s":
        return "%.2f" % v
    if unit is None:      # a ratio
        return "%.2f" % v
    return "%.1f" % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:   # a version string is nice to have, never fatal
        return "unknown"


def read_absent(raw, section):
    """{client: reason} for the clients bench.sh left out of a section."""
    absent = {}
    try:
        with open(os.path.join(raw, section + ".absent")) as f:
            for line in f:
                c, _, why = line.rstrip("\n").partition("\t")
                if c:
                    absent[c] = why
    except OSError:   # an older run: every client was in every section
        pass
    return absent


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def short_version(v, default):
    """'nbdfuse 1.22.2' -> 'nbdfuse 1.22'."""
    parts = v.split()
    if len(parts) >= 2 and parts[1][:1].isdigit():
        return "%s %s" % (parts[0], ".".join(parts[1].split(".")[:2]))
    return default


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--runtime", required=True)
    ap.add_argument("--size", required=True)
    ap.add_argument("--files", required=True)
    ap.add_argument("--elapsed", required=True)
    ap.add_argument("--nbdfs-rev", default="unknown")
    ap.add_argument("--load", default="unknown")
    ap.add_argument("--transports", required=True,
                    help="the sections run: unix, tcp, tls")
    ap.add_argument("--tests", required=True)
    ap.add_argument("--conns", default="4")
    ap.add_argument("--foreign-max", type=float, default=25.0,
                    help="refuse a verdict when other processes took more "
                    "than this percentage of the CPU during a sample")
    a = ap.parse_args()
    cpus = os.cpu_count()
    raw = os.path.join(a.out, "raw")
    transports = a.transports.split()
    tests = set(a.tests.split())

    v14 = tool_version(["nbdfuse", "--version"])
    v22 = read_text(os.path.join(raw, "nbdfuse13.version"))
    label = {"nbdfs": "nbdfs", "ceiling": "ceiling",
             "nbdfuse": short_version(v14, "nbdfuse"),
             "nbdfuse13": short_version(v22, "nbdfuse (Debian 13)")}
    if label["nbdfuse"] == label["nbdfuse13"]:   # never two equal headers
        label["nbdfuse13"] += " (Debian 13)"

    rows, problems, waiting, cpu_rows, absent_of = [], {}, [], [], {}
    for t in transports:
        absent = absent_of[t] = read_absent(raw, t)
        for name, test, how, unit, higher, target in ROWS:
            if test not in tests:
                continue
            if t == "tls":
                if test not in TLS_TARGETS:
                    continue
                target = TLS_TARGETS[test]
            samples, med, failed, loads, foreign, na = {}, {}, 0, [], [], {}
            for c in CLIENTS:
                # Not part of this row: n/a with the reason, not a failure.
                if c in absent:
                    na[c] = absent[c]
                elif c == "ceiling" and test in NO_CEILING:
                    na[c] = "no ceiling: nothing to mount without FUSE"
                if c in na:
                    samples[c], med[c] = [], None
                    continue
                vals = []
                for path in sorted(glob.glob(os.path.join(raw, t, test, c + "-*.json"))):
                    try:
                        with open(path[:-len(".json")] + ".load") as f:
                            ld = json.load(f)
                    except Exception:   # not recorded: counted below
                        ld = {}
                    # The load average: for information only.
                    loads += [x for x in (ld.get("load_before"),
                                          ld.get("load_after")) if x is not None]
                    foreign.append(ld.get("foreign_cpu"))
                    try:
                        vals.append(sample_value(load_json(path), how))
                    except Exception as e:  # one bad sample: report, go on
                        failed += 1
                        where = problems.setdefault("%s %s: %s" % (t, c, e), [])
                        if name not in where:
                            where.append(name)
                # A sample that never ran (no file) is a failed one too.
                failed += max(0, a.runs - len(glob.glob(
                    os.path.join(raw, t, test, c + "-*.json"))))
                samples[c] = vals
                med[c] = statistics.median(vals) if vals else None
            r = {b: ratio(med["nbdfs"], med[b]) for b in BASELINES}
            r_ceil = ratio(med["nbdfs"], med["ceiling"])
            baselines = [b for b in BASELINES if b not in na]
            met = None
            load_lo = min(loads) if loads else None
            load_hi = max(loads) if loads else None
            known = [x for x in foreign if x is not None]
            foreign_hi = max(known) if known else None
            # A verdict needs every sample, and no other process taking a
            # real share of the CPU during any of them. (Not the load
            # average: the benchmark alone drives it above the CPU count.)
            refused = None
            if failed:
                refused = "%d failed sample(s)" % failed
            elif foreign_hi is None or len(known) != len(foreign):
                refused = "CPU use of other processes not recorded"
            elif foreign_hi * 100 > a.foreign_max:
                refused = ("%.0f%% of the CPU went to other processes during "
                           "a sample (limit %g%%)" % (foreign_hi * 100,
                                                      a.foreign_max))
            # Met only if met against every nbdfuse in the section.
            if (target and refused is None and baselines
                    and all(r[b] is not None for b in baselines)):
                op, want = target
                met = all(r[b] >= want if op == ">=" else r[b] <= want
                          for b in baselines)
            rows.append(dict(transport=t, test=name, unit=unit,
                             higher_is_better=higher, samples=samples,
                             median=med, nbdfs_over_nbdfuse=r["nbdfuse"],
                             nbdfs_over_nbdfuse13=r["nbdfuse13"],
                             nbdfs_over_ceiling=r_ceil, not_applicable=na,
                             baselines=baselines,
                             target=("%s %.2f" % target) if target else None,
                             met=met, refused=refused, failed_samples=failed,
                             load_min=load_lo, load_max=load_hi,
                             foreign_cpu_max=foreign_hi))
        # Per fio test and client: the FUSE queue depth the kernel reached,
        # and the CPU the FUSE daemon and nbdkit spent per I/O and per byte.
        fio_tests = []
        for row in ROWS:
            if (row[2][0] == "fio" and row[1] in tests and row[1] not in fio_tests
                    and (t != "tls" or row[1] in TLS_TARGETS)):
                fio_tests.append(row[1])
        for test in fio_tests:
            per = "GiB" if test.startswith("seq-") else "100k I/Os"
            cpu_row = dict(transport=t, test=test, per=per, clients={})
            for c in CLIENTS:
                if c in absent:
                    continue
                w, ios, nbytes, dcpu, scpu = [], 0, 0, 0.0, 0.0
                for path in glob.glob(os.path.join(raw, t, test, c + "-*.json")):
                    base = path[:-len(".json")]
                    try:
                        job = load_json(path)["jobs"][0]
                        with open(base + ".cpu") as f:
                            cpu = json.load(f)
                    except Exception:   # failed run: already in problems
                        continue
                    ios += job["read"]["total_ios"] + job["write"]["total_ios"]
                    nbytes += job["read"]["io_bytes"] + job["write"]["io_bytes"]
                    dcpu += cpu["daemon_cpu_s"]
                    scpu += cpu["server_cpu_s"]
                    if os.path.exists(base + ".waiting"):
                        with open(base + ".waiting") as f:
                            w += [int(x) for x in f.read().split() if x.isdigit()]
                if ios == 0:
                    continue
                daemon = c != "ceiling"   # the ceiling's client is fio itself
                waiting.append(dict(
                    transport=t, test=test, client=c,
                    waiting_mean=statistics.mean(w) if w else None,
                    waiting_max=max(w) if w else None,
                    daemon_cpu_us_per_io=dcpu * 1e6 / ios if daemon else None,
                    server_cpu_us_per_io=scpu * 1e6 / ios))
                unit = nbytes / 2.0 ** 30 if per == "GiB" else ios / 1e5
                if unit > 0:
                    cpu_row["clients"][c] = dict(
                        daemon_cpu_s=dcpu / unit if daemon else None,
                        server_cpu_s=scpu / unit)
            if cpu_row["clients"]:
                cpu_rows.append(cpu_row)

    labels = {"unix": "Unix socket", "tcp": "TCP loopback",
              "tls": "TLS (X.509, TCP loopback)"}
    md = []
    md.append("# nbdfs benchmark")
    md.append("")
    md.append("nbdfs %s, %s, %s, %d CPUs; %s; %s (this host); %s; %s; %s." % (
        a.nbdfs_rev, platform.system(), platform.release(), os.cpu_count(),
        tool_version(["nbdkit", "--version"]), v14,
        ("%s (Debian 13 tree, its own libnbd, libfuse and gnutls)" % v22) if v22
        else "nbdfuse from Debian 13: not run",
        tool_version(["fio", "--version"]),
        tool_version(["nbdcopy", "--version"])))
    md.append("")
    md.append("Server: nbdkit memory %s (allocator=malloc, --threads 16), filled "
              "with random data. Medians of %d interleaved run(s); fio %s s per "
              "job; real-use tree of %s files; whole run took %s s; load average "
              "at start / end: %s (anything else running skews every column)." % (
                  a.size, a.runs, a.runtime, a.files, a.elapsed, a.load))
    md.append("Ceiling = no FUSE: fio's nbd engine (libnbd) for fio rows, "
              "nbdcopy for dd rows, a loop device on a RAM file (no NBD) for "
              "real-use. Targets compare nbdfs with each nbdfuse (nbdfs/%s and "
              "nbdfs/%s) and are met only if met against every one present. "
              "Every client uses %s connections (-C %s passed to nbdfs, both "
              "nbdfuse and nbdcopy; fio's nbd engine opens one per job, so "
              "ceiling rows with a total queue depth >= %s run %s jobs sharing "
              "it). Mount time: from starting the client (nbdfs -f, in the "
              "foreground like nbdfuse) until a stat of its file gives the "
              "export size, polled every millisecond. A verdict is refused "
              "when any sample of its row failed or more than %g%% of the "
              "CPU capacity (elapsed time x %d CPUs) went to anything but "
              "the benchmark's own processes during one; 'other CPU' is the "
              "largest such share over the row's samples (it includes kernel "
              "threads, e.g. writeback, the benchmark itself causes)." % (
                  label["nbdfuse"], label["nbdfuse13"], a.conns, a.conns,
                  a.conns, a.conns, a.foreign_max, cpus))
    ra = []
    for t in transports:
        for c in ("nbdfs", "nbdfuse", "nbdfuse13"):
            if c in absent_of[t]:
                continue
            v = read_text(os.path.join(raw, "%s-%s.readahead_kb" % (t, c)))
            ra.append("%s %s %s" % (t, c, (v + " KiB") if v else "unknown"))
    md.append("")
    md.append("Readahead of each FUSE mount (bdi read_ahead_kb, as the client "
              "set it up): %s. The row \"dd-read (same readahead)\" runs with "
              "each nbdfuse's set to nbdfs's." % "; ".join(ra))
    for t in transports:
        md.append("")
        md.append("## %s" % labels.get(t, t))
        md.append("")
        for c, why in sorted(absent_of[t].items()):
            md.append("- %s: n/a: %s." % (label[c], why.rstrip(".")))
        if t == "tls":
            md.append("- " + read_text(os.path.join(raw, "ktls.txt"),
                                       "Kernel TLS (KTLS): not recorded."))
            md.append("- Targets: random 4 KiB >= 2x, every sequential row "
                      ">= 1.2x (against nbdfuse 1.22).")
        if absent_of[t] or t == "tls":
            md.append("")
        md.append("| test | unit | nbdfs | %s | %s | ceiling | nbdfs/%s "
                  "| nbdfs/%s | nbdfs/ceiling | target | met? | other CPU |" % (
                      label["nbdfuse"], label["nbdfuse13"],
                      label["nbdfuse"].replace("nbdfuse ", ""),
                      label["nbdfuse13"].replace("nbdfuse ", "")))
        md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for r in rows:
            if r["transport"] != t:
                continue
            m = r["median"]
            if r["target"] is None:
                met = "—"
            elif not r["baselines"]:
                met = "n/a"     # no nbdfuse in this section to judge against
            elif r["refused"]:
                met = "refused: " + r["refused"]
            else:
                met = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
            tgt = "—" if r["target"] is None else r["target"].replace(">=", "≥").replace("<=", "≤") + "×"
            load = "—" if r["foreign_cpu_max"] is None else "%.0f%%" % (
                r["foreign_cpu_max"] * 100)
            def cell(c, v):
                return "—" if c == "ceiling" and "ceiling" in r["not_applicable"] \
                    and "ceiling" not in absent_of[t] else fmt(v, r["unit"])
            def rcell(c, v):
                return "—" if c == "ceiling" and "ceiling" in r["not_applicable"] \
                    and "ceiling" not in absent_of[t] else fmt(v)
            md.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["test"], r["unit"], fmt(m["nbdfs"], r["unit"]),
                fmt(m["nbdfuse"], r["unit"]), fmt(m["nbdfuse13"], r["unit"]),
                cell("ceiling", m["ceiling"]),
                fmt(r["nbdfs_over_nbdfuse"]), fmt(r["nbdfs_over_nbdfuse13"]),
                rcell("ceiling", r["nbdfs_over_ceiling"]), tgt, met, load))
        judged = [r for r in rows if r["transport"] == t and r["target"]
                  and r["baselines"]]
        if judged:
            md.append("")
            md.append("%d of %d targets met (%d refused)." % (
                sum(1 for r in judged if r["met"]), len(judged),
                sum(1 for r in judged if r["refused"])))
    def f1(v, pat="%.1f"):
        return "—" if v is None else pat % v
    if cpu_rows:
        md.append("")
        md.append("## CPU per GiB and per 100k I/Os (fio rows)")
        md.append("")
        md.append("CPU seconds (user + system, all threads, all runs) of each "
                  "client's FUSE daemon / of nbdkit serving it, per GiB moved "
                  "(sequential rows) or per 100k I/Os (random and latency rows: "
                  "the CPU it takes to sustain 100k IOPS for a second). On a "
                  "2-core machine the CPU is the limit.")
        md.append("")
        md.append("| section | test | per | %s |" % " | ".join(
            "%s daemon / nbdkit" % label[c] if c != "ceiling"
            else "ceiling: nbdkit" for c in CLIENTS))
        md.append("|---|---|---|%s" % ("---:|" * len(CLIENTS)))
        for cr in cpu_rows:
            cells = []
            for c in CLIENTS:
                x = cr["clients"].get(c)
                if x is None:
                    cells.append("n/a")
                elif c == "ceiling":
                    cells.append(f1(x["server_cpu_s"], "%.2f"))
                else:
                    cells.append("%s / %s" % (f1(x["daemon_cpu_s"], "%.2f"),
                                              f1(x["server_cpu_s"], "%.2f")))
            md.append("| %s | %s | %s | %s |" % (cr["transport"], cr["test"],
                                                 cr["per"], " | ".join(cells)))
    if waiting:
        md.append("")
        md.append("## Where the time goes (fio rows)")
        md.append("")
        md.append("FUSE requests waiting in the kernel (fusectl `waiting`, sampled "
                  "every 0.1 s), and CPU time per I/O of the FUSE daemon and of "
                  "nbdkit (user + system, all runs).")
        md.append("")
        md.append("| transport | test | client | waiting mean | waiting max "
                  "| daemon CPU µs/IO | nbdkit CPU µs/IO |")
        md.append("|---|---|---|---:|---:|---:|---:|")
        for w in waiting:
            md.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                w["transport"], w["test"], label[w["client"]], f1(w["waiting_mean"]),
                f1(w["waiting_max"], "%d"), f1(w["daemon_cpu_us_per_io"]),
                f1(w["server_cpu_us_per_io"])))
    if problems:
        md.append("")
        md.append("## Problems")
        md.append("")
        for p, where in problems.items():
            n_rows = sum(1 for r in rows if r["transport"] == p.split()[0])
            md.append("- %s (%s)" % (p, "every test" if len(where) == n_rows
                                     else ", ".join(where)))
    text = "\n".join(md) + "\n"
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)

    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(dict(settings=vars(a), labels=label, absent=absent_of,
                       ktls=read_text(os.path.join(raw, "ktls.txt")) or None,
                       rows=rows, cpu_per_unit=cpu_rows, fuse_waiting=waiting,
                       problems=problems), f, indent=2)

    # Chart: speed-up of nbdfs, oriented so that higher is always better
    # (latency and time rows are inverted), with the target as the same.
    def speedup(x, higher):
        if x is None or x == 0:
            return float("nan")
        return x if higher else 1.0 / x
    with open(os.path.join(a.out, "chart.dat"), "w") as f:
        f.write("# label vs_nbdfuse vs_nbdfuse13 vs_ceiling target\n")
        for r in rows:
            tgt = float("nan")
            if r["target"]:
                op, want = r["target"].split()
                tgt = float(want) if op == ">=" else 1.0 / float(want)
            label_ = "%s %s" % (r["transport"], r["test"].replace(
                " (same readahead)", " same-ra").split(" (")[0])
            f.write('"%s" %s %s %s %s\n' % (
                label_,
                speedup(r["nbdfs_over_nbdfuse"], r["higher_is_better"]),
                speedup(r["nbdfs_over_nbdfuse13"], r["higher_is_better"]),
                speedup(r["nbdfs_over_ceiling"], r["higher_is_better"]),
                tgt))


if __name__ == "__main__":
    main()
