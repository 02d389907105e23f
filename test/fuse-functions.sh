# Helpers for the FUSE-mode tests (test/test-fuse-*.sh). Source after
# functions.sh:
#   source "$SRCDIR/test/functions.sh"
#   source "$SRCDIR/test/fuse-functions.sh"
requires_fuse
requires mountpoint --version

# start_nbdfs MNT ARGS...: runs "$NBDFS -f ARGS... MNT" as a background job
# (foreground mode, so its messages and any sanitizer report land in the
# test log and its exit status is ours to check) and waits until MNT is
# mounted. Sets $nbdfs_pid. A cleanup unmounts and kills it by PID.
start_nbdfs() {
  local mnt=$1; shift
  mkdir -p "$mnt"
  "$NBDFS" -f "$@" "$mnt" &
  nbdfs_pid=$!
  note_pid "$nbdfs_pid" || true
  track_mount "$mnt"
  cleanup_fn _cleanup_nbdfs "$mnt" "$nbdfs_pid"
  local i
  for (( i=0; i<200; i++ )); do
    mountpoint -q "$mnt" && return 0
    kill -0 "$nbdfs_pid" 2>/dev/null || fail "nbdfs exited before mounting $mnt"
    sleep 0.1
  done
  fail "nbdfs did not mount $mnt within 20 s"
}

# A FUSE mount of another user (no allow_other) refuses even root's stat,
# so cleanups ask /proc/mounts rather than mountpoint(1).
_fuse_mounted() { grep -q " $1 fuse" /proc/mounts; }

_cleanup_nbdfs() {
  local mnt=$1 pid=$2
  if _fuse_mounted "$mnt"; then
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null
  fi
  kill_pid "$pid"
  if _fuse_mounted "$mnt"; then
    fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  return 0
}

# _mount_holders MNT: prints, one line per mount namespace, a process whose
# namespace still has MNT mounted. Unmounted here, a FUSE mount copied into
# another namespace (unshare -m --propagation private) stays alive there,
# and its nbdfs never learns of the unmount (test/private-mounts.sh).
_mount_holders() {
  local - f pid ns seen=" "
  set +x                      # one trace line per process is noise
  for f in /proc/[0-9]*/mountinfo; do
    grep -qF " $1 " "$f" 2>/dev/null || continue
    pid=${f#/proc/}; pid=${pid%/mountinfo}
    ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || continue
    case "$seen" in *" $ns "*) continue ;; esac
    seen="$seen$ns "
    echo "$1 is still mounted in $ns, e.g. for process $pid:" \
      "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | head -c 200)" >&2
  done
  return 0
}

# stop_nbdfs MNT [HOW [STAMP]]: unmount with fusermount3 -u (HOW=umount,
# default) or SIGTERM (HOW=term); asserts that nbdfs exits 0 within 20 s and
# the mount is gone. With STAMP, the wall-clock time (date +%s.%N) right
# after the signal or unmount was sent is written there.
stop_nbdfs() {
  local mnt=$1 how=${2:-umount} stamp=${3:-} i rc=0
  case "$how" in
    umount) fusermount3 -u "$mnt" ;;
    term) kill -TERM "$nbdfs_pid" ;;
    *) fail "stop_nbdfs: unknown way $how" ;;
  esac
  [ -z "$stamp" ] || date +%s.%N > "$stamp"
  for (( i=0; i<200; i++ )); do
    kill -0 "$nbdfs_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$nbdfs_pid" 2>/dev/null; then
    dump_stacks "$nbdfs_pid"
    _mount_holders "$mnt"
    fail "nbdfs did not exit within 20 s after $how"
  fi
  wait "$nbdfs_pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "nbdfs exited with status $rc after $how"
  ! mountpoint -q "$mnt" || fail "$mnt still mounted after $how"
}

# pyio: small python3 helpers for exact offsets, errno and SEEK_DATA.
#   pyio pwrite FILE OFFSET HEXBYTES | pread FILE OFFSET LEN (prints hex)
#   pyio errno CODE...  runs python CODE, prints the errno name or OK
pyio() {
  python3 - "$@" <<'PY'
import os, sys, errno
op = sys.argv[1]
if op == "pwrite":
    fd = os.open(sys.argv[2], os.O_WRONLY)
    n = os.pwrite(fd, bytes.fromhex(sys.argv[4]), int(sys.argv[3]))
    print(n)
elif op == "pread":
    fd = os.open(sys.argv[2], os.O_RDONLY)
    print(os.pread(fd, int(sys.argv[4]), int(sys.argv[3])).hex())
elif op == "errno":
    try:
        exec(sys.argv[2])
        print("OK")
    except OSError as e:
        print(errno.errorcode[e.errno])
PY
}

# [MIN_HOLES=N] check_seek FILE URI: the map nbdinfo reads from URI must
# have at least N holes (default 1), and every SEEK_DATA/SEEK_HOLE answer
# for offsets at and around each extent boundary (plus random ones) agrees with the map
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
# A map without holes would make every check below trivially true.
holes = sum(1 for e in ext if e[2])
assert holes >= int(os.environ.get("MIN_HOLES", "1")), \
    "the map has %d hole(s): nothing to check" % holes
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

# grow_connections FILE LOG N: random reads at queue depth 32 (fio, libaio,
# O_DIRECT, first 4 MiB of FILE) until nbdkit's log filter (LOG) shows N
# connections open at once: a mount opens one and opens the others only
# while its queue is deep (nbdclient/pool-grow.c). A test that needs every
# connection of -C N in use calls this after the mount and exports
# NBDFS_IDLE_CLOSE_MS high enough that the extras stay open meanwhile.
grow_connections() {
  local file=$1 log=$2 want=$3 try have=0
  for try in 1 2 3 4 5; do
    fio --name=grow --filename="$file" --ioengine=libaio --direct=1 \
      --iodepth=32 --bs=4k --rw=randread --size=4M --time_based \
      --runtime=1 --output-format=terse >/dev/null ||
      fail "grow_connections: fio failed"
    have=$(awk '$4 == "Connect" { n++ } $4 == "Disconnect" { n-- }
                END { print n + 0 }' "$log")
    [ "$have" -lt "$want" ] || return 0
  done
  fail "grow_connections: $have connection(s) open after 5 s of qd32 reads, want $want"
}
