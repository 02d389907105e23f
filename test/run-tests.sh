#!/usr/bin/env bash
# Runs the nbdfs test suite and ends with one line "N passed, N failed[, N skipped]"
# (plus ", N left out under ASan" when NBDFS_ASAN drops tests by design).
#
#   test/run-tests.sh                  every unit binary and every test/test-*.sh
#   test/run-tests.sh --unit-only      unit binaries only
#   test/run-tests.sh NAME...          only those integration tests (test-foo.sh or foo)
#   test/run-tests.sh --reap           only clean up after tests of an earlier
#                                      run that was killed (see below), then exit
#
# Unit binaries are GTest programs run with --tap: each test case counts.
# Integration scripts count once each: exit 0 passes, 77 skips, anything else
# fails. Under CI=true a skip is a failure (a missing tool is an install bug).
# Every test is bounded (TEST_TIMEOUT seconds, default 600; a script may ask
# for more with a "# timeout: N" line; TEST_TIMEOUT_MAX caps both).
#
# Cleanup. Each script runs in its own session and process group (setsid)
# with NBDFS_TEST_STATE naming a state directory under $BUILD/test-logs/state.
# functions.sh records there the test's temporary directory, mounts and loop
# devices. When the script ends -- passed, failed, timed out, or the runner
# itself is interrupted -- the runner ends the group (TERM, 15 s for the
# test's own cleanups, KILL), kills every process that still carries this
# NBDFS_TEST_STATE in its environment (daemons that left the group: nbdfs
# without -f, servers), unmounts what is mounted under the test's directory
# or was recorded, detaches loop devices backed by files there, and removes
# the directory. Anything it had to clean after a test that passed makes the
# test fail: a test must clean up after itself. If the runner is killed with
# SIGKILL the state directories stay, and the next run (or --reap) cleans them:
# only those whose runner is gone (each names its runner's PID and start
# time), since several runs may share one $BUILD at the same time.
set -u
: "${BUILD:=$(pwd)/build}"
: "${SRCDIR:=$(pwd)}"
: "${NBDFS:=$BUILD/nbdfs}"
: "${TOOLS:=$BUILD/test/tools}"
export BUILD SRCDIR NBDFS TOOLS
logdir="$BUILD/test-logs"
mkdir -p "$logdir"

unit_only=0 reap_only=0
selected=()
for a in "$@"; do
  case "$a" in
    --unit-only) unit_only=1 ;;
    --reap) reap_only=1 ;;
    *) selected+=("$a") ;;
  esac
done

pass=0 fail=0 skip=0 leftout=0
leftout_names=()
failed_names=()

run_unit() {
  local bin=$1 name log out rc
  name=$(basename "$bin")
  log="$logdir/$name.log"
  local wrap=()
  if [ "${NBDFS_VALGRIND:-}" = 1 ]; then
    wrap=(valgrind --quiet --error-exitcode=99 --leak-check=full
          --errors-for-leak-kinds=definite)
  fi
  timeout -k 10 "${TEST_TIMEOUT:-600}" "${wrap[@]}" "$bin" --tap >"$log" 2>&1
  rc=$?
  local p f s
  p=$(grep -cE '^ok [0-9]+' "$log" | head -1)
  s=$(grep -cE '^ok [0-9]+.*# SKIP' "$log" | head -1)
  f=$(grep -cE '^not ok [0-9]+' "$log" | head -1)
  p=$((p - s))
  if [ "${CI:-}" = true ] && [ "$s" -gt 0 ]; then
    echo "FAIL: $name: $s unit test(s) skipped under CI:"
    grep -E '^ok [0-9]+.*# SKIP' "$log" | sed 's/^/    /'
    f=$((f + s)); s=0
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # A crash, sanitizer report or timeout outside any single case.
    f=1
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  if [ "$f" -gt 0 ]; then
    failed_names+=("$name")
    echo "FAIL: $name (exit $rc, $f failed case(s)); last lines of $log:"
    tail -n 30 "$log" | sed 's/^/    /'
  else
    if [ "$s" -gt 0 ]; then echo "PASS: $name ($p cases, $s skipped)"; else echo "PASS: $name ($p cases)"; fi
  fi
}

statedir="$logdir/state"
mkdir -p "$statedir"

# _starttime PID: the process's start time (field 22 of /proc/PID/stat), so
# a PID recorded earlier is only signalled while it names the same process.
_starttime() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  set -- $st
  echo "${20}"
}

# _group_alive PGID: a process other than a zombie is left in the group.
_group_alive() {
  local p st
  for p in $(pgrep -g "$1" 2>/dev/null); do
    st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    st=${st##*) }
    [ "${st%% *}" != Z ] && return 0
  done
  return 1
}

# _end_group PGID GRACE: TERM the whole group, wait GRACE seconds for it to
# go (the test's trap runs its cleanups), then KILL whatever is left.
_end_group() {
  local pg=$1 grace=$2 i
  kill -TERM -- "-$pg" 2>/dev/null || return 0
  for (( i=0; i<grace*10; i++ )); do
    _group_alive "$pg" || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pg" 2>/dev/null
  return 0
}

# _marked ST: PIDs of processes whose environment holds NBDFS_TEST_STATE=ST.
_marked() {
  grep -lsxzF "NBDFS_TEST_STATE=$1" /proc/[0-9]*/environ 2>/dev/null |
    sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p' | grep -vx "$$" || true
}

# _reap ST: clean up after the test whose state directory is ST. Prints one
# "left behind: ..." line per thing it had to remove; returns how many.
_reap() {
  local st=$1 n=0 pg kind a b pid round mnt dir line
  [ -d "$st" ] || return 0
  if [ -s "$st/pgid" ]; then
    local pgst
    read -r pg pgst < "$st/pgid"
    # The kernel does not reuse a PID while a group of that ID exists; but
    # once the test's group is gone (an old state directory), a new process
    # -- leader of its own group -- may have its number: its start time
    # differs from the one recorded, and it is left alone.
    if [ -n "$pgst" ] && [ -e "/proc/$pg" ] &&
       [ "$(_starttime "$pg")" != "$pgst" ]; then
      :
    elif _group_alive "$pg"; then
      echo "left behind: processes in the test's group: $(pgrep -d' ' -g "$pg")"
      n=$((n + 1))
      _end_group "$pg" 0
    fi
  fi
  # Recorded PIDs still naming the process recorded (same start time).
  if [ -s "$st/entries" ]; then
    while read -r kind a b; do
      [ "$kind" = pid ] || continue
      [ "$(_starttime "$a")" = "$b" ] || continue
      local stt; stt=$(cat "/proc/$a/stat" 2>/dev/null); stt=${stt##*) }
      [ "${stt%% *}" = Z ] && continue
      echo "left behind: process $a: $(tr '\0' ' ' < "/proc/$a/cmdline" 2>/dev/null | head -c 200)"
      n=$((n + 1))
      kill -KILL "$a" 2>/dev/null
    done < "$st/entries"
  fi
  # Processes that left the group (daemons, servers with their own session).
  for round in 1 2 3; do
    pid=$(_marked "$st")
    [ -n "$pid" ] || break
    for a in $pid; do
      echo "left behind: process $a: $(tr '\0' ' ' < "/proc/$a/cmdline" 2>/dev/null | head -c 200)"
      n=$((n + 1))
      kill -KILL "$a" 2>/dev/null
    done
    sleep 0.2
  done
  # Mounts: the recorded ones, then anything under the test's directories
  # (deepest first, so a file system on a loop device over a FUSE file goes
  # before the FUSE mount).
  local dirs=() mounts=()
  if [ -s "$st/entries" ]; then
    while read -r kind a b; do
      case "$kind" in
        dir) dirs+=("$a") ;;
        mount) mounts+=("$a") ;;
      esac
    done < "$st/entries"
  fi
  for dir in "${dirs[@]}"; do
    while read -r mnt; do mounts+=("$mnt"); done < <(
      awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts)
  done
  for mnt in $(printf '%s\n' "${mounts[@]}" | awk '{ print length($0) " " $0 }' |
               sort -rn | cut -d' ' -f2- | uniq); do
    if awk -v m="$mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
      echo "left behind: mount $mnt"
      n=$((n + 1))
      fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    fi
  done
  # Loop devices: recorded (device + backing file, so a number reused by
  # someone else is left alone) or backed by a file under the test's dirs.
  if command -v losetup >/dev/null; then
    while read -r a b; do
      [ -n "$a" ] || continue
      local mine=0
      for dir in "${dirs[@]}"; do
        case "$b" in "$dir"/*) mine=1 ;; esac
      done
      if [ "$mine" = 0 ] && [ -s "$st/entries" ] &&
         grep -qxF "loop $a $b" "$st/entries"; then
        mine=1
      fi
      if [ "$mine" = 1 ]; then
        echo "left behind: loop device $a ($b)"
        n=$((n + 1))
        losetup -d "$a" 2>/dev/null
      fi
    done < <(losetup -nl -O NAME,BACK-FILE 2>/dev/null)
  fi
  for dir in "${dirs[@]}"; do
    case "$dir" in /|"") continue ;; esac
    # After a clean end the test removed it; after a kill it is ours to
    # remove (not counted: its content is only evidence).
    [ -d "$dir" ] && rm -rf --one-file-system "$dir" 2>/dev/null
  done
  rm -rf "$st"
  return 0
}

# The runner interrupted: end the running test as a timeout would, clean up.
cur_pg="" cur_st="" timer_pid=""
_on_signal() {
  trap '' INT TERM
  [ -n "$timer_pid" ] && kill "$timer_pid" 2>/dev/null
  if [ -n "$cur_pg" ]; then
    echo "interrupted: ending $(basename "$cur_st") and cleaning up"
    _end_group "$cur_pg" 15
    _reap "$cur_st"
  fi
  exit 130
}
trap _on_signal INT TERM HUP

# _runner_alive ST: the runner that made state directory ST still runs
# (its PID names the same process: same start time). Another run-tests.sh
# may share this $BUILD (two make check, a loop in a second terminal): its
# test in progress is not "left behind" and must not be ended.
_runner_alive() {
  local pid stt
  [ -s "$1/runner" ] || return 1
  read -r pid stt < "$1/runner" || return 1
  [ "$pid" != "$$" ] || return 1
  [ -n "$stt" ] && [ "$(_starttime "$pid")" = "$stt" ] || return 1
  # A runner killed but not yet waited for is a zombie: gone.
  local s; s=$(cat "/proc/$pid/stat" 2>/dev/null); s=${s##*) }
  [ "${s%% *}" != Z ]
}

# An earlier run killed with SIGKILL left state directories: clean them now
# (only those whose runner is gone).
for st in "$statedir"/* "$statedir"/.[!.]*; do
  [ -d "$st" ] || continue
  _runner_alive "$st" && continue
  # A hidden one without its runner is being made by a run right now.
  case "${st##*/}" in .*) [ -s "$st/runner" ] || continue ;; esac
  echo "cleaning up after an earlier run's $(basename "$st"):"
  _reap "$st"
done
[ "$reap_only" = 1 ] && exit 0

run_script() {
  local script=$1 name log rc limit start st tpid done_pid timed_out=0 left
  name=$(basename "$script" .sh)
  log="$logdir/$name.log"
  limit=$(sed -n 's/^# timeout: *\([0-9]\+\).*/\1/p' "$script" | head -1)
  limit=${limit:-${TEST_TIMEOUT:-600}}
  if [ -n "${TEST_TIMEOUT_MAX:-}" ] && [ "$limit" -gt "$TEST_TIMEOUT_MAX" ]; then
    limit=$TEST_TIMEOUT_MAX
  fi
  start=$(date +%s)
  # Made under a hidden name and renamed once it names its runner, so a
  # run starting meanwhile never finds it without one.
  st=$(mktemp -d "$statedir/.$name.XXXXXX")
  echo "$$ $(_starttime $$)" > "$st/runner"
  mv "$st" "$statedir/${st##*/.}"
  st=$statedir/${st##*/.}
  # setsid: the test is its own session and process group, so ending it
  # (kill -- -PGID) reaches everything it started and nothing else. Run
  # as a background job of this non-interactive shell, the child is not a
  # group leader, so setsid(1) does not fork: $! is the group's ID.
  NBDFS_TEST_STATE=$st setsid bash "$script" >"$log" 2>&1 </dev/null &
  tpid=$!
  echo "$tpid $(_starttime "$tpid")" > "$st/pgid"
  cur_pg=$tpid cur_st=$st
  sleep "$limit" &
  timer_pid=$!
  while :; do
    done_pid=""
    wait -n -p done_pid "$tpid" "$timer_pid"
    rc=$?
    [ -n "$done_pid" ] && break
  done
  if [ "$done_pid" = "$timer_pid" ]; then
    timed_out=1
    echo "timed out after ${limit}s: SIGTERM to the group" >> "$log"
    _end_group "$tpid" 15
    wait "$tpid"
    rc=124
  else
    kill "$timer_pid" 2>/dev/null
    wait "$timer_pid" 2>/dev/null
  fi
  timer_pid=""
  left=$(_reap "$st")
  cur_pg="" cur_st=""
  local secs=$(( $(date +%s) - start ))
  if [ -n "$left" ]; then
    echo "$left" >> "$log"
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ]; then
      echo "FAIL: $name did not clean up after itself:"
      echo "$left" | sed 's/^/    /'
      rc=1
    fi
  fi
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1)); echo "PASS: $name (${secs}s)"
  elif [ "$rc" -eq 77 ] && [ "${CI:-}" != true ]; then
    skip=$((skip + 1))
    echo "SKIP: $name: $(grep -m1 '^SKIP:' "$log" | sed 's/^SKIP: *//')"
  else
    fail=$((fail + 1)); failed_names+=("$name")
    [ "$timed_out" = 1 ] && echo "FAIL: $name: timed out after ${limit}s"
    [ -n "$left" ] && [ "$timed_out" = 1 ] && echo "$left" | sed "s/^/    $name: /"
    [ "$rc" -eq 77 ] && echo "FAIL: $name: skipped under CI: $(grep -m1 '^SKIP:' "$log")"
    echo "FAIL: $name (exit $rc, ${secs}s); last lines of $log:"
    tail -n 40 "$log" | sed 's/^/    /'
  fi
}

if [ ${#selected[@]} -eq 0 ]; then
  for bin in "$BUILD"/test/unit/test-*; do
    case "$bin" in *.o|*.d) continue ;; esac
    [ -x "$bin" ] && run_unit "$bin"
  done
  if [ "$unit_only" = 0 ]; then
    for t in "$SRCDIR"/test/test-*.sh; do
      [ -e "$t" ] || continue
      if [ -n "${NBDFS_ASAN:-}" ] && grep -q '^# asan: skip' "$t"; then
        # Left out by design (README: "The test suite"), counted apart.
        leftout=$((leftout + 1)); leftout_names+=("$(basename "$t" .sh)")
        continue
      fi
      run_script "$t"
    done
  fi
else
  for n in "${selected[@]}"; do
    n=${n%.sh}; n=${n#test-}; n=${n##*/test-}
    if [ -x "$BUILD/test/unit/test-$n" ] && [ ! -e "$SRCDIR/test/test-$n.sh" ]; then
      run_unit "$BUILD/test/unit/test-$n"
    else
      run_script "$SRCDIR/test/test-$n.sh"
    fi
  done
fi

[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
[ "$leftout" -gt 0 ] && echo "not run under ASan: $leftout (${leftout_names[*]})"
line="$pass passed, $fail failed"
[ "$skip" -gt 0 ] && line="$line, $skip skipped"
[ "$leftout" -gt 0 ] && line="$line, $leftout left out under ASan"
echo "$line"
[ "$fail" -eq 0 ]
