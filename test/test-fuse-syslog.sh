#!/usr/bin/env bash
# FUSE mode without -f logs to syslog once daemonised (README "FUSE mode":
# "in the background it logs to syslog, ident nbdfs"; nbdfs-log.c: facility
# LOG_DAEMON, LOG_PID, one format "DOMAIN: [LEVEL: ]MESSAGE").
# The test runs in a private mount namespace with a tmpfs over /dev (the
# nodes it needs bound back from the real /dev) and a datagram listener
# bound at /dev/log, the socket syslog(3) writes to. nbdkit is killed
# under the mount: the loss warning must arrive as
#   <28>TIMESTAMP nbdfs[PID]: nbdfs-client: warning: connection 1 lost; ...
# (28 = LOG_DAEMON|LOG_WARNING), the reconnect and the unmount as notices
# (<29>), with the daemon's own PID (the one in --pidfile); nothing at
# debug level without -v.
# timeout: 60
if [ -z "${NBDFS_SYSLOG_NS:-}" ]; then
  # Same PID (exec), so the runner's process-group handling still holds.
  export NBDFS_SYSLOG_NS=1
  exec unshare -m --propagation private bash "${BASH_SOURCE[0]}" "$@"
fi
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires unshare --version
requires_nbdkit_plugin memory

# /dev: a tmpfs with the real nodes bound back, so /dev/log can be ours
# without touching the host's /dev. Everything mounted here dies with the
# namespace.
mkdir "$tmp/realdev"
mount --bind /dev "$tmp/realdev"
mount -t tmpfs -o size=64k,mode=755 nbdfs-test-dev /dev
for n in null zero full random urandom fuse tty; do
  [ -e "$tmp/realdev/$n" ] || continue
  touch "/dev/$n"
  mount --bind "$tmp/realdev/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# The listener: one line per datagram, flushed at once.
log=$tmp/syslog.txt
: > "$log"
python3 -u - "$log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open(sys.argv[1], "a") as out:
    while True:
        d = s.recv(65536)
        out.write(d.decode("utf-8", "replace").rstrip("\n") + "\n")
        out.flush()
PY
track_pid $!
wait_for test -S /dev/log || fail "the syslog listener did not bind /dev/log"

sock=$tmp/nbd.sock
start_nbdkit "$sock" memory 16M
mnt=$tmp/mnt
mkdir "$mnt"
# Daemon mode: returns once mounted; the PID is in --pidfile.
"$NBDFS" --pidfile "$tmp/nbdfs.pid" --reconnect 20 "$sock" "$mnt" \
  > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "nbdfs (daemon) failed"; }
pid=$(cat "$tmp/nbdfs.pid")
note_pid "$pid" || true
track_mount "$mnt"
cleanup_fn _cleanup_nbdfs "$mnt" "$pid"
mountpoint -q "$mnt" || fail "not mounted after nbdfs returned"
[ ! -s "$tmp/out" ] || { cat "$tmp/out"; fail "nbdfs printed on success"; }
dd if="$mnt/disk" of=/dev/null bs=64k count=1 status=none

ts='[A-Z][a-z]{2} [ 0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}'
wait_for grep -qE "^<29>$ts nbdfs\[$pid\]: nbdfs-fuse: serving 1 file\(s\) from $sock on $mnt$" "$log" \
  || { cat "$log"; fail "no syslog notice (LOG_DAEMON|LOG_NOTICE) for the mount"; }
kill -9 "$nbdkit_pid"
wait_for grep -qE "^<28>$ts nbdfs\[$pid\]: nbdfs-client: warning: connection 1 lost; reconnecting for up to 20 s$" "$log" \
  || { cat "$log"; fail "no syslog warning (LOG_DAEMON|LOG_WARNING, ident nbdfs[$pid]) for the lost connection"; }

rm -f "$sock"   # kill -9 left it
start_nbdkit "$sock" memory 16M
dd if="$mnt/disk" of=/dev/null bs=64k count=1 status=none
wait_for grep -qE "^<29>$ts nbdfs\[$pid\]: nbdfs-client: connection 1 re-established" "$log" \
  || { cat "$log"; fail "no syslog notice for the reconnect"; }

fusermount3 -u "$mnt"
wait_for grep -qE "^<29>$ts nbdfs\[$pid\]: nbdfs-fuse: unmounted $mnt$" "$log" \
  || { cat "$log"; fail "no syslog notice for the unmount"; }
for (( i=0; i<100; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null || fail "the daemon did not exit after the unmount"
cat "$log"
# Without -v no debug or info line is sent (LOG_DEBUG = <31>, LOG_INFO = <30>).
! grep -qE '^<3[01]>' "$log" || fail "debug/info lines reached syslog without -v"
echo "test-fuse-syslog: OK"
