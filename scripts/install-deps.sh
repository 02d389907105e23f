#!/usr/bin/env bash
# Installs (idempotently, with apt-get) everything nbdfs needs to build and
# everything its tests and benchmark use. Debian 12 (bookworm) and Debian
# 13 (trixie). Run as root.
#
# Package names are the same on both releases except the libFuzzer
# runtime, which carries clang's major version (14 on Debian 12, 19 on
# Debian 13): it is chosen after clang is installed, from clang itself.
# debootstrap serves scripts/check-debian13.sh on the host and
# test-deb.sh / test-systemd-vm.sh everywhere, the Debian 13 tree included.
set -euo pipefail

pkgs=(
  # build
  build-essential pkg-config libfuse3-dev libgnutls28-dev libglib2.0-dev
  libnl-genl-3-dev
  # run
  fuse3
  # servers and tools the tests start or cross-check with
  nbdkit nbdkit-plugin-dev qemu-utils nbd-server nbd-client libnbd-bin
  gnutls-bin e2fsprogs util-linux kmod python3 procps psmisc
  # kernel-mode tests: a real kernel (with nbd.ko) in a TCG VM
  qemu-system-x86 linux-image-amd64 busybox-static cpio
  # benchmark
  fio gnuplot-nox
  # analysis (make check-asan links clang/gcc sanitizers from gcc itself);
  # gdb: a test whose nbdfs does not exit prints its threads' backtraces
  valgrind gdb
  # make install checks (man page lint, unit verify), the .deb and its
  # test, the boot test (build-deb.sh, lintian, fresh debootstrap trees)
  mandoc groff-base man-db systemd dpkg-dev debhelper lintian debootstrap
  # make fuzz / test-fuzz-smoke.sh: libFuzzer needs clang (and its
  # runtime, below)
  clang
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

updated=
install() {  # install PKG...: apt-get install those not yet installed
  local missing=() p
  for p in "$@"; do
    installed "$p" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$updated" ]; then
    apt-get update -qq
    updated=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# clang_major: the major version of the installed clang ("clang-19" is
# what the "clang" package depends on), empty if it cannot be told.
clang_major() {
  dpkg-query -W -f='${Depends}' clang 2>/dev/null |
    grep -oE '(^|[ ,])clang-[0-9]+' | grep -oE '[0-9]+' | head -1
}

install "${pkgs[@]}"
major=$(clang_major)
if [ -z "$major" ]; then
  echo "install-deps: cannot tell clang's major version" >&2
  exit 1
fi
install "libclang-rt-$major-dev"
[ -n "$updated" ] && echo "install-deps: done" ||
  echo "install-deps: everything is installed"
