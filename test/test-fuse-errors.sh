#!/usr/bin/env bash
# User mistakes in FUSE mode end with one clear line and a non-zero exit,
# in the foreground and in daemon mode (where the parent reports the
# child's error): missing, non-directory and non-empty mount points, a
# server that is not there, an unknown export, bad FUSE options, --name
# with --all. -o nonempty mounts over a non-empty directory.
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin memory
requires qemu-nbd --version

# one_line PATTERN CMD...: fails non-zero with exactly one line matching.
one_line() {
  local pat=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  echo "$out"
  [ "$rc" -ne 0 ] || fail "expected failure from: $*"
  [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "expected one line from: $*"
  grep -qE -- "^nbdfs: .*$pat" <<<"$out" || fail "expected /$pat/ from: $*"
}

sock=$tmp/sock
start_nbdkit "$sock" memory 1M
mnt=$tmp/mnt
mkdir "$mnt"

for fg in -f ""; do
  one_line "mount point $tmp/nope: No such file or directory" \
    "$NBDFS" $fg "$sock" "$tmp/nope"
  touch "$tmp/file"
  one_line "is not a directory" "$NBDFS" $fg "$sock" "$tmp/file"
  mkdir -p "$tmp/full"
  touch "$tmp/full/x"
  one_line "is not empty" "$NBDFS" $fg "$sock" "$tmp/full"
  one_line "connecting to unix:$tmp/absent.sock: No such file or directory" \
    "$NBDFS" $fg "$tmp/absent.sock" "$mnt"
  one_line "name and --all" "$NBDFS" $fg --all --name x "$sock" "$mnt"
  ! mountpoint -q "$mnt" || fail "something got mounted"
done
expect_fail_with "unknown option" "$NBDFS" -o no_such_option "$sock" "$mnt"
expect_fail_with "unknown option" "$NBDFS" -f -o no_such_option "$sock" "$mnt"
! mountpoint -q "$mnt" || fail "mounted with a bad option"

# An export the server does not have.
qsock=$tmp/qemu.sock
truncate -s 1M "$tmp/img"
start_qemu_nbd "$qsock" -t -f raw -x vm "$tmp/img"
# (The address itself contains "nope": match the reason, not the echo.)
one_line "the server has no export named \"nope\".*exports on the server: \"vm\"" \
  "$NBDFS" "$qsock:nope" "$mnt"

# -o nonempty: mounting over files is allowed when asked for.
start_nbdfs "$tmp/full" "$sock" -o nonempty
[ "$(ls "$tmp/full")" = disk ] || fail "-o nonempty"
stop_nbdfs "$tmp/full"
[ -e "$tmp/full/x" ] || fail "the hidden file is gone"
echo OK
