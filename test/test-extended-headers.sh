#!/usr/bin/env bash
# Extended headers (NBD_OPT_EXTENDED_HEADERS, the spec's extension-ext-header
# branch) against real servers, whichever versions this system has. What
# a server offers is asked of an independent client, nbdinfo ("using
# extended packets" / "using structured packets"); qemu-nbd >= 8.2 must
# offer them.
#  - qemu-nbd >= 8.2 (Debian 13: 10.0): --info (text and JSON) must say
#    "extended headers", a FUSE
#    mount must keep data intact (writes across 4 GiB, read back and
#    compared with qemu-img's view), SEEK_DATA/SEEK_HOLE must find data
#    past 4 GiB, and a whole-export `fallocate -p` on a 6 GiB sparse qcow2
#    must reach the server as ONE write-zeroes request (counted in
#    qemu-nbd's trace of decoded requests; in nbdkit's log filter) and
#    read back as zeroes;
#  - servers without them (Debian 12: qemu 7.2, nbdkit 1.32; Debian 13's
#    nbdkit 1.42 too, as nbdinfo 1.22 confirms): the same checks then prove
#    the fallback to structured replies, where that punch takes 1 GiB
#    pieces (at least 6 requests).
# --no-extended-headers forces the fallback on any server.
# timeout: 240
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires qemu-nbd --version
requires qemu-img --version
requires qemu-io --version
requires nbdkit --version
requires fallocate --version
requires nbdinfo --version

# version_ge "A.B" "C.D": true if A.B >= C.D.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
qver=$(qemu-nbd --version | sed -n '1s/^qemu-nbd \([0-9]*\.[0-9]*\).*/\1/p')
kver=$(nbdkit --version | sed -n '1s/^nbdkit \([0-9]*\.[0-9]*\).*/\1/p')
[ -n "$qver" ] && [ -n "$kver" ] || fail "cannot read the server versions"
qemu_ext=0; version_ge "$qver" 8.2 && qemu_ext=1

# offered URI: 1 if nbdinfo (libnbd) negotiated extended headers with the
# server, 0 if structured replies.
offered() {
  local p
  p=$(nbdinfo --no-content "$1" | sed -n 's/^protocol: .*using \([a-z]*\) packets.*/\1/p')
  case "$p" in
    extended) echo 1 ;;
    structured) echo 0 ;;
    *) fail "nbdinfo did not say which packets it used with $1" ;;
  esac
}

GIB=$((1 << 30))
SIZE=$((6 * GIB))

# mode_of URI [OPTS]: the "replies" line of nbdfs --info.
mode_of() {
  local uri=$1; shift
  "$NBDFS" --info "$@" "$uri" | sed -n 's/^replies: *//p'
}

# ---- qemu-nbd over a sparse 6 GiB qcow2 ----
img=$tmp/big.qcow2
qemu-img create -q -f qcow2 "$img" $SIZE
# Data at 1 MiB (2 MiB long) and just past 5 GiB (64 KiB): the rest is
# unallocated.
qemu-io -f qcow2 -c 'write -P 0x55 1M 2M' -c "write -P 0x66 $((5 * GIB)) 64k" \
  "$img" > /dev/null
sock=$tmp/qemu.sock
trace=$tmp/qemu.trace
# (qemu-nbd's messages to a file: it must not see a client leave in the
# middle of a request, e.g. a 28-byte NBD_CMD_DISC under extended headers.)
start_qemu_nbd "$sock" -f qcow2 -x disk --shared=1 --persistent \
  -T "nbd_co_receive_request_decode_type,file=$trace" "$img" 2> "$tmp/qemu.err"
uri="nbd+unix:///disk?socket=$sock"

# Write zeroes the server decoded so far (qemu's trace: "type = 6").
zeroes_seen() { grep -c 'type = 6 ' "$trace" || true; }

o=$(offered "$uri")
echo "qemu-nbd $qver: extended headers expected $qemu_ext, nbdinfo says $o"
[ "$o" = $qemu_ext ] || fail "qemu-nbd $qver: nbdinfo says extended=$o"

want=$([ $qemu_ext = 1 ] && echo "extended headers" || echo "structured replies")
got=$(mode_of "$uri")
[ "$got" = "$want" ] || fail "qemu-nbd $qver: --info says '$got', want '$want'"
json=$("$NBDFS" --info --json "$uri")
python3 - "$qemu_ext" "$want" <<PY || fail "--info --json reply mode"
import json, sys
j = json.loads('''$json''')
assert j["replies"] == sys.argv[2], j["replies"]
assert j["extended_headers"] == (sys.argv[1] == "1")
assert j["structured_replies"] is True
PY
got=$(mode_of "$uri" --no-extended-headers)
[ "$got" = "structured replies" ] \
  || fail "--no-extended-headers: --info says '$got'"

mnt=$tmp/mnt
start_nbdfs "$mnt" -C 1 "$uri"
f=$mnt/disk
[ "$(stat -c %s "$f")" = $SIZE ] || fail "size"

# Data integrity: an unaligned 5 MiB write straddling 4 GiB, one at the
# very end, and the qcow2 data read back through the mount.
head -c $((5 * 1024 * 1024)) /dev/urandom > "$tmp/rand"
dd if="$tmp/rand" of="$f" bs=1M seek=$((4 * GIB - 3 * 1024 * 1024 + 12345)) \
  oflag=seek_bytes conv=notrunc status=none
dd if="$tmp/rand" of="$f" bs=1M seek=$((SIZE - 5 * 1024 * 1024)) \
  oflag=seek_bytes conv=notrunc status=none
sync "$f"
cmp <(dd if="$f" bs=1M skip=$((4 * GIB - 3 * 1024 * 1024 + 12345)) \
      count=$((5 * 1024 * 1024)) iflag=skip_bytes,count_bytes status=none) \
    "$tmp/rand" \
  || fail "data across 4 GiB differs"
cmp <(dd if="$f" bs=1M skip=$((SIZE - 5 * 1024 * 1024)) iflag=skip_bytes \
      status=none) "$tmp/rand" || fail "data at the end differs"
cmp <(dd if="$f" bs=1M skip=1 count=2 status=none) \
    <(head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' '\125') \
  || fail "qcow2 data at 1 MiB differs"

# SEEK_DATA / SEEK_HOLE: the data past 5 GiB is found from 3 MiB (a gap of
# almost 2 GiB of hole: one block-status query with extended headers).
seek() {
  python3 - "$f" "$1" "$2" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
w = os.SEEK_DATA if sys.argv[2] == "data" else os.SEEK_HOLE
try:
    print(os.lseek(fd, int(sys.argv[3]), w))
except OSError as e:
    print("errno", e.errno)
PY
}
[ "$(seek data 0)" = $((1024 * 1024)) ] || fail "SEEK_DATA from 0: $(seek data 0)"
[ "$(seek hole $((1024 * 1024)))" = $((3 * 1024 * 1024)) ] \
  || fail "SEEK_HOLE from 1 MiB: $(seek hole $((1024 * 1024)))"
# The 5 MiB write started at 4 GiB - 3 MiB + 12345: qcow2 allocates whole
# 64 KiB clusters, so data starts at the cluster holding that byte.
start=$((4 * GIB - 3 * 1024 * 1024 + 12345))
d=$(seek data $((3 * 1024 * 1024)))
[ "$d" -le $start ] && [ "$d" -gt $((start - 65536)) ] \
  || fail "SEEK_DATA from 3 MiB: $d (data written at $start)"

# The whole-export punch: one request with extended headers.
before=$(zeroes_seen)
fallocate -p -o 0 -l $SIZE "$f" || fail "fallocate -p"
sync "$f"
n=$(( $(zeroes_seen) - before ))
echo "fallocate -p over $SIZE bytes: $n write-zeroes request(s) at the server"
if [ $qemu_ext = 1 ]; then
  [ "$n" = 1 ] || fail "whole-export punch took $n requests, want 1"
else
  [ "$n" -ge 6 ] || fail "compact punch took $n requests, want >= 6 (1 GiB each)"
fi
[ "$(seek data 0)" = "errno 6" ] || fail "after the punch: SEEK_DATA from 0: $(seek data 0)"
# (dd with a count: a reader left running would keep the mount busy)
cmp -n $((8 * 1024 * 1024)) <(dd if="$f" bs=1M skip=$((4 * GIB - 4 * 1024 * 1024)) \
    count=8 iflag=skip_bytes status=none) /dev/zero || fail "punched range not zero"
stop_nbdfs "$mnt"
kill_pid "$qemu_nbd_pid"
cat "$tmp/qemu.err"
! grep -q 'Unexpected end-of-file' "$tmp/qemu.err" \
  || fail "qemu-nbd saw a request cut short (NBD_CMD_DISC of the wrong size?)"

# qemu-img's own view: all zero, nothing allocated.
map=$(qemu-img map -f qcow2 --output=json "$img")
python3 -c "
import json, sys
m = json.loads(sys.argv[1])
assert all(e['zero'] or not e['data'] for e in m), m
" "$map" || fail "qemu-img map: data left after the punch"

# ---- nbdkit (memory plugin, log filter counting requests) ----
ksock=$tmp/kit.sock
klog=$tmp/kit.log
start_nbdkit "$ksock" --filter=log memory $SIZE logfile="$klog"
kuri="nbd+unix:///?socket=$ksock"
kit_ext=$(offered "$kuri")
echo "nbdkit $kver: extended headers offered: $kit_ext (nbdinfo)"
want=$([ $kit_ext = 1 ] && echo "extended headers" || echo "structured replies")
got=$(mode_of "$kuri")
[ "$got" = "$want" ] || fail "nbdkit $kver: --info says '$got', want '$want'"
start_nbdfs "$mnt" -C 1 "$kuri"
f=$mnt/disk
dd if="$tmp/rand" of="$f" bs=1M seek=$((4 * GIB + 999)) oflag=seek_bytes \
  conv=notrunc status=none
sync "$f"
cmp <(dd if="$f" bs=1M skip=$((4 * GIB + 999)) count=$((5 * 1024 * 1024)) \
      iflag=skip_bytes,count_bytes status=none) "$tmp/rand" \
  || fail "nbdkit: data differs"
[ "$(seek data 0)" -le $((4 * GIB + 999)) ] || fail "nbdkit: SEEK_DATA"
before=$(grep -c ' Zero ' "$klog" || true)
fallocate -p -o 0 -l $SIZE "$f" || fail "nbdkit: fallocate -p"
sync "$f"
n=$(( $(grep -c ' Zero ' "$klog" || true) - before ))
echo "nbdkit: fallocate -p: $n zero request(s)"
if [ $kit_ext = 1 ]; then
  [ "$n" = 1 ] || fail "nbdkit: whole-export punch took $n requests, want 1"
else
  [ "$n" -ge 6 ] || fail "nbdkit: compact punch took $n requests"
fi
cmp -n $((5 * 1024 * 1024)) <(dd if="$f" bs=1M skip=$((4 * GIB + 999)) \
    count=5 iflag=skip_bytes status=none) /dev/zero || fail "nbdkit: not zero after punch"
stop_nbdfs "$mnt"
echo OK
