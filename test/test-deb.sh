#!/usr/bin/env bash
# The Debian package: scripts/build-deb.sh builds it and lintian passes it
# (no errors); it installs with apt into a fresh Debian (a minimal
# debootstrap of this host's release, plus man-db), which pulls in its
# dependencies; there, `nbdfs --version` runs and names the version,
# `man -w nbdfs` finds the page, the unit is where systemd looks, and
# purging removes it all.
#
# The fresh tree is cached in $NBDFS_CACHE/fresh-SUITE (default
# /var/cache/nbdfs; about 200 MB, built once, again after a week) and is
# never changed: each run installs into an overlay on top of it, in a
# private mount namespace, and throws the overlay away. A run with the
# tree cached takes 1.5-2.5 min; building the tree adds 3-5 min.
# timeout: 720
# asan: skip (it packages and installs a plain build of its own; an ASan
# run would spend minutes re-testing packaging, not nbdfs)
source "$SRCDIR/test/functions.sh"
requires_root
requires command -v dpkg-buildpackage
requires command -v lintian
requires command -v debootstrap
requires command -v unshare

. /etc/os-release
suite=$VERSION_CODENAME
cache=${NBDFS_CACHE:-/var/cache/nbdfs}
tree=$cache/fresh-$suite
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' \
           /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

# ---- the package ----
"$SRCDIR/scripts/build-deb.sh" "$tmp/out" 2>&1 | tee "$tmp/build.log"
deb=$(ls "$tmp"/out/nbdfs_*.deb)
version=$(cat "$SRCDIR/VERSION")
dpkg-deb -f "$deb" Depends | tee "$tmp/depends"
# (Debian 13 names: libfuse3-4, libgnutls30t64, libglib2.0-0t64.)
for p in 'libfuse3-[34]' 'libgnutls30(t64)?' 'libglib2\.0-0(t64)?' \
         'libnl-genl-3-200' 'fuse3'; do
  grep -Eq "(^|, )$p( |,|\$)" "$tmp/depends" || fail "Depends lacks $p"
done

# ---- the fresh tree (cached) ----
mkdir -p "$cache"
if [ -d "$tree" ] && [ -z "$(find "$tree" -maxdepth 0 -mtime +7)" ]; then
  echo "using cached $tree"
else
  rm -rf "$tree.new"
  debootstrap --variant=minbase --include=man-db "$suite" "$tree.new" \
    "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$tmp/debootstrap.log"; fail "debootstrap $suite"; }
  rm -rf "$tree"
  mv "$tree.new" "$tree"
fi

# ---- install, use, purge: in an overlay, in a private mount namespace ----
mkdir -p "$tmp/upper" "$tmp/work" "$tmp/root"
cp "$deb" "$tmp/nbdfs.deb"
cat >"$tmp/inside.sh" <<INSIDE
set -ex
r=$tmp/root
mount -t overlay overlay -o lowerdir=$tree,upperdir=$tmp/upper,workdir=$tmp/work \$r
mount -t proc proc \$r/proc
mount --rbind /dev \$r/dev
mount -t tmpfs tmpfs \$r/tmp
cp /etc/resolv.conf \$r/etc/resolv.conf
cp $tmp/nbdfs.deb \$r/tmp/
run() { chroot \$r /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
          HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "\$@"; }
if run sh -c 'command -v nbdfs'; then echo 'nbdfs before install'; exit 1; fi
run apt-get update -qq
run apt-get install -y -qq --no-install-recommends /tmp/nbdfs.deb
run nbdfs --version | tee $tmp/version
run man -w nbdfs | tee $tmp/manpath
run sh -c 'ls /usr/lib/systemd/system/nbdfs@.service /lib/systemd/system/nbdfs@.service 2>/dev/null' | tee $tmp/unit
# What apt pulled in: fuse3, and whichever packages hold libfuse3 and
# libnl-genl-3 on this release (libfuse3-3 on Debian 12, libfuse3-4 on 13).
run dpkg -s fuse3 >/dev/null
run dpkg -S 'libfuse3.so.*' 'libnl-genl-3.so.*'
run apt-get purge -y -qq nbdfs
if run sh -c 'command -v nbdfs'; then echo 'nbdfs left after purge'; exit 1; fi
if run man -w nbdfs; then echo 'man page left after purge'; exit 1; fi
INSIDE
bash "$SRCDIR/test/private-mounts.sh" bash "$tmp/inside.sh"
grep -q "^nbdfs $version" "$tmp/version" || fail "nbdfs --version in the chroot"
grep -q '/usr/share/man/man1/nbdfs.1.gz$' "$tmp/manpath" || fail "man -w nbdfs"
grep -q 'nbdfs@.service' "$tmp/unit" || fail "the unit is not installed"
echo OK
