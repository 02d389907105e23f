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

# NBDFS_TEST_STATE (set by run-tests.sh): a directory where the test records
# what the runner must clean up if the test is killed (run-tests.sh header).
: "${NBDFS_TEST_STATE:=}"
export NBDFS_TEST_STATE
# _record KIND ARGS...: one line "KIND ARGS" in the state directory.
_record() {
  if [ -n "$NBDFS_TEST_STATE" ] && [ -d "$NBDFS_TEST_STATE" ]; then
    echo "$*" >> "$NBDFS_TEST_STATE/entries"
  fi
  return 0
}

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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbdfs-test.XXXXXX")
_record dir "$tmp"
cleanup_fn rm -rf --one-file-system "$tmp"

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

# _starttime PID: field 22 of /proc/PID/stat (after the parenthesised name).
_starttime() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  set -- $st
  echo "${20}"
}
# _pstate PID: R, S, D, Z... (empty when PID is gone).
_pstate() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  st=${st##*) }
  echo "${st%% *}"
}

# track_pid PID: kill PID (kill_pid) at exit, unless it is gone by then.
# Its start time is kept, so a PID the kernel has since given to another
# process is never signalled.
# note_pid PID: only keep the start time (for a PID another cleanup kills).
declare -A _pid_start=()
note_pid() {
  local pid=$1 st
  [ -n "$pid" ] || return 0
  st=$(_starttime "$pid") || return 1
  _pid_start[$pid]=$st
  _record pid "$pid" "$st"
}
track_pid() {
  note_pid "$1" || return 0
  cleanup_fn kill_pid "$1"
}

# track_mount DIR / track_loop DEV: the runner unmounts DIR / detaches DEV
# (if still backed by the same file) should the test be killed.
track_mount() { _record mount "$1"; }
track_loop() {
  local back
  back=$(losetup -nO BACK-FILE "$1" 2>/dev/null | sed 's/ *$//')
  _record loop "$1" "$back"
}

# umount_if_mounted DIR: lazy unmount, only while DIR is a mount point.
umount_if_mounted() {
  if awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
    umount -l "$1"
  fi
}
# detach_loop DEV FILE: losetup -d DEV, only while DEV is backed by FILE.
detach_loop() {
  local back
  back=$(losetup -nO BACK-FILE "$1" 2>/dev/null | sed 's/ *$//')
  [ "$back" = "$2" ] && losetup -d "$1"
  return 0
}

# dump_stacks PID: print every thread's backtrace of PID (gdb, when
# installed) and each thread's kernel wait channel to stderr, i.e. the
# test log. For a process that failed to exit: the log then says where it
# hangs, even from a one-in-twenty CI run.
dump_stacks() {
  local - pid=$1 t
  set +x
  [ -d "/proc/$pid" ] || return 0
  echo "---- threads of process $pid (name: wait channel) ----" >&2
  for t in /proc/"$pid"/task/*; do
    echo "  ${t##*/} $(cat "$t/comm" 2>/dev/null): $(cat "$t/wchan" 2>/dev/null)" >&2
  done
  if command -v gdb >/dev/null; then
    timeout 60 gdb -p "$pid" -batch -nx -ex 'set pagination off' \
      -ex 'thread apply all bt' </dev/null >&2 2>&1 || true
  else
    echo "(gdb is not installed: no backtraces)" >&2
  fi
  echo "---- end of threads of process $pid ----" >&2
  return 0
}

# kill_pid PID: TERM, wait up to 10 s, then KILL (and fail: a process that
# does not die on TERM is a bug worth seeing). Does nothing when PID, once
# tracked, now names another process (or none).
kill_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  if [ -n "${_pid_start[$pid]:-}" ] &&
     [ "$(_starttime "$pid")" != "${_pid_start[$pid]}" ]; then
    return 0
  fi
  kill "$pid" 2>/dev/null || return 0
  for (( i=0; i<100; i++ )); do
    kill -0 "$pid" 2>/dev/null || return 0
    # A child of this shell that exited is a zombie until bash reaps it.
    [ "$(_pstate "$pid")" = Z ] && return 0
    sleep 0.1
  done
  dump_stacks "$pid"
  kill -9 "$pid" 2>/dev/null
  echo "FAIL: process $pid did not exit on SIGTERM" >&2
  return 1
}

# _wait_listening PID FILE: wait for FILE (socket or non-empty pid file)
# while PID lives; return 1 at once if PID exits first.
_wait_listening() {
  local pid=$1 file=$2 i
  for (( i=0; i < ${WAIT_SECS:-20}*10; i++ )); do
    if [ -S "$file" ] || [ -s "$file" ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(_pstate "$pid")" != Z ] || return 1
    sleep 0.1
  done
  return 1
}

# start_nbdkit SOCK ARGS...: nbdkit on Unix socket SOCK, in the foreground
# (-f) as a background job of the test, so it stays in the test's process
# group, and --exit-with-parent so it also dies with the test's shell.
# Waits for the pid file (written once the socket listens). Sets $nbdkit_pid.
start_nbdkit() {
  local sock=$1; shift
  local pidf="$tmp/nbdkit.$RANDOM.pid"
  nbdkit -f --exit-with-parent -U "$sock" -P "$pidf" "$@" &
  nbdkit_pid=$!
  track_pid "$nbdkit_pid"
  _wait_listening "$nbdkit_pid" "$pidf" || fail "nbdkit did not start: $*"
  wait_for test -S "$sock" || fail "nbdkit socket $sock did not appear"
}

# start_nbdkit_tcp ADDR ARGS...: nbdkit on ADDR (127.0.0.1 or ::1) and a
# free port, which it sets in $port. Another process may take the port
# between free_port and nbdkit's bind: then nbdkit exits and we try again.
start_nbdkit_tcp() {
  local addr=$1; shift
  local pidf try
  for try in 1 2 3 4 5; do
    port=$(free_port "$addr")
    pidf="$tmp/nbdkit.$RANDOM.pid"
    nbdkit -f --exit-with-parent -i "$addr" -p "$port" -P "$pidf" "$@" &
    nbdkit_pid=$!
    track_pid "$nbdkit_pid"
    _wait_listening "$nbdkit_pid" "$pidf" && return 0
    wait "$nbdkit_pid" || true
  done
  fail "nbdkit on $addr did not start: $*"
}

# start_qemu_nbd SOCK ARGS... IMAGE: qemu-nbd on SOCK, in the foreground (no
# --fork) as a background job, so it stays in the test's process group.
# Sets $qemu_nbd_pid.
start_qemu_nbd() {
  local sock=$1; shift
  qemu-nbd -k "$sock" "$@" &
  qemu_nbd_pid=$!
  track_pid "$qemu_nbd_pid"
  _wait_listening "$qemu_nbd_pid" "$sock" || fail "qemu-nbd did not start"
}

# start_nbd_server CONF: nbd-server with a config file. nbd-server 3.24
# always daemonizes (its -d serves a single connection, then exits), so it
# leaves the test's process group: we kill it by its pid file (-p; 3.24 has
# no pid file setting in the config), and the runner finds it by
# NBDFS_TEST_STATE in its environment should the test be killed.
# Sets $nbd_server_pid.
start_nbd_server() {
  local conf=$1
  nbd-server -C "$conf" -p "$tmp/nbd-server.pid"
  wait_for test -s "$tmp/nbd-server.pid" || fail "nbd-server did not start"
  nbd_server_pid=$(cat "$tmp/nbd-server.pid")
  track_pid "$nbd_server_pid"
}

# free_port [ADDR]: a TCP port on ADDR (default 127.0.0.1) nobody listens
# on right now. Free only until someone binds it: start servers with a
# retry (start_nbdkit_tcp); for a port that must refuse, use refused_port.
free_port() {
  python3 - "${1:-127.0.0.1}" <<'PY'
import socket, sys
a = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
s.bind((a, 0)); print(s.getsockname()[1]); s.close()
PY
}

# refused_port: sets $port to a port on 127.0.0.1 that refuses connections
# until the test ends: bound (never listening) by a sleeping python, so no
# other process can take it meanwhile.
refused_port() {
  local f="$tmp/refused.$RANDOM"
  python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0))
open(sys.argv[1] + ".t", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".t", sys.argv[1])
time.sleep(3600)' "$f" &
  track_pid $!
  wait_for test -s "$f" || fail "refused_port"
  port=$(cat "$f")
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

# expect_exit_with STATUS PATTERN CMD...: CMD must exit with exactly STATUS
# (so a crash, 128+signal, is not taken for the refusal expected) and print
# PATTERN (grep -E).
expect_exit_with() {
  local want=$1 pat=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  echo "$out"
  [ "$rc" = "$want" ] || fail "expected exit status $want, got $rc from: $*"
  echo "$out" | grep -qE -- "$pat" || fail "expected /$pat/ in output of: $*"
}

# md5 FILE [BYTES]: checksum of the file (or of its first BYTES).
md5() {
  if [ -n "${2:-}" ]; then head -c "$2" "$1" | md5sum | cut -d' ' -f1
  else md5sum < "$1" | cut -d' ' -f1; fi
}

# check_nbdkit_requests LOG SIZE MIN MAX: every request in the log of
# nbdkit's log filter (logfile=LOG) is aligned to MIN, inside SIZE and,
# for reads and writes, at most MAX bytes (spec "Size constraints");
# prints the bad ones. Fails also when the log holds no request.
check_nbdkit_requests() {
  local size=$2 min=$3 max=$4 line n=0 bad=0 re
  re=' (Read|Write|Trim|Zero|Cache|Extents) id=[0-9]+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)'
  while IFS= read -r line; do
    [[ $line =~ $re ]] || continue
    local type=${BASH_REMATCH[1]} off=$((BASH_REMATCH[2])) cnt=$((BASH_REMATCH[3]))
    n=$((n + 1))
    if (( off % min || cnt % min || off + cnt > size )) \
       || { [[ $type = Read || $type = Write ]] && (( cnt > max )); }; then
      echo "bad request: $line"; bad=$((bad + 1))
    fi
  done <"$1"
  echo "$n requests checked, $bad bad"
  [ "$n" -gt 0 ] && [ "$bad" = 0 ]
}

# check_flushed_after_writes LOG: in the log of nbdkit's log filter, a
# Flush request follows the reply to the last Write of any connection.
# Under CAN_MULTI_CONN one flush covers the writes answered on every
# connection (nbdclient/pool-flush.c), and the spec ("Ordering of
# messages and writes") lets it go only once the writes it covers were
# answered. Fails when the log holds no Write.
check_flushed_after_writes() {
  awk '$4 == "Write" || $4 == "...Write" { w = NR; ok = 0 }
       $4 == "Flush" && w { ok = 1 }
       END { exit !(w && ok) }' "$1"
}
