#!/usr/bin/env bash
# st_blocks follows the allocation (README "FUSE mode": st_blocks from
# base:allocation, "scanned in the background, at most every 5 s";
# fuse/worker.c nbdfs_allocation_refresh: a getattr more than 5 s after the
# last scan queues a new one and answers with the last result). nbdkit
# memory (sparse, 32 KiB pages, trim frees): a fresh export has 0 blocks;
# after 1 MiB is written into the hole (O_DIRECT + fsync: it is on the
# server) stat shows 2048 more blocks; after punching it, 0 again.
# stat --cached=never asks nbdfs every time (statx AT_STATX_FORCE_SYNC), so
# the kernel's own 60 s attribute cache is out of the way and what is
# measured is nbdfs's rescan rule. Each change must show within 15 s.
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires fallocate --version

mnt=$tmp/mnt
sock=$tmp/sock
start_nbdkit "$sock" memory 64M
start_nbdfs "$mnt" "$sock"
f=$mnt/disk
blocks() { stat --cached=never -c %b "$f"; }

WAIT_SECS=15 wait_for sh -c "[ \$(stat --cached=never -c %b '$f') = 0 ]" ||
  fail "a fresh memory export: st_blocks $(blocks), expected 0"

t0=$(date +%s.%N)
python3 - "$f" <<'PY'
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
m = mmap.mmap(-1, 1 << 20)
m.write(b"\xa5" * (1 << 20))
assert os.pwritev(fd, [m], 8 << 20) == 1 << 20
os.fsync(fd)
os.close(fd)
PY
WAIT_SECS=15 wait_for sh -c "[ \$(stat --cached=never -c %b '$f') = 2048 ]" ||
  fail "after writing 1 MiB into the hole: st_blocks $(blocks), expected 2048"
echo "st_blocks 2048 after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

t0=$(date +%s.%N)
fallocate -p -o $((8 << 20)) -l $((1 << 20)) "$f"
WAIT_SECS=15 wait_for sh -c "[ \$(stat --cached=never -c %b '$f') = 0 ]" ||
  fail "after punching the 1 MiB: st_blocks $(blocks), expected 0"
echo "st_blocks 0 after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
stop_nbdfs "$mnt"
echo "test-fuse-stblocks: OK"
