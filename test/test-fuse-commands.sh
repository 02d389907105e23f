#!/usr/bin/env bash
# Which NBD commands and flags file operations become, read from nbdkit's
# log filter: the mount opens one connection, and under load -C 4 opens
# the other three (connections on demand), every one of them used; O_DSYNC and RWF_DSYNC
# writes carry FUA; fallocate -z is WRITE_ZEROES without may-trim
# (NBD_CMD_FLAG_NO_HOLE); fallocate -p (PUNCH_HOLE) is WRITE_ZEROES that
# may trim (never NBD_CMD_TRIM, whose data reads back unspecified); both
# read back as zeroes; fsync flushes every connection that wrote; the
# unmount ends every connection with a disconnect.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires_nbdkit_filter log
requires fallocate --version
requires fio --version
# The extras stay open until the unmount (its disconnects are counted).
export NBDFS_IDLE_CLOSE_MS=600000

sock=$tmp/sock
log=$tmp/nbdkit.log
mnt=$tmp/mnt
f=$mnt/disk
start_nbdkit "$sock" --filter=log memory 64M logfile="$log"
start_nbdfs "$mnt" "$sock" -C 4
sleep 0.3
[ "$(grep -c ' Connect export=' "$log")" = 1 ] ||
  fail "expected 1 connection after the mount"
grow_connections "$f" "$log" 4
[ "$(grep -c ' Connect export=' "$log")" = 4 ] || fail "expected 4 connections"

# lines logged since mark; mark remembers how far the log was read.
mark() { m=$(wc -l < "$log"); }
since() { tail -n +$((m + 1)) "$log"; }

# Spread I/O: 64 MiB of O_DIRECT writes and reads, several in flight.
head -c 64M /dev/urandom > "$tmp/data"
dd if="$tmp/data" of="$f" bs=1M oflag=direct conv=notrunc status=none &
dd if="$tmp/data" of="$f" bs=256k oflag=direct conv=notrunc status=none
wait $!
dd if="$f" of=/dev/null bs=1M iflag=direct status=none
for c in 1 2 3 4; do
  grep -q "connection=$c Write " "$log" || fail "connection $c never wrote"
  grep -q "connection=$c Read " "$log" || fail "connection $c never read"
done

# fsync: one flush, after every write since the last flush was answered
# (under CAN_MULTI_CONN a flush on one connection covers all of them).
mark
dd if="$tmp/data" of="$f" bs=1M count=16 oflag=direct conv=notrunc status=none
sync "$f"
since > "$tmp/fsync.log"
conns=$(grep -o 'connection=[0-9]* Write ' "$tmp/fsync.log" | sort -u | grep -o '[0-9]*') || true
# 16 O_DIRECT MiB over -C 4 spread over connections: at least two wrote
# (else the loop below checks little or nothing).
[ "$(echo $conns | wc -w)" -ge 2 ] || fail "fsync part: writes on connections '$conns' only"
check_flushed_after_writes "$tmp/fsync.log" ||
  fail "no flush after the last write was answered"
[ "$(grep -c ' Flush id=' "$tmp/fsync.log")" = 1 ] ||
  fail "fsync sent $(grep -c ' Flush id=' "$tmp/fsync.log") flushes, want 1"

# O_DSYNC writes -> FUA.
mark
dd if="$tmp/data" of="$f" bs=4k count=8 oflag=dsync,direct conv=notrunc status=none
since | grep ' Write ' > "$tmp/w.log"
[ "$(grep -c 'fua=1' "$tmp/w.log")" -ge 8 ] || fail "O_DSYNC writes without FUA"
! grep -q 'fua=0' "$tmp/w.log" || fail "an O_DSYNC write went without FUA"
# A FUA write is persisted when answered: the fsync the kernel sends after
# each O_DSYNC write finds nothing to flush, so no Flush goes out.
if since | grep -q ' Flush '; then
  fail "O_DSYNC (FUA) writes were followed by a needless Flush"
fi
# pwritev2(RWF_DSYNC) on a plain descriptor -> FUA as well.
mark
python3 -c "
import os
fd = os.open('$f', os.O_WRONLY)
os.pwritev(fd, [b'z' * 4096], 8192, os.RWF_DSYNC)"
since | grep ' Write ' | grep -q 'fua=1' || fail "RWF_DSYNC write without FUA"
# A plain write does not ask for FUA.
mark
pyio pwrite "$f" 12288 00ff00ff
since | grep ' Write ' | grep -q 'fua=0' || fail "plain write"
! since | grep ' Write ' | grep -q 'fua=1' || fail "plain write carried FUA"

# fallocate -z (ZERO_RANGE) -> WRITE_ZEROES, no trim allowed.
mark
fallocate -z -o 1048576 -l 1048576 "$f"
since | grep -q ' Zero .*offset=0x100000 count=0x100000 trim=0' ||
  fail "ZERO_RANGE did not become WRITE_ZEROES with NO_HOLE"
cmp -n 1048576 <(dd if="$f" iflag=direct,skip_bytes skip=1048576 bs=1M count=1 status=none) /dev/zero ||
  fail "ZERO_RANGE did not read back as zeroes"
# fallocate -p (PUNCH_HOLE|KEEP_SIZE) -> WRITE_ZEROES that may trim.
mark
fallocate -p -o 3145728 -l 1048576 "$f"
since | grep -q ' Zero .*offset=0x300000 count=0x100000 trim=1' ||
  fail "PUNCH_HOLE did not become WRITE_ZEROES without NO_HOLE"
! since | grep -q ' Trim ' || fail "PUNCH_HOLE must not send NBD_CMD_TRIM"
cmp -n 1048576 <(dd if="$f" iflag=direct,skip_bytes skip=3145728 bs=1M count=1 status=none) /dev/zero ||
  fail "PUNCH_HOLE did not read back as zeroes"
# The page cache agrees too (the kernel drops the punched pages).
cmp -n 1048576 <(tail -c +$((3145728 + 1)) "$f") /dev/zero || fail "cached punch"
# plain allocate succeeds inside the file, fails beyond it; other modes
# are not supported.
fallocate -o 0 -l 4096 "$f"
fallocate -n -o 0 -l 4096 "$f"
expect_fail_with "No space left" fallocate -o 0 -l 128M "$f"
expect_fail_with "not supported" fallocate -c -o 0 -l 65536 "$f"
expect_fail_with "not supported" fallocate -i -o 0 -l 65536 "$f"

mark
stop_nbdfs "$mnt"
[ "$(since | grep -c 'Disconnect')" = 4 ] || fail "not every connection disconnected"
echo OK
