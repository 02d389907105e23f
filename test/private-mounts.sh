#!/usr/bin/env bash
# test/private-mounts.sh CMD [ARGS...]: runs CMD in a private mount
# namespace (unshare -m --propagation private) from which the mounts of
# everyone else's FUSE servers and block devices have been detached.
#
# Why: a new mount namespace starts as a copy of the whole mount table,
# and with private propagation an unmount outside never reaches the copy.
# Every FUSE mount copied is then pinned for as long as the namespace
# lives: its `fusermount3 -u` outside succeeds, but the superblock stays,
# so the kernel never ends the FUSE connection and that nbdfs (another
# test's, running at the same time) waits for requests forever -- seen as
# "nbdfs did not exit within 20 s after fusermount3 -u" in whichever
# FUSE test overlapped a test-deb run (its install takes minutes). Loop
# and nbd devices mounted elsewhere would stay busy the same way.
# Detaching our copies (umount -l, in this namespace only) drops the
# references; the mounts outside are untouched.
set -eu
if [ "${1:-}" != __inside ]; then
  exec unshare -m --propagation private bash "$0" __inside "$@"
fi
shift
# /proc/self/mounts: SOURCE MOUNTPOINT TYPE ...; mount points are
# octal-escaped (\040 for a space), which umount does not take: decode.
awk '$3 ~ /^fuse/ || $1 ~ /^\/dev\/(loop|nbd)[0-9]/ { print $2 }' \
    /proc/self/mounts | while read -r m; do
  m=$(printf '%b' "$m")
  # Never what we stand on (a root or work tree on a loop device).
  case "$PWD/" in "${m%/}/"*) continue ;; esac
  # A parent detached first takes its submounts with it: ignore those.
  umount -l -- "$m" 2>/dev/null || true
done
exec "$@"
