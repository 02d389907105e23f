#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz` (build-fuzz/test/fuzz/).
#
#   test/fuzz/run.sh SECONDS [TARGET...]   fuzz each target SECONDS, one at a
#                                          time, seeded with the committed
#                                          corpus (new finds go to a temp dir)
#   test/fuzz/run.sh --replay [TARGET...]  run every committed corpus file
#                                          once (regression check, seconds)
# TARGET is address, negotiate, conn, conn-ext or pool (default: all). Exits non-zero on the
# first crash, leak, sanitizer report or hang (-timeout=10 s per input); the
# input that did it is left in build-fuzz/fuzz-artifacts/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bindir=${FUZZ_BINDIR:-$top/build-fuzz/test/fuzz}
art=$top/build-fuzz/fuzz-artifacts
mkdir -p "$art"

mode=fuzz secs=20
if [ "${1:-}" = --replay ]; then mode=replay; shift
elif [ $# -gt 0 ]; then secs=$1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(address negotiate conn conn-ext pool)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for t in "${targets[@]}"; do
  bin=$bindir/fuzz-$t
  [ -x "$bin" ] || { echo "run.sh: $bin missing: run 'make fuzz'" >&2; exit 2; }
  corpus=$here/corpus/$t
  case $t in address) maxlen=1024 ;; *) maxlen=16384 ;; esac
  log=$art/$t.log
  if [ $mode = replay ]; then
    n=$(ls "$corpus" | wc -l)
    start=$SECONDS
    if ! "$bin" -timeout=10 -artifact_prefix="$art/$t-" "$corpus"/* \
         >"$log" 2>&1; then
      grep -vE '^(INFO|Executed)' "$log" | tail -n 60
      echo "run.sh: $t: a corpus input fails (log: $log)" >&2
      exit 1
    fi
    echo "== $t: $n corpus inputs replayed in $((SECONDS - start)) s"
  else
    work=$(mktemp -d)
    echo "== $t: fuzzing for $secs s"
    rc=0
    "$bin" -max_total_time="$secs" -timeout=10 -max_len=$maxlen \
      -print_final_stats=1 -artifact_prefix="$art/$t-" \
      "$work" "$corpus" >"$log" 2>&1 || rc=$?
    rm -rf "$work"
    grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units' "$log" || true
    if [ "$rc" != 0 ]; then
      grep -E 'ERROR|SUMMARY|check failed|Test unit written' "$log" | head -20
      echo "run.sh: $t failed (exit $rc); log $log, inputs in $art" >&2
      exit 1
    fi
  fi
done
echo "run.sh: all good"
