#!/usr/bin/env bash
# SEEK_DATA / SEEK_HOLE from base:allocation, checked against the extent
# map nbdinfo reads from the same server (nbdkit data and sparse-random;
# check_seek in fuse-functions.sh);
# ENXIO at/after EOF; cp --sparse=always copies the data and leaves the
# holes; st_blocks comes from the allocation; without structured replies
# (nbdkit --no-sr: no base:allocation) the whole file is data.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin data
requires_nbdkit_plugin sparse-random
requires nbdinfo --version

mnt=$tmp/mnt
sock=$tmp/sock
start_nbdkit "$sock" data '@0 1 @131072 2*100 @1048576 3*65536 @5242880 4 @8388607 5' size=8M
start_nbdfs "$mnt" "$sock"
f=$mnt/disk
MIN_HOLES=4 check_seek "$f" "nbd+unix:///?socket=$sock"
# The first data after 32768 is at 131072, the next hole after it at
# 163840 (nbdkit data allocates in 32 KiB pages).
[ "$(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 32768, os.SEEK_DATA), os.lseek(fd, 131072, os.SEEK_HOLE))")" = "131072 163840" ] ||
  fail "SEEK_DATA/SEEK_HOLE at known places"
# st_blocks from base:allocation (the map's allocated bytes), once the
# background scan has run.
alloc=$(nbdinfo --map "nbd+unix:///?socket=$sock" | awk '$3 % 2 == 0 { s += $2 } END { print s }')
[ "$alloc" -gt 0 ] && [ "$alloc" -lt $((1024 * 1024)) ] || fail "unexpected map"
WAIT_SECS=10 wait_for sh -c "[ \$(stat -c %b '$f') = $((alloc / 512)) ]" ||
  fail "st_blocks $(stat -c %b "$f"), expected $((alloc / 512))"
stop_nbdfs "$mnt"

sock2=$tmp/sock2
start_nbdkit "$sock2" sparse-random 64M seed=5 runlength=65536
start_nbdfs "$mnt" "$sock2" -C 2
MIN_HOLES=100 check_seek "$f" "nbd+unix:///?socket=$sock2"
# cp --sparse=always reads only the data and leaves the holes.
cp --sparse=always "$f" "$tmp/copy"
[ "$(md5 "$tmp/copy")" = "$(md5 "$f")" ] || fail "cp --sparse=always copy differs"
nbdcopy "nbd+unix:///?socket=$sock2" - | cmp - "$tmp/copy" || fail "copy differs from the server"
[ "$(stat -c %b "$tmp/copy")" -lt $((64 * 1024 * 1024 / 512 * 3 / 4)) ] ||
  fail "cp --sparse=always made no holes"
stop_nbdfs "$mnt"

# NBD_STATE_HOLE without NBD_STATE_ZERO (unallocated, contents unspecified:
# this server reads 0xff there) is data for SEEK_DATA/SEEK_HOLE; only
# NBD_STATE_ZERO is a hole. An eval server whose extents say so.
requires_nbdkit_plugin eval
img4=$tmp/holes.img
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"\x01" * (1 << 20) + b"\xff" * (1 << 20) + bytes(1 << 20) + b"\x02" * (1 << 20))' "$img4"
sock4=$tmp/sock4
start_nbdkit "$sock4" eval get_size='echo 4194304' \
  pread="dd if=$img4 skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
  can_extents='exit 0' \
  extents='echo 0 1048576 ""; echo 1048576 1048576 hole; echo 2097152 1048576 hole,zero; echo 3145728 1048576 ""'
nbdinfo --map "nbd+unix:///?socket=$sock4"
start_nbdfs "$mnt" "$sock4"
[ "$(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 1048576, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 2097152, os.SEEK_DATA), os.lseek(fd, 1572864, os.SEEK_HOLE))")" = "1048576 2097152 3145728 2097152" ] ||
  fail "HOLE without ZERO must be data: SEEK_DATA/SEEK_HOLE gave $(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 1048576, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 2097152, os.SEEK_DATA), os.lseek(fd, 1572864, os.SEEK_HOLE))")"
# ...and what it holds is what the server reads there.
[ "$(md5 "$f")" = "$(md5 "$img4")" ] || fail "data of the HOLE-only range"
stop_nbdfs "$mnt"

# No structured replies, so no base:allocation: everything is data.
sock3=$tmp/sock3
start_nbdkit "$sock3" --no-sr data '@1048576 1' size=4M
start_nbdfs "$mnt" "$sock3"
[ "$(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 100, os.SEEK_DATA), os.lseek(fd, 100, os.SEEK_HOLE))")" = "100 4194304" ] ||
  fail "without base:allocation the file must be all data"
[ "$(stat -c %b "$f")" = $((4 * 1024 * 1024 / 512)) ] || fail "st_blocks without allocation info"
[ "$(pyio errno "os.lseek(os.open('$f', os.O_RDONLY), 4194304, os.SEEK_DATA)")" = ENXIO ] ||
  fail "SEEK_DATA at EOF"
stop_nbdfs "$mnt"
echo OK
