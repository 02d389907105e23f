#!/usr/bin/env bash
# Multi-conn (nbd-proto.md "Multi-conn", NBD_FLAG_CAN_MULTI_CONN): with
# -C 4 requests spread over all four connections, and a flush is one
# NBD_CMD_FLUSH (under CAN_MULTI_CONN a flush on any connection covers the
# writes answered on all of them), sent only once every write was answered
# and only when something was written since the last flush. Watched
# through nbdkit's log filter. Also: more than one connection without
# CAN_MULTI_CONN is refused with a clear message; FUA is passed on when
# the server has it and emulated with a flush when it does not.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires_nbdkit_filter log
requires_nbdkit_filter multi-conn
requires_nbdkit_filter fua
requires nbdcopy --version
D=$TOOLS/nbdc-driver

log=$tmp/log
sock=$tmp/sock1
start_nbdkit "$sock" --filter=log memory 64M logfile="$log"
out=$("$D" -C 4 "$sock" info parallel-writes 32 0 1M 5 flush parallel-reads 16 0 1M \
      flush check-pattern 0 32M 5 read-md5 0 64M)
echo "$out"
grep -q 'connections=4 ' <<<"$out" || fail "expected 4 connections"
[ "$(grep -c "^ok" <<<"$out")" = 5 ] || fail "multi-conn run"
for c in 1 2 3 4; do
  w=$(grep -c "connection=$c Write " "$log") || true
  r=$(grep -c "connection=$c Read " "$log") || true
  echo "connection $c: $w writes, $r reads"
  [ "$w" -gt 0 ] || fail "no writes on connection $c"
  [ "$r" -gt 0 ] || fail "no reads on connection $c"
done
# One flush in all: the second flush found nothing written since the
# first, and close found nothing either.
[ "$(grep -c ' Flush id=' "$log")" = 1 ] \
  || fail "expected 1 flush, got $(grep -c ' Flush id=' "$log")"
# Every write, on every connection, was answered before the flush was
# sent. (Both patterns must match something, or the comparison would
# check nothing.)
awk '/ Flush id=/ && !fl { fl = NR }
     /\.\.\.Write .*return=0/ { last = NR; nw++ }
     END { if (!fl || nw != 32) { print fl " flush line, " nw " write replies";
           exit 1 }
           if (last > fl) { print "a write answered after the flush"; exit 1 } }' \
  "$log" || fail "write reply after the flush"
nbdcopy "nbd+unix:///?socket=$sock" "$tmp/copy.img"
[ "$(md5 "$tmp/copy.img")" = "$(tail -n1 <<<"$out")" ] \
  || fail "md5 differs from nbdcopy's"

# One write: close sends one flush.
: > "$log"
"$D" -C 4 "$sock" write-pattern 0 4096 1 > /dev/null
[ "$(grep -c ' Flush ' "$log")" = 1 ] || fail "close: expected 1 flush"

# No CAN_MULTI_CONN: 1 connection by default, -C 2 refused clearly.
sock=$tmp/sock2
start_nbdkit "$sock" --filter=multi-conn memory 16M multi-conn-mode=disable
out=$("$D" "$sock" info)
grep -q 'connections=1 ' <<<"$out" || fail "default without multi-conn"
expect_fail_with "does not allow more than one connection.*use 1 connection" \
  "$D" -C 2 "$sock" info

# FUA passed on when advertised...
log3=$tmp/log3
sock=$tmp/sock3
start_nbdkit "$sock" --filter=log memory 16M logfile="$log3"
head -c 100000 /dev/urandom > "$tmp/data"
"$D" -C 1 "$sock" write-from "$tmp/data" 4096 flags=fua > /dev/null
grep -q 'Write .*fua=1' "$log3" || fail "FUA not sent"
# ...and emulated by a flush when not. (nbdkit 1.32's fua filter has no
# fuamode=none, so an eval plugin over a file says can_fua=none.)
log4=$tmp/log4
sock=$tmp/sock4
img=$tmp/eval.img
truncate -s 16M "$img"
requires_nbdkit_plugin eval
start_nbdkit "$sock" --filter=log eval logfile="$log4" \
  get_size='echo 16777216' \
  pread="dd if=$img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
  pwrite="dd of=$img seek=\$4 conv=notrunc oflag=seek_bytes status=none" \
  can_write='exit 0' can_flush='exit 0' flush='exit 0' can_fua='echo none'
out=$("$D" -C 1 "$sock" info write-from "$tmp/data" 4096 flags=fua \
      read-md5 4096 100000)
echo "$out"
[ "$(tail -n1 <<<"$out")" = "$(md5 "$tmp/data")" ] || fail "FUA data"
grep -q 'Write .*fua=1' "$log4" && fail "FUA sent although not advertised"
grep -q ' Flush ' "$log4" || fail "FUA not emulated with a flush"
echo OK
