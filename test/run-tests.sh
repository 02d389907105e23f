#!/usr/bin/env bash
# Runs the nbdfs test suite and ends with one line "N passed, N failed[, N skipped]".
#
#   test/run-tests.sh                  every unit binary and every test/test-*.sh
#   test/run-tests.sh --unit-only      unit binaries only
#   test/run-tests.sh NAME...          only those integration tests (test-foo.sh or foo)
#
# Unit binaries are GTest programs run with --tap: each test case counts.
# Integration scripts count once each: exit 0 passes, 77 skips, anything else
# fails. Under CI=true a skip is a failure (a missing tool is an install bug).
# Every test is bounded by `timeout` (TEST_TIMEOUT seconds, default 600;
# a script may ask for more with a "# timeout: N" line).
set -u
: "${BUILD:=$(pwd)/build}"
: "${SRCDIR:=$(pwd)}"
: "${NBDFS:=$BUILD/nbdfs}"
: "${TOOLS:=$BUILD/test/tools}"
export BUILD SRCDIR NBDFS TOOLS
logdir="$BUILD/test-logs"
mkdir -p "$logdir"

unit_only=0
selected=()
for a in "$@"; do
  case "$a" in
    --unit-only) unit_only=1 ;;
    *) selected+=("$a") ;;
  esac
done

pass=0 fail=0 skip=0
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

run_script() {
  local script=$1 name log rc limit start
  name=$(basename "$script" .sh)
  log="$logdir/$name.log"
  limit=$(sed -n 's/^# timeout: *\([0-9]\+\).*/\1/p' "$script" | head -1)
  limit=${limit:-${TEST_TIMEOUT:-600}}
  start=$(date +%s)
  # setsid: the test is its own process group, so a timeout can end all of
  # it (servers it started included) without touching anything else.
  timeout -k 15 "$limit" setsid bash "$script" >"$log" 2>&1 </dev/null
  rc=$?
  local secs=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1)); echo "PASS: $name (${secs}s)"
  elif [ "$rc" -eq 77 ] && [ "${CI:-}" != true ]; then
    skip=$((skip + 1))
    echo "SKIP: $name: $(grep -m1 '^SKIP:' "$log" | sed 's/^SKIP: *//')"
  else
    fail=$((fail + 1)); failed_names+=("$name")
    [ "$rc" -eq 124 ] && echo "FAIL: $name: timed out after ${limit}s"
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
if [ "$skip" -gt 0 ]; then
  echo "$pass passed, $fail failed, $skip skipped"
else
  echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
