#!/usr/bin/env bash
# Shutdown: SIGTERM while 8 writers have requests in flight loses no
# acknowledged write (checked in the backing file of nbdkit's file plugin
# after nbdfs exited 0), and the final flush reaches every connection
# that wrote; SIGINT exits 0 too; kill -9 leaves no dead mount behind
# (auto_unmount), and the directory can be mounted again.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin file
requires_nbdkit_filter log
requires fio --version
# Connections on demand: the extras opened below stay until the end.
export NBDFS_IDLE_CLOSE_MS=600000

mnt=$tmp/mnt
sock=$tmp/sock
log=$tmp/nbdkit.log
truncate -s 64M "$tmp/backing"
start_nbdkit "$sock" --filter=log file "$tmp/backing" logfile="$log"
start_nbdfs "$mnt" "$sock" -C 4
f=$mnt/disk
# The mount opens one connection; qd32 reads open the other three, which
# the writers (one request in flight at a time: the kernel serialises
# writes to one FUSE file) then share.
grow_connections "$f" "$log" 4

# 8 threads, each writing its own 64 KiB blocks once, in order; a block's
# index is logged only after its write() returned (was acknowledged). Each
# thread also logs when a write starts, is acknowledged or fails, with the
# wall-clock time, to show below that writes were in flight at SIGTERM.
python3 - "$f" "$tmp/acked" "$tmp/events" <<'PY' &
import errno, os, sys, threading, time
path, acked_path, events_path = sys.argv[1], sys.argv[2], sys.argv[3]
BS, NBLOCKS, NT = 65536, 1024, 8
out = open(acked_path, "w")
ev = open(events_path, "w")
lock = threading.Lock()
def block(i):
    return (b"%08d" % i) * (BS // 8)
def log(what, i):
    with lock:
        ev.write("%s %d %.6f\n" % (what, i, time.time()))
        ev.flush()
def writer(t):
    i = -1
    try:
        fd = os.open(path, os.O_WRONLY)
        for i in range(t, NBLOCKS, NT):
            log("start", i)
            os.pwrite(fd, block(i), i * BS)
            with lock:
                out.write("%d\n" % i)
                out.flush()
            log("ack", i)
    except OSError as e:
        log("error-" + errno.errorcode.get(e.errno, str(e.errno)), i)
ts = [threading.Thread(target=writer, args=(t,)) for t in range(NT)]
for t in ts: t.start()
for t in ts: t.join()
PY
writer=$!
# Let some writes complete, then stop nbdfs in the middle of the stream.
wait_for sh -c "[ \$(cat '$tmp/acked' 2>/dev/null | wc -l) -ge 100 ]" ||
  fail "writers made no progress"
kill -0 "$writer" || fail "the writers finished before SIGTERM: nothing was in flight"
t0=$(date +%s.%N)
stop_nbdfs "$mnt" term "$tmp/term-sent"
t1=$(cat "$tmp/term-sent")
wait "$writer" || true
# In flight at SIGTERM: started before it, and acknowledged after it or
# failed. Without any, this test would only be an unmount test.
inflight=$(awk -v t0="$t0" -v t1="$t1" '
  $1 == "start" { s[$2] = $3 }
  $1 == "ack" && ($2 in s) && s[$2] < t0 && $3 > t1 { n++ }
  $1 ~ /^error-/ && ($2 in s) && s[$2] < t0 { n++; print "write of block " $2 ": " $1 > "/dev/stderr" }
  END { print n + 0 }' "$tmp/events")
echo "$inflight write(s) in flight at SIGTERM"
[ "$inflight" -ge 1 ] || fail "no write was in flight at SIGTERM"
n=$(wc -l < "$tmp/acked")
echo "$n blocks acknowledged before the shutdown"
python3 - "$tmp/backing" "$tmp/acked" <<'PY'
import sys
BS = 65536
data = open(sys.argv[1], "rb").read()
acked = [int(x) for x in open(sys.argv[2])]
for i in acked:
    if data[i * BS:(i + 1) * BS] != (b"%08d" % i) * (BS // 8):
        raise SystemExit("acknowledged block %d is not in the backing file" % i)
print("all", len(acked), "acknowledged blocks present")
PY
# The final flush: 8 writers over -C 4, so every connection wrote; one
# Flush after the last write was answered covers them all (multi-conn);
# then a Disconnect on each.
conns=$(grep -o 'connection=[0-9]* Write ' "$log" | sort -u | grep -o '[0-9]*') || true
[ "$(echo $conns | wc -w)" = 4 ] || fail "writes on connections '$conns', expected 4"
check_flushed_after_writes "$log" || fail "no flush after the last write was answered"
[ "$(grep -c ' Disconnect ' "$log")" = 4 ] || fail "expected 4 disconnects"

# SIGINT: the same orderly exit.
start_nbdfs "$mnt" "$sock"
stop_nbdfs "$mnt" term
start_nbdfs "$mnt" "$sock"
kill -INT "$nbdfs_pid"
rc=0; wait "$nbdfs_pid" || rc=$?
[ "$rc" = 0 ] || fail "SIGINT: exit status $rc"
! mountpoint -q "$mnt" || fail "SIGINT: still mounted"

# kill -9: auto_unmount cleans up; nothing is left wedged.
start_nbdfs "$mnt" "$sock"
head -c 4096 "$f" > /dev/null
kill -9 "$nbdfs_pid"
wait "$nbdfs_pid" || true
WAIT_SECS=10 wait_for sh -c "! mountpoint -q '$mnt'" ||
  fail "kill -9 left $mnt mounted"
timeout 5 ls -la "$mnt" > /dev/null || fail "$mnt is wedged after kill -9"
start_nbdfs "$mnt" "$sock"
[ "$(stat -c %s "$f")" = $((64 * 1024 * 1024)) ] || fail "re-mount after kill -9"
stop_nbdfs "$mnt"
echo OK
