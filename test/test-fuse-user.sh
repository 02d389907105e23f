#!/usr/bin/env bash
# FUSE mode without root (the point of it): as user "nobody", mount in
# daemon mode through the setuid fusermount3, see the file owned by that
# user, write and read it back, unmount with fusermount3 -u (the daemon
# exits); then kill -9 as that user: auto_unmount still cleans up.
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_root
requires setpriv --version
requires id nobody
requires_nbdkit_plugin memory

asuser() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"; }
# Without allow_other even root may not look inside: ask /proc/mounts.
mounted() { grep -q " $1 fuse.nbdfs " /proc/mounts; }
asuser test -x "$NBDFS" || skip "nobody cannot run $NBDFS"

chmod 711 "$tmp"
dir=$tmp/user
mkdir -p "$dir/mnt"
chown -R nobody "$dir"
sock=$dir/sock
start_nbdkit "$sock" memory 8M
chmod 666 "$sock"

asuser "$NBDFS" --pidfile "$dir/nbdfs.pid" "$sock" "$dir/mnt"
pid=$(cat "$dir/nbdfs.pid")
cleanup_fn _cleanup_nbdfs "$dir/mnt" "$pid"
mounted "$dir/mnt" || fail "not mounted"
[ "$(asuser stat -c %U "$dir/mnt/disk")" = nobody ] || fail "file not owned by the mounting user"
[ "$(ps -o user= -p "$pid")" = nobody ] || fail "daemon not running as nobody"
head -c 1M /dev/urandom > "$tmp/data"
chmod 644 "$tmp/data"
asuser dd if="$tmp/data" of="$dir/mnt/disk" bs=64k conv=notrunc,fsync status=none
[ "$(asuser md5sum "$dir/mnt/disk" | head -c 32)" = "$(cat "$tmp/data" /dev/zero | head -c 8M | md5sum | head -c 32)" ] ||
  fail "data read back as nobody"
asuser fusermount3 -u "$dir/mnt"
WAIT_SECS=20 wait_for sh -c "! kill -0 $pid" || fail "daemon did not exit after fusermount3 -u"
! mounted "$dir/mnt" || fail "still mounted"

asuser "$NBDFS" --pidfile "$dir/nbdfs.pid" "$sock" "$dir/mnt"
pid=$(cat "$dir/nbdfs.pid")
cleanup_fn _cleanup_nbdfs "$dir/mnt" "$pid"
kill -9 "$pid"
WAIT_SECS=10 wait_for sh -c "! grep -q ' $dir/mnt fuse.nbdfs ' /proc/mounts" ||
  fail "kill -9 left the mount behind"
asuser timeout 5 ls "$dir/mnt" > /dev/null || fail "mount point wedged"
echo OK
