#!/usr/bin/env bash
# qemu-nbd serving a qcow2 image: structured replies with OFFSET_HOLE
# chunks for unallocated clusters (zero-filled by us), base:allocation
# extents against nbdinfo --map, writes read back by nbdcopy, --shared=4
# (multi-conn), and -r (writes refused).
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires qemu-nbd --version
requires qemu-img --version
requires qemu-io --version
requires nbdinfo --version
requires nbdcopy --version
D=$TOOLS/nbdc-driver

merge() {
  awk 'NF >= 3 && $1 ~ /^[0-9]+$/ {
         if (n && $3 == t && s + l == $1) { l += $2; next }
         if (n) print s, l, t
         s = $1; l = $2; t = $3; n = 1
       }
       END { if (n) print s, l, t }'
}

img=$tmp/img.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -f qcow2 -c 'write -P 0x55 1M 2M' -c 'write -P 0x66 10M 64k' \
  -c 'write -z 20M 1M' "$img" > /dev/null

sock=$tmp/sock
start_qemu_nbd "$sock" -f qcow2 -x disk --shared=4 --persistent "$img"
uri="nbd+unix:///disk?socket=$sock"
out=$("$D" "$uri" info)
echo "$out"
grep -q 'structured=1 base_allocation=1 connections=4 ' <<<"$out" \
  || fail "expected SR, base:allocation and 4 connections"

# Reads across holes (OFFSET_HOLE chunks) and data.
ours=$("$D" -v -C 1 "$uri" read-md5 0 64M 2> "$tmp/trace")
nbdcopy "$uri" "$tmp/copy.img"
[ "$ours" = "$(md5 "$tmp/copy.img")" ] || fail "md5 differs from nbdcopy's"
grep -q 'chunk 2 (offset hole)' "$tmp/trace" || fail "no hole chunks seen"
grep -q 'chunk 1 (offset data)' "$tmp/trace" || fail "no data chunks seen"

# Extents match nbdinfo --map.
"$D" "$uri" extents 0 64M | merge > "$tmp/ours"
nbdinfo --map "$uri" | merge > "$tmp/theirs"
cat "$tmp/ours"
diff -u "$tmp/theirs" "$tmp/ours" || fail "extents differ from nbdinfo --map"
grep -qx '1048576 2097152 0' "$tmp/ours" || fail "data extent missing"

# Writes over four connections, unaligned, then an independent read.
out=$("$D" -C 4 "$uri" parallel-writes 16 5M 100000 3 \
      write-pattern 12345 54321 4 zero 40M 4M trim 50M 1M flush \
      check-pattern 5M 1600000 3 check-pattern 12345 54321 4 read-md5 0 64M)
echo "$out"
[ "$(grep -c '^ok' <<<"$out")" = 7 ] || fail "writes via qemu-nbd"
nbdcopy "$uri" "$tmp/copy.img"
[ "$(tail -n1 <<<"$out")" = "$(md5 "$tmp/copy.img")" ] \
  || fail "md5 after writes differs from nbdcopy's"
kill_pid "$qemu_nbd_pid"

# The image itself has our data (qemu-img is a third opinion).
qemu-img convert -f qcow2 -O raw "$img" "$tmp/raw.img"
cmp "$tmp/raw.img" "$tmp/copy.img" || fail "image differs"

# A server that advertises multi-conn but serves fewer clients than we
# would open by default (qemu-nbd --shared=2 leaves the third connection
# unanswered): the default pool carries on with 2 connections and says so;
# an explicit -C 4 fails with a message naming the connection.
sock3=$tmp/sock3
start_qemu_nbd "$sock3" -f qcow2 -x disk --shared=2 --persistent "$img"
uri3="nbd+unix:///disk?socket=$sock3"
out=$("$D" "$uri3" info write-pattern 7777 4096 9 check-pattern 7777 4096 9 \
      2> "$tmp/degrade.err")
cat "$tmp/degrade.err"
echo "$out"
grep -q 'connections=2 ' <<<"$out" || fail "expected to go on with 2 connections"
[ "$(grep -c '^ok' <<<"$out")" = 2 ] || fail "I/O over the degraded pool"
grep -q 'using 2 connections: connection 3 of 4 failed' "$tmp/degrade.err" \
  || fail "no warning about the missing connections"
kill_pid "$qemu_nbd_pid"

# Read-only export.
sock2=$tmp/sock2
start_qemu_nbd "$sock2" -f qcow2 -x disk -r "$img"
uri2="nbd+unix:///disk?socket=$sock2"
expect_fail_with "write-pattern: error (EROFS|EPERM)" \
  "$D" "$uri2" write-pattern 0 4096 1
echo OK
