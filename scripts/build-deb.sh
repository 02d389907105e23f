#!/usr/bin/env bash
# Builds the Debian package of the tree this script is in:
#   scripts/build-deb.sh [OUTDIR]       (default: build/deb)
# The source is copied (without .git and build output) to a temporary
# directory, debian/changelog is written there from VERSION and NEWS, then
# dpkg-buildpackage -b builds it (packaging files: debian/) and lintian
# checks the result: any lintian error fails the build. Works on Debian 12
# and 13 (needs the build dependencies of debian/control, dpkg-dev,
# debhelper and lintian: scripts/install-deps.sh installs them).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$src/build/deb}" && cd "${1:-$src/build/deb}" && pwd)
version=$(cat "$src/VERSION")
work=$(mktemp -d /tmp/nbdfs-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir "$work/nbdfs-$version"
tar -C "$src" --exclude=./.git --exclude='./build' --exclude='./build-*' \
  --exclude=./nbdfs -cf - . | tar -C "$work/nbdfs-$version" -xf -
cd "$work/nbdfs-$version"

# The changelog's date is the last commit's, so two builds of one commit
# give the same package.
when=$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)
{
  echo "nbdfs ($version) unstable; urgency=medium"
  echo
  echo "  * Release $version; see /usr/share/doc/nbdfs/NEWS."
  echo
  echo " -- nbdfs developers <dev@nbdfs.invalid>  $(date -R -u -d "@$when")"
} > debian/changelog
export SOURCE_DATE_EPOCH=$when

env -u BUILD -u NBDFS -u TOOLS -u SRCDIR dpkg-buildpackage -b -us -uc -j2 >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed" >&2
  exit 1
}
arch=$(dpkg --print-architecture)
deb=nbdfs_${version}_$arch.deb
cp "$work/$deb" "$out/"
# Errors fail; warnings are printed. The checks that only make sense for
# an archive upload (no bug tracker, an .invalid address) are not run.
lintian --fail-on error --suppress-tags \
  bogus-mail-host,bogus-mail-host-in-debian-changelog \
  "$work"/nbdfs_"${version}"_"$arch".changes
echo "build-deb: $out/$deb"
