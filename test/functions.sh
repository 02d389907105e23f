# Shared helpers for test/test-*.sh. Source it first thing:
#   source "$SRCDIR/test/functions.sh"
# It sets -e -x, makes $tmp (removed at exit) and runs registered cleanups
# in reverse order at exit. Exit 77 = skip (a failure under CI=true).
set -e -x
: "${SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${BUILD:=$SRCDIR/build}"
: "${NBDFS:=$BUILD/nbdfs}"
: "${TOOLS:=$BUILD/test/tools}"
export SRCDIR BUILD NBDFS TOOLS

_cleanups=()
cleanup_fn() { _cleanups+=("$(printf '%q ' "$@")"); }
_run_cleanups() {
  local rc=$? i
  set +e
  for (( i=${#_cleanups[@]}-1; i>=0; i-- )); do
    eval "${_cleanups[$i]}"
  done
  exit $rc
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

tmp=$(mktemp -d /tmp/nbdfs-test.XXXXXX)
cleanup_fn rm -rf "$tmp"

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

# requires CMD [ARGS...]: skip unless the command runs successfully.
requires() {
  "$@" >/dev/null 2>&1 </dev/null || skip "requires: $*"
}
requires_root() { [ "$(id -u)" = 0 ] || skip "requires root"; }
requires_fuse() {
  [ -c /dev/fuse ] || skip "requires /dev/fuse"
  requires fusermount3 --version
}
# requires_nbdkit_plugin NAME / requires_nbdkit_filter NAME
requires_nbdkit_plugin() { requires nbdkit "$1" --version; }
requires_nbdkit_filter() { requires nbdkit --filter="$1" null --version; }

# wait_for COND-CMD... : poll up to $WAIT_SECS (default 20) seconds.
wait_for() {
  local i
  for (( i=0; i < ${WAIT_SECS:-20}*10; i++ )); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# kill_pid PID: TERM, wait up to 10 s, then KILL (and fail: a process that
# does not die on TERM is a bug worth seeing).
kill_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for (( i=0; i<100; i++ )); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  echo "FAIL: process $pid did not exit on SIGTERM" >&2
  return 1
}

# start_nbdkit SOCK ARGS...: nbdkit on Unix socket SOCK, in the background,
# killed at exit by PID. Sets $nbdkit_pid.
start_nbdkit() {
  local sock=$1; shift
  local pidf="$tmp/nbdkit.$RANDOM.pid"
  nbdkit -U "$sock" -P "$pidf" "$@"
  wait_for test -s "$pidf" || fail "nbdkit did not start: $*"
  nbdkit_pid=$(cat "$pidf")
  cleanup_fn kill_pid "$nbdkit_pid"
  wait_for test -S "$sock" || fail "nbdkit socket $sock did not appear"
}

# start_qemu_nbd SOCK ARGS... IMAGE: qemu-nbd forked on SOCK. Sets $qemu_nbd_pid.
start_qemu_nbd() {
  local sock=$1; shift
  local pidf="$tmp/qemu-nbd.$RANDOM.pid"
  qemu-nbd -k "$sock" --pid-file "$pidf" --fork "$@"
  wait_for test -s "$pidf" || fail "qemu-nbd did not start"
  qemu_nbd_pid=$(cat "$pidf")
  cleanup_fn kill_pid "$qemu_nbd_pid"
  wait_for test -S "$sock" || fail "qemu-nbd socket did not appear"
}

# start_nbd_server CONF: nbd-server with a config file (nbd-server 3.24 has
# no pid file setting in the config: we pass -p $tmp/nbd-server.pid).
# Sets $nbd_server_pid.
start_nbd_server() {
  local conf=$1
  nbd-server -C "$conf" -p "$tmp/nbd-server.pid"
  wait_for test -s "$tmp/nbd-server.pid" || fail "nbd-server did not start"
  nbd_server_pid=$(cat "$tmp/nbd-server.pid")
  cleanup_fn kill_pid "$nbd_server_pid"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# expect_fail_with PATTERN CMD...: CMD must exit non-zero and print PATTERN
# (grep -E) on stdout or stderr.
expect_fail_with() {
  local pat=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  echo "$out"
  [ "$rc" -ne 0 ] || fail "expected failure from: $*"
  echo "$out" | grep -qE -- "$pat" || fail "expected /$pat/ in output of: $*"
}

# md5 FILE [BYTES]: checksum of the file (or of its first BYTES).
md5() {
  if [ -n "${2:-}" ]; then head -c "$2" "$1" | md5sum | cut -d' ' -f1
  else md5sum < "$1" | cut -d' ' -f1; fi
}
