# Guest side of test/test-kernel-tls-vm.sh: kernel mode over TLS, through
# the relay (kernelattach/relay.c), against nbdkit --tls=require in the
# guest. The host made the keys (scripts/make-pki.sh, make-psk.sh) and
# passed them in /test (ca-cert.pem, server-*.pem, client-*.pem, keys.psk).
# busybox ash; see guest-lib.sh.
. /test/guest-lib.sh

MiB=1048576
pki=/test

detach() {
  if [ -e "/sys/block/${1#/dev/}/pid" ]; then
    "$NBDFS" --disconnect "$1" || true
  fi
}
random_file() { dd if=/dev/urandom of="$1" bs=$MiB count="$2" 2>/dev/null; }

# X.509, netlink, 4 connections: the relay daemon moves the data; it
# exits once the device is disconnected.
t_tls_netlink() {
  start_nbdkit "$tmp/sock" --tls=require --tls-certificates=$pki memory 64M
  uri="nbds+unix:///?socket=$tmp/sock"
  # Refusals first: the kernel must never get a clear-text socket.
  expect_fail_with "the server requires TLS" "$NBDFS" --kernel "$tmp/sock" nbd0
  mkdir -p "$tmp/wrong"
  cp /test/wrong-ca-cert.pem "$tmp/wrong/ca-cert.pem"
  expect_fail_with "signed by an unknown CA" \
    "$NBDFS" --kernel "$uri" --tls-certificates "$tmp/wrong" \
    --tls-hostname localhost nbd0
  # A Unix socket has no host name: X.509 needs --tls-hostname.
  expect_fail_with "Unix socket has none.*give --tls-hostname" \
    "$NBDFS" --kernel "$uri" --tls-certificates $pki nbd0
  test ! -e /sys/block/nbd0/pid

  dev=$("$NBDFS" --kernel --pidfile "$tmp/relay.pid" "$uri" \
          --tls-certificates $pki --tls-hostname localhost /dev/nbd0)
  cleanup_fn detach /dev/nbd0
  [ "$dev" = /dev/nbd0 ] || fail "printed '$dev'"
  wait_for test -s "$tmp/relay.pid"
  relay=$(cat "$tmp/relay.pid")
  kill -0 "$relay" || fail "the relay is not running"
  [ "$(blockdev --getsize64 /dev/nbd0)" = $((64 * MiB)) ]
  grep -qx "nbds+unix:///?socket=$tmp/sock" /sys/block/nbd0/backend
  "$NBDFS" --status nbd0 | grep -q "4 connections"

  random_file "$tmp/data" 8
  dd if="$tmp/data" of=/dev/nbd0 bs=$MiB seek=3 oflag=direct conv=fsync
  dd if=/dev/nbd0 of="$tmp/back" bs=$MiB skip=3 count=8 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  # Buffered, parallel: several readers at once over the 4 connections.
  for i in 0 1 2 3; do
    dd if=/dev/nbd0 of="$tmp/par$i" bs=$MiB skip=$((3 + 2 * i)) count=2 \
       iflag=direct 2>/dev/null &
  done
  wait
  cat "$tmp/par0" "$tmp/par1" "$tmp/par2" "$tmp/par3" > "$tmp/par"
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/par")" ]

  "$NBDFS" --disconnect /dev/nbd0
  test ! -e /sys/block/nbd0/pid
  WAIT_SECS=10 wait_for sh -c "! kill -0 $relay" \
    || fail "the relay did not exit after --disconnect"
}

# PSK, --persist: kill the TLS server while a writer runs and restart it;
# the relay's TLS sessions are re-made and every byte arrives.
t_tls_persist() {
  random_file "$tmp/data" 16
  truncate -s $((32 * MiB)) "$tmp/disk.img"
  nbdkit -U "$tmp/sock" -P "$tmp/k1.pid" --tls=require \
    --tls-psk=$pki/keys.psk file "$tmp/disk.img"
  wait_for test -s "$tmp/k1.pid"
  k1=$(cat "$tmp/k1.pid")
  cleanup_fn kill_pid "$k1"
  "$NBDFS" --kernel --persist --timeout 2 -C 2 --pidfile "$tmp/nbdfs.pid" \
    "nbds+unix://alice@/?socket=$tmp/sock&tls-psk-file=$pki/keys.psk" \
    /dev/nbd1
  cleanup_fn detach /dev/nbd1
  wait_for test -s "$tmp/nbdfs.pid"
  daemon=$(cat "$tmp/nbdfs.pid")
  kill -0 "$daemon"

  ( for i in $(seq 0 15); do
      dd if="$tmp/data" of=/dev/nbd1 bs=$MiB skip=$i seek=$i count=1 \
         oflag=direct conv=notrunc 2>/dev/null || exit 1
      echo $i > "$tmp/progress"
    done ) &
  writer=$!
  WAIT_SECS=120 wait_for test -s "$tmp/progress"
  wait_for sh -c "[ \$(cat $tmp/progress) -ge 3 ]"
  kill -9 "$k1"
  sleep 2
  rm -f "$tmp/sock"
  nbdkit -U "$tmp/sock" -P "$tmp/k2.pid" --tls=require \
    --tls-psk=$pki/keys.psk file "$tmp/disk.img"
  wait_for test -s "$tmp/k2.pid"
  cleanup_fn kill_pid "$(cat "$tmp/k2.pid")"
  wait "$writer" || fail "the writer saw an error across the TLS restart"
  [ "$(cat "$tmp/progress")" = 15 ]
  kill -0 "$daemon"
  dd if=/dev/nbd1 of="$tmp/back" bs=$MiB count=16 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  "$NBDFS" --disconnect /dev/nbd1
  WAIT_SECS=10 wait_for sh -c "! kill -0 $daemon"
  [ "$(md5 "$tmp/disk.img" $((16 * MiB)))" = "$(md5 "$tmp/data")" ]
}

# The ioctl interface over TLS: the process in NBD_DO_IT relays too.
t_tls_ioctl() {
  start_nbdkit "$tmp/sock" --tls=require --tls-certificates=$pki memory 16M
  "$NBDFS" --kernel --ioctl "nbds+unix:///?socket=$tmp/sock" \
    --tls-certificates $pki --tls-hostname localhost /dev/nbd2
  cleanup_fn detach /dev/nbd2
  random_file "$tmp/data" 4
  dd if="$tmp/data" of=/dev/nbd2 bs=$MiB oflag=direct conv=fsync
  dd if=/dev/nbd2 of="$tmp/back" bs=$MiB count=4 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  "$NBDFS" --disconnect /dev/nbd2
  test ! -e /sys/block/nbd2/pid
}

vm_run tls-netlink t_tls_netlink 120
vm_run tls-persist t_tls_persist 180
vm_run tls-ioctl t_tls_ioctl 90
