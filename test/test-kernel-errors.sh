#!/usr/bin/env bash
# Kernel mode's user errors, on the host (no VM): each is one clear line
# and a non-zero exit, found before any network traffic.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires_root

# A listener that records every connection: none of these errors may be
# found only after talking to a server.
sock=$tmp/listener.sock
python3 - "$sock" "$tmp/connections" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(16)
while True:
    c, _ = s.accept()
    with open(sys.argv[2], "a") as f:
        f.write("connection\n")
    c.close()
PY
track_pid $!
wait_for test -S "$sock" || fail "listener did not start"
# The listener works: a real client is seen (so an empty log below means
# nobody connected, not a deaf listener).
"$NBDFS" --info "$sock" >/dev/null 2>&1 || true
wait_for test -s "$tmp/connections" || fail "the listener did not see a client"
: > "$tmp/connections"

for dev in foo /dev/sda nbd nbdX /dev/nbd0p1 nbd-1 /dev/nbd01; do
  expect_fail_with "'$dev' is not an nbd device name: expected /dev/nbdN or nbdN" \
    "$NBDFS" --kernel "$sock" "$dev"
  expect_fail_with "is not an nbd device name" "$NBDFS" --disconnect "$dev"
  expect_fail_with "is not an nbd device name" "$NBDFS" --status "$dev"
done
expect_fail_with "needs a device" "$NBDFS" --disconnect
expect_fail_with "--persist needs the netlink interface" \
  "$NBDFS" --kernel --persist --ioctl "$sock" /dev/nbd0
expect_fail_with "at most 16 connections" \
  "$NBDFS" --kernel -C 17 "$sock" /dev/nbd0

# Not root: says so, and points at FUSE mode.
requires setpriv --version
expect_fail_with "kernel mode needs root \(or use FUSE mode: nbdfs ADDRESS MOUNTPOINT\)" \
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$NBDFS" --kernel "$sock" /dev/nbd0

# This host has no nbd.ko (the VM test covers the real driver): every
# kernel command says to load it.
if [ ! -d /sys/module/nbd ]; then
  expect_fail_with "nbd kernel module is not loaded: run 'modprobe nbd'" \
    "$NBDFS" --kernel "$sock" /dev/nbd0
  expect_fail_with "modprobe nbd" "$NBDFS" --kernel "$sock"
  expect_fail_with "modprobe nbd" "$NBDFS" --kernel --ioctl "$sock" nbd3
  expect_fail_with "modprobe nbd" "$NBDFS" --status
  expect_fail_with "modprobe nbd" "$NBDFS" --disconnect /dev/nbd0
fi
# Nothing tried to reach a server.
# The listener accepts in order: once a last connection of ours is
# logged, any earlier one is too.
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock"
wait_for test -s "$tmp/connections" || fail "the last connection was not seen"
n=$(wc -l < "$tmp/connections")
[ "$n" = 1 ] || fail "$((n - 1)) connection(s) reached the server"
# With nbd.ko loaded the "modprobe nbd" part above could not run: a skip
# (a failure under CI=true), not a pass.
[ ! -d /sys/module/nbd ] ||
  skip "nbd.ko is loaded on this host: the 'modprobe nbd' messages were not checked"
