#!/usr/bin/env bash
# A private mount namespace made by a test (test-deb, test-fstab, the
# Debian 13 run) must not keep another test's nbdfs alive after its
# `fusermount3 -u`. unshare -m --propagation private copies the whole
# mount table; the copy of a FUSE mount pins its superblock, so the
# unmount outside never ends the FUSE connection and nbdfs waits for
# requests forever (the "did not exit within 20 s after fusermount3 -u"
# seen about once in a dozen runs of test-fuse-durability and
# test-fuse-reconnect while a test-deb ran alongside). test/private-mounts.sh
# detaches those copies inside the new namespace:
#  - inside, the FUSE mount made before is gone; outside it still works;
#  - with that namespace still alive, fusermount3 -u ends nbdfs (exit 0)
#    within 5 s (the rest of the table, /proc and /tmp, is kept).
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_root
requires command -v unshare
requires_nbdkit_plugin memory

sock=$tmp/sock
mnt=$tmp/mnt
start_nbdkit "$sock" memory 16M
start_nbdfs "$mnt" "$sock" 2> "$tmp/log"
echo hello | dd of="$mnt/disk" conv=notrunc status=none

bash "$SRCDIR/test/private-mounts.sh" sh -c '
  grep -c " $1 fuse" /proc/self/mounts > "$2/inside" || true
  test -r /proc/self/status && test -d "$2" && touch "$2/ready"
  exec sleep 60' sh "$mnt" "$tmp" &
nspid=$!
track_pid "$nspid"
wait_for test -e "$tmp/ready" || fail "the namespace did not start"
[ "$(cat "$tmp/inside")" = 0 ] ||
  fail "the FUSE mount is still there inside the private namespace"
[ "$(readlink /proc/$nspid/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] ||
  fail "not a mount namespace of its own"
_fuse_mounted "$mnt" || fail "the mount outside went away"
[ "$(head -c 5 "$mnt/disk")" = hello ] || fail "the mount outside does not work"

start=$(date +%s.%N)
stop_nbdfs "$mnt" umount
took=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")
echo "nbdfs exited $took s after fusermount3 -u, the private namespace alive"
awk "BEGIN { exit !($took < 5) }" || fail "nbdfs took $took s to exit"
kill -0 "$nspid" || fail "the namespace's process ended early"
kill_pid "$nspid"
echo OK
