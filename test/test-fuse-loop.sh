#!/usr/bin/env bash
# End to end through a loop device, against qemu-nbd serving a qcow2
# image: mkfs.ext4 on the nbdfs file, mount -o loop, copy a tree in,
# unmount, re-mount through losetup --direct-io=on (O_DIRECT from the
# loop driver), verify every checksum, add files, then unmount nbdfs,
# mount it again and e2fsck the file system. Then qemu-img as a user of
# the file: convert a sparse raw image onto it (holes must become zeroes
# over old data: fallocate/write zeroes) and from it to qcow2 (SEEK_DATA).
# timeout: 120
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_root
requires qemu-img --version
requires qemu-nbd --version
requires mkfs.ext4 -V
requires e2fsck -V
requires losetup --version
requires losetup -f

sock=$tmp/qemu.sock
mnt=$tmp/mnt
fsdir=$tmp/fs
mkdir -p "$fsdir"
qemu-img create -q -f qcow2 "$tmp/disk.qcow2" 256M
start_qemu_nbd "$sock" -t --shared=8 -f qcow2 -x vm --cache=writeback "$tmp/disk.qcow2"
start_nbdfs "$mnt" "$sock:vm"
f=$mnt/vm
[ "$(stat -c %s "$f")" = $((256 * 1024 * 1024)) ] || fail "size"

mkfs.ext4 -q -F -E nodiscard "$f"
track_mount "$fsdir"
mount -o loop "$f" "$fsdir"
cleanup_fn umount_if_mounted "$fsdir"
mkdir "$fsdir/tree"
cp -a "$SRCDIR/nbdclient" "$SRCDIR/fuse" "$SRCDIR/test" "$fsdir/tree/"
head -c 20M /dev/urandom > "$fsdir/tree/big"
dd if=/dev/urandom of="$fsdir/tree/sparse" bs=1M count=1 seek=30 status=none
(cd "$fsdir" && find tree -type f -print0 | sort -z | xargs -0 md5sum) > "$tmp/sums"
umount "$fsdir"

dev=$(losetup -f --show --direct-io=on "$f")
track_loop "$dev"
# At exit, detach only if the number still names our file: the explicit
# losetup -d below frees it for anyone.
cleanup_fn detach_loop "$dev" "$f"
# The loop driver silently falls back to buffered I/O when the file's
# O_DIRECT open or its block size does not suit it: then the O_DIRECT path
# this part is about would not be tested at all.
[ "$(cat /sys/block/${dev#/dev/}/loop/dio)" = 1 ] ||
  fail "the loop driver fell back to buffered I/O (dio=0) on the nbdfs file"
mount "$dev" "$fsdir"
(cd "$fsdir" && md5sum --quiet -c "$tmp/sums") || fail "checksums after re-mount"
head -c 8M /dev/urandom > "$fsdir/tree/more"
md5sum < "$fsdir/tree/more" > "$tmp/more.sum"
umount "$fsdir"
losetup -d "$dev"
stop_nbdfs "$mnt"

# Everything reached the server: a new nbdfs mount sees a clean fs.
start_nbdfs "$mnt" "$sock:vm"
e2fsck -fn "$f"
mount -o loop,ro "$f" "$fsdir"
(cd "$fsdir" && md5sum --quiet -c "$tmp/sums") || fail "checksums on a new mount"
[ "$(md5sum < "$fsdir/tree/more")" = "$(cat "$tmp/more.sum")" ] || fail "added file"
umount "$fsdir"
stop_nbdfs "$mnt"

# qemu-img onto and from the file.
msock=$tmp/mem.sock
start_nbdkit "$msock" memory 64M
start_nbdfs "$mnt" "$msock"
head -c 64M /dev/urandom > "$mnt/disk"                 # old data everywhere
truncate -s 64M "$tmp/src.raw"
dd if=/dev/urandom of="$tmp/src.raw" bs=64k count=3 seek=5 conv=notrunc status=none
dd if=/dev/urandom of="$tmp/src.raw" bs=1M count=2 seek=40 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$tmp/src.raw" "$mnt/disk"
qemu-img compare -f raw -F raw "$tmp/src.raw" "$mnt/disk" || fail "qemu-img convert onto the file"
cmp "$tmp/src.raw" <(dd if="$mnt/disk" iflag=direct bs=1M status=none) || fail "server data"
# SEEK_DATA/SEEK_HOLE on the file agree with the server's map, which must
# show the three zeroed ranges as holes (qemu-img and cp detect zeroes by
# themselves, so only lseek itself can show a SEEK_DATA that says "all
# data").
requires nbdinfo --version
MIN_HOLES=3 check_seek "$mnt/disk" "nbd+unix:///?socket=$msock"
qemu-img convert -f raw -O qcow2 "$mnt/disk" "$tmp/out.qcow2"
qemu-img compare -f raw -F qcow2 "$tmp/src.raw" "$tmp/out.qcow2" || fail "qemu-img convert from the file"
# The zeroed ranges were deallocated on the server (punch = write zeroes
# that may trim) and left out of the qcow2, which holds ~2.2 MiB.
[ "$(stat -c %s "$tmp/out.qcow2")" -lt $((8 * 1024 * 1024)) ] ||
  fail "qcow2 from the file is not sparse: $(stat -c %s "$tmp/out.qcow2") bytes"
stop_nbdfs "$mnt"
echo OK
