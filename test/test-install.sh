#!/usr/bin/env bash
# make install / uninstall, the man page and the systemd unit:
#  - make install DESTDIR=... PREFIX=/usr writes exactly the expected files
#    with their modes (nothing outside DESTDIR: the whole tree is listed),
#    the unit's ExecStart names the installed binary, and the installed
#    binary runs; make uninstall removes every file it wrote;
#  - the man page is lint-clean (mandoc -T lint, groff -ww);
#  - every option --help shows has an entry in the man page's OPTIONS
#    (long and short name), and every fstab mount option is documented;
#  - systemd-analyze verify accepts the unit (an instance of the template,
#    from the installed tree). A real boot under systemd is not done here.
# timeout: 120
source "$SRCDIR/test/functions.sh"
requires command -v mandoc
requires groff --version
requires systemd-analyze --version

man=$SRCDIR/doc/nbdfs.1
dest=$tmp/dest

# ---- install ----
make -C "$SRCDIR" -s BUILD="$BUILD" DESTDIR="$dest" PREFIX=/usr install \
  >"$tmp/install.log"
(cd "$dest" && find . -printf '%M %p\n' | sort) >"$tmp/tree"
cat >"$tmp/want" <<'LIST'
-rw-r--r-- ./usr/lib/systemd/system/nbdfs@.service
-rw-r--r-- ./usr/share/doc/nbdfs/NEWS
-rw-r--r-- ./usr/share/doc/nbdfs/README.md
-rw-r--r-- ./usr/share/man/man1/nbdfs.1
-rwxr-xr-x ./usr/bin/nbdfs
LIST
grep -v '^d' "$tmp/tree" | sort >"$tmp/files"
sort "$tmp/want" | diff -u - "$tmp/files" || fail "installed files differ"
# Only the directories those files need.
grep '^d' "$tmp/tree" | awk '{print $2}' | while read -r d; do
  grep -q " ${d}/" "$tmp/files" || [ "$d" = . ] || fail "stray directory $d"
done
grep -qx "ExecStart=/usr/bin/nbdfs --foreground --nbdtab=/etc/nbdtab %i" \
  "$dest/usr/lib/systemd/system/nbdfs@.service" || fail "ExecStart path"
grep -q '@BINDIR@' "$dest/usr/lib/systemd/system/nbdfs@.service" &&
  fail "unit still has @BINDIR@"
cmp "$man" "$dest/usr/share/man/man1/nbdfs.1"
"$dest/usr/bin/nbdfs" --version | grep -q "^nbdfs $(cat "$SRCDIR/VERSION")"

# Variables: BINDIR, MANDIR and SYSTEMDUNITDIR move their files.
make -C "$SRCDIR" -s BUILD="$BUILD" DESTDIR="$tmp/d2" PREFIX=/opt/x \
  BINDIR=/opt/x/sbin MANDIR=/opt/m SYSTEMDUNITDIR=/etc/systemd/system \
  install >/dev/null
for f in opt/x/sbin/nbdfs opt/m/man1/nbdfs.1 etc/systemd/system/nbdfs@.service \
         opt/x/share/doc/nbdfs/NEWS; do
  [ -f "$tmp/d2/$f" ] || fail "missing $f with custom directories"
done
grep -q '^ExecStart=/opt/x/sbin/nbdfs ' "$tmp/d2/etc/systemd/system/nbdfs@.service"

# ---- uninstall ----
make -C "$SRCDIR" -s BUILD="$BUILD" DESTDIR="$dest" PREFIX=/usr uninstall \
  >/dev/null
left=$(cd "$dest" && find . -type f)
[ -z "$left" ] || fail "uninstall left: $left"

# ---- the man page ----
mandoc -T lint -W warning "$man"
groff -ww -z -mandoc "$man" 2>"$tmp/groff.err"
[ ! -s "$tmp/groff.err" ] || { cat "$tmp/groff.err"; fail "groff warnings"; }
MANWIDTH=80 man -l "$man" >/dev/null 2>&1

# Every option of --help has an ".It Fl ..." entry, with its short name.
"$NBDFS" --help >"$tmp/help"
n=0
while IFS=: read -r short long; do
  if [ -n "$short" ]; then
    grep -Eq "^\.It Fl $short , -$long( |\$)" "$man" ||
      fail "man page: no entry '-$short, --$long'"
  else
    grep -Eq "^\.It Fl -$long( |\$)" "$man" ||
      fail "man page: no entry '--$long'"
  fi
  n=$((n + 1))
done < <(sed -nE 's/^  (-(.), )?--([a-z][a-z-]*).*/\2:\3/p' "$tmp/help")
[ "$n" -ge 25 ] || fail "only $n options found in --help"

# Every fstab option the parser knows is named in FSTAB.
for o in connections read-only ro name all timeout reconnect connect-timeout \
         tls tls-certificates tls-psk-file tls-username tls-hostname \
         tls-no-verify pidfile verbose; do
  sed -n '/^\.Sh FSTAB/,/^\.Sh /p' "$man" | grep -Eq "^\.Cm $o(=| |\$)" ||
    fail "FSTAB section lacks $o"
done

# ---- --version names the libraries ----
"$NBDFS" --version | tee "$tmp/version"
for l in "nbdfs $(cat "$SRCDIR/VERSION")" "libfuse 3\." "GnuTLS 3\." "GLib 2\." \
         "libnl 3\."; do
  grep -q "^$l" "$tmp/version" || fail "--version lacks $l"
done

# ---- --nbdtab reaches the parser (attaching is tested in the VM) ----
printf 'nbd0 server disk swap\n' >"$tmp/nbdtab"
expect_fail_with "no line for nbd9" "$NBDFS" --nbdtab="$tmp/nbdtab" nbd9
expect_fail_with "swap is not supported" "$NBDFS" --nbdtab "$tmp/nbdtab" /dev/nbd0
expect_fail_with "takes one argument" "$NBDFS" --nbdtab="$tmp/nbdtab" nbd0 /mnt

# ---- the unit ----
unitdir=$tmp/units
mkdir -p "$unitdir"
sed "s|@BINDIR@|$(dirname "$NBDFS")|" "$SRCDIR/system/units/nbdfs@.service" \
  >"$unitdir/nbdfs@.service"
ln -s nbdfs@.service "$unitdir/nbdfs@nbd0.service"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
  "$unitdir/nbdfs@nbd0.service" 2>&1 | tee "$tmp/verify"
grep -q 'nbdfs@' "$tmp/verify" && fail "systemd-analyze verify complained"
echo OK
