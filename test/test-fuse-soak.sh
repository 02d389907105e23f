#!/usr/bin/env bash
# Soak (issue 8): fio with crc32c verify headers (libaio, O_DIRECT, 4 jobs
# on their own quarter of the file, iodepth 8) writes the whole export
# through a FUSE mount with 4 connections (nbdkit file plugin, multi-conn)
# while nbdkit is killed -9 and restarted again and again. Then:
#  - fio's writes all succeeded (requests in flight at a kill are resent on
#    the reconnected connections);
#  - a file description open all along (opened before fio) reports EIO on
#    its first fsync exactly when the log says a connection died with
#    acknowledged, unflushed writes (the durability report: nbdfs cannot
#    know that nbdkit's file plugin had already put them in the host's
#    page cache, where they survive the kill), and its second fsync
#    succeeds; a description opened afterwards fsyncs without error;
#  - fio's verify pass through the mount, and an independent one on the
#    image file itself after the unmount (no nbdfs, no NBD), find every
#    block intact.
# What the soak asserts about EIO: fio never flushes during the write
# phase, so every kill lands with acknowledged, unflushed writes on the
# connections: the report (EIO once, a warning with the count) must come.
# With this server a kill never loses an acknowledged write, so the EIO is
# "may be lost", not a loss: the data checks must still pass. fio's own close may see the same report
# (FUSE_FLUSH): an fio run that fails only with EIO on close/fsync is
# accepted when the log recorded a loss.
#
# SOAK_SECS (default 12, `make soak`: 180) sets the length of the write
# phase (writes are rate-limited so the kills land in the middle);
# SOAK_KILL_EVERY (default 2 s) how often the server is killed.
# timeout: 110
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_fuse
requires fio --version
requires_nbdkit_plugin file

secs=${SOAK_SECS:-12}
every=${SOAK_KILL_EVERY:-2}
jobs=4
rate_kib=1024                        # per job
per_job=$(( secs * rate_kib ))       # KiB each job writes
size_kib=$(( per_job * jobs ))
mnt=$tmp/mnt
sock=$tmp/sock
img=$tmp/disk.img
truncate -s "${size_kib}K" "$img"

# kill9_nbdkit: kill -9 the server, wait for it, remove its stale socket.
kill9_nbdkit() {
  kill -9 "$nbdkit_pid"
  while kill -0 "$nbdkit_pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$sock"
}

start_nbdkit "$sock" file "$img"
start_nbdfs "$mnt" "$sock" -C 4 --reconnect 30 --timeout 20 2> "$tmp/log"

# The fio job: the same options for the write and the verify passes.
fio_job() {
  local file=$1; shift
  timeout $(( secs * 3 + 40 )) fio --name=soak --filename="$file" \
    --ioengine=libaio --direct=1 --rw=randwrite --bs=64k --iodepth=8 \
    --numjobs=$jobs --size="${per_job}K" --offset_increment="${per_job}K" \
    --randrepeat=1 --verify=crc32c --verify_fatal=1 --group_reporting \
    --verify_state_save=0 \
    "$@"
}

# A description open across the kills, told of losses at its fsync.
python3 - "$mnt/disk" "$tmp/holder-ready" "$tmp/holder-go" \
  > "$tmp/holder" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.1)
for i in range(2):
    try:
        os.fsync(fd)
        print("OK", end=" ")
    except OSError as e:
        print(os.strerror(e.errno), end=" ")
os.close(fd)
fd = os.open(sys.argv[1], os.O_WRONLY)
os.fsync(fd)
print("fresh-OK", end=" ")
PY
hpid=$!
cleanup_fn kill_pid "$hpid"
wait_for test -e "$tmp/holder-ready" || fail "the holder did not open the file"

fio_job "$mnt/disk" --do_verify=0 --rate="${rate_kib}k" \
  > "$tmp/fio-write" 2>&1 &
fpid=$!
cleanup_fn kill_pid "$fpid"
kills=0
start=$(date +%s)
while kill -0 "$fpid" 2>/dev/null; do
  sleep "$every"
  kill -0 "$fpid" 2>/dev/null || break
  kill9_nbdkit
  sleep 0.3
  start_nbdkit "$sock" file "$img"
  kills=$(( kills + 1 ))
done
# On failure, unmount before the last nbdkit is stopped (cleanups run
# last-registered first; nbdkit waits for connected clients on SIGTERM).
cleanup_fn _cleanup_nbdfs "$mnt" "$nbdfs_pid"
frc=0
wait "$fpid" || frc=$?
echo "write phase: $(( $(date +%s) - start )) s, server killed $kills times"
cat "$tmp/fio-write"
[ "$kills" -ge 2 ] || fail "the server was killed only $kills time(s)"
lost=0
grep -q 'not yet flushed' "$tmp/log" && lost=1
if [ "$frc" != 0 ]; then
  # Only the durability report (EIO at close/fsync) is acceptable.
  [ "$lost" = 1 ] && grep -q 'error=Input/output error' "$tmp/fio-write" \
    && ! grep -qE 'fio: io_u error.*(write|read)' "$tmp/fio-write" \
    || fail "fio's write phase failed (exit $frc)"
fi

touch "$tmp/holder-go"
wait "$hpid" || fail "the holder failed"
out=$(cat "$tmp/holder")
grep 'not yet flushed' "$tmp/log" || true
echo "fsync, fsync, fresh open + fsync: $out"
[ "$lost" = 1 ] || fail "no warning about acknowledged, unflushed writes"
[ "$out" = "Input/output error OK fresh-OK " ] ||
  fail "want EIO, OK, fresh-OK; got $out"

# Verify through the mount (the server killed no more).
fio_job "$mnt/disk" --verify_only=1 > "$tmp/fio-verify" 2>&1 ||
  { cat "$tmp/fio-verify"; fail "fio verify through the mount"; }
stop_nbdfs "$mnt" umount
kill_pid "$nbdkit_pid"
# Independent read-back of the whole export: the image file itself.
fio_job "$img" --verify_only=1 > "$tmp/fio-verify2" 2>&1 ||
  { cat "$tmp/fio-verify2"; fail "fio verify of the image file"; }
grep -E 'verify|READ:' "$tmp/fio-verify2" || true
grep -c 're-established' "$tmp/log" | sed 's/^/reconnects: /'
echo OK
