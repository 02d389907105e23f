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

# stop_nbdfs MNT [HOW]: unmount with fusermount3 -u (HOW=umount, default)
# or SIGTERM (HOW=term); asserts that nbdfs exits 0 within 20 s and the
# mount is gone.
stop_nbdfs() {
  local mnt=$1 how=${2:-umount} i rc=0
  case "$how" in
    umount) fusermount3 -u "$mnt" ;;
    term) kill -TERM "$nbdfs_pid" ;;
    *) fail "stop_nbdfs: unknown way $how" ;;
  esac
  for (( i=0; i<200; i++ )); do
    kill -0 "$nbdfs_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$nbdfs_pid" 2>/dev/null && fail "nbdfs did not exit after $how"
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
