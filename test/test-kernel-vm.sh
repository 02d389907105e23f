#!/usr/bin/env bash
# Kernel mode in a real kernel: boots the Debian kernel under qemu (TCG)
# with nbd.ko loaded and runs test/vm/guest-kernel.sh there (one boot, all
# scenarios). See test/vm/run-vm.sh for the harness.
# timeout: 600
# asan: skip
source "$SRCDIR/test/functions.sh"
requires qemu-system-x86_64 --version
requires busybox true
requires cpio --version
requires nbdkit --version
ls /boot/vmlinuz-* >/dev/null 2>&1 || skip "no kernel image in /boot (linux-image-amd64)"

VM_TIMEOUT=540 bash "$SRCDIR/test/vm/run-vm.sh" "$SRCDIR/test/vm/guest-kernel.sh" \
  "$TOOLS/notify-listen"
