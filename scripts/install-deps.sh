#!/usr/bin/env bash
# Installs (idempotently, with apt-get) everything nbdfs needs to build and
# everything its tests and benchmark use. Debian 12. Run as root.
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
  # analysis (make check-asan links clang/gcc sanitizers from gcc itself)
  valgrind
  # make fuzz / test-fuzz-smoke.sh: libFuzzer needs clang and its runtime
  clang libclang-rt-14-dev
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
