# Guest side of test/test-kernel-vm.sh: kernel mode against the real nbd.ko,
# nbdkit on Unix sockets under $tmp. busybox ash; see guest-lib.sh.
. /test/guest-lib.sh

MiB=1048576

# detach DEV: registered as a cleanup so a failed scenario leaves the device
# free for the next one (registered after the server's, so it runs first).
detach() {
  if [ -e "/sys/block/${1#/dev/}/pid" ]; then
    "$NBDFS" --disconnect "$1" || true
  fi
}

# random_file PATH MIB
random_file() { dd if=/dev/urandom of="$1" bs=$MiB count="$2" 2>/dev/null; }

# Attach over netlink, check size and data, --status, --disconnect.
t_netlink() {
  start_nbdkit "$tmp/sock" memory 64M
  dev=$("$NBDFS" --kernel "$tmp/sock" /dev/nbd0)
  cleanup_fn detach /dev/nbd0
  [ "$dev" = /dev/nbd0 ] || fail "printed '$dev'"
  test -e /sys/block/nbd0/pid
  [ "$(blockdev --getsize64 /dev/nbd0)" = $((64 * MiB)) ]
  [ "$(cat /sys/block/nbd0/queue/logical_block_size)" = 512 ]
  grep -qx "nbd+unix:///?socket=$tmp/sock" /sys/block/nbd0/backend

  random_file "$tmp/data" 3
  dd if="$tmp/data" of=/dev/nbd0 bs=$MiB seek=5 oflag=direct conv=fsync
  dd if=/dev/nbd0 of="$tmp/back" bs=$MiB skip=5 count=3 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]

  "$NBDFS" --status > "$tmp/status"
  cat "$tmp/status"
  grep -q "^/dev/nbd0: nbd+unix:///?socket=$tmp/sock, 67108864 bytes, 4 connections, netlink" "$tmp/status"
  "$NBDFS" --status nbd0 --json > "$tmp/status.json"
  cat "$tmp/status.json"
  grep -q '"device": "/dev/nbd0"' "$tmp/status.json"
  grep -q '"attached": true' "$tmp/status.json"
  grep -q '"size": 67108864' "$tmp/status.json"
  grep -q '"connections": 4' "$tmp/status.json"

  expect_fail_with "already attached" "$NBDFS" --kernel "$tmp/sock" nbd0
  # The negotiator's refusals reach the user, and nothing is attached.
  start_nbdkit "$tmp/strict" --filter=exportname memory 1M \
    exportname=good exportname-strict=true
  expect_fail_with 'no export named "bad"' \
    "$NBDFS" --kernel "$tmp/strict:bad" nbd1
  expect_fail_with "$tmp/nothing" "$NBDFS" --kernel "$tmp/nothing" nbd1
  test ! -e /sys/block/nbd1/pid
  "$NBDFS" --disconnect /dev/nbd0
  test ! -e /sys/block/nbd0/pid
  expect_fail_with "not attached" "$NBDFS" --status /dev/nbd0
  expect_fail_with "not attached" "$NBDFS" --disconnect nbd0

  # Attach again: the data is still on the server.
  "$NBDFS" --kernel -C 1 "$tmp/sock" nbd0
  dd if=/dev/nbd0 of="$tmp/back2" bs=$MiB skip=5 count=3 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back2")" ]
  "$NBDFS" --status /dev/nbd0 | grep -q "1 connection, netlink"
}

# The ioctl interface: NBD_DO_IT in a child that lives as long as the
# device; ext4 made through netlink must read back through ioctl.
t_ioctl_ext4() {
  start_nbdkit "$tmp/sock" memory 256M
  "$NBDFS" --kernel "$tmp/sock" /dev/nbd1
  cleanup_fn detach /dev/nbd1
  mkfs.ext4 -q -F /dev/nbd1
  mkdir -p "$tmp/mnt"
  mount -t ext4 /dev/nbd1 "$tmp/mnt"
  cleanup_fn umount "$tmp/mnt"
  random_file "$tmp/mnt/file" 8
  mkdir "$tmp/mnt/dir"
  echo hello > "$tmp/mnt/dir/small"
  sum=$(md5 "$tmp/mnt/file")
  umount "$tmp/mnt"
  "$NBDFS" --disconnect /dev/nbd1

  "$NBDFS" --kernel --ioctl "$tmp/sock" /dev/nbd1
  "$NBDFS" --status nbd1 | tee "$tmp/status"
  grep -q "ioctl" "$tmp/status"
  pid=$(cat /sys/block/nbd1/pid)
  kill -0 "$pid"
  [ "$(blockdev --getsize64 /dev/nbd1)" = $((256 * MiB)) ]
  e2fsck -fn /dev/nbd1
  mount -t ext4 /dev/nbd1 "$tmp/mnt"
  [ "$(md5 "$tmp/mnt/file")" = "$sum" ]
  [ "$(cat "$tmp/mnt/dir/small")" = hello ]
  umount "$tmp/mnt"
  # SIGTERM to the NBD_DO_IT holder disconnects cleanly (NBD_DISCONNECT,
  # not a torn-down device).
  before=$(dmesg | grep -c "nbd1: NBD_DISCONNECT" || true)
  kill "$pid"
  WAIT_SECS=10 wait_for sh -c "! kill -0 $pid"
  test ! -e /sys/block/nbd1/pid
  [ "$(dmesg | grep -c "nbd1: NBD_DISCONNECT")" -gt "$before" ]
  expect_fail_with "not attached" "$NBDFS" --status nbd1
  # ... and the data is intact for the next attach.
  "$NBDFS" --kernel --ioctl "$tmp/sock" /dev/nbd1
  e2fsck -fn /dev/nbd1
  "$NBDFS" --disconnect nbd1
  test ! -e /sys/block/nbd1/pid
}

# No device named: the kernel picks a free one and we print it.
t_kernel_picks() {
  start_nbdkit "$tmp/sock" memory 8M
  "$NBDFS" --kernel "$tmp/sock" /dev/nbd0
  cleanup_fn detach /dev/nbd0
  dev=$("$NBDFS" --kernel "$tmp/sock")
  cleanup_fn detach "$dev"
  case "$dev" in /dev/nbd[1-9]*) ;; *) fail "printed '$dev'" ;; esac
  [ "$(blockdev --getsize64 "$dev")" = $((8 * MiB)) ]
  # --ioctl without a device takes the first free one too.
  dev2=$("$NBDFS" --kernel --ioctl "$tmp/sock")
  cleanup_fn detach "$dev2"
  [ "$dev2" != "$dev" ]
  [ "$dev2" != /dev/nbd0 ]
  [ "$(blockdev --getsize64 "$dev2")" = $((8 * MiB)) ]
}

# -C 4 with a multi-conn server: data written in parallel reads back.
# Without NBD_FLAG_CAN_MULTI_CONN, -C 2 is refused.
t_multi_conn() {
  start_nbdkit "$tmp/sock" memory 64M
  "$NBDFS" --kernel -C 4 "$tmp/sock" /dev/nbd2
  cleanup_fn detach /dev/nbd2
  "$NBDFS" --status --json | grep -q '"connections": 4'
  random_file "$tmp/data" 16
  for i in 0 1 2 3; do
    dd if="$tmp/data" of=/dev/nbd2 bs=$MiB skip=$((i * 4)) seek=$((i * 4)) \
       count=4 oflag=direct conv=notrunc 2>/dev/null &
  done
  wait
  dd if=/dev/nbd2 of="$tmp/back" bs=$MiB count=16 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]

  start_nbdkit "$tmp/sock1" --filter=multi-conn memory 8M \
    multi-conn-mode=disable
  expect_fail_with "NBD_FLAG_CAN_MULTI_CONN" \
    "$NBDFS" --kernel -C 2 "$tmp/sock1" /dev/nbd3
  test ! -e /sys/block/nbd3/pid
  # The default then is one connection.
  "$NBDFS" --kernel "$tmp/sock1" /dev/nbd3
  cleanup_fn detach /dev/nbd3
  "$NBDFS" --status nbd3 | grep -q ", 1 connection,"
}

# Read-only: from the server (-r) and from us (-r on a writable export).
t_read_only() {
  random_file "$tmp/img" 4
  start_nbdkit "$tmp/sock" -r file "$tmp/img"
  "$NBDFS" --kernel "$tmp/sock" /dev/nbd4
  cleanup_fn detach /dev/nbd4
  [ "$(blockdev --getro /dev/nbd4)" = 1 ]
  if dd if=/dev/zero of=/dev/nbd4 bs=4096 count=1 oflag=direct conv=fsync
  then fail "a write to a read-only export succeeded"; fi
  [ "$(md5 /dev/nbd4)" = "$(md5 "$tmp/img")" ]

  start_nbdkit "$tmp/sock2" memory 4M
  "$NBDFS" --kernel -r "$tmp/sock2" /dev/nbd5
  cleanup_fn detach /dev/nbd5
  [ "$(blockdev --getro /dev/nbd5)" = 1 ]
  if dd if=/dev/urandom of=/dev/nbd5 bs=4096 count=1 oflag=direct conv=fsync
  then fail "a write with -r succeeded"; fi
  [ "$(md5 /dev/nbd5)" = "$(md5 /dev/zero $((4 * MiB)))" ]
}

# The server's minimum block size becomes the logical block size, for
# both interfaces.
t_block_size() {
  start_nbdkit "$tmp/sock" --filter=blocksize-policy memory 16M \
    blocksize-minimum=4096 blocksize-error-policy=error
  "$NBDFS" --kernel "$tmp/sock" /dev/nbd6
  cleanup_fn detach /dev/nbd6
  [ "$(cat /sys/block/nbd6/queue/logical_block_size)" = 4096 ]
  [ "$(blockdev --getss /dev/nbd6)" = 4096 ]
  random_file "$tmp/data" 1
  dd if="$tmp/data" of=/dev/nbd6 bs=4096 seek=3 oflag=direct conv=fsync
  dd if=/dev/nbd6 of="$tmp/back" bs=4096 skip=3 count=256 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  "$NBDFS" --disconnect /dev/nbd6
  "$NBDFS" --kernel --ioctl "$tmp/sock" /dev/nbd6
  [ "$(cat /sys/block/nbd6/queue/logical_block_size)" = 4096 ]

  # A 64 KiB maximum payload caps the kernel's requests: a 1 MiB direct
  # write must reach this strict server in pieces it accepts.
  start_nbdkit "$tmp/sock64" --filter=blocksize-policy memory 4M \
    blocksize-maximum=65536 blocksize-error-policy=error
  "$NBDFS" --kernel "$tmp/sock64" /dev/nbd5
  cleanup_fn detach /dev/nbd5
  [ "$(cat /sys/block/nbd5/queue/max_sectors_kb)" = 64 ]
  dd if="$tmp/data" of=/dev/nbd5 bs=$MiB oflag=direct conv=fsync
  dd if=/dev/nbd5 of="$tmp/back64" bs=$MiB count=1 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back64")" ]
}

# Another server implementation: nbd-server (named export, Unix socket).
t_nbd_server() {
  truncate -s $((16 * MiB)) "$tmp/disk.img"
  cat > "$tmp/nbd-server.conf" <<EOC
[generic]
  allowlist = true
  unixsock = $tmp/nsock
[disk]
  exportname = $tmp/disk.img
EOC
  nbd-server -C "$tmp/nbd-server.conf" -p "$tmp/nbd-server.pid"
  wait_for test -s "$tmp/nbd-server.pid"
  cleanup_fn kill_pid "$(cat "$tmp/nbd-server.pid")"
  wait_for test -S "$tmp/nsock"
  "$NBDFS" --kernel "$tmp/nsock:disk" /dev/nbd3
  cleanup_fn detach /dev/nbd3
  grep -qx "nbd+unix:///disk?socket=$tmp/nsock" /sys/block/nbd3/backend
  [ "$(blockdev --getsize64 /dev/nbd3)" = $((16 * MiB)) ]
  random_file "$tmp/data" 2
  dd if="$tmp/data" of=/dev/nbd3 bs=$MiB seek=1 oflag=direct conv=fsync
  "$NBDFS" --disconnect nbd3
  [ "$(dd if="$tmp/disk.img" bs=$MiB skip=1 count=2 2>/dev/null | md5sum | cut -d' ' -f1)" = "$(md5 "$tmp/data")" ]
}

# Without --persist, a server that goes away makes I/O fail (not hang).
t_server_gone() {
  start_nbdkit "$tmp/sock" memory 8M
  "$NBDFS" --kernel -C 1 "$tmp/sock" /dev/nbd7
  cleanup_fn detach /dev/nbd7
  dd if=/dev/nbd7 of=/dev/null bs=4096 count=1 iflag=direct
  # SIGKILL (a crash; and nbdkit waits for connected clients on SIGTERM). for connected clients on SIGTERM.
  kill -9 "$nbdkit_pid"
  sleep 1
  rc=0
  timeout 60 dd if=/dev/nbd7 of=/dev/null bs=4096 count=1 skip=100 \
    iflag=direct || rc=$?
  [ "$rc" != 0 ] || fail "read from a device whose server is gone succeeded"
  # busybox timeout: 124 (or 143 from the TERM) means dd hung 60 s, which
  # is what this scenario exists to rule out.
  [ "$rc" != 124 ] && [ "$rc" != 143 ] ||
    fail "read from a device whose server is gone hung (timeout, rc $rc)"
}

# --persist -f: kill the server (SIGKILL) while a writer runs; first a
# server with a different export comes up on the same socket (it must be
# refused: size changed), then the right one. The writer must not see an
# error, and every byte must arrive.
t_persist() {
  random_file "$tmp/data" 24
  truncate -s $((32 * MiB)) "$tmp/disk.img"
  nbdkit -U "$tmp/sock" -P "$tmp/k1.pid" file "$tmp/disk.img"
  wait_for test -s "$tmp/k1.pid"
  k1=$(cat "$tmp/k1.pid")
  cleanup_fn kill_pid "$k1"
  "$NBDFS" --kernel --persist -f --timeout 5 -C 2 --pidfile "$tmp/nbdfs.pid" \
    "$tmp/sock" /dev/nbd0 > "$tmp/persist.out" 2> "$tmp/persist.log" &
  sup=$!
  cleanup_fn kill_pid "$sup"
  cleanup_fn detach /dev/nbd0
  wait_for test -s "$tmp/nbdfs.pid"
  [ "$(cat "$tmp/nbdfs.pid")" = "$sup" ]
  [ "$(cat "$tmp/persist.out")" = /dev/nbd0 ]
  "$NBDFS" --status nbd0 | tee "$tmp/status"
  grep -q "2 connections, netlink, persist (pid $sup)" "$tmp/status"

  # The writer: 1 MiB direct writes, one after another.
  ( for i in $(seq 0 23); do
      dd if="$tmp/data" of=/dev/nbd0 bs=$MiB skip=$i seek=$i count=1 \
         oflag=direct conv=notrunc 2>/dev/null || exit 1
      echo $i > "$tmp/progress"
    done ) &
  writer=$!
  WAIT_SECS=120 wait_for test -s "$tmp/progress"
  WAIT_SECS=120 wait_for sh -c "[ \$(cat $tmp/progress) -ge 3 ]"
  kill -9 "$k1"
  rm -f "$tmp/sock"
  nbdkit -U "$tmp/sock" -P "$tmp/wrong.pid" memory 16M
  wait_for test -s "$tmp/wrong.pid"
  wrong=$(cat "$tmp/wrong.pid")
  cleanup_fn kill_pid "$wrong"
  WAIT_SECS=60 wait_for grep -q "size changed" "$tmp/persist.log"
  kill -9 "$wrong"
  rm -f "$tmp/sock"
  nbdkit -U "$tmp/sock" -P "$tmp/k2.pid" file "$tmp/disk.img"
  wait_for test -s "$tmp/k2.pid"
  cleanup_fn kill_pid "$(cat "$tmp/k2.pid")"
  wait "$writer" || fail "the writer saw an error across the restart"
  [ "$(cat "$tmp/progress")" = 23 ]
  kill -0 "$sup"
  cat "$tmp/persist.log"
  grep -q "reconnected" "$tmp/persist.log"
  dmesg | grep -i nbd | tail -20

  dd if=/dev/nbd0 of="$tmp/back" bs=$MiB count=24 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  # SIGTERM stops the supervisor and leaves the device attached.
  kill "$sup"
  wait "$sup" || fail "the supervisor exited with an error on SIGTERM"
  test -e /sys/block/nbd0/pid
  "$NBDFS" --status nbd0 | grep -q "supervisor not running"
  "$NBDFS" --disconnect /dev/nbd0
  test ! -e /sys/block/nbd0/pid
  [ "$(md5 "$tmp/disk.img" $((24 * MiB)))" = "$(md5 "$tmp/data")" ]
}

# --persist -f: the server comes back read-only (same file, same size,
# NBD_FLAG_READ_ONLY now set): the supervisor must refuse it, keep the
# device attached with its connection dead (not reconfigured: no
# "reconnected"), say why in the log, and keep trying; the read-write
# server back, it reconnects and the data reads back.
t_persist_flags() {
  random_file "$tmp/data" 4
  truncate -s $((16 * MiB)) "$tmp/disk.img"
  dd if="$tmp/data" of="$tmp/disk.img" bs=$MiB conv=notrunc 2>/dev/null
  nbdkit -U "$tmp/sock" -P "$tmp/k1.pid" file "$tmp/disk.img"
  wait_for test -s "$tmp/k1.pid"
  k1=$(cat "$tmp/k1.pid")
  cleanup_fn kill_pid "$k1"
  "$NBDFS" --kernel --persist -f --timeout 5 -C 1 --pidfile "$tmp/nbdfs.pid" \
    "$tmp/sock" /dev/nbd0 > "$tmp/persist.out" 2> "$tmp/persist.log" &
  sup=$!
  cleanup_fn kill_pid "$sup"
  cleanup_fn detach /dev/nbd0
  wait_for test -s "$tmp/nbdfs.pid"
  [ "$(cat /sys/block/nbd0/ro)" = 0 ]

  kill -9 "$k1"
  rm -f "$tmp/sock"
  nbdkit -r -U "$tmp/sock" -P "$tmp/ro.pid" file "$tmp/disk.img"
  wait_for test -s "$tmp/ro.pid"
  ro=$(cat "$tmp/ro.pid")
  cleanup_fn kill_pid "$ro"
  WAIT_SECS=60 wait_for grep -q "flags changed" "$tmp/persist.log" ||
    fail "no refusal of the read-only server in the log"
  cat "$tmp/persist.log"
  grep -q "/dev/nbd0: reconnecting: the export's flags changed from 0x[0-9a-f]* (.*) to 0x[0-9a-f]* (.*read-only.*): refusing to put a different export under the device (retrying)" \
    "$tmp/persist.log" || fail "the refusal does not say the flags changed to read-only"
  ! grep -q "reconnected" "$tmp/persist.log" ||
    fail "the device was reconfigured with the read-only server"
  kill -0 "$sup" || fail "the supervisor gave up"
  test -e /sys/block/nbd0/pid || fail "the device was detached"
  [ "$(cat /sys/block/nbd0/ro)" = 0 ] || fail "the device turned read-only"

  kill -9 "$ro"
  rm -f "$tmp/sock"
  nbdkit -U "$tmp/sock" -P "$tmp/k2.pid" file "$tmp/disk.img"
  wait_for test -s "$tmp/k2.pid"
  cleanup_fn kill_pid "$(cat "$tmp/k2.pid")"
  WAIT_SECS=60 wait_for grep -q "/dev/nbd0: reconnected" "$tmp/persist.log" ||
    fail "no reconnect once the read-write server was back"
  dd if=/dev/nbd0 of="$tmp/back" bs=$MiB count=4 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  "$NBDFS" --disconnect /dev/nbd0
  test ! -e /sys/block/nbd0/pid
}

# --persist without -f: a daemon, which --disconnect stops.
t_persist_daemon() {
  start_nbdkit "$tmp/sock" memory 8M
  "$NBDFS" --kernel --persist --pidfile "$tmp/nbdfs.pid" "$tmp/sock" nbd1 \
    > "$tmp/out"
  cleanup_fn detach /dev/nbd1
  [ "$(cat "$tmp/out")" = /dev/nbd1 ]
  daemon=$(cat "$tmp/nbdfs.pid")
  kill -0 "$daemon"
  "$NBDFS" --status --json | tee "$tmp/json"
  grep -q "\"daemon_pid\": $daemon" "$tmp/json"
  grep -q '"persist": true' "$tmp/json"
  "$NBDFS" --disconnect /dev/nbd1
  WAIT_SECS=10 wait_for sh -c "! kill -0 $daemon"
  test ! -e /sys/block/nbd1/pid
}

# Readiness (sd_notify) in kernel mode, without --persist: READY=1 only
# once the device is attached (the listener checks the device when READY=1
# arrives; the server holds the open 300 ms, so an early READY is seen),
# then the barrier before nbdfs exits; no STOPPING=1 (the device stays).
# With --ioctl the process stays: STOPPING=1 when it is disconnected.
t_notify() {
  start_nbdkit "$tmp/sock" --filter=delay memory 8M delay-open=300ms
  /test/notify-listen "$tmp/notify" "$tmp/nlog" \
    "test -e /sys/block/nbd2/pid && [ \$(blockdev --getsize64 /dev/nbd2) = 8388608 ]" &
  cleanup_fn kill_pid $!
  wait_for test -S "$tmp/notify"
  NOTIFY_SOCKET=$tmp/notify "$NBDFS" --kernel "$tmp/sock" nbd2
  cleanup_fn detach /dev/nbd2
  wait_for grep -q BARRIER=1 "$tmp/nlog"
  cat "$tmp/nlog"
  grep -q 'READY=1|STATUS=/dev/nbd2 attached to ' "$tmp/nlog"
  grep -q 'ready-check rc=0' "$tmp/nlog"
  [ "$(grep -n READY=1 "$tmp/nlog" | cut -d: -f1)" -lt \
    "$(grep -n BARRIER=1 "$tmp/nlog" | cut -d: -f1)" ]
  ! grep -q STOPPING "$tmp/nlog" || fail "STOPPING=1 without a stop"
  "$NBDFS" --disconnect /dev/nbd2

  # --ioctl: the process stays in NBD_DO_IT; READY=1 once the device is
  # up, STOPPING=1 when --disconnect ends it.
  /test/notify-listen "$tmp/notify2" "$tmp/nlog2" \
    "test -e /sys/block/nbd2/pid && [ \$(blockdev --getsize64 /dev/nbd2) = 8388608 ]" &
  cleanup_fn kill_pid $!
  wait_for test -S "$tmp/notify2"
  NOTIFY_SOCKET=$tmp/notify2 "$NBDFS" --kernel --ioctl "$tmp/sock" nbd2 &
  doit=$!
  wait_for grep -q ready-check "$tmp/nlog2" || fail "--ioctl: no READY=1"
  grep -q 'ready-check rc=0' "$tmp/nlog2"
  kill -0 "$doit"
  "$NBDFS" --disconnect /dev/nbd2
  wait "$doit" || fail "--ioctl: nbdfs exited with an error"
  cat "$tmp/nlog2"
  grep -q STOPPING=1 "$tmp/nlog2"
}

# What nbdfs@nbd3.service runs: --foreground --nbdtab FILE nbd3, with a
# "persist" line, under NOTIFY_SOCKET: READY=1 once attached, STATUS= when
# the server dies and when the supervisor reconnected, STOPPING=1 when
# the unit's ExecStop (nbdfs --disconnect) ends it; nbd-client's options
# honoured (conns=2 -> 2 connections, unix) or ignored with a warning (bs=).
t_nbdtab_persist() {
  dd if=/dev/zero of="$tmp/disk.img" bs=$MiB count=8 2>/dev/null
  start_nbdkit "$tmp/sock" file "$tmp/disk.img"
  printf '# nbd-client style\nnbd3 %s disk unix,conns=2,persist,bs=4096,_netdev\n' \
    "$tmp/sock" > "$tmp/nbdtab"
  printf 'nbd4 %s disk unix,swap\n' "$tmp/sock" >> "$tmp/nbdtab"
  /test/notify-listen "$tmp/notify" "$tmp/nlog" "test -e /sys/block/nbd3/pid" &
  cleanup_fn kill_pid $!
  wait_for test -S "$tmp/notify"
  NOTIFY_SOCKET=$tmp/notify "$NBDFS" --foreground --nbdtab="$tmp/nbdtab" nbd3 \
    > "$tmp/out" 2> "$tmp/err" &
  sup=$!
  cleanup_fn detach /dev/nbd3
  cleanup_fn kill_pid "$sup"
  wait_for grep -q 'ready-check' "$tmp/nlog" || { cat "$tmp/err"; fail "no READY=1"; }
  cat "$tmp/nlog" "$tmp/err"
  grep -q 'ready-check rc=0' "$tmp/nlog"
  grep -q 'bs=4096 ignored' "$tmp/err"
  [ "$(cat "$tmp/out")" = /dev/nbd3 ]
  "$NBDFS" --status nbd3 | tee "$tmp/status"
  grep -q "nbd+unix:///disk?socket=$tmp/sock, 8388608 bytes, 2 connections, netlink, persist" "$tmp/status"
  random_file "$tmp/data" 2
  dd if="$tmp/data" of=/dev/nbd3 bs=$MiB oflag=direct conv=fsync
  # The server dies and comes back.
  kill -9 "$nbdkit_pid"
  WAIT_SECS=60 wait_for grep -q 'STATUS=.*lost, reconnecting' "$tmp/nlog" ||
    { cat "$tmp/nlog"; fail "no STATUS= for the lost connections"; }
  rm -f "$tmp/sock"
  start_nbdkit "$tmp/sock" file "$tmp/disk.img"
  WAIT_SECS=60 wait_for grep -q 'STATUS=.*reconnected' "$tmp/nlog" ||
    { cat "$tmp/nlog"; fail "no STATUS= for the reconnection"; }
  dd if=/dev/nbd3 of="$tmp/back" bs=$MiB count=2 iflag=direct
  [ "$(md5 "$tmp/data")" = "$(md5 "$tmp/back")" ]
  # ExecStop.
  "$NBDFS" --disconnect /dev/nbd3
  WAIT_SECS=15 wait_for sh -c "! kill -0 $sup"
  wait "$sup" || fail "the supervisor exited with an error"
  cat "$tmp/nlog"
  grep -q 'STOPPING=1' "$tmp/nlog"
  [ "$(grep -c READY=1 "$tmp/nlog")" = 1 ]
  # A refused option attaches nothing.
  expect_fail_with 'swap is not supported' "$NBDFS" --nbdtab="$tmp/nbdtab" nbd4
  test ! -e /sys/block/nbd4/pid
}

# --disconnect sends NBD_CMD_FLUSH after the last write and NBD_CMD_DISC on
# every connection (checked on the server: nbdkit's log filter and its -v
# messages), and
# --timeout reaches the driver (debugfs nbd/nbdN/timeout), by netlink and
# by ioctl.
t_disconnect_timeout() {
  nbdkit -U "$tmp/sock" -P "$tmp/nbdkit.pid" -v --log=stderr --filter=log \
    memory 16M logfile="$tmp/log" 2> "$tmp/nbdkit.err"
  wait_for test -s "$tmp/nbdkit.pid"
  cleanup_fn kill_pid "$(cat "$tmp/nbdkit.pid")"
  wait_for test -S "$tmp/sock"
  "$NBDFS" --kernel -C 2 --timeout 7 "$tmp/sock" /dev/nbd6
  cleanup_fn detach /dev/nbd6
  grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs none /sys/kernel/debug
  # debugfs shows the driver's timeout in jiffies: 7 s is 7 * HZ.
  t=$(cat /sys/kernel/debug/nbd/nbd6/timeout)
  hz=$((t / 7))
  case "$hz" in 100|250|300|1000) ;; *) fail "netlink: driver timeout $t jiffies is not 7 s" ;; esac
  [ $((hz * 7)) = "$t" ] || fail "netlink: driver timeout $t jiffies is not 7 s"
  random_file "$tmp/data" 2
  # Written, not flushed (no fsync): --disconnect must flush it.
  dd if="$tmp/data" of=/dev/nbd6 bs=$MiB oflag=direct
  "$NBDFS" --disconnect nbd6
  WAIT_SECS=10 wait_for sh -c '! test -e /sys/block/nbd6/pid'
  WAIT_SECS=10 wait_for sh -c "[ \$(grep -c 'client sent NBD_CMD_DISC' '$tmp/nbdkit.err') -ge 2 ]" ||
    fail "NBD_CMD_DISC not seen on both connections: $(grep -i 'clos' "$tmp/nbdkit.err")"
  cat "$tmp/log"
  # A flush after the last write. (The kernel sends it on one connection:
  # nbdkit memory advertises NBD_FLAG_CAN_MULTI_CONN, so that covers the
  # writes of both, as the spec's multi-conn section says.)
  grep -q 'Write ' "$tmp/log" || fail "no writes in the server's log"
  awk '$4 == "Write" { w = NR } $4 == "Flush" && NR > w { ok = 1 }
       END { exit !(w && ok) }' "$tmp/log" ||
    fail "--disconnect: no flush after the last write"
  # ioctl attach: the same timeout.
  "$NBDFS" --kernel --ioctl -C 1 --timeout 9 "$tmp/sock" /dev/nbd6
  [ "$(cat /sys/kernel/debug/nbd/nbd6/timeout)" = $((9 * hz)) ] ||
    fail "ioctl: driver timeout $(cat /sys/kernel/debug/nbd/nbd6/timeout) jiffies, want 9 s ($((9 * hz)))"
  "$NBDFS" --disconnect nbd6
}

vm_run netlink t_netlink 120
vm_run ioctl-ext4 t_ioctl_ext4 180
vm_run kernel-picks t_kernel_picks 60
vm_run multi-conn t_multi_conn 120
vm_run read-only t_read_only 60
vm_run block-size t_block_size 60
vm_run nbd-server t_nbd_server 60
vm_run server-gone t_server_gone 90
vm_run persist t_persist 180
vm_run persist-flags t_persist_flags 120
vm_run persist-daemon t_persist_daemon 60
vm_run disconnect-timeout t_disconnect_timeout 90
vm_run notify t_notify 60
vm_run nbdtab-persist t_nbdtab_persist 180
vm_finish
