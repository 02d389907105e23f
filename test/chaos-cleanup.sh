#!/usr/bin/env bash
# test/chaos-cleanup.sh [ROUNDS [TEST...]]: shows that run-tests.sh leaves
# nothing behind when tests are ended at random points (make check-chaos).
#
# Each round runs run-tests.sh on one test (picked at random from TEST...,
# or a default set that starts every kind of server, FUSE mounts, a daemon
# as another user, a loop device) and ends it at a random moment, one of
# three ways:
#   timeout  TEST_TIMEOUT_MAX=1..8 s: the runner's own timeout path;
#   term     SIGTERM to the runner 1..8 s in (what make does on Ctrl-C);
#   kill     SIGKILL to the runner's process group 1..8 s in, which no code
#            of ours sees; then `run-tests.sh --reap` (what the next run
#            does first).
# Then it checks that nothing of the round is left: no process carrying the
# round's marker in its environment, no mount and no loop device under the
# round's TMPDIR, no test directory, no runner state directory.
# The exit status is the number of rounds that left something (0 = clean).
set -u
: "${BUILD:=$(pwd)/build}"
: "${SRCDIR:=$(pwd)}"
: "${NBDFS:=$BUILD/nbdfs}"
: "${TOOLS:=$BUILD/test/tools}"
export BUILD SRCDIR NBDFS TOOLS
rounds=${1:-12}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test-fuse-loop test-fuse-basic test-fuse-parallel
  test-fuse-reconnect test-fuse-user test-handshake-errors test-tls-nbdkit
  test-transmission-qemu test-transmission-nbd-server test-fuse-shutdown)

top=$(mktemp -d /tmp/nbdfs-chaos.XXXXXX)
bad=0

leftovers() {  # leftovers MARK DIR: print what the round left behind
  local mark=$1 dir=$2 f pid
  for f in $(grep -lsxzF "NBDFS_CHAOS=$mark" /proc/[0-9]*/environ); do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    echo "process $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | head -c 150)"
  done
  awk -v d="$dir/" 'index($2, d) == 1 { print "mount " $2 }' /proc/mounts
  losetup -nl -O NAME,BACK-FILE 2>/dev/null | awk -v d="$dir/" \
    'index($2, d) == 1 { print "loop device " $1 " " $2 }'
  for f in "$dir"/tmp/nbdfs-test.*; do [ -e "$f" ] && echo "directory $f"; done
  for f in "$dir"/build/test-logs/state/*; do [ -e "$f" ] && echo "state $f"; done
  return 0
}

for (( r=1; r<=rounds; r++ )); do
  t=${tests[RANDOM % ${#tests[@]}]}
  how=$(( RANDOM % 3 ))
  at=$(( 1 + RANDOM % 8 ))
  dir=$top/round$r
  mkdir -p "$dir/tmp" "$dir/build/test-logs"
  mark=$r.$RANDOM.$$
  # The runner writes logs and state under BUILD/test-logs: a private one.
  ln -s "$BUILD/test" "$dir/build/test"
  env=(NBDFS_CHAOS=$mark TMPDIR=$dir/tmp BUILD=$dir/build)
  case $how in
    0) what="timeout after ${at}s"
       env "${env[@]}" TEST_TIMEOUT_MAX=$at \
         bash "$SRCDIR/test/run-tests.sh" "$t" > "$dir/runner.log" 2>&1 ;;
    1) what="SIGTERM to the runner after ${at}s"
       env "${env[@]}" setsid bash "$SRCDIR/test/run-tests.sh" "$t" \
         > "$dir/runner.log" 2>&1 &
       rp=$!
       sleep "$at"; kill -TERM "$rp" 2>/dev/null; wait "$rp" ;;
    2) what="SIGKILL to the runner after ${at}s, then --reap"
       env "${env[@]}" setsid bash "$SRCDIR/test/run-tests.sh" "$t" \
         > "$dir/runner.log" 2>&1 &
       rp=$!
       sleep "$at"; kill -KILL -- "-$rp" 2>/dev/null; wait "$rp"
       env "${env[@]}" bash "$SRCDIR/test/run-tests.sh" --reap \
         >> "$dir/runner.log" 2>&1 ;;
  esac
  left=$(leftovers "$mark" "$dir")
  cleaned=$(grep -c 'left behind' "$dir/runner.log" "$dir"/build/test-logs/*.log 2>/dev/null |
            awk -F: '{ s += $NF } END { print s + 0 }')
  if [ -n "$left" ]; then
    bad=$((bad + 1))
    echo "round $r: $t, $what: LEFT BEHIND:"
    echo "$left" | sed 's/^/    /'
    echo "    runner log: $dir/runner.log"
  else
    echo "round $r: $t, $what: clean (the runner removed $cleaned thing(s) the test left)"
  fi
done
[ "$bad" -eq 0 ] && [ -z "${CHAOS_KEEP:-}" ] && rm -rf --one-file-system "$top"
echo "$rounds rounds, $bad left something behind"
exit "$bad"
