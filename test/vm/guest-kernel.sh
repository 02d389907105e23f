# Guest side of test/test-kernel-vm.sh: kernel-mode scenarios against the
# real nbd.ko, servers on guest loopback / Unix sockets. busybox ash.
. /test/guest-lib.sh

# The harness itself: nbd.ko loaded, a server starts, devices exist.
t_harness() {
  test -d /sys/module/nbd
  test -b /dev/nbd0
  start_nbdkit "$tmp/sock" memory 16M
  kill -0 "$nbdkit_pid"
}

vm_run harness t_harness 60
vm_finish
