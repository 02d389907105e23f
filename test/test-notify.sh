#!/usr/bin/env bash
# Readiness under systemd (sd_notify), FUSE mode: nbdfs started with
# NOTIFY_SOCKET pointing at a datagram socket of test/tools/notify-listen
# (which plays systemd's part):
#  - it stays in the foreground without -f (systemd watches the PID);
#  - READY=1 is sent once, and when it arrives the mount already works
#    (the listener reads the file before taking the next message);
#  - nbdkit killed: a STATUS= saying the connection is lost and being
#    re-opened; nbdkit back: a STATUS= saying it is re-established;
#  - the unmount: STOPPING=1, then nbdfs exits 0;
#  - in that order. Kernel mode's readiness runs in the VM
#    (test/vm/guest-kernel.sh, t_notify).
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin file
requires_nbdkit_filter delay

sock=$tmp/sock
mnt=$tmp/mnt
nlog=$tmp/notify.log
mkdir -p "$mnt"
truncate -s 8M "$tmp/backing"
printf 'hello, systemd' | dd of="$tmp/backing" conv=notrunc status=none
# Opening takes 500 ms, so a READY=1 sent before the mount exists is
# caught by the listener's check.
start_nbdkit "$sock" --filter=delay file "$tmp/backing" delay-open=500ms

"$TOOLS/notify-listen" "$tmp/notify" "$nlog" \
  "grep -q ' $mnt fuse' /proc/mounts && head -c 14 $mnt/disk | grep -q 'hello, systemd'" &
listener=$!
cleanup_fn kill_pid "$listener"
wait_for test -S "$tmp/notify" || fail "listener socket"

NOTIFY_SOCKET=$tmp/notify "$NBDFS" -R 30 "$sock" "$mnt" &
nbdfs_pid=$!
cleanup_fn _cleanup_nbdfs "$mnt" "$nbdfs_pid"
wait_for grep -q 'ready-check' "$nlog" || { cat "$nlog"; fail "no READY=1"; }
cat "$nlog"
grep -q 'ready-check rc=0' "$nlog" || fail "READY=1 came before the mount worked"
grep -q "READY=1|STATUS=mounted .* on $mnt" "$nlog" || fail "READY=1 without STATUS"
kill -0 "$nbdfs_pid" || fail "nbdfs forked away under NOTIFY_SOCKET"

# The server goes away and comes back.
kill -9 "$nbdkit_pid"
wait_for grep -q 'STATUS=.*lost; reconnecting' "$nlog" ||
  { cat "$nlog"; fail "no STATUS= for the lost connection"; }
rm -f "$sock"
start_nbdkit "$sock" file "$tmp/backing"
head -c 14 "$mnt/disk" | grep -q 'hello, systemd'
wait_for grep -q 'STATUS=.*re-established' "$nlog" ||
  { cat "$nlog"; fail "no STATUS= for the reconnection"; }

# Unmount: STOPPING=1, exit 0.
fusermount3 -u "$mnt"
rc=0; wait "$nbdfs_pid" || rc=$?
[ "$rc" = 0 ] || fail "nbdfs exited $rc"
cat "$nlog"
grep -q 'STOPPING=1' "$nlog" || fail "no STOPPING=1"

# The order, and READY=1 once.
[ "$(grep -c 'READY=1' "$nlog")" = 1 ] || fail "READY=1 more than once"
line() { grep -n "$1" "$nlog" | head -1 | cut -d: -f1; }
r=$(line 'READY=1'); l=$(line 'lost; reconnecting'); e=$(line 're-established')
s=$(line 'STOPPING=1')
[ "$r" -lt "$l" ] && [ "$l" -lt "$e" ] && [ "$e" -lt "$s" ] ||
  fail "order: READY $r, lost $l, re-established $e, STOPPING $s"
head -n $((r - 1)) "$nlog" | grep -q 'STOPPING' && fail "STOPPING before READY"
echo OK
