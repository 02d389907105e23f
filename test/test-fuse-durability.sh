#!/usr/bin/env bash
# Durability across a lost connection, through a FUSE mount (issue 8).
# hostile-server.py die-at-flush acknowledges WRITEs into a volatile cache
# and closes the connection at the first FLUSH (a crash: the cache is
# gone); it accepts the reconnect and behaves from then on, so a FLUSH
# resent on the new connection would succeed without covering anything.
# Checked with the kernel's writeback-error (errseq) semantics:
#  - fd1 wrote, fd2 was open (never wrote): fsync(fd1) EIO, then OK;
#    fdatasync(fd2) EIO once, then OK; fd3 opened after the error: fsync OK;
#    every close OK (each description was told once);
#  - the data is really gone (O_DIRECT read-back: zeroes), so the EIO was
#    not spurious; the log says how much was at risk (1 write, 4096 bytes);
#  - the server checked every request (hostile-server.py: no VIOLATION);
#  - nbdfs unmounts with status 0 (every open description was told).
# Then an O_DSYNC write against a fresh server of the same kind (no
# NBD_FLAG_SEND_FUA: nbdfs emulates FUA with a flush, which kills the
# connection): the write itself fails with EIO; it must never succeed.
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_fuse
requires python3 --version

sock=$tmp/sock
mnt=$tmp/mnt
python3 "$SRCDIR/test/hostile-server.py" "$sock" die-at-flush \
  2> "$tmp/server.err" &
spid=$!
cleanup_fn kill_pid "$spid"
wait_for test -S "$sock" || fail "the server did not start"
start_nbdfs "$mnt" "$sock" --reconnect 10 --timeout 10 2> "$tmp/log"

timeout 40 python3 - "$mnt/disk" > "$tmp/out" <<'PY'
import errno, mmap, os, sys

def attempt(what, fn):
    try:
        fn()
        print(what, "OK")
    except OSError as e:
        print(what, errno.errorcode.get(e.errno, e.errno))

path = sys.argv[1]
fd1 = os.open(path, os.O_RDWR)
fd2 = os.open(path, os.O_RDWR)
os.pwrite(fd1, b"D" * 4096, 8192)
attempt("fsync1", lambda: os.fsync(fd1))
attempt("fsync1-again", lambda: os.fsync(fd1))
attempt("fdatasync2", lambda: os.fdatasync(fd2))
attempt("fsync2-again", lambda: os.fsync(fd2))
fd3 = os.open(path, os.O_RDWR)
attempt("fsync3", lambda: os.fsync(fd3))
# Past the page cache: what the server has now.
fd4 = os.open(path, os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd4, [m], 8192)
data = bytes(m)
print("readback", "zeroes" if data == bytes(4096)
      else "written" if data == b"D" * 4096 else "other")
os.close(fd4)
attempt("close1", lambda: os.close(fd1))
attempt("close2", lambda: os.close(fd2))
attempt("close3", lambda: os.close(fd3))
PY
cat "$tmp/out"
expected="fsync1 EIO
fsync1-again OK
fdatasync2 EIO
fsync2-again OK
fsync3 OK
readback zeroes
close1 OK
close2 OK
close3 OK"
[ "$(cat "$tmp/out")" = "$expected" ] || fail "errno sequence differs (want:
$expected)"
stop_nbdfs "$mnt" umount
cat "$tmp/log"
grep -q 'connection 1 died with 1 acknowledged write(s) (4096 bytes) not yet flushed' \
  "$tmp/log" || fail "no line saying how much was at risk"
grep -q 're-established' "$tmp/log" || fail "no reconnect"
cat "$tmp/server.err"
! grep -q VIOLATION "$tmp/server.err" ||
  fail "nbdfs sent a request the spec forbids"

# ---- O_DSYNC (FUA emulated with a flush) ----
sock2=$tmp/sock2
python3 "$SRCDIR/test/hostile-server.py" "$sock2" die-at-flush \
  2> "$tmp/server2.err" &
spid2=$!
cleanup_fn kill_pid "$spid2"
wait_for test -S "$sock2" || fail "the second server did not start"
start_nbdfs "$mnt" "$sock2" --reconnect 10 --timeout 10 2> "$tmp/log2"
out=$(pyio errno 'import os
fd = os.open("'"$mnt"'/disk", os.O_WRONLY | os.O_DSYNC)
os.pwrite(fd, b"S" * 4096, 0)')
echo "O_DSYNC write, server dies at its flush: $out"
[ "$out" = EIO ] || fail "O_DSYNC write: want EIO, got $out"
stop_nbdfs "$mnt" umount
cat "$tmp/log2" "$tmp/server2.err"
! grep -q VIOLATION "$tmp/server2.err" ||
  fail "nbdfs sent a request the spec forbids"
echo OK
