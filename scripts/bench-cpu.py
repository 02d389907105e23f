#!/usr/bin/env python3
"""CPU snapshot for scripts/bench.sh: how busy the machine was, and how much
of that was the benchmark itself.

  bench-cpu.py snapshot ROOTPID [PID...]
      prints "BUSY TOTAL TREE OTHERS" in clock ticks: the machine's busy
      and total CPU time so far (/proc/stat, all CPUs), and the CPU time so
      far of the benchmark's process tree: ROOTPID (the bench shell), every
      live process whose ancestry leads to it, and each extra PID (nbdkit,
      which daemonizes and so is no descendant) with its live descendants;
      OTHERS is PID:TICKS:COMM of every other process that has used any.
  bench-cpu.py foreign BEFORE AFTER
      prints the JSON fields of one sample from two snapshots: the share of
      the machine's CPU capacity (total ticks, i.e. elapsed x CPUs) that
      went to anything other than the tree, and the other processes that
      used the most (to tell who it was).

Each process counts utime + stime + cutime + cstime: a child's own time
moves into its parent's cutime/cstime when the parent reaps it, just as it
leaves the live set, so the sum stays right while processes come and go
(fio, dd, cp, mkfs under timeout under the bench shell, and this script).
Kernel threads (writeback, loop workers, ksoftirqd) and interrupt time are
no process of the tree: they count as foreign, including the part the
benchmark causes itself (see run_one in bench.sh for what that measured).
"""
import json
import os
import sys


def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]:
    # guest time is already inside user and nice.
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def processes():
    """{pid: (ppid, ticks, comm)} of every process readable now."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                text = f.read()
        except OSError:   # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        ppid = int(fields[1])
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        procs[int(name)] = (ppid, ticks, comm)
    return procs


def snapshot(roots):
    busy, total = machine()
    procs = processes()
    roots = set(roots)
    tree, others = 0, []
    for pid, (ppid, ticks, comm) in procs.items():
        p, seen = pid, 0
        while p not in roots and p in procs and seen < 1000:
            p, seen = procs[p][0], seen + 1
        if p in roots:
            tree += ticks
        elif ticks:
            others.append("%d:%d:%s" % (pid, ticks, "".join(
                ch if ch.isalnum() or ch in "-_./" else "_" for ch in comm)))
    return busy, total, tree, ",".join(others) or "-"


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "snapshot":
        roots = [int(x) for x in sys.argv[2:] if x.isdigit()]
        print("%d %d %d %s" % snapshot(roots))
    elif len(sys.argv) == 4 and sys.argv[1] == "foreign":
        b0, t0, r0, o0 = sys.argv[2].split()
        b1, t1, r1, o1 = sys.argv[3].split()
        b0, t0, r0, b1, t1, r1 = (int(x) for x in (b0, t0, r0, b1, t1, r1))
        hz = os.sysconf("SC_CLK_TCK")
        total = max(t1 - t0, 1)
        foreign = max(0, (b1 - b0) - (r1 - r0)) / total
        # Who: the other processes' own deltas (interrupt time has no one).
        before = {}
        for x in o0.split(","):
            if x != "-":
                pid, ticks, comm = x.split(":", 2)
                before[pid] = int(ticks)
        top = []
        for x in o1.split(","):
            if x != "-":
                pid, ticks, comm = x.split(":", 2)
                d = int(ticks) - before.get(pid, 0)
                if d > 0:
                    top.append((d, comm))
        top.sort(reverse=True)
        print('"foreign_cpu": %.3f, "busy_cpu_s": %.2f, "bench_cpu_s": %.2f, '
              '"capacity_cpu_s": %.2f, "top_other": %s' % (
                  foreign, (b1 - b0) / hz, (r1 - r0) / hz, total / hz,
                  json.dumps([[c, round(d / hz, 2)] for d, c in top[:4]])))
    else:
        sys.exit("usage: bench-cpu.py snapshot ROOTPID [PID...] | "
                 "foreign BEFORE AFTER")


if __name__ == "__main__":
    main()
