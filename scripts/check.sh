#!/usr/bin/env bash
# The README's second command: install what is missing, build with warnings
# as errors, run the whole suite, then the whole suite again under
# AddressSanitizer/UBSan. The last line adds both runs up:
# "N passed, N failed[, N skipped]". Exit status 0 only if both pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
make -j2 WERROR=1 all || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
echo "== test suite (plain build)"
make check 2>&1 | tee "$log" || rc=1
plain=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
echo "== test suite (AddressSanitizer + UBSan build)"
make check-asan 2>&1 | tee "$log" || rc=1
asan=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)

sum() {  # sum FIELD LINE...
  local field=$1 total=0 line n; shift
  for line in "$@"; do
    n=$(echo "$line" | grep -oE "[0-9]+ $field" | grep -oE '^[0-9]+')
    total=$((total + ${n:-0}))
  done
  echo $total
}
[ -n "$plain" ] && [ -n "$asan" ] || { echo "check: a test run did not finish"; rc=1; }
p=$(sum passed "$plain" "$asan"); f=$(sum failed "$plain" "$asan")
s=$(sum skipped "$plain" "$asan")
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
echo "plain: ${plain:-did not finish}; asan: ${asan:-did not finish}"
if [ "$s" -gt 0 ]; then echo "$p passed, $f failed, $s skipped"; else echo "$p passed, $f failed"; fi
exit $rc
