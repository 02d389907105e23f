#!/usr/bin/env bash
# Kernel mode's user errors, on the host (no VM): each is one clear line
# and a non-zero exit, found before any network traffic.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires_root

sock=$tmp/no-server.sock     # never listened on: nothing may connect

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
if command -v setpriv >/dev/null; then
  expect_fail_with "kernel mode needs root \(or use FUSE mode: nbdfs ADDRESS MOUNTPOINT\)" \
    setpriv --reuid=65534 --regid=65534 --clear-groups \
      "$NBDFS" --kernel "$sock" /dev/nbd0
fi

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
test ! -e "$sock"
