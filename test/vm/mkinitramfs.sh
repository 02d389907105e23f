#!/usr/bin/env bash
# Builds the base initramfs for the kernel-mode VM tests (cpio newc, gzip).
#
#   test/vm/mkinitramfs.sh KVER OUT.cpio.gz
#
# Contents: busybox-static with its applet links, the kernel modules nbd.ko
# and ext4 (with everything modules.dep says they need, in load order),
# nbdkit with the plugins and filters the guest scripts use, nbd-server,
# mke2fs/e2fsck, the libraries `ldd` lists for each of them, the libraries
# nbdfs needs (so the per-run overlay only carries the binary), and /init.
# Everything is copied from this host: the guest runs the host's Debian
# userspace on the host's Debian kernel. run-vm.sh calls this when the
# image is missing or older than its inputs.
set -euo pipefail

kver=$1
out=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
moddir=/lib/modules/$kver
root=$(mktemp -d "${out%/*}/root.XXXXXX")
trap 'rm -rf "$root"' EXIT

die() { echo "mkinitramfs: $*" >&2; exit 1; }
[ -d "$moddir" ] || die "no $moddir (install linux-image-amd64)"
command -v busybox >/dev/null || die "no busybox (install busybox-static)"
command -v cpio >/dev/null || die "no cpio"

# A merged-/usr layout, like the host's, so every path ldd prints resolves.
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,run,etc,test,mnt}
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"

# copy_file SRC: same path inside the image (symlinks resolved to content).
copy_file() {
  local src=$1 real dst
  real=$(realpath "$src")
  dst="$root$(realpath -s "$src")"
  [ -e "$dst" ] && return 0
  mkdir -p "$(dirname "$dst")"
  # The directory part may go through a usr-merge symlink (/lib -> usr/lib):
  # copying into $root/lib/... lands in $root/usr/lib/... as on the host.
  cp -L "$real" "$dst"
}

# copy_with_libs FILE...: the file plus every library ldd lists (and the
# dynamic loader). Libraries loaded with dlopen are passed explicitly.
copy_with_libs() {
  local f lib
  for f in "$@"; do
    [ -e "$f" ] || die "missing $f"
    copy_file "$f"
    while read -r lib; do
      [ -n "$lib" ] && copy_file "$lib"
    done < <(ldd "$f" 2>/dev/null | awk '
      /=> \// { print $3; next }
      /^\t\// { print $1 }')
  done
}

# ---- kernel modules: nbd, ext4 and their dependencies, in load order ----
# modules.dep lists every (transitive) dependency after the module, deepest
# last, so loading them in reverse order satisfies each before its user.
# ext4 also needs a "crc32c" crypto driver, which is a soft dependency.
modlist=()
add_module() {
  local name=$1 line deps m i
  line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1)
  [ -n "$line" ] || {
    grep -qE "/${name}\.ko" "$moddir/modules.builtin" && return 0
    die "module $name not found in $moddir"
  }
  deps=(${line#*:})
  for (( i=${#deps[@]}-1; i>=0; i-- )); do
    m=${deps[$i]}
    [[ " ${modlist[*]-} " == *" $m "* ]] || modlist+=("$m")
  done
  m=${line%%:*}
  [[ " ${modlist[*]-} " == *" $m "* ]] || modlist+=("$m")
}
add_module crc32c_generic
add_module ext4
add_module nbd
mkdir -p "$root/usr/lib/modules"
: > "$root/etc/vm-modules"
for m in "${modlist[@]}"; do
  case "$m" in
    *.ko) cp "$moddir/$m" "$root/usr/lib/modules/" ;;
    *.ko.xz) xz -dc "$moddir/$m" > "$root/usr/lib/modules/$(basename "${m%.xz}")" ;;
    *.ko.zst) zstd -qdc "$moddir/$m" > "$root/usr/lib/modules/$(basename "${m%.zst}")" ;;
    *) die "unknown module format $m" ;;
  esac
  base=$(basename "$m"); echo "${base%%.ko*}" >> "$root/etc/vm-modules"
done

# ---- servers and tools ----
nbdkit_libdir=$(dirname "$(realpath "$(nbdkit --dump-config | sed -n 's/^plugindir=//p')")")
copy_with_libs "$(command -v nbdkit)"
for p in memory file data sh null pattern sparse-random; do
  copy_with_libs "$nbdkit_libdir/plugins/nbdkit-$p-plugin.so"
done
for f in blocksize-policy multi-conn delay error nozero log exitlast exportname; do
  copy_with_libs "$nbdkit_libdir/filters/nbdkit-$f-filter.so"
done
copy_with_libs "$(command -v nbd-server)"
copy_with_libs /usr/sbin/mke2fs /usr/sbin/e2fsck
ln -sf mke2fs "$root/usr/sbin/mkfs.ext4"
cp /etc/mke2fs.conf "$root/etc/"
# nbdfs's libraries (the binary itself comes with each run's overlay).
if [ -n "${NBDFS:-}" ] && [ -x "$NBDFS" ]; then
  copy_with_libs "$NBDFS"
  rm -f "$root$(realpath -s "$NBDFS")"
fi
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
: > "$root/etc/fstab"

# ---- busybox, with a link per applet (after the real tools, which win) ----
cp /bin/busybox "$root/usr/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
done

# ---- /init and the guest helpers ----
install -m 0755 "$here/init" "$root/init"
install -m 0644 "$here/guest-lib.sh" "$root/test/guest-lib.sh"
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

# What went in (run-vm.sh compares it with nbdfs's current libraries).
(cd "$root" && find . \( -type f -o -type l \) | sort) > "${out%.cpio.gz}.manifest"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
echo "mkinitramfs: $out ($(du -h "$out" | cut -f1), modules: ${modlist[*]})"
