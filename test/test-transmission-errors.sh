#!/usr/bin/env bash
# Server-side errors and slowness: nbdkit's error filter (EIO reaches the
# caller, the connection survives and the next request works) and delay
# filter (N concurrent slow reads on ONE connection overlap: they take about
# one delay, not N).
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires_nbdkit_filter error
requires_nbdkit_filter delay
D=$TOOLS/nbdc-driver

# 1. error filter: reads fail with EIO while $tmp/err exists.
sock=$tmp/sock1
start_nbdkit "$sock" --filter=error memory 16M \
  error-pread=EIO error-pread-rate=1 error-file="$tmp/err"
touch "$tmp/err"
out=$("$D" -k -C 1 "$sock" write-pattern 0 1M 1 \
      check-pattern 0 1M 1 read-md5 5 1000 \
      unlink "$tmp/err" \
      info check-pattern 0 1M 1) && fail "expected a failed read"
echo "$out"
grep -qx 'check-pattern: error EIO: Input/output error' <<<"$out" \
  || fail "EIO not reported for check-pattern"
grep -qx 'read-md5: error EIO: Input/output error' <<<"$out" \
  || fail "EIO not reported for read-md5"
# The same single connection is still alive and serves the next read.
grep -q 'connections=1 ' <<<"$out" || fail "connection died after EIO"
[ "$(tail -n1 <<<"$out")" = ok ] || fail "read after EIO"

# With structured replies the server's error text is carried in an error
# chunk; with -v it shows in the debug trace.
touch "$tmp/err"
out=$("$D" -v -C 1 "$sock" read-md5 0 4096 2>&1) && fail "expected EIO"
grep -q 'server sent error 5 (EIO)' <<<"$out" || fail "no debug trace"
rm -f "$tmp/err"

# 2. delay filter: 8 reads of 1 s each, submitted at once on ONE
# connection, must overlap (assertion generous: < 4 s; ~1 s expected).
sock=$tmp/sock2
start_nbdkit "$sock" --filter=delay memory 16M rdelay=1
out=$("$D" -C 1 "$sock" parallel-reads 8 0 64K)
echo "$out"
ms=$(sed -n 's/^ok elapsed_ms=//p' <<<"$out")
[ -n "$ms" ] || fail "no timing"
echo "8 concurrent 1 s reads on 1 connection took $ms ms"
[ "$ms" -ge 900 ] || fail "delay filter not in effect ($ms ms)"
[ "$ms" -lt 4000 ] || fail "reads did not overlap: $ms ms for 8 x 1 s"
# And over 4 connections.
out=$("$D" -C 4 "$sock" parallel-reads 8 0 64K)
ms4=$(sed -n 's/^ok elapsed_ms=//p' <<<"$out")
echo "8 concurrent 1 s reads on 4 connections took $ms4 ms"
[ "$ms4" -lt 4000 ] || fail "reads did not overlap on 4 connections"

# 3. request timeout: with -t 1 a server that takes 5 s is declared dead,
# the request fails with EIO and a line says why; no hang.
sock=$tmp/sock3
start_nbdkit "$sock" --filter=delay memory 16M rdelay=5
start=$(date +%s)
out=$("$D" -C 1 -t 1 "$sock" read-md5 0 4096 2>&1) && fail "expected EIO"
echo "$out"
[ $(( $(date +%s) - start )) -lt 5 ] || fail "timeout took too long"
grep -q 'no data from the server for 1 s' <<<"$out" || fail "no reason"
grep -q 'read-md5: error EIO' <<<"$out" || fail "no EIO"
echo OK
