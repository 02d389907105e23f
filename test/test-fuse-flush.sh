#!/usr/bin/env bash
# What reaches the server for each way of asking for durability through the
# FUSE file (README's table), read from nbdkit's log filter: fdatasync and
# close after writing send NBD_CMD_FLUSH (and close without a write does
# not); a write on an O_SYNC fd carries FUA; a server without FUA gets each
# O_DSYNC write followed by a flush before the write returns. (Through FUSE
# that flush comes from two places: the pool's FUA emulation and the
# fsync the kernel sends inside every O_DSYNC write; with the emulation
# disabled this part still passes: the emulation itself is checked at the
# pool level, test-transmission-multiconn.)
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_filter log
requires_nbdkit_plugin eval

log=$tmp/nbdkit.log
sock=$tmp/sock
mnt=$tmp/mnt
f=$mnt/disk
start_nbdkit "$sock" --filter=log memory 16M logfile="$log"
start_nbdfs "$mnt" "$sock" -C 1

mark() { m=$(wc -l < "$log"); }
# since: the requests logged since mark (the "...Write" reply lines too).
since() { tail -n +$((m + 1)) "$log"; }
# writes_then_flush: at least one Write, and a Flush after the last one.
writes_then_flush() {
  since | awk '$4 == "Write" { w = NR } $4 == "Flush" && NR > w { ok = 1 }
               END { exit !(w && ok) }'
}
py() { python3 -c "import os; f = '$f'; $1"; }

# fdatasync after a write: a flush, logged before the descriptor is closed
# (the close would flush too, so the log is read with the fd still open).
mark
out=$(py 'fd = os.open(f, os.O_WRONLY); os.pwrite(fd, b"a" * 4096, 0)
n = len(open("'"$log"'").readlines())
os.fdatasync(fd)
new = open("'"$log"'").readlines()[n:]
print("flushed" if any(" Flush " in l for l in new) else "not flushed")
os.close(fd)')
since
[ "$out" = flushed ] || fail "fdatasync: no flush before the close"
writes_then_flush || fail "fdatasync: no flush after the write"

# close after writing: a flush.
mark
py 'fd = os.open(f, os.O_WRONLY); os.pwrite(fd, b"b" * 4096, 8192); os.close(fd)'
since
writes_then_flush || fail "close after writing: no flush"
# close without writing: no flush (nothing written since the last one).
mark
py 'fd = os.open(f, os.O_RDWR); os.pread(fd, 4096, 0); os.close(fd)'
! since | grep -q ' Flush ' || fail "a close without writes sent a flush"

# O_SYNC: every write carries FUA.
mark
py 'fd = os.open(f, os.O_WRONLY | os.O_SYNC); [os.pwrite(fd, b"c" * 4096, i * 4096) for i in range(4)]; os.close(fd)'
since | grep ' Write ' > "$tmp/w"
[ "$(grep -c 'fua=1' "$tmp/w")" = 4 ] || fail "O_SYNC writes without FUA: $(cat "$tmp/w")"
stop_nbdfs "$mnt"

# A server without FUA (nbdkit 1.32's fua filter has no fuamode=none: an
# eval plugin over a file says can_fua=none): O_DSYNC writes go out plain
# and are each followed by a flush.
img=$tmp/eval.img
truncate -s 16M "$img"
log=$tmp/eval.log
sock2=$tmp/sock2
start_nbdkit "$sock2" --filter=log eval logfile="$log" \
  get_size='echo 16777216' \
  pread="dd if=$img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
  pwrite="dd of=$img seek=\$4 conv=notrunc oflag=seek_bytes status=none" \
  can_write='exit 0' can_flush='exit 0' flush='exit 0' can_fua='echo none'
start_nbdfs "$mnt" "$sock2" -C 1
mark
head -c 8192 /dev/urandom > "$tmp/data"
dd if="$tmp/data" of="$f" bs=4096 count=2 oflag=dsync conv=notrunc status=none
since
! since | grep ' Write ' | grep -q 'fua=1' || fail "FUA sent although not advertised"
since | awk '$4 == "Write" { w++; pending = 1 } $4 == "Flush" && pending { fl++; pending = 0 }
             END { exit !(w == 2 && fl == 2) }' ||
  fail "FUA not emulated: expected each of 2 O_DSYNC writes followed by a flush"
cmp -n 8192 "$tmp/data" "$img" || fail "emulated-FUA data not in the file"
stop_nbdfs "$mnt"
echo OK
