#!/usr/bin/env bash
# With NBDFS_SPLICE=1, large writes travel in pipes (fuse/loop.c,
# fuse/pipes.c, nbdclient/conn-splice.c): the payload goes from the
# writer's pages to the socket by reference and stays in its pipe until
# the reply. (Off by default: README "Writes by reference".)
# 1. A buffered writer (dd bs=1M, at an offset that is not page-aligned,
#    so the pages are referenced from the middle) and an O_DIRECT one
#    (24 MiB each) reach the server intact (md5 of nbdkit's file), and the
#    debug log shows spliced writes (else this test checks nothing new).
# 2. Spliced writes in flight when the server dies are sent again from
#    their pipes after the reconnect: nbdkit's delay filter holds every
#    write 0.3 s, four writers keep requests in flight, nbdkit is killed
#    -9 and restarted without the delay. No write fails (close may report
#    EIO: see test-fuse-durability), the log says requests were retried,
#    and the file holds exactly what was written.
# 3. Without NBDFS_SPLICE=1 (the default): no spliced write, same data.
# Under TLS nothing is spliced: test-fuse-reconnect-tls writes through it.
# timeout: 120
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin file
requires_nbdkit_filter delay

sock=$tmp/sock
mnt=$tmp/mnt
img=$tmp/disk.img
truncate -s 128M "$img"
head -c 32M /dev/urandom > "$tmp/src"

# expect FILE OFFSET LEN SRC-OFFSET: the image holds src bytes there.
expect() {
  cmp <(dd if="$img" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none) \
      <(dd if="$tmp/src" bs=1M iflag=skip_bytes,count_bytes skip="$4" count="$3" status=none) \
    || fail "$1: the server's bytes at $2 (+$3) differ from what was written"
}
spliced() { grep -c 'bytes at .* (spliced)' "$1" || true; }

# ---- 1: buffered and O_DIRECT ----
start_nbdkit "$sock" file "$img"
NBDFS_SPLICE=1 start_nbdfs "$mnt" -v "$sock" 2> "$tmp/log1"
dd if="$tmp/src" of="$mnt/disk" bs=1M count=24 oflag=seek_bytes \
  seek=$(( 1048576 + 1000 )) conv=notrunc,fsync status=none \
  || fail "buffered write failed"
n_buf=$(spliced "$tmp/log1")
dd if="$tmp/src" of="$mnt/disk" bs=1M count=24 seek=64 oflag=direct \
  conv=notrunc,fsync status=none || fail "O_DIRECT write failed"
n_all=$(spliced "$tmp/log1")
stop_nbdfs "$mnt"
echo "spliced writes: $n_buf buffered, $(( n_all - n_buf )) O_DIRECT"
grep -q 'large writes go to the server by reference' "$tmp/log1" \
  || fail "splicing is off: $(grep 'large writes' "$tmp/log1")"
[ "$n_buf" -ge 10 ] || fail "only $n_buf buffered writes were spliced"
[ $(( n_all - n_buf )) -ge 10 ] || fail "only $(( n_all - n_buf )) O_DIRECT writes were spliced"
expect buffered $(( 1048576 + 1000 )) $(( 24 << 20 )) 0
expect O_DIRECT $(( 64 << 20 )) $(( 24 << 20 )) 0

# ---- 2: in flight when the server dies ----
kill_pid "$nbdkit_pid"
rm -f "$sock"
truncate -s 0 "$img"; truncate -s 128M "$img"
start_nbdkit "$sock" --filter=delay file "$img" delay-write=300ms
NBDFS_SPLICE=1 start_nbdfs "$mnt" -v --reconnect 20 "$sock" 2> "$tmp/log2"
# Each writer: 8 buffered 1 MiB pwrites; every one must succeed. close()
# may say EIO: writes acknowledged by the killed server were never
# flushed by it (the errseq model, test-fuse-durability).
wpids=()
for i in 0 1 2 3; do
  python3 - "$tmp/src" "$mnt/disk" "$i" > "$tmp/w$i" 2>&1 <<'PY' &
import os, sys
src = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY)
base = int(sys.argv[3]) * (8 << 20)
for k in range(8):
    off = base + (k << 20)
    n = os.pwrite(fd, src[off:off + (1 << 20)], off)
    assert n == 1 << 20, n
try:
    os.close(fd)
    print("close OK")
except OSError as e:
    print("close", e.strerror)
PY
  wpids+=($!)
  track_pid "$!"
done
# Until several spliced writes were sent (each waits 0.3 s at the server).
for (( t=0; t<100; t++ )); do
  [ "$(spliced "$tmp/log2")" -ge 8 ] && break
  sleep 0.1
done
[ "$(spliced "$tmp/log2")" -ge 8 ] || fail "no spliced writes under way"
kill -9 "$nbdkit_pid"; wait "$nbdkit_pid" 2>/dev/null || true
rm -f "$sock"
start_nbdkit "$sock" file "$img"
for i in 0 1 2 3; do
  wait "${wpids[$i]}" || fail "writer $i failed across the reconnect: $(cat "$tmp/w$i")"
  grep -qx 'close OK\|close Input/output error' "$tmp/w$i" \
    || fail "writer $i: $(cat "$tmp/w$i")"
done
stop_nbdfs "$mnt"
grep 'retrying' "$tmp/log2" | sed 's/^/  /'
retried=$(sed -n 's/.*retrying \([0-9]*\) request(s) elsewhere.*/\1/p' "$tmp/log2" \
  | awk '{ s += $1 } END { print s + 0 }')
[ "$retried" -gt 0 ] || fail "no request was in flight at the kill (nothing retried)"
expect "across the reconnect" 0 $(( 32 << 20 )) 0

# ---- 3: the default ----
truncate -s 0 "$img"; truncate -s 128M "$img"
start_nbdfs "$mnt" -v "$sock" 2> "$tmp/log3"
dd if="$tmp/src" of="$mnt/disk" bs=1M count=16 conv=notrunc,fsync status=none \
  || fail "write by default failed"
stop_nbdfs "$mnt"
grep -q 'large writes go through memory: NBDFS_SPLICE=1 splices them' "$tmp/log3" \
  || fail "the default is not reported"
grep -q 'max_write 1048576,' "$tmp/log3" || fail "max_write is not 1 MiB by default"
[ "$(spliced "$tmp/log3")" = 0 ] || fail "spliced writes by default"
expect "by default" 0 $(( 16 << 20 )) 0
echo "ok: $retried request(s) resent from their pipes"
