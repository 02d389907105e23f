#!/usr/bin/env bash
# TLS against nbdkit --tls=require: X.509 (--tls-certificates) and PSK
# (--tls-psk). Success with the right credentials (nbdfs --info/--list,
# URI parameters, data with md5 checks through the pool with 4 connections
# and through a FUSE mount, TCP with host name and IP address checks), and
# one clear refusal each for: unknown CA, self-signed, expired, wrong host
# name, missing client certificate, wrong PSK, unknown PSK user, a user
# missing from our key file, --tls=off against a TLS-only server, and a
# plain server when TLS is required (never a fall back to clear text).
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires certtool --version
requires psktool --version
requires md5sum --version

pki=$tmp/pki
bash "$SRCDIR/scripts/make-pki.sh" "$pki"
bash "$SRCDIR/scripts/make-psk.sh" "$tmp/keys.psk" alice
bash "$SRCDIR/scripts/make-psk.sh" "$tmp/keys.psk"        # our login name
bash "$SRCDIR/scripts/make-psk.sh" "$tmp/other.psk" alice   # another key
bash "$SRCDIR/scripts/make-psk.sh" "$tmp/other.psk" mallory
head -c 3M /dev/urandom > "$tmp/data"
data_md5=$(md5 "$tmp/data")

# expect_status N CMD...: CMD must exit with status N.
expect_status() {
  local want=$1 rc=0; shift
  "$@" || rc=$?
  [ "$rc" -eq "$want" ] || fail "exit status $rc, expected $want: $*"
}

# ---- X.509 ----
sock=$tmp/x509.sock
start_nbdkit "$sock" --tls=require --tls-certificates="$pki" memory 64M
# A Unix socket has no host name: the certificate's name comes from
# tls-hostname (qemu's rule; without it, see the refusal below).
uri="nbds+unix:///?socket=$sock&tls-hostname=localhost"

out=$("$NBDFS" --info "$uri" --tls-certificates "$pki")
echo "$out"
grep -qx 'TLS: *yes' <<<"$out" || fail "--info does not say TLS: yes"
grep -qx 'size: *67108864 (64.0 MiB)' <<<"$out" || fail "size over TLS"
"$NBDFS" --list "$uri" --tls-certificates "$pki"
# The same from URI parameters alone; and credentials without --tls or
# nbds:// mean TLS too (never clear text by omission).
"$NBDFS" --info "$uri&tls-certificates=$pki" | grep -qx 'TLS: *yes' \
  || fail "tls-certificates= in the URI"
"$NBDFS" --info "$sock" --tls-certificates "$pki" --tls-hostname localhost \
  | grep -qx 'TLS: *yes' \
  || fail "--tls-certificates alone does not mean TLS"
# tls-type=anon against an X.509-only server cannot work: a clean refusal.
expect_fail_with '^nbdfs: .*TLS handshake failed' \
  "$NBDFS" --info "$uri&tls-type=anon"

# Data through TLS: 4 connections (nbdkit memory allows multi-conn),
# pattern writes and reads in parallel, and a file's md5 round trip.
drv_uri="$uri&tls-certificates=$pki"
"$TOOLS/nbdc-driver" -C 4 "$drv_uri" info \
  write-from "$tmp/data" 1M \
  parallel-writes 16 8M 1M 7 \
  > "$tmp/drv1.out"
cat "$tmp/drv1.out"
grep -q 'connections=4' "$tmp/drv1.out" || fail "expected 4 TLS connections"
out=$("$TOOLS/nbdc-driver" -C 4 "$drv_uri" read-md5 1M 3M \
        check-pattern 8M 16M 7 parallel-reads 32 8M 512K)
echo "$out"
[ "$(sed -n 1p <<<"$out")" = "$data_md5" ] || fail "md5 of data read over TLS"
[ "$(sed -n 2p <<<"$out")" = ok ] || fail "pattern over TLS"

# The same bytes through a FUSE mount over TLS.
if [ -c /dev/fuse ] && fusermount3 --version >/dev/null 2>&1; then
  source "$SRCDIR/test/fuse-functions.sh"
  mnt=$tmp/mnt
  start_nbdfs "$mnt" "$uri" --tls-certificates "$pki"
  [ "$(md5 "$mnt/disk" $((4 << 20)) )" = \
    "$( (head -c 1M /dev/zero; cat "$tmp/data") | md5sum | cut -d' ' -f1)" ] \
    || fail "md5 through the FUSE mount over TLS"
  dd if="$tmp/data" of="$mnt/disk" bs=1M seek=40 conv=fsync,notrunc status=none
  stop_nbdfs "$mnt"
  [ "$("$TOOLS/nbdc-driver" "$drv_uri" read-md5 40M 3M)" = "$data_md5" ] \
    || fail "data written through FUSE over TLS"
elif [ "${CI:-}" = true ]; then
  fail "no /dev/fuse under CI"
fi

# Refusals, each with one clear sentence and exit status 1.
expect_fail_with '^nbdfs: unix:.*: the server.s certificate is signed by an unknown CA' \
  "$NBDFS" --info "$uri" --tls-certificates "$pki/wrong"
expect_status 1 "$NBDFS" --info "$uri" --tls-certificates "$pki/wrong"
expect_fail_with 'certificate is for localhost, 127\.0\.0\.1, ::1, not wrong\.example' \
  "$NBDFS" --info "$uri" --tls-certificates "$pki" --tls-hostname wrong.example
expect_fail_with 'certificate is for localhost, .*, not other\.example' \
  "$NBDFS" --info "$uri&tls-hostname=other.example&tls-certificates=$pki"
# --tls-hostname localhost on a Unix socket verifies the name too; with
# no name at all X.509 verification is refused, naming the option (a
# chain check alone would accept any certificate the CA ever signed).
"$NBDFS" --info "nbds+unix:///?socket=$sock" --tls-certificates "$pki" \
  --tls-hostname localhost | grep -qx 'TLS: *yes' || fail "--tls-hostname"
expect_fail_with "^nbdfs: .*no name to check the server's certificate against \(a Unix socket has none\): give --tls-hostname NAME" \
  "$NBDFS" --info "nbds+unix:///?socket=$sock" --tls-certificates "$pki"
expect_fail_with '^nbdfs: .*the server requires TLS: use nbds:// or --tls=require' \
  "$NBDFS" --info "$sock"
expect_status 1 "$NBDFS" --info "$sock" --tls=off
expect_fail_with 'the server requires TLS: use nbds:// or --tls=require' \
  "$NBDFS" --list "$sock" --tls=off
# No --tls-certificates: the system's trusted CAs, which do not know ours.
expect_fail_with "signed by an unknown CA .*verified against the system's trusted CAs" \
  "$NBDFS" --info "$uri"
expect_fail_with 'ca-cert.pem is missing' \
  "$NBDFS" --info "$uri" --tls-certificates "$tmp"
expect_fail_with 'tls-certificates.*not a directory' \
  "$NBDFS" --info "$uri" --tls-certificates "$tmp/nonexistent"
kill_pid "$nbdkit_pid"

# Self-signed and expired server certificates.
sock2=$tmp/self.sock
start_nbdkit "$sock2" --tls=require --tls-certificates="$pki/selfsigned" memory 1M
expect_fail_with 'the server.s certificate is self-signed and not trusted' \
  "$NBDFS" --info "nbds+unix:///?socket=$sock2&tls-hostname=localhost" \
  --tls-certificates "$pki"
# --tls-no-verify (no name needed then) is the explicit way to accept it.
"$NBDFS" --info "nbds+unix:///?socket=$sock2" --tls-certificates "$pki" \
  --tls-no-verify | grep -qx 'TLS: *yes' || fail "--tls-no-verify"
kill_pid "$nbdkit_pid"
sock3=$tmp/expired.sock
start_nbdkit "$sock3" --tls=require --tls-certificates="$pki/expired" memory 1M
expect_fail_with 'the server.s certificate expired on 2001-12-31' \
  "$NBDFS" --info "nbds+unix:///?socket=$sock3&tls-hostname=localhost" \
  --tls-certificates "$pki"
kill_pid "$nbdkit_pid"

# Client certificates: nbdkit --tls-verify-peer.
mkdir "$tmp/ca-only"
cp "$pki/ca-cert.pem" "$tmp/ca-only/"
sock4=$tmp/verify.sock
start_nbdkit "$sock4" --tls=require --tls-certificates="$pki" --tls-verify-peer memory 1M
expect_fail_with 'the server asked for a client certificate and we have none' \
  "$NBDFS" --info "nbds+unix:///?socket=$sock4&tls-hostname=localhost" \
  --tls-certificates "$tmp/ca-only"
"$NBDFS" --info "nbds+unix:///?socket=$sock4&tls-hostname=localhost" \
  --tls-certificates "$pki" \
  | grep -qx 'TLS: *yes' || fail "client certificate accepted"
kill_pid "$nbdkit_pid"

# TCP: the host name in the address is what gets verified (IP SANs too).
start_nbdkit_tcp 127.0.0.1 --tls=require --tls-certificates="$pki" memory 1M
"$NBDFS" --info "nbds://127.0.0.1:$port/" --tls-certificates "$pki" \
  || fail "nbds://127.0.0.1"
"$NBDFS" --info "nbds://localhost:$port/" --tls-certificates "$pki" \
  | grep -qx 'TLS: *yes' || fail "nbds://localhost"
expect_fail_with 'certificate is for localhost, 127\.0\.0\.1, ::1, not wrong\.example' \
  "$NBDFS" --info "nbds://127.0.0.1:$port/?tls-hostname=wrong.example" \
  --tls-certificates "$pki"
kill_pid "$nbdkit_pid"

# ---- PSK ----
sock5=$tmp/psk.sock
start_nbdkit "$sock5" --tls=require --tls-psk="$tmp/keys.psk" memory 64M
puri="nbds+unix:///?socket=$sock5"
"$NBDFS" --info "$puri" --tls-psk-file "$tmp/keys.psk" --tls-username alice \
  | grep -qx 'TLS: *yes' || fail "PSK --info"
# No --tls-username: the login name.
"$NBDFS" --info "$puri" --tls-psk-file "$tmp/keys.psk" \
  | grep -qx 'TLS: *yes' || fail "PSK with the default user name"
# The user name from the URI's userinfo, the key file from the query.
"$NBDFS" --info "nbds+unix://alice@/?socket=$sock5&tls-psk-file=$tmp/keys.psk" \
  | grep -qx 'TLS: *yes' || fail "PSK from the URI"
out=$("$TOOLS/nbdc-driver" -C 2 \
        "nbds+unix://alice@/?socket=$sock5&tls-psk-file=$tmp/keys.psk" \
        write-from "$tmp/data" 5M read-md5 5M 3M)
echo "$out"
[ "$(tail -n1 <<<"$out")" = "$data_md5" ] || fail "md5 over PSK"
expect_fail_with '^nbdfs: .*the server rejected the pre-shared key' \
  "$NBDFS" --info "$puri" --tls-psk-file "$tmp/other.psk" --tls-username alice
expect_fail_with '^nbdfs: .*the server rejected the pre-shared key' \
  "$NBDFS" --info "$puri" --tls-psk-file "$tmp/other.psk" --tls-username mallory
expect_fail_with "has no key for user 'nobody'" \
  "$NBDFS" --info "$puri" --tls-psk-file "$tmp/keys.psk" --tls-username nobody
expect_fail_with 'tls-type=psk needs a key file' \
  "$NBDFS" --info "$puri&tls-type=psk"
kill_pid "$nbdkit_pid"

# ---- a plain server: TLS required means refused, never clear text ----
sock6=$tmp/plain.sock
start_nbdkit "$sock6" memory 1M
expect_fail_with '^nbdfs: .*TLS is required but the server refused STARTTLS' \
  "$NBDFS" --info "nbds+unix:///?socket=$sock6" --tls-certificates "$pki"
expect_status 1 "$NBDFS" --list "nbds+unix:///?socket=$sock6"
expect_fail_with 'TLS is required' \
  "$NBDFS" --info "$sock6" --tls=require --tls-certificates "$pki"
# The driver refuses too (exit 1 with the reason; not a crash).
expect_exit_with 1 'TLS is required but the server refused STARTTLS' \
  "$TOOLS/nbdc-driver" "nbds+unix:///?socket=$sock6" info
# --tls=on (opportunistic) does fall back, by the user's choice.
"$NBDFS" --info "$sock6" --tls=on | grep -qx 'TLS: *no' \
  || fail "--tls=on against a plain server"
echo "test-tls-nbdkit: OK"
