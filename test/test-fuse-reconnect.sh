#!/usr/bin/env bash
# FUSE mode when the server goes away (README "When the server goes away"):
# 1. nbdkit (file plugin, so the data outlives it) is killed -9 and
#    restarted on the same socket while a writer (pwrite 1 MiB at a time,
#    then fsync) runs through the mount: no write fails; the fsync reports
#    EIO once (writes acknowledged before the kill were never flushed by
#    the server that acknowledged them: nbdfs cannot know they survived,
#    and says how many were at risk), the next fsync succeeds, and after
#    the unmount the server's file holds exactly what it wrote (md5: the
#    file plugin's writes were in the host's page cache all along).
# 2. The server stays away longer than --reconnect: a read fails with EIO
#    (no hang), `ls` still answers, a write+fsync fails with EIO; the
#    server comes back and I/O works again; it goes away again and SIGTERM
#    exits within 15 s with status 1, saying the final flush failed (a
#    write was acknowledged and never flushed: still, nbdkit had it).
# 3. The server is killed while a read waits in the reconnect window and
#    nbdfs gets SIGTERM: the wait is cut short (5 s), the reader gets an
#    error (EIO, or ECONNABORTED once the kernel dropped the mount),
#    nbdfs exits within 15 s.
# 4. A server that accepts and never answers (nbdkit delay filter, reads
#    delayed 1000 s): the read fails with EIO after --timeout, the
#    connection is re-opened, writes go on, fusermount3 -u exits 0.
# 5. A SIGSTOPped server (even the reconnect handshake hangs): the read
#    fails with EIO after --timeout, fusermount3 -u exits 0 within 15 s.
# 6. SIGTERM while a silent server owes a read, default --timeout (120 s):
#    nbdfs gives up on it after 10 s and exits within 15 s.
# Waits are on events (log lines, a FIFO, a process blocked in a FUSE
# request), not sleeps. The scenarios' own bounds add up to about 150 s
# (1: 30 s for the writer; 2: 10 s --timeout + 10 s for the server to be
# used again + 15 s exit; 3: 15 + 10 s; 4: 30 s; 5: 15 s; 6: 15 + 10 s),
# within the budget below.
# timeout: 180
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin file
requires_nbdkit_filter delay

# Kernel mode has its own reconnect (--persist): --reconnect is refused.
expect_fail_with 'reconnect is for FUSE mode.*--persist' \
  "$NBDFS" --kernel --reconnect 5 /nonexistent.sock /dev/nbd0

mnt=$tmp/mnt
sock=$tmp/sock
img=$tmp/disk.img
truncate -s 64M "$img"
head -c 24M /dev/urandom > "$tmp/src"

# kill9_nbdkit: kill -9 the server, wait for it, remove its stale socket.
kill9_nbdkit() {
  kill -9 "$nbdkit_pid"
  wait "$nbdkit_pid" 2>/dev/null || true     # our child: reaped, so gone
  rm -f "$sock"
}

# wait_exit_within SECS PID: wait for our child PID to exit; sets $rc.
wait_exit_within() {
  local i
  for (( i=0; i < $1*10; i++ )); do
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$2" 2>/dev/null; then
    dump_stacks "$2"
    [ "$2" != "$nbdfs_pid" ] || _mount_holders "$mnt"
    fail "process $2 still running after $1 s"
  fi
  rc=0
  wait "$2" || rc=$?
}
# nbdfs_exits_within SECS: the same for nbdfs.
nbdfs_exits_within() { wait_exit_within "$1" "$nbdfs_pid"; }

# blocked_in_fuse PID: PID's main thread sleeps in the kernel inside a FUSE
# request (its wchan), i.e. it issued a request nbdfs has not answered.
blocked_in_fuse() {
  grep -qE '^(fuse_|request_wait_answer)' "/proc/$1/wchan" 2>/dev/null
}

# reader_waiting FILE: the reader that wrote its PID to FILE is waiting in
# a FUSE request.
reader_waiting() { [ -s "$1" ] && blocked_in_fuse "$(cat "$1")"; }

# ---- 1. restart within the window, writer running ----
# Synchronised on events: the writer writes 8 MiB, then waits on a FIFO;
# the test kills the server, waits for nbdfs to log the loss, releases the
# writer, waits until the writer sits in a FUSE request (so a write was
# issued while the server was down), and only then restarts the server.
# Every write must succeed; the fsync at the end reports EIO once (the 8
# MiB written before the kill were acknowledged, never flushed), the next
# one succeeds.
start_nbdkit "$sock" file "$img"
start_nbdfs "$mnt" "$sock" --reconnect 20 --timeout 10 2> "$tmp/log1"
mkfifo "$tmp/go1"
python3 - "$tmp/src" "$mnt/disk" "$tmp/mid1" "$tmp/go1" <<'PY' > "$tmp/w1" 2>&1 &
import os, sys
src = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY)
for i in range(24):
    if i == 8:
        open(sys.argv[3], "w").close()
        open(sys.argv[4]).read()          # until the test says go
    os.pwrite(fd, src[i << 20:(i + 1) << 20], i << 20)
try:
    os.fsync(fd)
    print("fsync ok")
except OSError as e:
    print("fsync " + os.strerror(e.errno))
os.fsync(fd)
os.close(fd)
print("written")
PY
wpid=$!
track_pid "$wpid"
wait_for test -e "$tmp/mid1" || fail "the writer did not start"
t_kill=$(date +%s.%N)
kill9_nbdkit
wait_for grep -q 'lost; reconnecting for up to 20 s' "$tmp/log1" ||
  fail "nbdfs did not notice the server going"
echo go > "$tmp/go1"
wait_for blocked_in_fuse "$wpid" ||
  fail "the writer is not waiting in a FUSE request with the server down"
start_nbdkit "$sock" file "$img"
t_up=$(date +%s.%N)
wait_exit_within 30 "$wpid"
wrc=$rc
cat "$tmp/w1"
[ "$wrc" = 0 ] || fail "the writer failed across a server restart (exit $wrc)"
grep -qx written "$tmp/w1" || fail "the writer did not finish"
grep -qx "fsync Input/output error" "$tmp/w1" ||
  fail "the first fsync after the kill did not report EIO"
ls "$mnt" | grep -qx disk || fail "ls of the mount"
stop_nbdfs "$mnt" umount
cat "$tmp/log1"
grep -q 'reconnecting for up to 20 s' "$tmp/log1" || fail "no reconnect line"
grep -q 're-established after' "$tmp/log1" || fail "no re-established line"
grep -q 'died with [0-9]* acknowledged write(s) ([0-9]* bytes) not yet flushed' \
  "$tmp/log1" || fail "no line saying how much was at risk"
grep 're-established after' "$tmp/log1" | sed 's/.*after \([0-9.]*\) s.*/\1/' \
  > "$tmp/pause"
echo "server down for $(awk "BEGIN { printf \"%.1f\", $t_up - $t_kill }") s; I/O paused for" \
  "(s, per connection): $(tr '\n' ' ' < "$tmp/pause")"
[ "$(md5 "$img" 24M)" = "$(md5 "$tmp/src")" ] ||
  fail "the server's file differs from what was written"
kill_pid "$nbdkit_pid"

# ---- 2. server away longer than the window ----
rm -f "$sock"
start_nbdkit "$sock" file "$img"
start_nbdfs "$mnt" "$sock" -C 1 --reconnect 2 --timeout 10 2> "$tmp/log2"
# Acknowledged but not flushed (close() would flush: keep the file open):
# the final flush has to fail.
python3 - "$mnt/disk" "$tmp/written" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"unflushed", 0)
open(sys.argv[2], "w").write("ok\n")
time.sleep(60)
PY
hpid=$!
track_pid "$hpid"
wait_for test -s "$tmp/written" || fail "write before the kill"
kill9_nbdkit
start=$(date +%s)
out=$(pyio errno 'import os
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
import mmap
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 1048576)')
echo "read with the server gone: $out (after $(( $(date +%s) - start )) s)"
[ "$out" = EIO ] || fail "expected EIO with the server gone, got $out"
ls "$mnt" | grep -qx disk || fail "ls of the mount with the server gone"
# Later I/O fails at once.
out=$(pyio errno 'import os
fd = os.open("'"$mnt"'/disk", os.O_WRONLY)
os.pwrite(fd, b"x", 4096); os.fsync(fd)')
[ "$out" = EIO ] || fail "expected EIO for a write, got $out"
# The server comes back: the next failing request starts an attempt, and
# I/O works again.
start_nbdkit "$sock" file "$img"
read_ok() {
  [ "$(pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 1048576)')" = OK ]
}
WAIT_SECS=10 wait_for read_ok || fail "I/O did not come back with the server"
grep -q 'the server is back' "$tmp/log2" || fail "no 'server is back' line"
# Gone again, with the write above still not flushed (the fsync that
# would have flushed it failed).
kill9_nbdkit
kill -TERM "$nbdfs_pid"
nbdfs_exits_within 15
cat "$tmp/log2"
[ "$rc" = 1 ] || fail "expected status 1 after a failed final flush, got $rc"
grep -q 'could not reconnect' "$tmp/log2" || fail "no give-up line"
grep -q 'the final flush failed' "$tmp/log2" || fail "no final flush line"
! _fuse_mounted "$mnt" || fail "still mounted"
kill -9 "$hpid"
# nbdkit's file plugin had written it to the file before acknowledging.
[ "$(head -c 9 "$img")" = unflushed ] || fail "acknowledged write lost"

# ---- 3. SIGTERM while a read waits for the server (window 60 s) ----
start_nbdkit "$sock" file "$img"
start_nbdfs "$mnt" "$sock" -C 1 --reconnect 60 2> "$tmp/log3"
kill9_nbdkit
( pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
open("'"$tmp"'/opened3", "w").write(str(os.getpid()))
os.preadv(fd, [m], 2097152)' > "$tmp/reader3" ) &
rpid=$!
track_pid "$rpid"
wait_for reader_waiting "$tmp/opened3" || fail "the read did not wait for the server"
kill -TERM "$nbdfs_pid"
nbdfs_exits_within 15
wait_exit_within 10 "$rpid"
cat "$tmp/log3" "$tmp/reader3"
grep -qE '^(EIO|ENOTCONN|ECONNABORTED)$' "$tmp/reader3" || fail "the reader saw no error"
grep -q 'waiting at most 5 s for the server' "$tmp/log3" ||
  fail "no shutdown grace line"
! _fuse_mounted "$mnt" || fail "still mounted"

# ---- 4. a server that never answers reads ----
start_nbdkit "$sock" --filter=delay file "$img" delay-read=1000
start_nbdfs "$mnt" "$sock" -C 1 --reconnect 10 --timeout 3 2> "$tmp/log4"
start=$(date +%s)
out=$(pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 4194304)')
took=$(( $(date +%s) - start ))
echo "read from a silent server: $out after $took s"
[ "$out" = EIO ] || fail "expected EIO from a silent server, got $out"
[ "$took" -lt 30 ] || fail "EIO took $took s with --timeout 3"
ls "$mnt" | grep -qx disk || fail "ls of the mount"
wait_for grep -q 're-established' "$tmp/log4" || fail "no reconnect"
# Writes are not delayed: they work on the new connection.
head -c 1M /dev/urandom > "$tmp/src4"
dd if="$tmp/src4" of="$mnt/disk" bs=1M seek=8 conv=fsync,notrunc
stop_nbdfs "$mnt" umount
cat "$tmp/log4"
grep -q 'no data from the server for 3 s' "$tmp/log4" || fail "no timeout line"
[ "$(python3 -c 'import sys; f=open(sys.argv[1],"rb"); f.seek(8<<20); sys.stdout.buffer.write(f.read(1<<20))' "$img" | md5sum | cut -d' ' -f1)" \
  = "$(md5 "$tmp/src4")" ] || fail "write after the timeout not on the server"
kill_pid "$nbdkit_pid"

# ---- 5. a stopped server (SIGSTOP): accepts in the kernel, never answers,
# not even the handshake of a reconnect ----
rm -f "$sock"
start_nbdkit "$sock" file "$img"
start_nbdfs "$mnt" "$sock" -C 1 --reconnect 30 --timeout 2 2> "$tmp/log5"
kill -STOP "$nbdkit_pid"
cleanup_fn kill -CONT "$nbdkit_pid"
out=$(pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 4194304)')
[ "$out" = EIO ] || fail "expected EIO from a stopped server, got $out"
ls "$mnt" | grep -qx disk || fail "ls of the mount"
start=$(date +%s)
fusermount3 -u "$mnt"
nbdfs_exits_within 15
echo "unmount with a stopped server took $(( $(date +%s) - start )) s"
cat "$tmp/log5"
[ "$rc" = 0 ] || fail "nbdfs exited $rc (nothing was left to flush)"
grep -q 'no data from the server for 2 s' "$tmp/log5" || fail "no timeout line"
kill -CONT "$nbdkit_pid"
kill_pid "$nbdkit_pid"

# ---- 6. SIGTERM while a silent server owes a read, default --timeout
# (120 s): shutdown gives up on it after 10 s ----
rm -f "$sock"
start_nbdkit "$sock" --filter=delay file "$img" delay-read=1000
start_nbdfs "$mnt" "$sock" -C 1 2> "$tmp/log6"
( pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
open("'"$tmp"'/opened6", "w").write(str(os.getpid()))
os.preadv(fd, [m], 4194304)' > "$tmp/reader6" ) &
rpid=$!
track_pid "$rpid"
wait_for reader_waiting "$tmp/opened6" || fail "the read did not wait for the silent server"
start=$(date +%s)
kill -TERM "$nbdfs_pid"
nbdfs_exits_within 15
echo "SIGTERM with a read owed took $(( $(date +%s) - start )) s"
wait_exit_within 10 "$rpid"
cat "$tmp/log6" "$tmp/reader6"
grep -qE '^(EIO|ENOTCONN|ECONNABORTED)$' "$tmp/reader6" ||
  fail "the reader saw no error"
grep -q 'requests unanswered after 10 s; giving up' "$tmp/log6" ||
  fail "no give-up line"
! _fuse_mounted "$mnt" || fail "still mounted"
echo OK
