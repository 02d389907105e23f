#!/usr/bin/env bash
# scripts/bench.sh --quick end to end, tiny: one test of each kind (fio
# bandwidth, IOPS with 2 jobs, latency percentiles, buffered dd both ways,
# the ext4 real-use run, mount time), Unix socket, 64M export, and the TLS
# section (its one row of those: seq-read-1M-qd16). Checks that the tables,
# results.json and the PNG are written, that every figure is a number
# (nbdfuse 1.22's column: numbers when the Debian 13 tree is there, else
# n/a with the note saying how to build it), that each target has a
# verdict (or a refusal, when other processes took more than 25% of the
# CPU during a sample), that the TLS
# section has its KTLS line and its n/a notes, that each mount's readahead
# is shown and the same-readahead row ran with equal readahead, and that
# the bench left no mount, loop device, process or temporary directory
# behind. Then bench-report.py again on doctored samples: a missing sample,
# one during which other processes took 90% of the CPU, and one with no
# such figure must each refuse the verdict instead of being dropped or
# ignored, while 5% of the CPU elsewhere (and a load average of 1000, which
# the benchmark itself drives above the CPU count) still gives a verdict;
# and a target met against one nbdfuse but not the other is not met.
# timeout: 150
# asan: skip
source "$SRCDIR/test/functions.sh"
requires_root
requires_fuse
requires fio --enghelp=nbd
requires_nbdkit_plugin memory
requires nbdfuse --version
requires gnuplot --version
requires mkfs.ext4 -V
requires losetup --version
requires certtool --version

# The bench's scratch directories go below $tmp (its own, so a bench run
# by anyone else at the same time cannot change the count).
mkdir -p "$tmp/bt" "$tmp/bs"
leftovers() {
  { grep -c "$tmp/b[ts]/nbdfs-bench" /proc/mounts || true
    losetup -a | grep -c "$tmp/b[ts]/nbdfs-bench" || true
    ls -d "$tmp"/bt/nbdfs-bench.* "$tmp"/bs/nbdfs-bench.* 2>/dev/null | wc -l
    # Processes still running with the bench's scratch directory in their
    # command line (nbdkit, the FUSE clients); [t] keeps grep's own out.
    grep -lsa "$tmp/b[t]/nbdfs-bench" /proc/[0-9]*/cmdline | wc -l
  } | tr '\n' ' '
}
before=$(leftovers)

out=$tmp/out
tests=seq-read-1M-qd16,rand-write-4k-qd32-j2,lat-read-4k-qd1,dd-read,dd-read-same-ra,dd-write,real-use,mount-time
NBDFS=$NBDFS BENCH_TMPDIR=$tmp/bt BENCH_SHMDIR=$tmp/bs \
  timeout -k 10 120 bash "$SRCDIR/scripts/bench.sh" --quick \
  --runtime 1 --size 64M --files 200 --tests "$tests" --out "$out" \
  > "$tmp/stdout"

[ "$(leftovers)" = "$before" ] || fail "bench left mounts/loops/tmp dirs: $(leftovers) (before: $before)"

test -s "$out/results.md" || fail "no results.md"
cmp "$tmp/stdout" "$out/results.md" || fail "stdout differs from results.md"
head -c 8 "$out/bench.png" | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a' \
  || fail "bench.png is not a PNG"
ls "$out"/raw/unix/rand-write-4k-qd32-j2/{nbdfs,nbdfuse,ceiling}-1.json
ls "$out"/raw/unix/lat-read-4k-qd1/nbdfuse-1.json "$out"/raw/unix/real-use/ceiling-1.json
ls "$out"/raw/unix/mount-time/nbdfs-1.json "$out"/raw/tls/seq-read-1M-qd16/nbdfs-1.json
# nbdfuse 1.22 ran when the Debian 13 tree is there, else the note says why.
tree13=1
grep -q 'nbdfuse (Debian 13): n/a: no Debian 13 tree with nbdfuse at .*: run scripts/check-debian13.sh --shell true once' \
  "$out/results.md" && tree13=0

# Until FUSE mode is built, the nbdfs column may be n/a; once nbdfs mounts,
# every cell must be a number.
nbdfs_missing=0
grep -q 'nbdfs: did not mount: nbdfs: .*not built yet' "$out/results.md" && nbdfs_missing=1

python3 - "$out" "$nbdfs_missing" "$tree13" <<'PY'
import json, os, re, sys
out, nbdfs_missing, tree13 = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
num = re.compile(r"^[0-9]+(\.[0-9]+)?$")
text = open(out + "/results.md").read()
# The table of each section (## heading), as lists of cells.
sections, cur = {}, None
for l in text.splitlines():
    if l.startswith("## "):
        cur = sections.setdefault(l[3:], [])
    elif cur is not None and l.startswith("| ") and len(l.split("|")) == 14 \
            and not l.startswith("| test "):
        cur.append([x.strip() for x in l.split("|")[1:-1]])
unix, tls = sections["Unix socket"], sections["TLS (X.509, TCP loopback)"]
want = ["seq-read-1M-qd16", "rand-write-4k-qd32-j2", "lat-read-4k-qd1 p50",
        "lat-read-4k-qd1 p99", "dd-read (buffered)", "dd-read (same readahead)",
        "dd-write (buffered)", "real-use ext4 total", "mount time"]
cpus = os.cpu_count()
assert [c[0] for c in unix] == want, "unix rows %r, expected %r" % ([c[0] for c in unix], want)
assert [c[0] for c in tls] == ["seq-read-1M-qd16"], [c[0] for c in tls]

def check(name, cells, expect):
    """expect: column -> "num", "n/a", "—" or "nbdfs" (n/a if nbdfs is)."""
    for col, v in zip(("nbdfs", "nbdfuse", "nbdfuse13", "ceiling", "r14", "r22",
                       "rceil"), cells[2:9]):
        e = expect.get(col, "num")
        if e == "nbdfs":
            e = "n/a" if nbdfs_missing else "num"
        if e == "num":
            assert num.match(v) and float(v) > 0, "%s: %s cell %r is not a number" % (name, col, v)
        else:
            assert v == e, "%s: %s cell %r, expected %r" % (name, col, v, e)

def verdict(name, target, met, other):
    m = re.match(r"^([0-9]+)%$", other)
    assert m, "%s: other CPU cell %r" % (name, other)
    assert re.match(r"^[≥≤] [0-9.]+×$", target), (name, target)
    refused = "refused: %s%% of the CPU went to other processes" % m.group(1)
    if nbdfs_missing:
        assert met == "n/a" or met.startswith(refused), (name, met)
    elif int(m.group(1)) > 25:
        assert met.startswith(refused), (name, met, other)
    else:
        assert met in ("yes", "**no**"), (name, met, other)

n13 = "num" if tree13 else "n/a"
for c in unix:
    name = c[0]
    exp = {"nbdfs": "nbdfs", "r14": "nbdfs", "nbdfuse13": n13,
           "r22": n13 if not nbdfs_missing else "n/a", "rceil": "nbdfs"}
    if name == "mount time":   # nothing to mount without FUSE
        exp.update(ceiling="—", rceil="—")
    check(name, c, exp)
    verdict(name, *c[9:12])
for c in tls:
    check(c[0], c, {"nbdfs": "nbdfs", "nbdfuse": "n/a", "nbdfuse13": n13,
                    "ceiling": "n/a", "r14": "n/a", "rceil": "n/a",
                    "r22": n13 if not nbdfs_missing else "n/a"})
    if tree13:
        verdict(c[0], *c[9:12])
    else:
        assert c[10] == "n/a", c
assert "nbdfuse 1.14: n/a: nbdfuse 1.14 cannot use a certificate directory as root" in text \
    or "nbdfuse 1.14" not in text, "no n/a note for nbdfuse 1.14 in the TLS section"
assert re.search(r"^- Kernel TLS \(KTLS\): (not )?used: ", text, re.M), "no KTLS line"
assert re.search(r"^\| unix \| seq-read-1M-qd16 \| GiB \| [0-9.]+ / [0-9.]+ \|", text, re.M), \
    "no CPU per GiB row"
assert (nbdfs_missing and not tree13) or re.search(
    r"^\| tls \| seq-read-1M-qd16 \| GiB \|", text, re.M), "no TLS CPU row"
# Readahead of each mount shown; the same-readahead row ran with nbdfs's.
ra = re.search(r"unix nbdfs ([0-9]+) KiB; unix nbdfuse ([0-9]+) KiB", text)
assert ra, "no readahead line"
for c in ("nbdfuse",) + (("nbdfuse13",) if tree13 else ()):
    same = open(out + "/raw/unix/dd-read-same-ra/%s-1.readahead_kb" % c).read().strip()
    assert same == ra.group(1), (c, same, ra.group(1))
j = json.load(open(out + "/results.json"))
assert len(j["rows"]) == len(want) + 1
assert all(r["failed_samples"] == 0 for r in j["rows"]), j["rows"]
assert all(len(r["samples"]["nbdfuse"]) == 1 for r in j["rows"] if r["transport"] == "unix")
assert all(len(r["samples"]["nbdfuse13"]) == (1 if tree13 else 0) for r in j["rows"])
# The queue sampler saw nbdfuse's FUSE connection during the fio runs.
assert any(w["client"] == "nbdfuse" and w["waiting_max"] is not None
           and w["daemon_cpu_us_per_io"] > 0 for w in j["fuse_waiting"]), j["fuse_waiting"]
print("tables OK, nbdfs column %s, nbdfuse 1.22 %s" % (
    "n/a (FUSE not built)" if nbdfs_missing else "measured",
    "measured" if tree13 else "n/a (no Debian 13 tree)"))
PY

# The report refuses what it cannot support: the same samples with one of
# nbdfuse's removed, then with one during which other processes took most
# of the CPU, then with one that has no such figure.
cp -r "$out" "$tmp/doctored"
rm "$tmp/doctored/raw/unix/seq-read-1M-qd16/nbdfuse-1.json"
args=(--runs 1 --runtime 1 --size 64M --files 200 --elapsed 1 --transports unix
      --tests "${tests//,/ }")
python3 "$SRCDIR/scripts/bench-report.py" "$tmp/doctored" "${args[@]}" > "$tmp/r1"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r1" | grep -q 'refused: 1 failed sample' ||
  fail "a missing sample did not refuse the verdict: $(grep seq-read "$tmp/r1")"
cp "$out/raw/unix/seq-read-1M-qd16/nbdfuse-1.json" "$tmp/doctored/raw/unix/seq-read-1M-qd16/"
printf '{"load_before": 0.1, "load_after": 0.2, "cpus": 2, "foreign_cpu": 0.9}\n' \
  > "$tmp/doctored/raw/unix/seq-read-1M-qd16/nbdfs-1.load"
python3 "$SRCDIR/scripts/bench-report.py" "$tmp/doctored" "${args[@]}" > "$tmp/r2"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r2" | grep -q "refused: 90% of the CPU went to other processes during a sample .* | 90% |" ||
  fail "a sample with 90% of the CPU elsewhere did not refuse the verdict: $(grep seq-read "$tmp/r2")"
printf '{"load_before": 0.1, "load_after": 0.2, "cpus": 2}\n' \
  > "$tmp/doctored/raw/unix/seq-read-1M-qd16/nbdfs-1.load"
python3 "$SRCDIR/scripts/bench-report.py" "$tmp/doctored" "${args[@]}" > "$tmp/r2b"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r2b" | grep -q "refused: CPU use of other processes not recorded" ||
  fail "a sample without its foreign-CPU figure did not refuse the verdict: $(grep seq-read "$tmp/r2b")"

# Met only if met against every nbdfuse: doctored samples (each client's
# made from nbdfuse's, so this runs with or without the Debian 13 tree)
# where nbdfs is 10x nbdfuse 1.14 and 0.1x or 1x nbdfuse 1.22.
d=$tmp/doctored2 row=$tmp/doctored2/raw/unix/seq-read-1M-qd16
cp -r "$out" "$d"
: > "$d/raw/unix.absent"
set_bw() {  # set_bw CLIENT MIB/S
  python3 - "$row/nbdfuse-1.json" "$row/$1-1.json" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.find("{"):])
doc["jobs"][0]["read"]["bw_bytes"] = int(float(sys.argv[3]) * 1048576)
json.dump(doc, open(sys.argv[2] + ".new", "w"))
PY
  mv "$row/$1-1.json.new" "$row/$1-1.json"
  printf '{"load_before": 0.1, "load_after": 1000, "cpus": 1, "foreign_cpu": 0.05}\n' > "$row/$1-1.load"
}
set_bw nbdfs 1000; set_bw nbdfuse 100; set_bw nbdfuse13 10000
printf '{"load_before": 0.1, "load_after": 1000, "cpus": 1, "foreign_cpu": 0.05}\n' > "$row/ceiling-1.load"
python3 "$SRCDIR/scripts/bench-report.py" "$d" "${args[@]}" > "$tmp/r3"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r3" | grep -q '| 10.00 | 0.10 | .* | \*\*no\*\* |' ||
  fail "met against one nbdfuse only, yet not 'no': $(grep seq-read "$tmp/r3")"
set_bw nbdfuse13 100
python3 "$SRCDIR/scripts/bench-report.py" "$d" "${args[@]}" > "$tmp/r4"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r4" | grep -q '| 10.00 | 10.00 | .* | yes | 5% |' ||
  fail "met against both nbdfuse with 5% of the CPU elsewhere and a load of 1000, yet not 'yes': $(grep seq-read "$tmp/r4")"
echo OK
