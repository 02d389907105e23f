#!/usr/bin/env bash
# Two run-tests.sh sharing one $BUILD (two `make check`, a loop in a second
# terminal) must not clean up after each other's running test. A runner
# starts by reaping the state directories an earlier, killed run left in
# $BUILD/test-logs/state; it used to take those of a runner still at work
# for leftovers and SIGTERM their test's group (seen: a test-hostile run
# "killed from outside" with exit 130 while it started a server).
# Runner A runs a test that waits; runner B starts meanwhile on the same
# $BUILD; A's test must still pass. Then a state directory whose runner is
# gone (a SIGKILLed run) must still be reaped, its process ended.
# timeout: 60
source "$SRCDIR/test/functions.sh"

src=$tmp/src
mkdir -p "$src/test" "$tmp/build"
cp "$SRCDIR/test/functions.sh" "$SRCDIR/test/run-tests.sh" "$src/test/"
cat > "$src/test/test-waits.sh" <<'T'
source "$SRCDIR/test/functions.sh"
touch "$MARK/started"
for (( i=0; i<200; i++ )); do [ -e "$MARK/go" ] && break; sleep 0.1; done
[ -e "$MARK/go" ] || fail "never released"
echo OK
T
cat > "$src/test/test-quick.sh" <<'T'
source "$SRCDIR/test/functions.sh"
echo OK
T
runner() {
  env -u NBDFS_TEST_STATE SRCDIR="$src" BUILD="$tmp/build" MARK="$tmp" \
    bash "$src/test/run-tests.sh" "$@"
}

runner waits > "$tmp/a.out" 2>&1 &
apid=$!
track_pid "$apid"
wait_for test -e "$tmp/started" || fail "runner A's test did not start"
runner quick > "$tmp/b.out" 2>&1 || { cat "$tmp/b.out"; fail "runner B failed"; }
cat "$tmp/b.out"
touch "$tmp/go"
rc=0
wait "$apid" || rc=$?
cat "$tmp/a.out"
[ "$rc" = 0 ] || fail "runner A's test was disturbed by runner B (exit $rc)"
grep -q '^PASS: test-waits' "$tmp/a.out" || fail "runner A: no PASS line"
! grep -q 'cleaning up after' "$tmp/b.out" ||
  fail "runner B cleaned up after a runner still at work"

# A run killed with SIGKILL: its state directory names a runner that is
# gone; the next run ends the test's process and removes the directory.
st=$tmp/build/test-logs/state/test-old.XXXXXX
mkdir -p "$st"
sleep 300 &
old=$!
track_pid "$old"
( exit 0 ) & gone=$!; wait "$gone"
echo "$gone 1" > "$st/runner"
echo "$old $(_starttime "$old")" > "$st/pgid"
echo "pid $old $(_starttime "$old")" > "$st/entries"
runner quick > "$tmp/c.out" 2>&1 || true
cat "$tmp/c.out"
grep -q "cleaning up after an earlier run's test-old" "$tmp/c.out" ||
  fail "the dead run's state directory was not reaped"
ended() { [ -z "$(_pstate "$1")" ] || [ "$(_pstate "$1")" = Z ]; }
wait_for ended "$old" ||
  fail "the dead run's process was not ended"
[ ! -d "$st" ] || fail "the dead run's state directory is still there"
echo OK
