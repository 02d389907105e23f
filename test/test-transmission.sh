#!/usr/bin/env bash
# Transmission over the pool against nbdkit memory: data written by the
# driver is read back (md5) and cross-checked with nbdcopy, an independent
# client; with structured replies, without (--no-sr), oldstyle, and a
# read-only export (writes -> EROFS/EPERM).
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires nbdcopy --version
D=$TOOLS/nbdc-driver

# check_rw SOCK URI: pattern writes at odd places, read back, md5 equal to
# what nbdcopy reads from the same server.
check_rw() {
  local sock=$1 uri=$2 out
  out=$("$D" "$sock" info \
        write-pattern 0 1M 1 \
        write-pattern 1234567 300001 2 \
        write-pattern 8M 40M 3 \
        check-pattern 0 1M 1 \
        check-pattern 1234567 300001 2 \
        check-pattern 8M 40M 3 \
        flush \
        zero 5000 70000 \
        read-md5 0 64M)
  echo "$out"
  [ "$(grep -c '^ok$' <<<"$out")" = 8 ] || fail "driver run on $sock"
  local ours theirs
  ours=$(tail -n1 <<<"$out")
  nbdcopy "$uri" "$tmp/copy.img"
  theirs=$(md5 "$tmp/copy.img")
  rm -f "$tmp/copy.img"
  [ "$ours" = "$theirs" ] || fail "md5 mismatch: ours $ours, nbdcopy $theirs"
  # The zeroed range really reads back as zeroes, with the data around it.
  "$D" "$sock" read-to "$tmp/z" 4999 70002
  cmp <(head -c 70000 /dev/zero) <(tail -c +2 "$tmp/z" | head -c 70000) \
    || fail "zero range not zero"
  out=$("$D" "$sock" check-pattern 0 5000 1 check-pattern 75000 10000 1)
  [ "$(grep -c '^ok$' <<<"$out")" = 2 ] || fail "zero touched neighbours"
}

# 1. Default: fixed newstyle, structured replies, base:allocation.
sock=$tmp/sock1
start_nbdkit "$sock" memory 64M
out=$("$D" "$sock" info)
grep -q 'structured=1 base_allocation=1' <<<"$out" || fail "expected SR"
check_rw "$sock" "nbd+unix:///?socket=$sock"

# 2. Simple replies only.
sock=$tmp/sock2
start_nbdkit "$sock" --no-sr memory 64M
out=$("$D" "$sock" info)
grep -q 'structured=0' <<<"$out" || fail "expected no SR"
check_rw "$sock" "nbd+unix:///?socket=$sock"
# No base:allocation without structured replies: extents -> ENOTSUP.
expect_fail_with "extents: error (ENOTSUP|EOPNOTSUPP)" "$D" "$sock" extents 0 1M

# 3. Oldstyle. nbdkit 1.32 advertises flush, trim and zero on oldstyle
# exports but answers each of them with EINVAL ("flush operation not
# supported"; libnbd's nbdcopy --flush fails the same way), so only reads
# and writes are checked; our final flush on close reports that EINVAL.
sock=$tmp/sock3
start_nbdkit "$sock" --oldstyle memory 64M
rc=0
out=$("$D" "$sock" write-pattern 0 1M 1 write-pattern 1234567 300001 2 \
      write-pattern 8M 40M 3 check-pattern 0 1M 1 \
      check-pattern 1234567 300001 2 check-pattern 8M 40M 3 \
      read-md5 0 64M) || rc=$?
echo "$out"
[ "$(grep -c '^ok$' <<<"$out")" = 6 ] || fail "oldstyle run"
grep -v '^close: error EINVAL' <<<"$out" | grep -q error && fail "oldstyle"
# The final flush's EINVAL is the only error, and it is reported: exit 1
# with the close line (exit 0 would hide the failed flush; a crash differs).
[ "$rc" = 1 ] || fail "oldstyle: driver exit status $rc, want 1 (the refused flush)"
grep -q '^close: error EINVAL' <<<"$out" || fail "oldstyle: the refused flush is not reported"
nbdcopy "nbd+unix:///?socket=$sock" "$tmp/copy.img"
[ "$(md5 "$tmp/copy.img")" = "$(grep -v '^close:' <<<"$out" | tail -n1)" ] \
  || fail "oldstyle md5 differs from nbdcopy's"
rm -f "$tmp/copy.img"

# 4. Read-only export: the server says so (EROFS locally), reads work.
sock=$tmp/sock4
printf 'hello, read-only world\n' > "$tmp/ro.txt"
truncate -s 1M "$tmp/ro.txt"
start_nbdkit "$sock" -r file "$tmp/ro.txt"
expect_fail_with "write-pattern: error (EROFS|EPERM)" \
  "$D" "$sock" write-pattern 0 512 1
expect_fail_with "zero: error (EROFS|EPERM)" "$D" "$sock" zero 0 512
expect_fail_with "trim: error (EROFS|EPERM)" "$D" "$sock" trim 0 4096
[ "$("$D" "$sock" read-md5 0 1M | tail -n1)" = "$(md5 "$tmp/ro.txt")" ] \
  || fail "read-only read"
# -r on our side refuses writes to a writable server too.
expect_fail_with "write-pattern: error EROFS" \
  "$D" -r "$tmp/sock1" write-pattern 0 512 1

# 5. -k: a failed command does not end the run.
out=$("$D" -k "$sock" write-pattern 0 1 1 read-md5 0 1M) && fail "-k rc"
grep -q "^$(md5 "$tmp/ro.txt")\$" <<<"$out" || fail "read after failure"

# 6. Inside TLS (PSK): the reader and the sender share one gnutls session.
if command -v psktool > /dev/null; then
  psktool -u alice -p "$tmp/keys.psk" > /dev/null
  sock=$tmp/sock6
  start_nbdkit "$sock" --tls=require --tls-psk="$tmp/keys.psk" memory 64M
  uri="nbds+unix:///?socket=$sock&tls-psk-file=$tmp/keys.psk&tls-username=alice"
  out=$("$D" "$uri" write-pattern 0 32M 1 parallel-writes 16 32M 1M 2 \
        check-pattern 0 32M 1 check-pattern 32M 16M 2 \
        parallel-reads 32 0 1M extents 0 64M)
  echo "$out"
  [ "$(grep -c '^ok' <<<"$out")" = 5 ] || fail "TLS transmission"
  grep -qx '50331648 16777216 3' <<<"$out" || fail "TLS extents"
elif [ "${CI:-}" = true ]; then
  fail "psktool missing (gnutls-bin)"
fi
echo OK
