#!/usr/bin/env bash
# FUSE mode over awkward servers (nbdkit filters): a 4096-byte minimum
# block size with 512-byte O_DIRECT and 5-byte buffered I/O (the pool's
# read-modify-write must keep every byte); no WRITE_ZEROES (nozero:
# fallocate -z/-p fall back to writing zeroes and still read back as
# zeroes); injected EIO (error filter) reaches the caller, and the mount
# keeps working afterwards.
# timeout: 90
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires_nbdkit_filter blocksize-policy
requires_nbdkit_filter nozero
requires_nbdkit_filter error
requires_nbdkit_filter log
requires fallocate --version

mnt=$tmp/mnt
f=$mnt/disk

# ---- minimum block size 4096, unaligned requests are errors ----
sock=$tmp/bs.sock
start_nbdkit "$sock" --filter=blocksize-policy memory 8M \
  blocksize-minimum=4096 blocksize-preferred=65536 blocksize-error-policy=error
start_nbdfs "$mnt" "$sock"
[ "$(stat -c %o "$f")" = 65536 ] || fail "st_blksize should be the preferred block size"
python3 - "$f" "$tmp/model" <<'PY'
import mmap, os, random, sys
path, model_path = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
model = bytearray(size)
rnd = random.Random(7)
buffered = os.open(path, os.O_RDWR)
direct = os.open(path, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)              # page-aligned, for O_DIRECT
for i in range(400):
    if i % 2:
        off = rnd.randrange(0, size - 5)
        data = rnd.randbytes(5)
        assert os.pwrite(buffered, data, off) == 5
        model[off:off + 5] = data
    else:
        n = rnd.choice([1, 2, 3, 8]) * 512
        off = rnd.randrange(0, (size - n) // 512) * 512
        data = rnd.randbytes(n)
        buf[0:n] = data
        assert os.pwritev(direct, [memoryview(buf)[0:n]], off) == n
        model[off:off + n] = data
    if i % 40 == 0:
        n = 512
        off = rnd.randrange(0, size // 512) * 512
        assert os.preadv(direct, [memoryview(buf)[0:n]], off) == n
        assert buf[0:n] == model[off:off + n], "O_DIRECT 512-byte read at %d" % off
open(model_path, "wb").write(model)
PY
dd if="$f" iflag=direct bs=1M status=none | cmp - "$tmp/model" ||
  fail "data differs after unaligned I/O"
stop_nbdfs "$mnt"
nbdcopy "nbd+unix:///?socket=$sock" - | cmp - "$tmp/model" ||
  fail "server-side data differs after unaligned I/O"

# ---- no WRITE_ZEROES: zeroing falls back to writes ----
sock=$tmp/nz.sock
log=$tmp/nz.log
start_nbdkit "$sock" --filter=log --filter=nozero memory 8M logfile="$log"
start_nbdfs "$mnt" "$sock"
head -c 8M /dev/urandom > "$tmp/data"
dd if="$tmp/data" of="$f" bs=1M oflag=direct conv=notrunc status=none
fallocate -z -o 1048576 -l 1048576 "$f"
fallocate -p -o 4096 -l 10000 "$f"
! grep -q ' Zero ' "$log" || fail "nozero: a Zero command was sent"
python3 - "$f" "$tmp/data" <<'PY'
import sys
got = open(sys.argv[1], "rb").read()
want = bytearray(open(sys.argv[2], "rb").read())
want[1048576:2097152] = bytes(1048576)
want[4096:14096] = bytes(10000)
assert got == want, "zeroed ranges do not read back as zeroes"
PY
dd if="$f" iflag=direct bs=1M count=2 status=none | cmp - <(python3 -c "
import sys
d = bytearray(open('$tmp/data', 'rb').read(2097152))
d[1048576:] = bytes(1048576); d[4096:14096] = bytes(10000)
sys.stdout.buffer.write(d)") || fail "zeroes not on the server"
stop_nbdfs "$mnt"

# ---- injected errors: EIO to the caller, then business as usual ----
sock=$tmp/err.sock
start_nbdkit "$sock" --filter=error memory 4M error=EIO \
  error-pread-rate=1 error-pread-file="$tmp/fail-reads" \
  error-pwrite-rate=1 error-pwrite-file="$tmp/fail-writes"
start_nbdfs "$mnt" "$sock"
head -c 1M /dev/urandom > "$tmp/one"
dd if="$tmp/one" of="$f" bs=1M oflag=direct conv=notrunc status=none
touch "$tmp/fail-reads"
expect_fail_with "Input/output error" dd if="$f" of=/dev/null bs=64k count=1 iflag=direct
rm "$tmp/fail-reads"
dd if="$f" bs=1M count=1 iflag=direct status=none | cmp - "$tmp/one" ||
  fail "reads after an injected error"
touch "$tmp/fail-writes"
expect_fail_with "Input/output error" dd if=/dev/zero of="$f" bs=64k count=1 oflag=direct conv=notrunc
rm "$tmp/fail-writes"
dd if=/dev/zero of="$f" bs=64k count=1 seek=1 oflag=direct conv=notrunc status=none
dd if="$f" bs=64k count=1 iflag=direct status=none | cmp - <(head -c 65536 "$tmp/one") ||
  fail "a failed write changed the data"
stop_nbdfs "$mnt"
echo OK
