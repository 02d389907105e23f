#!/usr/bin/env bash
# Replays the committed fuzz corpus (test/fuzz/corpus: valid exchanges plus
# every input that once crashed, leaked or hung nbdfs) through the libFuzzer
# targets built with clang + ASan/UBSan (make fuzz, build-fuzz/). No fuzzing
# here: bounded, seconds. `make fuzz-smoke` fuzzes for real.
# asan: skip   (the targets carry their own ASan/UBSan build)
# timeout: 240
source "$SRCDIR/test/functions.sh"
requires clang --version
# The fuzzer runtime (libclang-rt-*-dev) must be there too.
echo 'int LLVMFuzzerTestOneInput(const char *d, long n){return 0;}' >"$tmp/t.c"
clang -fsanitize=fuzzer -o "$tmp/t" "$tmp/t.c" \
  || skip "clang cannot link -fsanitize=fuzzer (install libclang-rt-dev)"

# Not inside make's jobserver: a plain sub-build of build-fuzz/.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$SRCDIR" -j2 fuzz >"$tmp/build.log" 2>&1 \
  || { tail -n 40 "$tmp/build.log"; fail "make fuzz failed"; }

bash "$SRCDIR/test/fuzz/run.sh" --replay

# The seeds must still reach deep: if conn.c's cookies or the handshake
# order change, the valid exchanges stop being valid and the fuzzer starts
# shallow. Check that the all-ok seeds still succeed in full.
F=$SRCDIR/build-fuzz/test/fuzz
C=$SRCDIR/test/fuzz/corpus
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-conn" "$C/conn/seed-structured-all-ok" 2>&1)
n=$(grep '^fuzz-conn: request [0-9] .*: ok' <<<"$out" | sort -u | wc -l)
[ "$n" = 8 ] || { echo "$out"; fail "conn seed: $n of 8 requests ok"; }
grep -q '^fuzz-conn: request 2 (type 7): ok, 2 extents' <<<"$out" \
  || fail "conn seed: block status extents lost"
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-negotiate" "$C/negotiate/seed-full" 2>&1)
grep -q '^fuzz-negotiate: ok: size 1048576 .*base:allocation 1 (id 7)' <<<"$out" \
  || { echo "$out" | tail -20; fail "negotiate seed no longer negotiates"; }
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-pool" "$C/pool/seed-bs-4096" 2>&1)
n=$(grep '^fuzz-pool: op [0-9]*: ok / ok' <<<"$out" | sort -u | wc -l)
[ "$n" = 11 ] || { echo "$out" | tail -30; fail "pool seed: $n of 11 operations ok"; }
# The read check and the concurrent batch must decide on the valid seed.
grep -q '^fuzz-pool: concurrent: 8 / 8 ops ok and checked; 3 / 3 reads matched' \
  <<<"$out" || { echo "$out" | grep concurrent; fail "pool seed: no verdict"; }
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-negotiate" "$C/negotiate/seed-go-unknown-list" 2>&1)
grep -q 'exports on the server: "a", "b\\x1b\[31m"' <<<"$out" \
  || { echo "$out" | tail -20; fail "negotiate: export list not escaped"; }
# Extended headers: the all-ok seed completes every request, the 8 GiB
# status query sees both 64-bit extents; the negotiate seed acks them.
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-conn-ext" "$C/conn-ext/seed-ext-all-ok" 2>&1)
n=$(grep '^fuzz-conn-ext: request [0-9] .*: ok' <<<"$out" | sort -u | wc -l)
[ "$n" = 8 ] || { echo "$out" | tail -30; fail "conn-ext seed: $n of 8 requests ok"; }
grep -q '^fuzz-conn-ext: request 1 (type 7): ok, 2 extents' <<<"$out" \
  || fail "conn-ext seed: 64-bit extents lost"
out=$(NBDFS_FUZZ_VERBOSE=1 "$F/fuzz-negotiate" "$C/negotiate/seed-ext-full" 2>&1)
grep -q 'transmission phase: .*extended headers' <<<"$out" \
  || { echo "$out" | tail -20; fail "negotiate ext seed no longer negotiates"; }
