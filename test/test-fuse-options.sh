#!/usr/bin/env bash
# FUSE-mode options and claims of the README with no other test:
# -o allow_other (another user may read; without it, EACCES), chown kept in
# memory, --reconnect 0 (a lost server fails I/O at once, no reconnect
# attempt), --timeout 0 (never declares a slow server dead, where
# --timeout 1 does), and the reaper of a non-root mount exiting cleanly
# (status 0, without running fusermount3) after a clean unmount.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_root
requires setpriv --version
requires_nbdkit_filter delay
requires_nbdkit_plugin file
asuser() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"; }

chmod 711 "$tmp"
mnt=$tmp/mnt
sock=$tmp/sock
img=$tmp/disk.img
head -c 8M /dev/urandom > "$img"
start_nbdkit "$sock" file "$img"

# ---- -o allow_other ----
start_nbdfs "$mnt" "$sock"
out=$(asuser head -c 4096 "$mnt/disk" 2>&1 >/dev/null) && fail "nobody read a mount without allow_other"
grep -q 'Permission denied' <<<"$out" || fail "without allow_other: $out"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "$sock" -o allow_other
[ "$(asuser head -c 1M "$mnt/disk" | md5sum | cut -d' ' -f1)" = "$(md5 "$img" 1048576)" ] ||
  fail "allow_other: nobody cannot read the file"
# ---- chown: kept in memory, like chmod ----
chown 1234:5678 "$mnt/disk"
[ "$(stat -c %u:%g "$mnt/disk")" = 1234:5678 ] || fail "chown: $(stat -c %u:%g "$mnt/disk")"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "$sock"
[ "$(stat -c %u:%g "$mnt/disk")" = 0:0 ] || fail "chown outlived the mount"
stop_nbdfs "$mnt"

# ---- --reconnect 0: a server that goes away fails I/O at once ----
start_nbdfs "$mnt" "$sock" -C 1 --reconnect 0 2> "$tmp/log-r0"
head -c 4096 "$mnt/disk" > /dev/null
kill -9 "$nbdkit_pid"
wait "$nbdkit_pid" 2>/dev/null || true
start=$(date +%s.%N)
out=$(pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 1048576)')
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "read with the server gone, --reconnect 0: $out after $took s"
[ "$out" = EIO ] || fail "--reconnect 0: expected EIO, got $out"
awk -v t="$took" 'BEGIN { exit !(t < 2) }' || fail "--reconnect 0: EIO took $took s"
stop_nbdfs "$mnt"
cat "$tmp/log-r0"
! grep -q 'reconnecting for up to' "$tmp/log-r0" || fail "--reconnect 0 tried to reconnect"
rm -f "$sock"

# ---- --timeout 0: never; --timeout 1: a 3 s read is a dead server ----
start_nbdkit "$sock" --filter=delay file "$img" rdelay=3
read_1m() {
  pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 1048576)'
}
start_nbdfs "$mnt" "$sock" -C 1 --timeout 1 --reconnect 0
out=$(read_1m)
[ "$out" = EIO ] || fail "--timeout 1 with a 3 s read: expected EIO, got $out"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "$sock" -C 1 --timeout 0 --reconnect 0
out=$(read_1m)
[ "$out" = OK ] || fail "--timeout 0 with a 3 s read: expected OK, got $out"
stop_nbdfs "$mnt"
kill_pid "$nbdkit_pid"
rm -f "$sock"

# ---- the reaper of a non-root mount, after a clean unmount ----
# nbdfs runs as nobody under a python that is a child subreaper, so the
# reaper, orphaned when nbdfs exits, is reaped by it: its name (nbdfs:
# still the fork, not fusermount3) and exit status are printed.
start_nbdkit "$sock" file "$img"
chmod 666 "$sock"
udir=$tmp/user
mkdir -p "$udir/mnt"
chown -R nobody "$udir"
python3 - "$tmp/reaped" setpriv --reuid=nobody --regid="$(id -g nobody)" \
  --clear-groups "$NBDFS" -f "$sock" "$udir/mnt" <<'PY' &
import ctypes, os, sys
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
out = open(sys.argv[1], "w")
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
while True:
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        break
    try:
        comm = open("/proc/%d/comm" % info.si_pid).read().strip()
    except OSError:
        comm = "?"
    os.waitpid(info.si_pid, 0)
    out.write("%s %s %s %d\n" % ("nbdfs" if info.si_pid == pid else "other",
                                 comm, info.si_code, info.si_status))
    out.flush()
PY
wrapper=$!
track_pid "$wrapper"
track_mount "$udir/mnt"
wait_for grep -q " $udir/mnt fuse" /proc/mounts || fail "nobody's mount did not appear"
# The reaper is there while mounted: a child of nbdfs that is nbdfs.
npid=$(pgrep -P "$wrapper" | head -1)
reaper=$(ps -o pid=,comm= --ppid "$npid" | awk '$2 == "nbdfs" { print $1 }')
[ -n "$reaper" ] || fail "no reaper process under nbdfs ($npid): $(ps -o pid=,comm= --ppid "$npid")"
asuser fusermount3 -u "$udir/mnt"
for (( i=0; i<100; i++ )); do kill -0 "$wrapper" 2>/dev/null || break; sleep 0.1; done
kill -0 "$wrapper" 2>/dev/null && fail "nbdfs or its reaper still running 10 s after the unmount: $(cat "$tmp/reaped")"
cat "$tmp/reaped"
grep -qx 'nbdfs nbdfs 1 0' "$tmp/reaped" || fail "nbdfs did not exit 0"
# The reaper: exited (CLD_EXITED = 1) with 0 as the fork (had it run
# fusermount3 -u -z, its name would be fusermount3, not nbdfs). (The other
# fusermount3 reaped here is libfuse's auto_unmount helper.)
[ "$(grep -c '^other nbdfs ' "$tmp/reaped")" = 1 ] || fail "expected one reaper: $(cat "$tmp/reaped")"
grep -qx 'other nbdfs 1 0' "$tmp/reaped" || fail "the reaper did not exit cleanly: $(cat "$tmp/reaped")"
echo OK
