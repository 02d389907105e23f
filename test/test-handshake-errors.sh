#!/usr/bin/env bash
# Handshake failures as a user sees them: a server that requires TLS
# (nbdkit --tls=require with PSK), a server that accepts and never speaks
# (--connect-timeout), and a Linux abstract Unix socket (nbd+unix URI with
# socket=%00...) served by a tiny oldstyle server.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires psktool --version
requires python3 --version

# ---- the server requires TLS; we do not offer it ----
psktool -u alice -p "$tmp/keys.psk" >/dev/null
sock=$tmp/tls.sock
start_nbdkit "$sock" --tls=require --tls-psk="$tmp/keys.psk" memory 1M
for mode in --info --list; do
  out=$("$NBDFS" $mode "$sock" 2>&1) && fail "$mode without TLS succeeded"
  echo "$out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "$mode: not one line"
  grep -q "^nbdfs: unix:$sock: .*the server requires TLS: use nbds:// or --tls=require" \
    <<<"$out" || fail "$mode: TLS required message"
done
# The same through nbdc_open (what FUSE and kernel mode call).
expect_fail_with 'the server requires TLS: use nbds://' "$TOOLS/nbdc-open" "$sock"

# ---- a server that accepts and then says nothing ----
silent=$tmp/silent.sock
python3 - "$silent" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(4)
conns = []
end = time.time() + 30
s.settimeout(1)
while time.time() < end:
    try:
        c, _ = s.accept(); conns.append(c)
    except socket.timeout:
        pass
PY
silent_pid=$!
track_pid "$silent_pid"
wait_for test -S "$silent"
start=$(date +%s)
# The message says why a server may accept and stay silent (a full
# qemu-nbd --shared=N, whose backlog still accepts).
expect_fail_with "^nbdfs: unix:$silent: timed out while reading the server greeting \\(the server accepted the connection but never greeted: it may be at its connection limit, e\\.g\\. qemu-nbd --shared\\)\$" \
  "$NBDFS" --info --connect-timeout=1 "$silent"
[ $(( $(date +%s) - start )) -lt 10 ] || fail "timeout took too long"

# ---- a listener whose backlog is full: connect() keeps saying EAGAIN ----
full=$tmp/full.sock
python3 - "$full" "$tmp/full.ready" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(0)
held = []
for _ in range(4):
    c = socket.socket(socket.AF_UNIX); c.setblocking(False)
    try:
        c.connect(sys.argv[1]); held.append(c)
    except BlockingIOError:
        pass
open(sys.argv[2], "w").close()
time.sleep(20)
PY
full_pid=$!
track_pid "$full_pid"
wait_for test -e "$tmp/full.ready"
start=$(date +%s)
expect_fail_with "^nbdfs: connecting to unix:$full: timed out\$" \
  "$NBDFS" --list --connect-timeout=1 "$full"
[ $(( $(date +%s) - start )) -lt 10 ] || fail "backlog timeout took too long"

# ---- abstract socket, oldstyle server ----
name="nbdfs-test-$$-$RANDOM"
python3 - "$name" <<'PY' &
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind("\0" + sys.argv[1]); s.listen(4)
s.settimeout(30)
for _ in range(2):
    c, _ = s.accept()
    c.sendall(struct.pack(">QQQI", 0x4e42444d41474943, 0x00420281861253,
                          5 * 1024 * 1024, 0x1 | 0x2) + b"\0" * 124)
    c.settimeout(5)
    try:
        c.recv(1)
    except socket.timeout:
        pass
    c.close()
PY
abs_pid=$!
track_pid "$abs_pid"
wait_for grep -q "@$name" /proc/net/unix
out=$("$NBDFS" --info "nbd+unix:///?socket=%00$name")
echo "$out"
grep -qx 'size: *5242880 (5.0 MiB)' <<<"$out" || fail "abstract: size"
grep -qx 'handshake: *oldstyle' <<<"$out" || fail "abstract: oldstyle"
grep -q '^flags: .*read-only' <<<"$out" || fail "abstract: read-only"
# Asking for TLS from an oldstyle server is refused, never done in clear.
expect_fail_with "^nbdfs: unix:@$name: TLS is required but the server uses oldstyle" \
  "$NBDFS" --info "nbds+unix:///?socket=%00$name"
echo OK
