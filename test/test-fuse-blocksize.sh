#!/usr/bin/env bash
# The block-size layer through a FUSE mount.
# 1. An export of 4000 bytes with minimum block 512: the file shows 3584
#    bytes (the last 416 cannot be addressed: spec "Size constraints"), and
#    all of it reads and writes; nbdkit's log shows no request past 3584,
#    unaligned or over the maximum (min = preferred = max = 512).
# 2. Two writes in flight on one block, checked on data.
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
sock=$tmp/sock-tail
start_nbdkit "$sock" --filter=log --filter=blocksize-policy memory 4000 \
  blocksize-minimum=512 blocksize-preferred=512 blocksize-maximum=512 \
  blocksize-error-policy=error logfile="$tmp/tail.log"
start_nbdfs "$mnt" "$sock"
[ "$(stat -c %s "$mnt/disk")" = 3584 ] || fail "size shown: not 3584"
head -c 3584 /dev/urandom >"$tmp/data"
dd if="$tmp/data" of="$mnt/disk" bs=700 conv=notrunc,fsync status=none \
  || fail "writing the whole file"
cat "$mnt/disk" >"$tmp/back" || fail "reading the whole file"
cmp "$tmp/data" "$tmp/back" || fail "read back differs"
dd if="$mnt/disk" of=/dev/null bs=100 skip=35 iflag=direct status=none \
  || fail "O_DIRECT read of the tail"
# Past the size shown: the file is full (the unreachable bytes are not ours).
if err=$(printf x | dd of="$mnt/disk" bs=1 seek=3584 conv=notrunc status=none 2>&1); then
  fail "a write at 3584 succeeded"
fi
grep -q "No space left on device" <<<"$err" || fail "write at 3584: $err"
stop_nbdfs "$mnt"
grep -Eq ' (Read|Write) id=[0-9]+ offset=0xc00 count=0x200 ' "$tmp/tail.log" \
  || fail "the last block was never read or written"
check_nbdkit_requests "$tmp/tail.log" 4000 512 512 \
  || fail "a request was unaligned, past 3584 or over the maximum"

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
