#!/usr/bin/env bash
# Boots the Debian kernel in qemu (TCG: /dev/kvm is not usable here) with a
# small initramfs and runs one guest script in it. nbd.ko is loaded in the
# guest, so kernel mode is tested against the real driver.
#
#   test/vm/run-vm.sh GUEST-SCRIPT [EXTRA-FILE...]
#
# The guest script (busybox ash) sources /test/guest-lib.sh and runs its
# scenarios with vm_run; extra files land next to it in /test/. The
# console is copied to stdout and to $BUILD/vm/console-GUEST.log. Exit
# status: 0 if the guest booted, finished, and every scenario passed (SKIPs
# allowed), else 1.
#
# Environment: BUILD (default ./build), NBDFS (default $BUILD/nbdfs; copied
# into the guest as /usr/bin/nbdfs), VM_KVER (kernel version; default: the
# newest in /boot with nbd.ko), VM_TIMEOUT (seconds, default 600), VM_SMP
# (default 2), VM_MEM (MiB, default 1024), VM_APPEND (extra kernel args).
#
# The base image ($BUILD/vm/base-KVER.cpio.gz) is rebuilt when missing or
# older than the scripts that make it, or when nbdfs needs a library it
# lacks; each run appends a small overlay cpio (the kernel unpacks
# concatenated archives in order) with nbdfs and the guest script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/../.." && pwd)
: "${BUILD:=$srcdir/build}"
: "${NBDFS:=$BUILD/nbdfs}"
: "${VM_TIMEOUT:=600}"
: "${VM_SMP:=2}"
: "${VM_MEM:=1024}"
: "${VM_APPEND:=}"

die() { echo "run-vm: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: run-vm.sh GUEST-SCRIPT [EXTRA-FILE...]"
guest=$1; shift
[ -f "$guest" ] || die "no guest script $guest"
[ -x "$NBDFS" ] || die "no nbdfs binary at $NBDFS (run make)"
command -v qemu-system-x86_64 >/dev/null \
  || die "qemu-system-x86_64 missing (scripts/install-deps.sh)"

if [ -z "${VM_KVER:-}" ]; then
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -rV); do
    v=${k#/boot/vmlinuz-}
    if ls /lib/modules/"$v"/kernel/drivers/block/nbd.ko* >/dev/null 2>&1; then
      VM_KVER=$v; break
    fi
  done
fi
[ -n "${VM_KVER:-}" ] || die "no kernel in /boot with nbd.ko (install linux-image-amd64)"
kernel=/boot/vmlinuz-$VM_KVER
[ -r "$kernel" ] || die "cannot read $kernel"

vmdir=$BUILD/vm
mkdir -p "$vmdir"
base=$vmdir/base-$VM_KVER.cpio.gz
manifest=$vmdir/base-$VM_KVER.manifest

# ---- the base image, rebuilt when stale (one builder at a time) ----
stale() {
  [ -s "$base" ] && [ -s "$manifest" ] || return 0
  local f lib
  for f in "$here/mkinitramfs.sh" "$here/init" "$here/guest-lib.sh"; do
    [ "$f" -nt "$base" ] && return 0
  done
  # Every library nbdfs links with must be in the image.
  while read -r lib; do
    grep -qxF ".$lib" "$manifest" || return 0
  done < <(ldd "$NBDFS" | awk '/=> \// { print $3 } /^\t\// { print $1 }' \
           | xargs -r realpath -s)
  return 1
}
exec 8>"$vmdir/build.lock"
flock 8
if stale; then
  NBDFS=$NBDFS bash "$here/mkinitramfs.sh" "$VM_KVER" "$base"
fi
flock -u 8

# ---- this run's overlay: nbdfs + the guest script (+ extras) ----
run=$(mktemp -d "$vmdir/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/root/test" "$run/root/usr/bin"
cp "$NBDFS" "$run/root/usr/bin/nbdfs"
cp "$guest" "$run/root/test/guest.sh"
for f in "$@"; do cp "$f" "$run/root/test/"; done
(cd "$run/root" && find . -print0 | cpio --null -o -H newc --quiet) \
  | gzip -1 > "$run/overlay.cpio.gz"
cat "$base" "$run/overlay.cpio.gz" > "$run/initrd.cpio.gz"

# ---- boot ----
log=$vmdir/console-$(basename "$guest" .sh).log
start=$(date +%s.%N)
rc=0
# -nodefaults: no NIC, no VGA; the guest only needs loopback.
timeout -k 5 "$VM_TIMEOUT" qemu-system-x86_64 \
  -accel tcg -cpu max -smp "$VM_SMP" -m "$VM_MEM" \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial stdio \
  -kernel "$kernel" -initrd "$run/initrd.cpio.gz" \
  -append "console=ttyS0 panic=-1 loglevel=4 $VM_APPEND" \
  </dev/null 2>&1 | tr -d '\r' | tee "$log" || rc=$?
# pipefail: rc is qemu's (124 = timeout) or tee's.
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

booted=$(sed -n 's/^VMTEST-BOOTED \([0-9.]*\).*/\1/p' "$log" | head -1)
done_line=$(grep -m1 '^VMTEST-DONE' "$log" || true)
npass=$(grep -c '^VMTEST-RESULT: .* PASS' "$log" || true)
nfail=$(grep -c '^VMTEST-RESULT: .* FAIL' "$log" || true)
nskip=$(grep -c '^VMTEST-RESULT: .* SKIP' "$log" || true)

echo "==== run-vm summary (kernel $VM_KVER, ${secs}s wall, userspace up" \
     "${booted:-never}s after kernel start)"
grep '^VMTEST-RESULT:' "$log" | sed 's/^VMTEST-RESULT: /  /' || true
status=0
if [ -z "$booted" ]; then
  echo "run-vm: the guest never reached /init's test step"; status=1
elif [ -z "$done_line" ]; then
  [ "$rc" = 124 ] && echo "run-vm: qemu killed after ${VM_TIMEOUT}s"
  echo "run-vm: the guest did not finish (crash, hang or timeout)"; status=1
fi
[ "$nfail" -eq 0 ] || status=1
[ "$npass" -gt 0 ] || { echo "run-vm: no scenario passed"; status=1; }
# The guest script's own exit status (VMTEST-DONE <rc>): a script that dies
# between scenarios has printed only PASS lines.
done_rc=$(echo "$done_line" | awk '{ print $2 }')
if [ -n "$done_line" ] && [ "$done_rc" != 0 ]; then
  echo "run-vm: the guest script exited with status $done_rc"; status=1
fi
# Every scenario reported once: those named with vmtest.only=, else every
# "vm_run NAME" line of the guest script.
only=$(echo " $VM_APPEND " | sed -n 's/.* vmtest\.only=\([^ ]*\) .*/\1/p' | tr ',' ' ')
if [ -n "$only" ]; then
  expected=$(echo $only | wc -w)
else
  expected=$(grep -cE '^[[:space:]]*vm_run[[:space:]]' "$guest")
fi
nres=$((npass + nfail + nskip))
if [ "$nres" != "$expected" ]; then
  echo "run-vm: $nres scenario result(s), the guest script has $expected"; status=1
fi
# Under CI=true a skipped scenario is a failure, as a skipped test is.
if [ "${CI:-}" = true ] && [ "$nskip" -gt 0 ]; then
  echo "run-vm: $nskip scenario(s) skipped under CI=true"; status=1
fi
echo "run-vm: $npass passed, $nfail failed, $nskip skipped"
exit $status
