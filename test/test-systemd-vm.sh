#!/usr/bin/env bash
# The units under a real systemd: boots Debian's kernel in the TCG VM with
# a Debian userland (debootstrap of this host's release with systemd,
# fuse3 and nbdkit) as its initramfs and systemd as init. At boot:
#  - nbdkit-test.service serves memory 64M on /run/nbd.sock;
#  - nbdfs@nbd0.service (the installed template, enabled) attaches
#    /dev/nbd0 from /etc/nbdtab ("nbd0 /run/nbd.sock disk
#    unix,conns=2,persist") and becomes active through READY=1;
#  - /etc/fstab's fuse.nbdfs line (_netdev,ro,connections=2,name=...,
#    x-systemd.requires=..., nofail) is mounted by systemd's fstab
#    generator through mount.fuse3.
# test/vm/systemd/boot-checks.sh then checks them, writes through the
# device and reads through the FUSE file, stops the unit (device detached)
# and unmounts (nbdfs gone, Disconnects on the server), and powers off.
#
# The tree is cached in $NBDFS_CACHE/systemd-SUITE (default
# /var/cache/nbdfs; rebuilt after a week), its initramfs image beside it.
# With both cached a run takes ~100 s; building them adds 5-8 min.
# timeout: 900
# asan: skip
source "$SRCDIR/test/functions.sh"
requires_root
requires qemu-system-x86_64 --version
requires command -v debootstrap
requires cpio --version

. /etc/os-release
suite=$VERSION_CODENAME
cache=${NBDFS_CACHE:-/var/cache/nbdfs}
tree=$cache/systemd-$suite
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' \
           /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
kver=
for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -rV); do
  v=${k#/boot/vmlinuz-}
  if ls /lib/modules/"$v"/kernel/drivers/block/nbd.ko* \
        /lib/modules/"$v"/kernel/fs/fuse/fuse.ko* >/dev/null 2>&1; then
    kver=$v; break
  fi
done
[ -n "$kver" ] || skip "no kernel in /boot with nbd.ko and fuse.ko"

# ---- the cached tree and its image ----
mkdir -p "$cache"
exec 9>"$cache/systemd-$suite.lock"
flock 9
if [ ! -d "$tree" ] || [ -n "$(find "$tree" -maxdepth 0 -mtime +7)" ]; then
  rm -rf "$tree.new"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,fuse3,nbdkit,kmod,libfuse3-3,libgnutls30,libglib2.0-0,libnl-genl-3-200 \
    "$suite" "$tree.new" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$tmp/debootstrap.log"; fail "debootstrap"; }
  rm -rf "$tree"; mv "$tree.new" "$tree"
fi
# Bump when the image recipe below changes.
recipe=2
base=$cache/systemd-$suite-$kver-r$recipe.cpio.gz
rm -f "$cache"/systemd-"$suite"-"$kver".cpio.gz "$cache"/systemd-"$suite"-"$kver"-r[0-9]*.cpio.gz.new
if [ ! -s "$base" ] || [ "$tree" -nt "$base" ]; then
  root=$tmp/base
  mkdir -p "$root/lib/modules/$kver"
  # nbd and fuse for this kernel; systemd-modules-load loads them.
  for m in kernel/drivers/block/nbd.ko kernel/fs/fuse/fuse.ko modules.order \
           modules.builtin modules.builtin.modinfo; do
    for f in /lib/modules/"$kver"/$m*; do
      mkdir -p "$root/lib/modules/$kver/$(dirname "$m")"
      cp "$f" "$root/lib/modules/$kver/$(dirname "$m")/"
    done
  done
  depmod -b "$root" "$kver"
  mkdir -p "$root/etc/modules-load.d" "$root/etc/systemd/system"
  printf 'nbd\nfuse\n' >"$root/etc/modules-load.d/nbdfs-test.conf"
  # No login prompt on the console the test reads.
  ln -s /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
  echo nbdfs-vm >"$root/etc/hostname"
  # The tree with the modules on top (usr-merged: lib -> usr/lib).
  (cd "$tree" && find . \( -path ./proc/\* -o -path ./sys/\* -o -path ./dev/\* \
      -o -path ./var/cache/\* -o -path ./var/lib/apt/\* -o -path ./var/lib/dpkg/\* \
      -o -path ./usr/share/doc/\* -o -path ./usr/share/man/\* \
      -o -path ./usr/share/info/\* -o -path ./usr/share/locale/\* \
      -o -path ./usr/share/perl5/\* -o -path './usr/lib/x86_64-linux-gnu/perl*' \) -prune \
      -o -print0 | cpio --null -o -H newc --quiet) >"$tmp/tree.cpio"
  mkdir -p "$root/usr"; mv "$root/lib" "$root/usr/lib"
  (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) \
    >"$tmp/mods.cpio"
  cat "$tmp/tree.cpio" "$tmp/mods.cpio" | gzip -1 >"$base.new"
  mv "$base.new" "$base"
  rm -f "$tmp/tree.cpio" "$tmp/mods.cpio"
fi
flock -u 9

# ---- this run: nbdfs, the units, nbdtab, fstab, the checks ----
o=$tmp/overlay
mkdir -p "$o/usr/bin" "$o/usr/lib/systemd/system" "$o/etc/systemd/system/multi-user.target.wants" \
         "$o/test" "$o/mnt/nbd"
cp "$NBDFS" "$o/usr/bin/nbdfs"
sed 's|@BINDIR@|/usr/bin|g' "$SRCDIR/system/units/nbdfs@.service" \
  >"$o/usr/lib/systemd/system/nbdfs@.service"
cp "$SRCDIR"/test/vm/systemd/*.service "$o/etc/systemd/system/"
cp "$SRCDIR/test/vm/systemd/boot-checks.sh" "$o/test/"
w=$o/etc/systemd/system/multi-user.target.wants
ln -s /usr/lib/systemd/system/nbdfs@.service "$w/nbdfs@nbd0.service"
ln -s /etc/systemd/system/nbdkit-test.service "$w/nbdkit-test.service"
ln -s /etc/systemd/system/vmtest.service "$w/vmtest.service"
echo 'nbd0 /run/nbd.sock disk unix,conns=2,persist  # as for nbd-client' \
  >"$o/etc/nbdtab"
echo '/run/nbd.sock /mnt/nbd fuse.nbdfs _netdev,ro,connections=2,name=boot.img,x-systemd.requires=nbdkit-test.service,nofail 0 0' \
  >"$o/etc/fstab"
(cd "$o" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$tmp/overlay.cpio.gz"
cat "$base" "$tmp/overlay.cpio.gz" >"$tmp/initrd.gz"

# ---- boot ----
rc=0
timeout -k 5 400 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
  -nodefaults -no-user-config -display none -no-reboot -serial stdio \
  -kernel "/boot/vmlinuz-$kver" -initrd "$tmp/initrd.gz" \
  -append "console=ttyS0 panic=-1 rdinit=/sbin/init loglevel=4 systemd.show_status=1" \
  </dev/null 2>&1 | tr -d '\r' | tee "$tmp/console.log" || rc=$?
mkdir -p "$BUILD/vm"
cp "$tmp/console.log" "$BUILD/vm/console-systemd.log"
grep -q '^VMTEST-BOOTED' "$tmp/console.log" || fail "the checks never ran (qemu rc $rc)"
grep -q '^VMTEST-DONE 0 failed' "$tmp/console.log" || fail "checks failed"
[ "$(grep -c '^VMTEST-CHECK: ok' "$tmp/console.log")" -ge 14 ] || fail "checks missing"
echo OK
