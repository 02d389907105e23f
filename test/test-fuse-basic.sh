#!/usr/bin/env bash
# FUSE mode basics against nbdkit memory: the file's attributes, data at
# odd offsets and lengths (checked through the page cache and with
# O_DIRECT), reads/writes at and past the end, fixed size (truncate),
# in-memory chmod/utimes, statfs, O_TRUNC, -r, a read-only server,
# --name, export-name file names, daemon mode with --pidfile, and clean
# exits on fusermount3 -u and SIGTERM.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires nbdinfo --version

sock=$tmp/sock
mnt=$tmp/mnt
size=$((10 * 1024 * 1024))
start_nbdkit "$sock" memory $size

start_nbdfs "$mnt" "$sock"
f=$mnt/disk
[ "$(ls -A "$mnt")" = disk ] || fail "expected just 'disk' in the mount"
[ "$(stat -c %s "$f")" = $size ] || fail "size"
[ "$(stat -c %F:%a "$f")" = "regular file:644" ] || fail "mode"
[ "$(stat -c %u:%g "$f")" = "$(id -u):$(id -g)" ] || fail "owner"
# st_blksize is the server's preferred block size, as nbdinfo reads it
# (nbdkit 1.32's memory plugin says 4096, 1.42's 32768), or 4096 when the
# server sends none (the spec's default).
pref=$(nbdinfo --json "nbd+unix:///?socket=$sock" | python3 -c '
import json, sys
print(json.load(sys.stdin)["exports"][0].get("block_size_preferred", 4096))')
echo "st_blksize $(stat -c %o "$f"), the server prefers $pref"
[ "$(stat -c %o "$f")" = "$pref" ] || fail "st_blksize is not the preferred block size"
[ "$(stat -c %F:%a "$mnt")" = "directory:755" ] || fail "root mode"

# Random writes at odd offsets and lengths against a model in python; the
# whole file must then match the model through the page cache and with
# O_DIRECT (which goes to the server).
python3 - "$f" "$tmp/model" <<'PY'
import os, random, sys
path, model_path = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
model = bytearray(size)
rnd = random.Random(42)
fd = os.open(path, os.O_RDWR)
for i in range(300):
    length = rnd.choice([1, 5, 511, 512, 4095, 4097, 65537, 300000])
    off = rnd.randrange(0, size - length)
    data = rnd.randbytes(length)
    assert os.pwrite(fd, data, off) == length
    model[off:off + length] = data
    if i % 50 == 0:
        back = os.pread(fd, length, off)
        assert back == data, "read back differs at %d" % off
os.close(fd)
open(model_path, "wb").write(model)
PY
[ "$(md5 "$f")" = "$(md5 "$tmp/model")" ] || fail "data differs (cached)"
dd if="$f" iflag=direct bs=1M status=none | cmp - "$tmp/model" ||
  fail "data differs (O_DIRECT)"

# Reads at and past the end are short or empty.
[ "$(pyio pread "$f" $((size - 3)) 100)" = "$(tail -c 3 "$tmp/model" | od -An -tx1 | tr -d ' \n')" ] ||
  fail "short read at the end"
[ -z "$(pyio pread "$f" $size 100)" ] || fail "read at EOF not empty"
[ -z "$(pyio pread "$f" $((size + 4096)) 100)" ] || fail "read past EOF not empty"
# Writes: starting at the end -> ENOSPC; crossing the end -> short count.
[ "$(pyio errno "import os; os.pwrite(os.open('$f', os.O_WRONLY), b'x', $size)")" = ENOSPC ] ||
  fail "write at EOF did not fail with ENOSPC"
[ "$(pyio pwrite "$f" $((size - 2)) 61626364)" = 2 ] || fail "write across EOF not short"
[ "$(pyio pread "$f" $((size - 2)) 2)" = 6162 ] || fail "tail bytes"
[ "$(stat -c %s "$f")" = $size ] || fail "size changed"

# The size is fixed: a different size is refused, the same one accepted.
expect_fail_with "Operation not permitted" truncate -s 1M "$f"
truncate -s $size "$f"
# O_TRUNC is ignored, as on a block device: the data stays.
before=$(md5 "$f")
sh -c ": > '$f'"
[ "$(stat -c %s "$f")" = $size ] || fail "O_TRUNC changed the size"
[ "$(md5 "$f")" = "$before" ] || fail "O_TRUNC changed the data"
# cp of an image of the same size onto the file works.
head -c $size /dev/urandom > "$tmp/img"
cp "$tmp/img" "$f"
[ "$(md5 "$f")" = "$(md5 "$tmp/img")" ] || fail "cp onto the file"

# chmod / utimes live in memory.
chmod 600 "$f"
[ "$(stat -c %a "$f")" = 600 ] || fail "chmod"
touch -m -d "2001-02-03 04:05:06 UTC" "$f"
[ "$(stat -c %Y "$f")" = "$(date -d "2001-02-03 04:05:06 UTC" +%s)" ] || fail "utimes"
# statfs: blocks of the preferred size (at least 4096) covering the
# export, nothing free.
bs=$(( pref > 4096 ? pref : 4096 ))
[ "$(stat -f -c '%S %b %f %a' "$mnt")" = "$bs $(( (size + bs - 1) / bs )) 0 0" ] ||
  fail "statfs: $(stat -f -c '%S %b %f %a' "$mnt")"
stop_nbdfs "$mnt" umount

# The data survived the unmount (it is on the server): mount again, -r.
start_nbdfs "$mnt" "$sock" -r
[ "$(stat -c %a "$f")" = 444 ] || fail "-r: mode"
[ "$(md5 "$f")" = "$(md5 "$tmp/img")" ] || fail "data after re-mount"
[ "$(pyio errno "os.open('$f', os.O_WRONLY)")" = EROFS ] || fail "-r: open for writing"
# (No fallocate check here: the kernel refuses it on an O_RDONLY fd with
# EBADF before we see it, and -r refuses every writable open.)
[ "$(pyio errno "os.open('$f', os.O_RDWR)")" = EROFS ] || fail "-r: open O_RDWR"
[ "$(pyio errno "os.open('$f', os.O_WRONLY | os.O_TRUNC)")" = EROFS ] ||
  fail "-r: open O_TRUNC"
stop_nbdfs "$mnt" term

# --name, and file names from export names ('/' -> '_').
start_nbdfs "$mnt" "$sock" --name vm.img
[ "$(ls -A "$mnt")" = vm.img ] || fail "--name"
stop_nbdfs "$mnt"
start_nbdfs "$mnt" "nbd+unix:///a/b?socket=$sock"
[ "$(ls -A "$mnt")" = a_b ] || fail "export 'a/b' should show as a_b"
stop_nbdfs "$mnt"
expect_fail_with "plain file name" "$NBDFS" --name x/y "$sock" "$mnt"

# A read-only server: mode 0444 without -r.
rsock=$tmp/rsock
start_nbdkit "$rsock" -r memory 1M
start_nbdfs "$mnt" "$rsock"
[ "$(stat -c %a "$mnt/disk")" = 444 ] || fail "read-only export: mode"
[ "$(pyio errno "os.open('$mnt/disk', os.O_RDWR)")" = EROFS ] || fail "read-only export: open"
stop_nbdfs "$mnt"

# Daemon mode: returns only once the mount is usable, writes the pidfile,
# exits on SIGTERM, removes the pidfile.
"$NBDFS" --pidfile "$tmp/nbdfs.pid" "$sock" "$mnt"
mountpoint -q "$mnt" || fail "daemon mode returned before the mount was ready"
pid=$(cat "$tmp/nbdfs.pid")
note_pid "$pid"
cleanup_fn _cleanup_nbdfs "$mnt" "$pid"
[ "$(md5 "$mnt/disk")" = "$(md5 "$tmp/img")" ] || fail "daemon mode data"
kill -TERM "$pid"
WAIT_SECS=20 wait_for sh -c "! kill -0 $pid" || fail "daemon did not exit"
! mountpoint -q "$mnt" || fail "still mounted after SIGTERM"
[ ! -e "$tmp/nbdfs.pid" ] || fail "pidfile left behind"
echo OK
