#!/usr/bin/env bash
# nbdfs demo: the README's first command on a fresh Debian 12 machine (as
# root). Installs the dependencies, builds, serves 256 MiB of RAM with a
# local nbdkit (Unix socket), mounts it with nbdfs, puts ext4 on the file
# through a loop device, writes and reads back a file (checksum), then
# unmounts and cleans everything up. Prints each step; exits non-zero if
# any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
work=""
nbdkit_pid=""
nbdfs_pid=""
fs_mounted=0

cleanup() {
  local rc=$?
  set +e
  if [ -n "$work" ]; then
    step "Cleaning up"
    if [ "$fs_mounted" = 1 ]; then umount "$work/fs" && echo "unmounted ext4"; fi
    if mountpoint -q "$work/mnt"; then
      fusermount3 -u "$work/mnt" && echo "unmounted nbdfs"
    fi
    if [ -n "$nbdfs_pid" ]; then
      for _ in $(seq 100); do kill -0 "$nbdfs_pid" 2>/dev/null || break; sleep 0.1; done
      kill "$nbdfs_pid" 2>/dev/null
    fi
    mountpoint -q "$work/mnt" && fusermount3 -uz "$work/mnt"
    if [ -n "$nbdkit_pid" ]; then kill "$nbdkit_pid" && echo "stopped nbdkit ($nbdkit_pid)"; fi
    rm -rf "$work"
  fi
  if [ "$rc" = 0 ]; then echo; echo "demo: all steps passed"
  else echo; echo "demo: FAILED (exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "demo: run as root (apt-get, mount -o loop)" >&2; exit 1; }

step "Installing dependencies (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "Building (make)"
make -j2

work=$(mktemp -d /tmp/nbdfs-demo.XXXXXX)
mkdir "$work/mnt" "$work/fs"

step "Starting nbdkit: 256 MiB memory disk on $work/nbd.sock"
nbdkit -U "$work/nbd.sock" -P "$work/nbdkit.pid" memory 256M
for _ in $(seq 100); do [ -s "$work/nbdkit.pid" ] && [ -S "$work/nbd.sock" ] && break; sleep 0.1; done
nbdkit_pid=$(cat "$work/nbdkit.pid")
echo "nbdkit running as PID $nbdkit_pid"

step "Mounting it: ./nbdfs $work/nbd.sock $work/mnt"
./nbdfs --pidfile "$work/nbdfs.pid" "$work/nbd.sock" "$work/mnt"
nbdfs_pid=$(cat "$work/nbdfs.pid")
echo "nbdfs running in the background as PID $nbdfs_pid"
ls -l "$work/mnt"

step "Creating ext4 on $work/mnt/disk"
mkfs.ext4 -q -F "$work/mnt/disk"

step "Mounting it through a loop device on $work/fs"
mount -o loop "$work/mnt/disk" "$work/fs"
fs_mounted=1
df -h "$work/fs" | tail -1

step "Writing a 32 MiB file and its checksum"
head -c 32M /dev/urandom > "$work/fs/hello.bin"
sum=$(md5sum < "$work/fs/hello.bin")
echo "md5: $sum"

step "Unmounting, mounting again and reading it back"
umount "$work/fs"
fs_mounted=0
echo 3 > /proc/sys/vm/drop_caches
mount -o loop "$work/mnt/disk" "$work/fs"
fs_mounted=1
back=$(md5sum < "$work/fs/hello.bin")
echo "md5: $back"
[ "$sum" = "$back" ] || { echo "demo: checksum mismatch" >&2; exit 1; }
echo "checksums match"

step "Unmounting (nbdfs flushes and disconnects)"
umount "$work/fs"
fs_mounted=0
fusermount3 -u "$work/mnt"
for _ in $(seq 100); do kill -0 "$nbdfs_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$nbdfs_pid" 2>/dev/null; then echo "nbdfs did not exit" >&2; exit 1; fi
nbdfs_pid=""
echo "nbdfs exited"
