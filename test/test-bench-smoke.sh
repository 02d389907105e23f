#!/usr/bin/env bash
# scripts/bench.sh --quick end to end, tiny: one test of each kind (fio
# bandwidth, IOPS with 2 jobs, latency percentiles, buffered dd both ways,
# the ext4 real-use run), Unix socket, 64M export. Checks that the table,
# results.json and the PNG are written, that every figure is a number, that
# each target has a verdict (or a refusal, when the load exceeded the CPUs),
# that each mount's readahead is shown and the same-readahead row ran with
# equal readahead, and that the bench left no mount, loop device or
# temporary directory behind. Then bench-report.py again on doctored
# samples: a missing sample and an overloaded one must each refuse the
# verdict instead of being dropped or ignored.
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

# The bench's scratch directories go below $tmp (its own, so a bench run
# by anyone else at the same time cannot change the count).
mkdir -p "$tmp/bt" "$tmp/bs"
leftovers() {
  { grep -c "$tmp/b[ts]/nbdfs-bench" /proc/mounts || true
    losetup -a | grep -c "$tmp/b[ts]/nbdfs-bench" || true
    ls -d "$tmp"/bt/nbdfs-bench.* "$tmp"/bs/nbdfs-bench.* 2>/dev/null | wc -l
  } | tr '\n' ' '
}
before=$(leftovers)

out=$tmp/out
tests=seq-read-1M-qd16,rand-write-4k-qd32-j2,lat-read-4k-qd1,dd-read,dd-read-same-ra,dd-write,real-use
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

# Until FUSE mode is built, the nbdfs column may be n/a; once nbdfs mounts,
# every cell must be a number.
nbdfs_missing=0
grep -q 'nbdfs: did not mount: nbdfs: .*not built yet' "$out/results.md" && nbdfs_missing=1

python3 - "$out" "$nbdfs_missing" <<'PY'
import json, re, sys
out, nbdfs_missing = sys.argv[1], sys.argv[2] == "1"
num = re.compile(r"^[0-9]+(\.[0-9]+)?$")
rows = [l for l in open(out + "/results.md") if l.startswith("| ")
        and not l.startswith("| test ") and not l.startswith("| transport ")]
main = [l for l in rows if len(l.split("|")) == 12]
want = ["seq-read-1M-qd16", "rand-write-4k-qd32-j2", "lat-read-4k-qd1 p50",
        "lat-read-4k-qd1 p99", "dd-read (buffered)", "dd-read (same readahead)",
        "dd-write (buffered)", "real-use ext4 total"]
import os
cpus = os.cpu_count()
names = [l.split("|")[1].strip() for l in main]
assert names == want, "table rows %r, expected %r" % (names, want)
for l in main:
    c = [x.strip() for x in l.split("|")[1:-1]]
    name, unit, nbdfs, nbdfuse, ceil, r1, r2, target, met, load = c
    m = re.match(r"^([0-9.]+)–([0-9.]+)$", load)
    assert m, "%s: load cell %r" % (name, load)
    overloaded = float(m.group(2)) > cpus
    for v, col in ((nbdfuse, "nbdfuse"), (ceil, "ceiling")):
        assert num.match(v), "%s: %s cell %r is not a number" % (name, col, v)
    for v, col in ((nbdfs, "nbdfs"), (r1, "nbdfs/nbdfuse"), (r2, "nbdfs/ceiling")):
        if nbdfs_missing:
            assert v == "n/a", "%s: %s %r" % (name, col, v)
        else:
            assert num.match(v), "%s: %s cell %r is not a number" % (name, col, v)
    assert float(nbdfuse) > 0 and float(ceil) > 0, name
    if target == "—":
        assert met == "—", (name, met)
    else:
        assert re.match(r"^[≥≤] [0-9.]+×$", target), (name, target)
        if nbdfs_missing:
            assert met in ("n/a",) or met.startswith("refused: load"), (name, met)
        elif overloaded:
            assert met.startswith("refused: load ") and "CPUs" in met, (name, met, load)
        else:
            assert met in ("yes", "**no**"), (name, met, load)
# Readahead of each mount shown; the same-readahead row ran with nbdfs's.
ra = re.search(r"unix nbdfs ([0-9]+) KiB; unix nbdfuse ([0-9]+) KiB",
               open(out + "/results.md").read())
assert ra, "no readahead line"
same = open(out + "/raw/unix/dd-read-same-ra/nbdfuse-1.readahead_kb").read().strip()
assert same == ra.group(1), (same, ra.group(1))
j = json.load(open(out + "/results.json"))
assert len(j["rows"]) == len(want)
assert all(r["failed_samples"] == 0 for r in j["rows"]), j["rows"]
assert all(len(r["samples"]["nbdfuse"]) == 1 for r in j["rows"])
# The queue sampler saw nbdfuse's FUSE connection during the fio runs.
assert any(w["client"] == "nbdfuse" and w["waiting_max"] is not None
           and w["daemon_cpu_us_per_io"] > 0 for w in j["fuse_waiting"]), j["fuse_waiting"]
print("table OK, nbdfs column %s" % ("n/a (FUSE not built)" if nbdfs_missing else "measured"))
PY

# The report refuses what it cannot support: the same samples with one of
# nbdfuse's removed, then with one recorded under a load above the CPUs.
cp -r "$out" "$tmp/doctored"
rm "$tmp/doctored/raw/unix/seq-read-1M-qd16/nbdfuse-1.json"
args=(--runs 1 --runtime 1 --size 64M --files 200 --elapsed 1 --transports unix
      --tests "${tests//,/ }")
python3 "$SRCDIR/scripts/bench-report.py" "$tmp/doctored" "${args[@]}" > "$tmp/r1"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r1" | grep -q 'refused: 1 failed sample' ||
  fail "a missing sample did not refuse the verdict: $(grep seq-read "$tmp/r1")"
cp "$out/raw/unix/seq-read-1M-qd16/nbdfuse-1.json" "$tmp/doctored/raw/unix/seq-read-1M-qd16/"
# (1000: above any real load the run itself may have seen.)
printf '{"load_before": 0.1, "load_after": 1000, "cpus": 1}\n' \
  > "$tmp/doctored/raw/unix/seq-read-1M-qd16/nbdfs-1.load"
python3 "$SRCDIR/scripts/bench-report.py" "$tmp/doctored" "${args[@]}" > "$tmp/r2"
grep -E '^\| seq-read-1M-qd16 \|' "$tmp/r2" | grep -q "refused: load 1000\.00 > $(nproc) CPUs" ||
  fail "an overloaded sample did not refuse the verdict: $(grep seq-read "$tmp/r2")"
echo OK
