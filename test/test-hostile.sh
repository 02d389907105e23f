#!/usr/bin/env bash
# A hostile server on the network (test/hostile-server.py: a real handshake,
# then one broken reply per scenario). For every scenario the driver must
# fail the request with EIO, log a line naming what was wrong, exit on its
# own (no crash, no hang).
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
  track_pid "$spid"
  wait_for test -S "$sock" || fail "$name: server did not start"
  out=$(timeout 20 "$D" -C 1 ${OPTS:-} "$sock" "$@" 2>&1) || rc=$?
  echo "--- $name (exit $rc)"
  echo "$out"
  [ "$rc" = 1 ] || fail "$name: driver exit status $rc (want 1: no crash/hang)"
  grep -q 'error EIO' <<<"$out" || fail "$name: no EIO"
  grep -q "WARNING.*$want" <<<"$out" || fail "$name: no log line /$want/"
  # The server exits 0 once the client has gone; a crash of the script
  # (a traceback, exit 1) would otherwise pass for the close we expect.
  local src=0
  wait "$spid" || src=$?
  [ "$src" = 0 ] || fail "$name: the scripted server exited with $src"
}

read1=(read-md5 0 4096)
run_scenario bad-magic "bad reply magic 0xdeadbeef" "${read1[@]}"
run_scenario unknown-cookie "with unknown cookie" "${read1[@]}"
OPTS="-q 1" run_scenario stale-cookie "with unknown cookie" \
  read-md5 0 4096 read-md5 0 4096
run_scenario outside-range "outside the requested range" "${read1[@]}"
run_scenario too-long "outside the requested range" "${read1[@]}"
run_scenario short "read reply ended with 2048 of 4096 bytes covered" \
  "${read1[@]}"
run_scenario overlap "overlaps an earlier chunk" "${read1[@]}"
run_scenario no-done-eof "server closed the connection" "${read1[@]}"
run_scenario eof-mid-data "server closed the connection while reading read data" \
  "${read1[@]}"
run_scenario huge-error "error chunk of length 65006 is too long" \
  "${read1[@]}"
run_scenario error-zero "chunk with error 0" "${read1[@]}"
OPTS="-t 2" run_scenario silence "no data from the server for 2 s" \
  "${read1[@]}"
run_scenario endless "never ends" "${read1[@]}"
run_scenario simple-read-sr "simple reply to a read" "${read1[@]}"
run_scenario sr-not-negotiated "structured replies were not negotiated" \
  "${read1[@]}"
run_scenario bad-context "metadata context 43" extents 0 4096
run_scenario hole-zero-length "offset hole chunk of size 0" "${read1[@]}"
run_scenario bad-type "unexpected chunk type 77" "${read1[@]}"

# Control: the same server, behaving, gives correct data and exit 0.
sock=$tmp/ok.sock
python3 "$server" "$sock" ok "$tmp/ok.pid" &
spid=$!
track_pid "$spid"
wait_for test -S "$sock" || fail "ok: server did not start"
out=$(timeout 20 "$D" -C 1 "$sock" write-pattern 100 5000 3 \
      check-pattern 100 5000 3 extents 0 1M flush)
echo "$out"
[ "$(grep -c '^ok$' <<<"$out")" = 3 ] || fail "well-behaved server"
echo OK
