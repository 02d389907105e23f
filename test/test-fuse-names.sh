#!/usr/bin/env bash
# File names from export names under --all (README "FUSE mode"), against an
# nbdkit eval plugin whose every export reads as its own name repeated, so
# each file shows which export it is: '/' and control bytes become '_',
# "." and ".." get a '_' in front, a long name is cut at a UTF-8 boundary
# to at most 255 bytes, and names already taken get "-2", "-3"... in list
# order, still within 255 bytes. (The name rules one by one: the unit
# test test-files.)
# timeout: 60
source "$SRCDIR/test/functions.sh"
source "$SRCDIR/test/fuse-functions.sh"
requires_nbdkit_plugin eval
requires_nbdkit_filter exportname

long1=$(python3 -c 'print("é" * 150, end="")')      # 300 bytes
long2=$(python3 -c 'print("é" * 151, end="")')      # 302: same cut
ctl=$(printf 'a\001b')
sock=$tmp/sock
# open returns the export name as the handle; pread repeats it.
start_nbdkit "$sock" --filter=exportname eval \
  open='printf "%s\n" "$3"' get_size='echo 1048576' \
  pread='yes -- "$2" | head -c "$3"' can_write='exit 3' \
  exportname=a/b exportname=a_b "exportname=$ctl" exportname=. \
  exportname=_. exportname=.. "exportname=$long1" "exportname=$long2" \
  exportname-list=explicit
mnt=$tmp/mnt
start_nbdfs "$mnt" "$sock" --all

cut=$(python3 -c 'print("é" * 127, end="")')        # 254 bytes
cut2=$(python3 -c 'print("é" * 126, end="")')-2     # 252 + 2 bytes
# FILE EXPORT: FILE exists and is the export EXPORT.
is() {
  [ -f "$mnt/$1" ] || fail "no file '$1' (have: $(ls -A "$mnt" | tr '\n' ' '))"
  [ "$(head -n1 "$mnt/$1")" = "$2" ] || fail "'$1' is not export '$2'"
}
is a_b a/b
is a_b-2 a_b
is a_b-3 "$ctl"
is _. .
is _.-2 _.
is _.. ..
is "$cut" "$long1"
is "$cut2" "$long2"
[ "$(ls -A "$mnt" | wc -l)" = 8 ] || fail "expected 8 files: $(ls -A "$mnt")"
# Every name is one path component of at most 255 bytes, valid UTF-8.
python3 - "$mnt" <<'PY'
import os, sys
for n in os.listdir(os.fsencode(sys.argv[1])):
    assert len(n) <= 255, (len(n), n)
    assert b"/" not in n and not any(c < 0x20 or c == 0x7f for c in n), n
    n.decode("utf-8")
print("names ok")
PY
stop_nbdfs "$mnt"
echo OK
