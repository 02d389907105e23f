#!/usr/bin/env bash
# Reconnect (-R): the server (nbdkit file, so the data outlives it) is
# killed and restarted on the same socket while the driver is between
# commands (it waits on a FIFO); requests issued while it is down wait, are sent on the new
# connections and succeed. Without -R the same thing fails with EIO. A read
# the server drops the connection on every time (hostile-server.py
# close-on-read) fails with EIO after 5 retries instead of looping.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin file
D=$TOOLS/nbdc-driver

# kill9_nbdkit: the server crashes (SIGKILL: on SIGTERM nbdkit would wait
# for its clients, which wait on us); reaped, so it is gone on return.
kill9_nbdkit() {
  kill -9 "$nbdkit_pid"
  wait "$nbdkit_pid" 2>/dev/null || true
  rm -f "$sock"     # nbdkit leaves it behind
}

truncate -s 32M "$tmp/disk.img"
sock=$tmp/sock
start_nbdkit "$sock" file "$tmp/disk.img"

# Synchronised on events, not sleeps: after its first write the driver
# reads its next write's data from a FIFO (write-from blocks until the
# test feeds it), so that write is issued exactly when the test decides:
# here once the server is gone and the driver has logged the loss; the
# server is restarted only after that. The first write is flushed before
# the kill: a connection lost with acknowledged, unflushed writes makes
# the next flush, or the close, report EIO (see test-fuse-durability).
head -c 1M /dev/urandom > "$tmp/late"
mkfifo "$tmp/fifo1"
"$D" -R 20 -C 2 "$sock" write-pattern 0 8M 1 flush write-from "$tmp/fifo1" 16M \
  check-pattern 0 8M 1 write-pattern 8M 8M 2 check-pattern 8M 8M 2 flush \
  > "$tmp/out" 2> "$tmp/err" &
dpid=$!
track_pid "$dpid"
two_oks() { [ "$(grep -c '^ok' "$tmp/out")" -ge 2 ]; }
wait_for two_oks || fail "first write and flush did not finish"
kill9_nbdkit
wait_for grep -q 'lost; reconnecting for up to 20 s' "$tmp/err" ||
  fail "the driver did not notice the server going"
timeout 20 cp "$tmp/late" "$tmp/fifo1" || fail "the driver did not read the FIFO"
start_nbdkit "$sock" file "$tmp/disk.img"
rc=0
wait "$dpid" || rc=$?
cat "$tmp/out" "$tmp/err"
[ "$rc" = 0 ] || fail "driver failed across a server restart (exit $rc)"
[ "$(grep -c '^ok$' "$tmp/out")" = 7 ] || fail "not every command succeeded"
grep -q 're-established' "$tmp/err" || fail "no re-established line"
# Independent check of what reached the file.
out=$("$D" "$sock" check-pattern 0 8M 1 check-pattern 8M 8M 2 read-md5 16M 1M)
[ "$(grep -c '^ok$' <<<"$out")" = 2 ] || fail "data after reconnect"
[ "$(tail -n1 <<<"$out")" = "$(md5 "$tmp/late")" ] ||
  fail "the write issued while the server was down is not in the file"

# Without -R: the request issued after the server is gone fails with EIO,
# no hang.
mkfifo "$tmp/fifo2"
"$D" -k -C 1 "$sock" write-pattern 0 1M 3 write-from "$tmp/fifo2" 2M \
  check-pattern 0 1M 3 > "$tmp/out2" 2> "$tmp/err2" &
dpid=$!
track_pid "$dpid"
wait_for grep -q '^ok' "$tmp/out2" || fail "write did not finish"
kill9_nbdkit
timeout 20 cp "$tmp/late" "$tmp/fifo2" || fail "the driver did not read the FIFO"
rc=0
wait "$dpid" || rc=$?
cat "$tmp/out2" "$tmp/err2"
[ "$rc" = 1 ] || fail "expected failure without -R"
grep -q 'write-from: error EIO' "$tmp/out2" || fail "no EIO for the write without -R"
grep -q 'check-pattern: error EIO' "$tmp/out2" || fail "no EIO without -R"

# -R with a server that never comes back: gives up after the deadline,
# the waiting request fails with EIO.
start_nbdkit "$sock" file "$tmp/disk.img"
start=$(date +%s)
mkfifo "$tmp/fifo3"
"$D" -k -R 2 -C 1 "$sock" write-pattern 0 1M 4 write-from "$tmp/fifo3" 2M \
  check-pattern 0 1M 4 > "$tmp/out3" 2> "$tmp/err3" &
dpid=$!
track_pid "$dpid"
wait_for grep -q '^ok' "$tmp/out3" || fail "write did not finish"
kill9_nbdkit
timeout 20 cp "$tmp/late" "$tmp/fifo3" || fail "the driver did not read the FIFO"
rc=0
wait "$dpid" || rc=$?
cat "$tmp/out3" "$tmp/err3"
[ "$rc" = 1 ] || fail "expected failure after the reconnect deadline"
grep -q 'check-pattern: error EIO' "$tmp/out3" || fail "no EIO after deadline"
grep -q 'could not reconnect' "$tmp/err3" || fail "no give-up line"
[ $(( $(date +%s) - start )) -lt 20 ] || fail "took too long"

# A server that drops the connection at every read (and accepts the next
# one at once): each reconnect succeeds, the read kills it again. The read
# must end in EIO after a bounded number of retries, not loop for ever.
rm -f "$tmp/hsock"
python3 "$SRCDIR/test/hostile-server.py" "$tmp/hsock" close-on-read &
hpid=$!
track_pid "$hpid"
wait_for test -S "$tmp/hsock" || fail "hostile server did not start"
rc=0
timeout 30 "$D" -R 20 -C 1 "$tmp/hsock" read-md5 0 4096 \
  > "$tmp/out4" 2> "$tmp/err4" || rc=$?
cat "$tmp/out4" "$tmp/err4"
[ "$rc" = 1 ] || fail "expected the read to fail (exit $rc; 124 = looped)"
grep -q 'read-md5: error EIO' "$tmp/out4" || fail "no EIO for the poison read"
grep -q 'giving up on read at offset 0 after 5 lost connections' \
  "$tmp/err4" || fail "no give-up line"
echo OK
