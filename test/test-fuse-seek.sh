#!/usr/bin/env bash
# SEEK_DATA / SEEK_HOLE from base:allocation, checked against the extent
# map nbdinfo reads from the same server (nbdkit data and sparse-random);
# ENXIO at/after EOF; cp --sparse=always copies the data and leaves the
# holes; st_blocks comes from the allocation; without structured replies
# (nbdkit --no-sr: no base:allocation) the whole file is data.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin data
requires_nbdkit_plugin sparse-random
requires nbdinfo --version

# check_seek FILE URI: every SEEK_DATA/SEEK_HOLE answer for offsets at
# and around each extent boundary (plus random ones) agrees with the map
# nbdinfo reads from offset 0 and with the data. The server may answer a
# query that starts inside an extent more finely (nbdkit reports the zero
# tail of a data page as zero), so the checks are: SEEK_DATA(off) = d has
# only zero bytes in [off, d) and is not before the map's answer;
# SEEK_HOLE(off) = h is a zero byte (or EOF) and not after the map's.
check_seek() {
  nbdinfo --map "$2" > "$tmp/map"
  python3 - "$1" "$tmp/map" <<'PY'
import os, random, sys, errno
path, mapfile = sys.argv[1], sys.argv[2]
ext = []
for line in open(mapfile):
    off, length, typ = (int(x) for x in line.split()[:3])
    ext.append((off, length, (typ & 2) != 0))     # hole = reads as zero
size = ext[-1][0] + ext[-1][1]
assert os.path.getsize(path) == size
data = open(path, "rb").read()
def expect(off, whence):
    for (o, l, hole) in ext:
        if o + l <= off:
            continue
        if (whence == os.SEEK_DATA) != hole:
            return max(o, off)
    return size if whence == os.SEEK_HOLE else None
offs = {0, size - 1}
for (o, l, _) in ext:
    offs |= {o, o + 1, o + l - 1}
rnd = random.Random(1)
offs |= {rnd.randrange(size) for _ in range(50)}
fd = os.open(path, os.O_RDONLY)
n = 0
for off in sorted(x for x in offs if 0 <= x < size):
    for wh in (os.SEEK_DATA, os.SEEK_HOLE):
        name = "SEEK_DATA" if wh == os.SEEK_DATA else "SEEK_HOLE"
        want = expect(off, wh)
        try:
            got = os.lseek(fd, off, wh)
        except OSError as e:
            got = None
            assert e.errno == errno.ENXIO, e
        what = "lseek(%d, %s) = %s, map says %s" % (off, name, got, want)
        if wh == os.SEEK_DATA:
            end = size if got is None else got
            assert got is None or off <= got < size, what
            assert data[off:end].count(0) == end - off, what + ": skipped data"
            assert want is not None and got is not None and got >= want \
                or want is None and got is None \
                or want is not None and got is None and data[off:].count(0) == size - off, what
        else:
            assert got is not None and off <= got <= size, what
            assert got <= want, what
            assert got == size or data[got] == 0, what + ": not a zero byte"
        n += 1
for wh in (os.SEEK_DATA, os.SEEK_HOLE):
    for off in (size, size + 1, size + 65536):
        try:
            os.lseek(fd, off, wh)
            raise AssertionError("lseek at/after EOF did not fail")
        except OSError as e:
            assert e.errno == errno.ENXIO, e
print("checked", n, "lseeks over", len(ext), "extents")
PY
}

mnt=$tmp/mnt
sock=$tmp/sock
start_nbdkit "$sock" data '@0 1 @131072 2*100 @1048576 3*65536 @5242880 4 @8388607 5' size=8M
start_nbdfs "$mnt" "$sock"
f=$mnt/disk
check_seek "$f" "nbd+unix:///?socket=$sock"
# The first data after 32768 is at 131072, the next hole after it at
# 163840 (nbdkit data allocates in 32 KiB pages).
[ "$(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 32768, os.SEEK_DATA), os.lseek(fd, 131072, os.SEEK_HOLE))")" = "131072 163840" ] ||
  fail "SEEK_DATA/SEEK_HOLE at known places"
# st_blocks from base:allocation (the map's allocated bytes), once the
# background scan has run.
alloc=$(nbdinfo --map "nbd+unix:///?socket=$sock" | awk '$3 % 2 == 0 { s += $2 } END { print s }')
[ "$alloc" -gt 0 ] && [ "$alloc" -lt $((1024 * 1024)) ] || fail "unexpected map"
WAIT_SECS=10 wait_for sh -c "[ \$(stat -c %b '$f') = $((alloc / 512)) ]" ||
  fail "st_blocks $(stat -c %b "$f"), expected $((alloc / 512))"
stop_nbdfs "$mnt"

sock2=$tmp/sock2
start_nbdkit "$sock2" sparse-random 64M seed=5 runlength=65536
start_nbdfs "$mnt" "$sock2" -C 2
check_seek "$f" "nbd+unix:///?socket=$sock2"
# cp --sparse=always reads only the data and leaves the holes.
cp --sparse=always "$f" "$tmp/copy"
[ "$(md5 "$tmp/copy")" = "$(md5 "$f")" ] || fail "cp --sparse=always copy differs"
nbdcopy "nbd+unix:///?socket=$sock2" - | cmp - "$tmp/copy" || fail "copy differs from the server"
[ "$(stat -c %b "$tmp/copy")" -lt $((64 * 1024 * 1024 / 512 * 3 / 4)) ] ||
  fail "cp --sparse=always made no holes"
stop_nbdfs "$mnt"

# No structured replies, so no base:allocation: everything is data.
sock3=$tmp/sock3
start_nbdkit "$sock3" --no-sr data '@1048576 1' size=4M
start_nbdfs "$mnt" "$sock3"
[ "$(python3 -c "import os; fd=os.open('$f', os.O_RDONLY); print(os.lseek(fd, 100, os.SEEK_DATA), os.lseek(fd, 100, os.SEEK_HOLE))")" = "100 4194304" ] ||
  fail "without base:allocation the file must be all data"
[ "$(stat -c %b "$f")" = $((4 * 1024 * 1024 / 512)) ] || fail "st_blocks without allocation info"
[ "$(pyio errno "os.lseek(os.open('$f', os.O_RDONLY), 4194304, os.SEEK_DATA)")" = ENXIO ] ||
  fail "SEEK_DATA at EOF"
stop_nbdfs "$mnt"
echo OK
