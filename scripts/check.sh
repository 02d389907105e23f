#!/usr/bin/env bash
# The README's second command: install what is missing, build with warnings
# as errors, run the whole suite, then the whole suite again under
# AddressSanitizer/UBSan. Exit status 0 only if both pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make -j2 WERROR=1 all
rc=0
make check || rc=1
make check-asan || rc=1
exit $rc
