#!/usr/bin/env bash
# The lost-connections limit through FUSE (nbdclient/pool.c
# POOL_MAX_RETRIES): a server that negotiates, then closes the connection
# at the first READ, every time, and accepts the next connection at once
# (hostile-server.py close-every-read; BLOCK_STATUS, which the mount's
# allocation scan sends, is answered, so only the read is poisoned). Every reconnect succeeds and the read
# kills it again: the read(2) through the mount must fail with EIO after 5
# lost connections, within a bounded time, instead of retrying for ever
# (each reconnect would open a fresh --reconnect window). The mount stays
# usable (stat answers) and unmounts cleanly; the server saw only requests
# that keep to the spec (no VIOLATION).
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires python3 --version

sock=$tmp/sock
mnt=$tmp/mnt
python3 "$SRCDIR/test/hostile-server.py" "$sock" close-every-read \
  2> "$tmp/server.err" &
spid=$!
track_pid "$spid"
wait_for test -S "$sock" || fail "the server did not start"
start_nbdfs "$mnt" "$sock" --reconnect 20 --timeout 10 2> "$tmp/log"

# O_DIRECT: one 4 KiB READ, no readahead around it.
start=$(date +%s.%N)
rc=0
timeout 30 python3 - "$mnt/disk" > "$tmp/out" <<'PY' || rc=$?
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
try:
    os.preadv(fd, [m], 0)
    print("read OK")
except OSError as e:
    print("read", errno.errorcode.get(e.errno, e.errno))
PY
end=$(date +%s.%N)
cat "$tmp/out" "$tmp/log"
[ "$rc" = 0 ] || fail "the reader exited $rc (124: the read looped past 30 s)"
grep -qx 'read EIO' "$tmp/out" || fail "expected EIO from the poisoned read"
grep -q 'giving up on read at offset 0 after 5 lost connections: EIO' \
  "$tmp/log" || fail "no give-up line in the log"
# The first try and 5 retries: 6 connections lost to this read (counted by
# the loss line, whatever the read saw: EOF, or a reset when a concurrent
# BLOCK_STATUS was left unread by the closing server).
lost=$(grep -c 'connection 1 lost; reconnecting' "$tmp/log" || true)
[ "$lost" -eq 6 ] || fail "expected 6 connections lost to the read, saw $lost"
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "EIO after $secs s"
awk -v s="$secs" 'BEGIN { exit !(s < 20) }' || fail "EIO took $secs s (bound 20 s)"

stat "$mnt/disk" > /dev/null || fail "stat after the EIO"
stop_nbdfs "$mnt"
kill -0 "$spid" 2>/dev/null || fail "the hostile server died"
! grep -q VIOLATION "$tmp/server.err" || { cat "$tmp/server.err"; fail "request violated the spec"; }
echo "test-fuse-lost-limit: OK"
