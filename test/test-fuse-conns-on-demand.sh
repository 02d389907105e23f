#!/usr/bin/env bash
# Connections on demand (nbdclient/pool-grow.c): a FUSE mount opens one
# connection; -C N (default 4 under NBD_FLAG_CAN_MULTI_CONN) is the most.
# Extras open while every live connection has 8 or more requests, and an
# extra idle for NBDFS_IDLE_CLOSE_MS (the test knob; 30 s by default) is
# flushed if it holds acknowledged, unflushed writes, then closed with
# NBD_CMD_DISC. Counted on the server: nbdkit's log filter logs each
# Connect, request and Disconnect per connection; nbdkit -v logs each
# NBD_CMD_DISC it receives.
#  1. Default (4), nbdkit memory: 1 connection after mount. fio libaio
#     qd32 random writes (crc32c verify headers) of 16 MiB, stopping for
#     3 s half way with the file open (fio thinktime): every extra that
#     wrote gets a Flush after the reply to its last Write, then a clean
#     Disconnect (DISC) while fio still holds the file; back to 1. fio
#     reads back and verifies. fio qd32 random reads: 4 at once; idle: 1.
#     The data verifies after the shrink and after a remount, and reads
#     the same through nbdfs as straight from the server.
#  2. -C 2: qd32 reads reach 2, never more; idle: 1.
#  3. nbdkit's limit filter (limit=2: the third client is turned away):
#     mounted and idle, nbdfs holds 1, so a second client (nbdinfo) gets
#     in; under load nbdfs grows to 2, the third open fails with one
#     warning naming the connection limit, and no I/O fails.
# timeout: 120
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires_nbdkit_filter log
requires_nbdkit_filter limit
requires fio --version
requires nbdinfo --version
requires nbdcopy --version

export NBDFS_IDLE_CLOSE_MS=1000
mnt=$tmp/mnt
sock=$tmp/sock
log=$tmp/nbdkit.log

# live LOG: connections open now; peak LOG [LINE]: the most open at once
# (after line LINE of the log).
live() { awk '$4 == "Connect" { n++ } $4 == "Disconnect" { n-- }
              END { print n + 0 }' "$1"; }
peak() { awk -v from="${2:-0}" '$4 == "Connect" { n++ }
              $4 == "Disconnect" { n-- }
              NR > from && n > m { m = n } END { print m + 0 }' "$1"; }
wait_live() {                 # wait_live LOG N: within 10 s
  WAIT_SECS=10 wait_for sh -c "[ \$(awk '\$4 == \"Connect\" { n++ }
    \$4 == \"Disconnect\" { n-- } END { print n + 0 }' '$1') = $2 ]" ||
    fail "expected $2 connection(s) open, the server sees $(live "$1")"
}
fio_common=(--filename="$mnt/disk" --ioengine=libaio --direct=1 --iodepth=32
            --bs=4k --output-format=terse)
rand_read() { fio --name=r "${fio_common[@]}" --rw=randread --size=16M \
                --time_based --runtime="${1:-2}" >/dev/null; }

# --- 1. default maximum (4) -------------------------------------------
start_nbdkit "$sock" -v --filter=log memory 64M logfile="$log" \
  2> "$tmp/nbdkit.err"
start_nbdfs "$mnt" "$sock" 2> "$tmp/nbdfs.log"
sleep 0.5
[ "$(live "$log")" = 1 ] || fail "after mount: $(live "$log") connections"

# Writes from 32 AIOs at once; after 2048 of the 4096 blocks fio waits
# 3 s (file open, writes unflushed) while the extras go idle.
fio --name=w "${fio_common[@]}" --rw=randwrite --size=16M \
  --verify=crc32c --do_verify=1 --thinktime=3s --thinktime_blocks=2048 \
  > "$tmp/fio-w" || fail "fio write/verify failed: $(cat "$tmp/fio-w")"
[ "$(peak "$log")" = 4 ] || fail "writes at qd32: peak $(peak "$log"), want 4"
# Every connection that closed having written: a Flush sent after the
# reply to its last Write succeeded before it closed (under
# CAN_MULTI_CONN a flush on any connection covers it), and at least one
# closed during the pause after a Flush of its own (the idle close's).
awk '
  $3 ~ /^connection=/ { split ($3, a, "="); c = a[2] }
  $4 == "...Write" { w[c] = NR; cov[c] = 0; own[c] = 0 }
  $4 == "Flush" { fr[c] = NR }
  $4 == "...Flush" && /return=0/ {
    for (x in w) if (w[x] < fr[c]) { cov[x] = 1; if (x == c) own[x] = 1 } }
  $4 == "Disconnect" { gone++; if (w[c]) { wrote++; if (cov[c]) ok++
                                           if (own[c]) mine++ } }
  END { printf "%d closed, %d had written, %d flushed first, %d by itself\n",
               gone, wrote, ok, mine
        exit !(gone >= 3 && wrote >= 1 && ok == wrote && mine >= 1) }' "$log" ||
  fail "the extras did not all close, after a Flush covering their writes"
discs=$(grep -c "client sent NBD_CMD_DISC" "$tmp/nbdkit.err" || true)
gone=$(grep -c " Disconnect " "$log" || true)
[ "$discs" = "$gone" ] ||
  fail "$gone connections closed, $discs with NBD_CMD_DISC"
wait_live "$log" 1

from=$(wc -l < "$log")
rand_read 2 || fail "fio random read failed"
[ "$(peak "$log" "$from")" = 4 ] ||
  fail "reads at qd32: peak $(peak "$log" "$from"), want 4"
wait_live "$log" 1
[ "$(grep -c "client sent NBD_CMD_DISC" "$tmp/nbdkit.err")" = \
  "$(grep -c " Disconnect " "$log")" ] || fail "an idle close without DISC"

verify() {
  fio --name=w "${fio_common[@]}" --rw=randwrite --size=16M \
    --verify=crc32c --verify_only > "$tmp/fio-v" ||
    fail "$1: verify failed: $(cat "$tmp/fio-v")"
  dd if="$mnt/disk" bs=1M iflag=direct status=none | md5sum > "$tmp/via-fuse"
  nbdcopy "nbd+unix:///?socket=$sock" - | md5sum > "$tmp/direct"
  cmp "$tmp/via-fuse" "$tmp/direct" || fail "$1: nbdfs and the server differ"
}
verify "after the shrink"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "$sock" 2>> "$tmp/nbdfs.log"
verify "after a remount"
stop_nbdfs "$mnt"
! grep -iE "warning|critical|lost" "$tmp/nbdfs.log" ||
  fail "warnings from nbdfs"
kill_pid "$nbdkit_pid"

# --- 2. -C 2 ------------------------------------------------------------
log=$tmp/nbdkit2.log
sock=$tmp/sock2
start_nbdkit "$sock" --filter=log memory 64M logfile="$log"
start_nbdfs "$mnt" "$sock" -C 2
sleep 0.3
[ "$(live "$log")" = 1 ] || fail "-C 2, after mount: $(live "$log")"
rand_read 2 || fail "-C 2: fio random read failed"
[ "$(peak "$log")" = 2 ] || fail "-C 2: peak $(peak "$log"), want 2"
wait_live "$log" 1
stop_nbdfs "$mnt"
kill_pid "$nbdkit_pid"

# --- 3. a server that takes two clients -----------------------------------
log=$tmp/nbdkit3.log
sock=$tmp/sock3
start_nbdkit "$sock" --filter=log --filter=limit memory 64M limit=2 \
  logfile="$log"
start_nbdfs "$mnt" "$sock" 2> "$tmp/nbdfs3.log"
sleep 0.3
[ "$(live "$log")" = 1 ] || fail "limit=2, after mount: $(live "$log")"
timeout 10 nbdinfo --size "nbd+unix:///?socket=$sock" ||
  fail "a second client could not connect while nbdfs was idle"
rand_read 3 || fail "limit=2: I/O failed while growth was refused"
[ "$(peak "$log")" = 2 ] || fail "limit=2: peak $(peak "$log"), want 2"
stop_nbdfs "$mnt"
cat "$tmp/nbdfs3.log"
[ "$(grep -c "could not open connection 3 .*connection limit" \
     "$tmp/nbdfs3.log")" = 1 ] ||
  fail "want one warning about the connection limit"
