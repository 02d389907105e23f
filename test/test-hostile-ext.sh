#!/usr/bin/env bash
# Extended headers against a hostile server (test/hostile-server.py, the
# "ext-*" scenarios): a real handshake that acks NBD_OPT_EXTENDED_HEADERS,
# then one malformed extended reply per scenario. Each must fail the
# request with EIO, log a line naming what was wrong, and exit on its own
# (no crash, no hang) — the same strictness as for structured replies.
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires python3 --version
D=$TOOLS/nbdc-driver
server=$SRCDIR/test/hostile-server.py

# [OPTS="driver options"] run_scenario NAME EXPECTED-LOG-TEXT COMMAND...
run_scenario() {
  local name=$1 want=$2; shift 2
  local sock=$tmp/$name.sock pidf=$tmp/$name.pid out rc=0
  python3 "$server" "$sock" "$name" "$pidf" &
  local spid=$!
  cleanup_fn kill_pid "$spid"
  wait_for test -S "$sock" || fail "$name: server did not start"
  out=$(timeout 20 "$D" -C 1 ${OPTS:-} "$sock" "$@" 2>&1) || rc=$?
  echo "--- $name (exit $rc)"
  echo "$out"
  [ "$rc" = 1 ] || fail "$name: driver exit status $rc (want 1: no crash/hang)"
  grep -q 'error EIO' <<<"$out" || fail "$name: no EIO"
  grep -q "WARNING.*$want" <<<"$out" || fail "$name: no log line /$want/"
  wait "$spid" 2>/dev/null || true
}

read1=(read-md5 0 4096)
ext1=(extents 0 64K)
run_scenario ext-offset-mismatch "names offset 512 (it MUST match" "${read1[@]}"
run_scenario ext-length-huge "offset data chunk of length 1099511627776 (more than 32 bits)" \
  "${read1[@]}"
run_scenario ext-structured-magic "structured reply although extended headers" \
  "${read1[@]}"
run_scenario ext-simple-magic "simple reply although extended headers" \
  "${read1[@]}"
run_scenario ext-not-negotiated \
  "extended reply although extended headers were not negotiated" "${read1[@]}"
run_scenario ext-unknown-cookie "with unknown cookie" "${read1[@]}"
run_scenario ext-data-outside "outside the requested range" "${read1[@]}"
run_scenario ext-short-header-eof "server closed the connection while reading a reply header" \
  "${read1[@]}"
run_scenario ext-bs-32 "32-bit block status chunk although extended headers" \
  "${ext1[@]}"
run_scenario ext-bs-count "length 24 says it holds 2 extents" "${ext1[@]}"
run_scenario ext-bs-len "extended block status chunk of length 32" "${ext1[@]}"
run_scenario ext-bs-high-status "status 0x200000000 has high bits set" \
  "${ext1[@]}"
run_scenario ext-bs-zero-extent "block status extent of length 0" "${ext1[@]}"
run_scenario ext-bs-past-end "extents go past the requested length 65536" \
  "${ext1[@]}"

# Control: the same server, behaving, with extended headers: data,
# extents (two per query, 64-bit descriptors), zero, trim, flush; and
# with -E the fallback to structured replies.
for mode in ext noext; do
  sock=$tmp/ok-$mode.sock
  python3 "$server" "$sock" ext-ok "$tmp/ok-$mode.pid" &
  spid=$!
  cleanup_fn kill_pid "$spid"
  wait_for test -S "$sock" || fail "ext-ok: server did not start"
  opt=(); [ $mode = noext ] && opt=(-E)
  out=$(timeout 20 "$D" -C 1 "${opt[@]}" "$sock" info \
        write-pattern 100 5000 3 check-pattern 100 5000 3 extents 0 1M \
        zero 0 512K trim 512K 512K flush)
  echo "$out"
  want=1; [ $mode = noext ] && want=0
  grep -q "extended=$want" <<<"$out" || fail "ext-ok $mode: extended=$want"
  [ "$(grep -c '^ok$' <<<"$out")" = 5 ] || fail "ext-ok $mode: well-behaved server"
  # The extended server answers with two extents, the compact one with one.
  first='0 524288 0'; [ $mode = noext ] && first='0 1048576 0'
  grep -qx "$first" <<<"$out" || fail "ext-ok $mode: first extent"
  wait "$spid" 2>/dev/null || true
done

# A 6 GiB export that takes any effect length: zero, trim and block
# status over all of it are one request each, and the extents arrive.
sock=$tmp/bigok.sock
python3 "$server" "$sock" ext-big-ok "$tmp/bigok.pid" 2> "$tmp/bigok.log" &
spid=$!
cleanup_fn kill_pid "$spid"
wait_for test -S "$sock" || fail "ext-big-ok: server did not start"
out=$(timeout 20 "$D" -C 1 "$sock" zero 0 6G trim 0 6G extents 0 6G) \
  || { cat "$tmp/bigok.log"; fail "ext-big-ok: $out"; }
echo "$out"
cat "$tmp/bigok.log"
for t in 6 4 7; do
  [ "$(grep -c "^hostile-server: request $t 6442450944\$" "$tmp/bigok.log")" = 1 ] \
    || fail "ext-big-ok: command $t was not one 6 GiB request"
done
# The server's two extents: half data, half hole+zero.
grep -qx '0 3221225472 0' <<<"$out" && grep -qx '3221225472 3221225472 3' <<<"$out" \
  || fail "ext-big-ok: extents of a 6 GiB query lost"
wait "$spid" 2>/dev/null || true

# A server that refuses effect lengths over 1 GiB with NBD_EOVERFLOW: the
# first big request is refused once and redone in 1 GiB pieces; from then
# on the pool sends pieces straight away (exactly one refusal in all).
sock=$tmp/big.sock
python3 "$server" "$sock" ext-big-refused "$tmp/big.pid" 2> "$tmp/big.log" &
spid=$!
cleanup_fn kill_pid "$spid"
wait_for test -S "$sock" || fail "ext-big-refused: server did not start"
out=$(timeout 20 "$D" -C 1 "$sock" zero 0 6G trim 0 6G extents 0 6G) \
  || { cat "$tmp/big.log"; fail "ext-big-refused: $out"; }
echo "$out"
cat "$tmp/big.log"
[ "$(grep -c "^ok$" <<<"$out")" = 2 ] || fail "ext-big-refused: zero, trim"
[ "$(grep -c ' refused$' "$tmp/big.log")" = 1 ] || fail "ext-big-refused: want one refusal"
grep -qx 'hostile-server: request 6 6442450944 refused' "$tmp/big.log" \
  || fail "ext-big-refused: the first zero was not one 6 GiB request"
[ "$(grep -c '^hostile-server: request 6 1073741824$' "$tmp/big.log")" = 6 ] \
  || fail "ext-big-refused: zero not redone in 6 pieces"
[ "$(grep -c '^hostile-server: request 4 1073741824$' "$tmp/big.log")" = 6 ] \
  || fail "ext-big-refused: trim not sent in 6 pieces"
# Extents to the very end (the server's alternate every half piece).
grep -qx '5905580032 536870912 3' <<<"$out" || fail "ext-big-refused: extents"
wait "$spid" 2>/dev/null || true
echo OK
