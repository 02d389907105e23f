#!/usr/bin/env bash
# Concurrency and integrity: fio with verify=crc32c at iodepth 32, four
# jobs, libaio + O_DIRECT, 4 KiB random and 1 MiB sequential, over -C 4
# connections to nbdkit; the data is verified again through a fresh
# mount (so it is on the server). Then --all against nbd-server with two
# exports written in parallel, checked in the exports' backing files.
# timeout: 120
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires fio --version
requires nbd-server -V

mnt=$tmp/mnt
sock=$tmp/sock
start_nbdkit "$sock" memory 128M
start_nbdfs "$mnt" "$sock" -C 4
f=$mnt/disk
# fio writes *-verify.state files into the current directory: keep them in
# $tmp (and not in the source tree).
cd "$tmp"

fio_common=(--filename="$f" --ioengine=libaio --direct=1 --iodepth=32
            --numjobs=4 --size=32M --offset_increment=32M --verify=crc32c
            --verify_fatal=1 --group_reporting --output-format=terse)
fio --name=rand4k --rw=randwrite --bs=4k "${fio_common[@]}" > "$tmp/fio1"
fio --name=seq1m --rw=write --bs=1M "${fio_common[@]}" > "$tmp/fio2"
# Mixed block sizes, reads and writes at once on the whole file (no verify:
# overlapping writes of different sizes), must just not fail.
fio --name=mixed --filename="$f" --ioengine=libaio --direct=1 --iodepth=32 \
  --numjobs=2 --rw=randrw --bsrange=512-1M --size=128M --io_size=64M \
  --group_reporting --output-format=terse > "$tmp/fio3"
# The 1 MiB pattern once more, then verified through a new mount.
fio --name=final --rw=write --bs=1M "${fio_common[@]}" --do_verify=0 > "$tmp/fio4"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "$sock" -C 2
fio --name=final --rw=write --bs=1M "${fio_common[@]}" --verify_only > "$tmp/fio5"
stop_nbdfs "$mnt"

# ---- --all: two exports of nbd-server, written at the same time ----
truncate -s 32M "$tmp/a.img" "$tmp/b.img"
nsock=$tmp/nbd-server.sock
cat > "$tmp/nbd-server.conf" <<EOF2
[generic]
  allowlist = true
  unixsock = $nsock
[first]
  exportname = $tmp/a.img
[second/x]
  exportname = $tmp/b.img
EOF2
start_nbd_server "$tmp/nbd-server.conf"
wait_for test -S "$nsock" || fail "nbd-server socket"
start_nbdfs "$mnt" "$nsock" --all
[ "$(ls "$mnt" | tr '\n' ' ')" = "first second_x " ] || fail "--all files: $(ls "$mnt")"
head -c 32M /dev/urandom > "$tmp/a.src"
head -c 32M /dev/urandom > "$tmp/b.src"
dd if="$tmp/a.src" of="$mnt/first" bs=256k oflag=direct conv=notrunc,fsync status=none &
apid=$!
dd if="$tmp/b.src" of="$mnt/second_x" bs=1M conv=notrunc,fsync status=none
wait $apid
cmp "$mnt/first" "$tmp/a.src" || fail "first differs"
cmp "$mnt/second_x" "$tmp/b.src" || fail "second differs"
stop_nbdfs "$mnt"
cmp "$tmp/a.img" "$tmp/a.src" || fail "first: backing file differs"
cmp "$tmp/b.img" "$tmp/b.src" || fail "second: backing file differs"
echo OK
