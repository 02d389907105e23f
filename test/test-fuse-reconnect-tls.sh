#!/usr/bin/env bash
# A reconnect never downgrades TLS (issue 8): mounted with --tls=on
# (opportunistic) against nbdkit --tls=require (PSK), the first connection
# uses TLS; the server is killed and comes back on the same socket WITHOUT
# TLS. The reconnect must be refused (a warning says why) and I/O fail
# with EIO, never go on in clear text. Then the TLS server is back: I/O
# works again.
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_fuse
requires_nbdkit_plugin file
requires psktool --version

bash "$SRCDIR/scripts/make-psk.sh" "$tmp/keys.psk" alice
sock=$tmp/sock
mnt=$tmp/mnt
img=$tmp/disk.img
truncate -s 16M "$img"
tls=(--tls=require --tls-psk="$tmp/keys.psk")

kill9_nbdkit() {
  kill -9 "$nbdkit_pid"
  while kill -0 "$nbdkit_pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$sock"
}
read_errno() {
  pyio errno 'import os, mmap
fd = os.open("'"$mnt"'/disk", os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
os.preadv(fd, [m], 1048576)'
}

start_nbdkit "$sock" "${tls[@]}" file "$img"
start_nbdfs "$mnt" "$sock" -C 1 --tls=on --tls-psk-file "$tmp/keys.psk" \
  --tls-username alice --reconnect 3 --timeout 5 2> "$tmp/log"
[ "$(read_errno)" = OK ] || fail "read over TLS"

kill9_nbdkit
start_nbdkit "$sock" file "$img"         # plain text now
out=$(read_errno)
echo "read with a plain-text server back: $out"
cat "$tmp/log"
[ "$out" = EIO ] || fail "expected EIO, got $out (clear text after TLS?)"
grep -q 'reconnect attempt [0-9]* refused: .*TLS is required' "$tmp/log" ||
  fail "no warning saying why the reconnect was refused"
! grep -q 're-established' "$tmp/log" || fail "reconnected in clear text"

kill9_nbdkit
start_nbdkit "$sock" "${tls[@]}" file "$img"
read_ok() { [ "$(read_errno)" = OK ]; }
WAIT_SECS=10 wait_for read_ok ||
  fail "I/O did not come back with the TLS server"
stop_nbdfs "$mnt" umount
echo OK
