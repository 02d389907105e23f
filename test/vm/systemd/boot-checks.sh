#!/bin/bash
# Inside the VM, run by vmtest.service after boot: the results of the
# units systemd started from /etc/nbdtab and /etc/fstab, then stopping
# them. Every check prints "VMTEST-CHECK: ok|FAIL what"; the last line is
# "VMTEST-DONE N failed". Then power off.
n=0
check() {  # check WHAT CMD...
  local what=$1; shift
  if "$@" >/tmp/check.out 2>&1; then echo "VMTEST-CHECK: ok $what"
  else echo "VMTEST-CHECK: FAIL $what"; sed 's/^/    /' /tmp/check.out; n=$((n + 1)); fi
}
echo "VMTEST-BOOTED $(cut -d' ' -f1 /proc/uptime)"
systemctl --no-pager status nbdfs@nbd0.service mnt-nbd.mount 2>&1 | head -30
check "nbdfs@nbd0 active" systemctl is-active nbdfs@nbd0.service
check "its status line (sd_notify STATUS=) names the device" sh -c \
  "systemctl show -p StatusText nbdfs@nbd0.service | grep -q 'StatusText=.*/dev/nbd0'"
check "main process stays (persist)" sh -c \
  "[ \$(systemctl show -p MainPID --value nbdfs@nbd0.service) -gt 0 ]"
check "/dev/nbd0 attached with 2 connections" sh -c \
  "nbdfs --status nbd0 | grep -q '67108864 bytes, 2 connections, netlink, persist'"
check "fstab line mounted at boot" sh -c "grep -q ' /mnt/nbd fuse.nbdfs ' /proc/mounts"
check "mounted read-only (ro)" sh -c "grep ' /mnt/nbd fuse.nbdfs ' /proc/mounts | grep -q ' ro,'"
check "file named by name=" test -f /mnt/nbd/boot.img
head -c 1048576 /dev/urandom > /tmp/data
check "write through /dev/nbd0" dd if=/tmp/data of=/dev/nbd0 bs=1M seek=3 oflag=direct conv=fsync status=none
check "read back through the FUSE file" cmp /tmp/data <(dd if=/mnt/nbd/boot.img bs=1M skip=3 count=1 iflag=direct status=none)
check "systemctl stop nbdfs@nbd0" systemctl stop nbdfs@nbd0.service
check "/dev/nbd0 detached" sh -c "[ ! -e /sys/block/nbd0/pid ]"
check "umount /mnt/nbd" umount /mnt/nbd
check "the FUSE nbdfs exited" sh -c "for i in \$(seq 50); do grep -qx nbdfs /proc/[0-9]*/comm 2>/dev/null || exit 0; sleep 0.2; done; exit 1"
check "both disconnected on the server" sh -c "[ \$(grep -c ' Disconnect ' /run/nbdkit.log) -ge 3 ]"
journalctl -b --no-pager -u nbdkit-test.service -u nbdfs@nbd0.service -u mnt-nbd.mount 2>&1 | tail -40
echo "VMTEST-DONE $n failed"
systemctl poweroff --no-block
