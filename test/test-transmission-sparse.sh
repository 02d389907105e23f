#!/usr/bin/env bash
# Block status (base:allocation) and sparse reads: extents from the pool
# must match `nbdinfo --map` (an independent client) on nbdkit data,
# sparse-random and memory after a trim; whole-export md5 must match
# nbdcopy's.
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin data
requires_nbdkit_plugin sparse-random
requires_nbdkit_plugin memory
requires nbdinfo --version
requires nbdcopy --version
D=$TOOLS/nbdc-driver

# Normalises "OFFSET LENGTH TYPE ..." lines: merges neighbours of one type.
merge() {
  awk 'NF >= 3 && $1 ~ /^[0-9]+$/ {
         if (n && $3 == t && s + l == $1) { l += $2; next }
         if (n) print s, l, t
         s = $1; l = $2; t = $3; n = 1
       }
       END { if (n) print s, l, t }'
}

# compare SOCK SIZE: our extents == nbdinfo's; our md5 == nbdcopy's.
compare() {
  local sock=$1 size=$2 uri="nbd+unix:///?socket=$1"
  "$D" "$sock" extents 0 "$size" > "$tmp/ours.raw"
  tail -n1 "$tmp/ours.raw" | grep -qx end || fail "extents did not end"
  merge < "$tmp/ours.raw" > "$tmp/ours"
  nbdinfo --map "$uri" | merge > "$tmp/theirs"
  cat "$tmp/ours"
  diff -u "$tmp/theirs" "$tmp/ours" || fail "extents differ from nbdinfo --map"
  # At least one hole and one data extent, or the test proves little.
  grep -q ' 3$' "$tmp/ours" || fail "no hole extent"
  grep -q ' 0$' "$tmp/ours" || fail "no data extent"
  local ours
  ours=$("$D" "$sock" read-md5 0 "$size")
  nbdcopy "$uri" "$tmp/copy.img"
  [ "$ours" = "$(md5 "$tmp/copy.img")" ] || fail "md5 differs from nbdcopy's"
  rm -f "$tmp/copy.img"
}

sock=$tmp/data
start_nbdkit "$sock" data \
  '1 2 3 @65536 4 5 @1048576 "hello" @8388607 1 @12345678 9'
compare "$sock" $(( 12345679 ))
# A sub-range: extents are clipped to what was asked.
out=$("$D" "$sock" extents 1000 70000)
echo "$out"
# (nbdkit may call the rest of the first page "zero": compare positions.)
[ "$(head -n1 <<<"$out" | cut -d' ' -f1-2)" = "1000 31768" ] \
  || fail "clipped first extent"
[ "$(sed -n 3p <<<"$out")" = "65536 5464 0" ] || fail "clipped last extent"

sock=$tmp/sparse
start_nbdkit "$sock" sparse-random 256M seed=7
compare "$sock" $(( 256 * 1024 * 1024 ))

# memory: write everywhere, trim a hole into it, zero another range.
sock=$tmp/mem
start_nbdkit "$sock" memory 16M
out=$("$D" "$sock" write-pattern 0 16M 1 trim 1M 3M zero 8M 1M \
      check-pattern 0 1M 1 check-pattern 4M 4M 1)
[ "$(grep -c '^ok$' <<<"$out")" = 5 ] || fail "memory write/trim/zero"
compare "$sock" $(( 16 * 1024 * 1024 ))
grep -qx '1048576 3145728 3' "$tmp/ours" || fail "trimmed range not a hole"
echo OK
