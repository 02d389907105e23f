#!/usr/bin/env bash
# fstab: lines of type fuse.nbdfs with nbdfs options, mounted the way boot
# does it: mount(8) -> mount.fuse3 -> "nbdfs ADDRESS MNT -o OPTS".
#  - mount -T FSTAB MNT: connections=2 (both used, on the server's log),
#    name=, pidfile=, allow_other, and the options only mount(8)/systemd
#    read (_netdev, nofail, noauto, users, x-systemd.*, comment=) which
#    must not reach libfuse; data written through the file is in nbdkit's
#    backing file; `umount MNT` makes nbdfs flush after the last write
#    (under CAN_MULTI_CONN one flush covers every connection), send
#    NBD_CMD_DISC on both and exit (server log);
#  - mount -a -T FSTAB: the line without noauto, ro + timeout= + reconnect=:
#    read-only (EROFS, no Write on the server), data reads back;
#  - a bad nbdfs option value fails the mount with our message.
# mount.fuse3 finds "nbdfs" in the shell's default PATH, so the test runs
# in a private mount namespace with the binary bind-mounted onto
# /usr/local/sbin there: nothing outside sees it or the mounts.
# timeout: 120
source "$SRCDIR/test/functions.sh"
requires_root
requires_fuse
requires command -v mount.fuse3
requires command -v unshare
requires_nbdkit_plugin file
requires_nbdkit_filter log
requires fio --version

sock=$tmp/sock
log=$tmp/nbdkit.log
truncate -s 16M "$tmp/backing"
start_nbdkit "$sock" --filter=log file "$tmp/backing" logfile="$log"
mkdir -p "$tmp/mnt" "$tmp/bin"
ln -s "$NBDFS" "$tmp/bin/nbdfs"
head -c 1M /dev/urandom >"$tmp/data"

cat >"$tmp/fstab" <<FSTAB
# comment line
$sock  $tmp/mnt  fuse.nbdfs  defaults,_netdev,nofail,noauto,users,comment=x,x-systemd.requires=foo.service,x-systemd.automount,connections=2,name=data.img,pidfile=$tmp/nbdfs.pid,allow_other  0 0
FSTAB
cat >"$tmp/fstab-a" <<FSTAB
$sock  $tmp/mnt  fuse.nbdfs  _netdev,ro,timeout=30,reconnect=5,pidfile=$tmp/nbdfs.pid  0 0
$sock  $tmp/never  fuse.nbdfs  noauto,connections=1  0 0
FSTAB
cat >"$tmp/fstab-bad" <<FSTAB
$sock  $tmp/mnt  fuse.nbdfs  connections=lots  0 0
FSTAB

cat >"$tmp/inner.sh" <<'INNER'
set -ex
tmp=$1
mnt=$tmp/mnt
mount --bind "$tmp/bin" /usr/local/sbin
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; true' EXIT

# waits for the nbdfs of the pidfile to exit after an unmount
wait_exit() {
  local pid=$1 i
  for (( i=0; i<200; i++ )); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "FAIL: nbdfs $pid did not exit after umount"; return 1
}

# ---- mount -T FSTAB MNT ----
mount -T "$tmp/fstab" "$mnt"
grep " $mnt fuse.nbdfs " /proc/mounts | tee "$tmp/mounts"
grep -q 'allow_other' "$tmp/mounts"
grep -q 'nosuid' "$tmp/mounts"        # "users" became nosuid,nodev,noexec
ls -l "$mnt" | tee "$tmp/ls"
[ -f "$mnt/data.img" ]
pid=$(cat "$tmp/nbdfs.pid")
# The mount opened one connection; qd32 reads open the second
# (connections on demand), which the writes below then share with it.
fio --name=grow --filename="$mnt/data.img" --ioengine=libaio --direct=1 \
  --iodepth=32 --bs=4k --rw=randread --size=4M --time_based --runtime=2 \
  --output-format=terse >/dev/null
dd if="$tmp/data" of="$mnt/data.img" bs=64k seek=4 conv=notrunc status=none
cmp <(dd if="$mnt/data.img" bs=64k skip=4 count=16 status=none) "$tmp/data"
umount "$mnt"
if mountpoint -q "$mnt"; then echo "FAIL: still mounted"; exit 1; fi
wait_exit "$pid"
wc -l <"$tmp/nbdkit.log" >"$tmp/lines-after-first"

# ---- mount -a -T FSTAB: the auto line, read-only ----
mount -a -T "$tmp/fstab-a"
grep " $mnt fuse.nbdfs " /proc/mounts | tee "$tmp/mounts-a"
grep -q ' ro[,]' "$tmp/mounts-a"
if grep -q " $tmp/never " /proc/mounts; then echo "FAIL: noauto mounted"; exit 1; fi
pid=$(cat "$tmp/nbdfs.pid")
cmp <(dd if="$mnt/disk" bs=64k skip=4 count=16 status=none) "$tmp/data"
if echo x | dd of="$mnt/disk" conv=notrunc status=none 2>"$tmp/rofs"; then
  echo "FAIL: a write to the ro mount succeeded"; exit 1
fi
grep -q 'Read-only file system' "$tmp/rofs"
umount "$mnt"
wait_exit "$pid"

# ---- a bad value: no mount, our message ----
if mount -T "$tmp/fstab-bad" "$mnt" 2>"$tmp/bad"; then
  echo "FAIL: connections=lots mounted"; exit 1
fi
cat "$tmp/bad"
grep -q 'nbdfs: .*connections' "$tmp/bad"
if mountpoint -q "$mnt"; then echo "FAIL: mounted anyway"; exit 1; fi
INNER
bash "$SRCDIR/test/private-mounts.sh" bash "$tmp/inner.sh" "$tmp"

# The data is on the server.
cmp <(dd if="$tmp/backing" bs=64k skip=4 count=16 status=none) "$tmp/data" ||
  fail "the data is not in the backing file"
cat "$log" | cut -c1-160 | head -60
# First mount: two connections wrote... at least both were opened (the
# second under the reads' load), and after umount: a Flush after the last
# Write, and a Disconnect on both.
conns=$(grep -o 'connection=[0-9]*' "$log" | sort -u | wc -l)
[ "$conns" -ge 2 ] || fail "connections=2 did not open 2 connections"
check_flushed_after_writes "$log" || fail "no flush after the last write"
[ "$(grep -c ' Disconnect ' "$log")" -ge 3 ] ||
  fail "expected a Disconnect per connection (2 + 1)"
# The read-only mount wrote nothing: no Write after the first mount's end.
tail -n +"$(( $(cat "$tmp/lines-after-first") + 1 ))" "$log" | grep -q ' Write ' &&
  fail "the ro mount wrote"
echo OK
