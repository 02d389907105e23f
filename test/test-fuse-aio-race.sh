#!/usr/bin/env bash
# Two writes in flight on one block through a FUSE mount, checked on data.
# nbdkit's blocksize-policy makes the minimum block 4096, so a 10-byte
# write is a read-modify-write (RMW) of its block. test/tools/aio-pair
# submits, in one io_submit (Linux AIO: the kernel serialises synchronous
# O_DIRECT writers on one FUSE file, so two pwrite() threads never
# overlap), the 10-byte write into block 1 and an aligned write of all of
# block 1, many times with fresh data; after both complete the block must
# equal one of the two serial orders. Without the range lock in
# nbdclient/blocksize.c the RMW reads the old block, the aligned write
# lands, and the RMW writes the old data back over it: the aligned write is
# lost although both writes returned success (today's code before the
# range lock: lost at iteration 0). Both serial orders must show up over
# the iterations (else the two writes were never in flight together).
# timeout: 120
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires_nbdkit_filter blocksize-policy
A=$TOOLS/aio-pair

mnt=$tmp/mnt
sock=$tmp/sock
# The delay filter (writes land 2 ms late) lets an aligned write land inside
# the window between an RMW's READ and its WRITE
# (a real server on a network has such a window), so the race shows at
# once rather than by luck.
start_nbdkit "$sock" --filter=blocksize-policy --filter=delay memory 1M \
  blocksize-minimum=4096 blocksize-preferred=4096 blocksize-maximum=64K \
  blocksize-error-policy=error delay-write=2ms
start_nbdfs "$mnt" "$sock"
f=$mnt/disk

# 10 bytes inside block 1, racing a whole-block write of block 1.
out=$("$A" "$f" 4096 4096 $((4096 + 1000)) 10 300) \
  || { echo "$out"; fail "a write was lost (10-byte RMW vs aligned write)"; }
echo "$out"
grep -Eq 'big_last=[1-9][0-9]* small_last=[1-9]' <<<"$out" \
  || fail "only one order ever seen: the writes did not overlap"
# The head of block 1: the RMW's bytes at the start of the block.
out=$("$A" "$f" 4096 4096 4096 10 100) \
  || { echo "$out"; fail "a write was lost (RMW at the block start)"; }
echo "$out"
stop_nbdfs "$mnt"
echo OK
