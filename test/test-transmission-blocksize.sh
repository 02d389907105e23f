#!/usr/bin/env bash
# The block-size layer against nbdkit's blocksize-policy filter with
# blocksize-error-policy=error: the server rejects (EINVAL) anything not
# aligned to its minimum block size or above its maximum, so any offset and
# length we accept must come out aligned and split. Minimum 512 and 4096;
# odd offsets and lengths; concurrent 1-byte writes into one block (the
# read-modify-write must be serialised or updates are lost); a zero of a
# block racing an RMW into it; an export whose size is not a multiple of
# the minimum block, with min = preferred = max = 512, where nbdkit's log
# filter shows every request and each is checked against the spec.
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires_nbdkit_filter blocksize-policy
requires nbdcopy --version
D=$TOOLS/nbdc-driver

for min in 512 4096; do
  sock=$tmp/sock$min
  start_nbdkit "$sock" --filter=blocksize-policy memory 16M \
    blocksize-minimum=$min blocksize-preferred=$((min > 4096 ? min : 4096)) \
    blocksize-maximum=256K blocksize-error-policy=error
  out=$("$D" "$sock" info)
  grep -q "min=$min pref=4096 max=262144" <<<"$out" || fail "block sizes"

  # Odd pieces, including sub-block, block-crossing and > max payload.
  out=$("$D" "$sock" \
        write-pattern 0 16M 9 \
        write-pattern 1 1 1 \
        write-pattern 3 510 2 \
        write-pattern 700 5000 3 \
        write-pattern 12345 1000001 4 \
        write-pattern 16777215 1 5 \
        write-pattern 8191 2 6 \
        check-pattern 1 1 1 \
        check-pattern 3 510 2 \
        check-pattern 700 5000 3 \
        check-pattern 12345 1000001 4 \
        check-pattern 16777215 1 5 \
        check-pattern 8191 2 6 \
        check-pattern 2000000 3000001 9 \
        check-pattern 0 1 9 \
        check-pattern 2 1 9 \
        check-pattern 513 187 9 \
        read-md5 0 16M)
  echo "$out"
  [ "$(grep -c '^ok$' <<<"$out")" = 17 ] || fail "odd I/O with min=$min"
  nbdcopy "nbd+unix:///?socket=$sock" "$tmp/copy.img"
  [ "$(md5 "$tmp/copy.img")" = "$(tail -n1 <<<"$out")" ] \
    || fail "md5 differs from nbdcopy's (min=$min)"

  # Independent check of one unaligned write: bytes around it unchanged.
  cp "$tmp/copy.img" "$tmp/before.img"
  printf 'ABCDEFGHIJ' > "$tmp/ten"
  out=$("$D" "$sock" write-from "$tmp/ten" 4093 flush)
  nbdcopy "nbd+unix:///?socket=$sock" "$tmp/copy.img"
  printf 'ABCDEFGHIJ' | dd of="$tmp/before.img" bs=1 seek=4093 \
    conv=notrunc status=none
  cmp "$tmp/copy.img" "$tmp/before.img" || fail "unaligned write (min=$min)"

  # Zero with unaligned edges: edges written as data, the rest zeroed.
  out=$("$D" "$sock" zero 2000001 300000 read-to "$tmp/z" 2000000 300002 \
        check-pattern 1999000 1001 9 check-pattern 2300001 5000 9)
  [ "$(grep -c '^ok$' <<<"$out")" = 4 ] || fail "unaligned zero (min=$min)"
  cmp <(head -c 300000 /dev/zero) <(tail -c +2 "$tmp/z" | head -c 300000) \
    || fail "unaligned zero not zero (min=$min)"
  # Trim is shrunk to whole blocks: never an EINVAL from the server.
  out=$("$D" "$sock" trim 777 99999 trim 1 10 cache 3 1000)
  [ "$(grep -c '^ok$' <<<"$out")" = 3 ] || fail "unaligned trim (min=$min)"

  # Concurrent 1-byte writes into one block: none may be lost.
  out=$("$D" "$sock" rmw-race 64 $((min * 3 + 7)) rmw-race 40 $((min - 20)))
  [ "$(grep -c '^ok$' <<<"$out")" = 2 ] || fail "rmw race (min=$min)"
  # Unaligned block status (extents come back clipped to what we asked).
  out=$("$D" "$sock" extents 1001 99999)
  echo "$out"
  first=$(head -n1 <<<"$out")
  [ "${first%% *}" = 1001 ] || fail "extents do not start at 1001"
  last=$(tail -n2 <<<"$out" | head -n1)
  set -- $last
  [ $(( $1 + $2 )) = 101000 ] || fail "extents do not end at 101000"
  # A zero of a block racing a 10-byte RMW into it: one must come after
  # the other (the RMW may not write back the data the zero replaced).
  out=$("$D" "$sock" zero-race 20 $((min * 5)) $min 2>&1 || true)
  [ "$out" = ok ] || fail "zero vs rmw race (min=$min): $out"
done

# ---- size 4000 with minimum 512 (the last 416 bytes unreachable), and
# min = preferred = max = 512: a padded read must not exceed the maximum ----
sock=$tmp/sock-tail
start_nbdkit "$sock" --filter=log --filter=blocksize-policy memory 4000 \
  blocksize-minimum=512 blocksize-preferred=512 blocksize-maximum=512 \
  blocksize-error-policy=error logfile="$tmp/tail.log"
out=$("$D" "$sock" info write-pattern 0 3584 7 \
      check-pattern 500 100 7 check-pattern 3000 584 7 check-pattern 1 3583 7 \
      write-pattern 500 100 8 check-pattern 500 100 8 check-pattern 0 500 7 \
      check-pattern 600 2984 7 write-pattern 3583 1 9 check-pattern 3583 1 9 \
      zero 3 1500 check-pattern 1503 2080 7 trim 100 3484 cache 1 3583 \
      extents 1 3583 rmw-race 30 1000 zero-race 5 1024 512 2>&1)
echo "$out"
grep -q '^size=3584 min=512 pref=512 max=512 ' <<<"$out" \
  || fail "the size shown is not the export's rounded down to 512"
[ "$(grep -c '^ok$' <<<"$out")" = 16 ] || fail "I/O at the tail or over max"
# The unreachable tail: EINVAL here, nothing sent.
out=$("$D" -k "$sock" check-pattern 3500 100 7 write-pattern 3584 1 1 \
      zero 3000 600 2>&1 || true)
[ "$(grep -c 'error EINVAL' <<<"$out")" = 3 ] || fail "tail not refused: $out"
check_nbdkit_requests "$tmp/tail.log" 4000 512 512 || fail "a request broke the spec"
grep -q "export's size (4000 bytes) is not a multiple of its minimum block" \
  <<<"$("$D" "$sock" info 2>&1)" || fail "no warning about the tail"
echo OK
