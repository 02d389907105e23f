#!/usr/bin/env bash
# nbd-server (the reference server) from a config file, over TCP on
# loopback: writes, flush, trim, zero; read back and compared with the
# backing file itself and with nbdcopy.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbd-server --version
requires nbdcopy --version
D=$TOOLS/nbdc-driver

port=$(free_port)
truncate -s 32M "$tmp/disk.img"
cat > "$tmp/conf" <<EOF
[generic]
    pid file = $tmp/nbd-server.pid
    listenaddr = 127.0.0.1
    port = $port
    allowlist = true
[disk]
    exportname = $tmp/disk.img
    flush = true
    fua = true
    trim = true
EOF
start_nbd_server "$tmp/conf"
uri="nbd://127.0.0.1:$port/disk"
wait_for "$D" "$uri" info || fail "nbd-server not answering"

out=$("$D" "$uri" info write-pattern 0 32M 1 write-pattern 777 123457 2 \
      write-from /dev/null 0 zero 5M 1M trim 10M 2M flush \
      check-pattern 0 777 1 check-pattern 777 123457 2 \
      check-pattern 6M 4M 1 read-md5 0 32M)
echo "$out"
[ "$(grep -c '^ok$' <<<"$out")" = 9 ] || fail "driver run"
ours=$(tail -n1 <<<"$out")
nbdcopy "$uri" "$tmp/copy.img"
[ "$ours" = "$(md5 "$tmp/copy.img")" ] || fail "md5 differs from nbdcopy's"
# After our flush and close the data is in the file itself.
[ "$ours" = "$(md5 "$tmp/disk.img")" ] || fail "backing file differs"
cmp <(head -c 1M /dev/zero) <(tail -c +$((5 * 1048576 + 1)) "$tmp/disk.img" \
  | head -c 1M) || fail "zeroed range is not zero"
echo OK
