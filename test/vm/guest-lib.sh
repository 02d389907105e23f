# Helpers for guest scripts (busybox ash, inside the test VM). A guest
# script sources this, defines one function per scenario and runs each with
#   vm_run NAME FUNCTION [TIMEOUT-SECONDS]
# which prints "VMTEST-RESULT: NAME PASS|FAIL (Ns)" for the host to count.
# A scenario runs in a subshell under set -e -x; what it registers with
# cleanup_fn runs (in reverse order) when it ends, pass or fail, so the next
# scenario starts with no server running and no device attached.
# Servers listen on guest loopback or Unix sockets under $tmp.

NBDFS=${NBDFS:-/usr/bin/nbdfs}

fail() { echo "FAIL: $*" >&2; exit 1; }

# cleanup_fn CMD...: run CMD when the scenario ends (last registered, first run).
cleanup_fn() {
  _vm_cleanups="$*
$_vm_cleanups"
}
_vm_run_cleanups() {
  set +e +x
  echo "$_vm_cleanups" | while IFS= read -r c; do
    [ -n "$c" ] || continue
    echo "+ cleanup: $c"
    eval "$c"
  done
}

# wait_for CMD...: poll up to $WAIT_SECS (default 20) seconds.
wait_for() {
  _i=0
  while [ "$_i" -lt $(( ${WAIT_SECS:-20} * 10 )) ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
    _i=$((_i + 1))
  done
  return 1
}

# kill_pid PID: TERM, wait up to 10 s, then KILL and complain.
kill_pid() {
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || return 0
  _i=0
  while [ "$_i" -lt 100 ]; do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
    _i=$((_i + 1))
  done
  kill -9 "$1" 2>/dev/null
  echo "FAIL: process $1 did not exit on SIGTERM" >&2
  return 1
}

# start_nbdkit SOCK ARGS...: nbdkit on a Unix socket, killed at cleanup.
# Sets $nbdkit_pid.
start_nbdkit() {
  _sock=$1; shift
  _nbdkit_n=$(( ${_nbdkit_n:-0} + 1 ))
  _pidf=$tmp/nbdkit.$_nbdkit_n.pid
  nbdkit -U "$_sock" -P "$_pidf" "$@"
  wait_for test -s "$_pidf" || fail "nbdkit did not start: $*"
  nbdkit_pid=$(cat "$_pidf")
  cleanup_fn kill_pid "$nbdkit_pid"
  wait_for test -S "$_sock" || fail "nbdkit socket $_sock did not appear"
}

# expect_fail_with PATTERN CMD...: CMD fails and prints PATTERN (grep -E).
expect_fail_with() {
  _pat=$1; shift
  _rc=0
  _out=$("$@" 2>&1) || _rc=$?
  echo "$_out"
  [ "$_rc" -ne 0 ] || fail "expected failure from: $*"
  echo "$_out" | grep -qE -- "$_pat" || fail "expected /$_pat/ in output of: $*"
}

# md5 FILE [BYTES]
md5() {
  if [ -n "${2:-}" ]; then head -c "$2" "$1" | md5sum | cut -d' ' -f1
  else md5sum < "$1" | cut -d' ' -f1; fi
}

# _vm_descendants PID: every descendant of PID (from /proc/*/stat's ppid).
_vm_descendants() {
  local _p _s _l _c
  _p=$1
  for _s in /proc/[0-9]*/stat; do
    _l=$(cat "$_s" 2>/dev/null) || continue
    _c=${_s#/proc/}; _c=${_c%/stat}
    _l=${_l##*) }
    set -- $_l
    if [ "$2" = "$_p" ]; then
      _vm_descendants "$_c"
      echo "$_c"
    fi
  done
}

# vm_run NAME FUNCTION [TIMEOUT]: one scenario.
vm_results=
vm_run() {
  _name=$1 _fn=$2 _limit=${3:-120}
  # vmtest.only=a,b on the kernel command line (VM_APPEND) picks scenarios.
  case ",${VMTEST_ONLY:-$_name}," in
    *",$_name,"*) ;;
    *) return 0 ;;
  esac
  echo "==== VMTEST-START: $_name"
  _start=$(cut -d' ' -f1 /proc/uptime)
  (
    _vm_cleanups=
    tmp=$(mktemp -d /tmp/vmtest.XXXXXX)
    cleanup_fn rm -rf "$tmp"
    trap _vm_run_cleanups EXIT
    trap 'exit 143' TERM
    set -e -x
    "$_fn"
  ) &
  _pid=$!
  # The scenario's TERM trap runs only once its foreground command returns,
  # and a command blocked on a device may never return: after a grace the
  # watchdog KILLs the scenario's descendants (the blocked command), so the
  # trap and the cleanups run; then, if even that hangs, the scenario.
  ( sleep "$_limit"; echo "VMTEST: $_name: timed out after ${_limit}s";
    kill "$_pid" 2>/dev/null
    sleep 10
    kill -0 "$_pid" 2>/dev/null || exit 0
    echo "VMTEST: $_name: still running 10 s after SIGTERM: SIGKILL to its commands"
    kill -9 $(_vm_descendants "$_pid") 2>/dev/null
    sleep 20
    kill -0 "$_pid" 2>/dev/null || exit 0
    echo "VMTEST: $_name: cleanups hung: SIGKILL"
    kill -9 $(_vm_descendants "$_pid") "$_pid" 2>/dev/null ) &
  _dog=$!
  _rc=0
  wait "$_pid" || _rc=$?
  kill $(_vm_descendants "$_dog") "$_dog" 2>/dev/null
  wait "$_dog" 2>/dev/null
  _secs=$(awk -v a="$_start" -v b="$(cut -d' ' -f1 /proc/uptime)" \
    'BEGIN { printf "%.1f", b - a }')
  case $_rc in
    0) echo "VMTEST-RESULT: $_name PASS (${_secs}s)" ;;
    77) echo "VMTEST-RESULT: $_name SKIP (${_secs}s)" ;;
    *) echo "VMTEST-RESULT: $_name FAIL (exit $_rc, ${_secs}s)"
       vm_failed=1 ;;
  esac
}
vm_failed=0
# vm_finish: the guest script's exit status.
vm_finish() { return "$vm_failed"; }
