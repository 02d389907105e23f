#!/usr/bin/env bash
# nbdfs --list / --info [--json] against nbdkit (exportname + blocksize-policy
# filters, --no-sr, --oldstyle), qemu-nbd (qcow2, -x, -D) and nbd-server
# (config with several exports, allowlist). The printed names, sizes,
# descriptions, flags, block sizes and contexts must match what each server
# was started with (and nbdinfo where it is right). Also: missing export,
# bad address, connection refused.
# timeout: 90
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory
requires_nbdkit_filter exportname
requires_nbdkit_filter blocksize-policy
requires qemu-nbd --version
requires qemu-img --version
requires nbd-server -V
requires nbdinfo --version
requires python3 --version

# json_get FILE EXPR: evaluate a python expression on the parsed JSON (j).
json_get() {
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"
}

# ---- nbdkit: two explicit exports, fixed descriptions, block sizes ----
sock=$tmp/nbdkit.sock
start_nbdkit "$sock" --filter=exportname --filter=blocksize-policy \
  memory 64M exportname=alpha exportname=beta exportname-list=explicit \
  exportname-strict=true exportdesc=fixed:"the alpha & beta disk" \
  blocksize-minimum=512 blocksize-preferred=4096 blocksize-maximum=1M

out=$("$NBDFS" --list "$sock")
echo "$out"
[ "$out" = "$(printf 'alpha\tthe alpha & beta disk\nbeta\tthe alpha & beta disk')" ] \
  || fail "nbdkit --list output"
"$NBDFS" --list --json "$sock" > "$tmp/list.json"
[ "$(json_get "$tmp/list.json" '[e["name"] for e in j]')" = "['alpha', 'beta']" ] \
  || fail "nbdkit --list --json names"
[ "$(json_get "$tmp/list.json" 'j[1]["description"]')" = "the alpha & beta disk" ] \
  || fail "nbdkit --list --json description"

out=$("$NBDFS" --info "$sock:beta")
echo "$out"
grep -qx 'export: *"beta"' <<<"$out" || fail "export name"
grep -qx 'description: *the alpha & beta disk' <<<"$out" || fail "description"
grep -qx 'size: *67108864 (64.0 MiB)' <<<"$out" || fail "size"
grep -q '^flags: .*flush.*fua.*trim.*write-zeroes' <<<"$out" || fail "flags"
grep -qx 'block sizes: *minimum 512, preferred 4096, maximum 1048576 (from the server)' \
  <<<"$out" || fail "block sizes"
grep -qx 'handshake: *fixed newstyle, no zeroes' <<<"$out" || fail "handshake"
grep -qx 'structured replies: *yes' <<<"$out" || fail "structured"
grep -qx 'TLS: *no' <<<"$out" || fail "tls"
grep -qx 'meta contexts: *base:allocation' <<<"$out" || fail "contexts"

# --json agrees with nbdinfo on every field both report.
"$NBDFS" --info --json "nbd+unix:///alpha?socket=$sock" > "$tmp/info.json"
nbdinfo --json "nbd+unix:///alpha?socket=$sock" > "$tmp/nbdinfo.json"
python3 - "$tmp/info.json" "$tmp/nbdinfo.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
n = json.load(open(sys.argv[2]))
e = n["exports"][0]
assert a["export"] == e["export-name"] == "alpha", a
assert a["size"] == e["export-size"] == 64 * 1024 * 1024, a
assert a["read_only"] == e["is_read_only"] == False
for flag, key in [("flush", "can_flush"), ("fua", "can_fua"),
                  ("trim", "can_trim"), ("write-zeroes", "can_zero"),
                  ("multi-conn", "can_multi_conn"), ("cache", "can_cache"),
                  ("fast-zero", "can_fast_zero"), ("df", "can_df")]:
    assert (flag in a["flags"]) == e[key], (flag, a["flags"], e[key])
assert a["block_size_minimum"] == e["block_size_minimum"] == 512
assert a["block_size_preferred"] == e["block_size_preferred"] == 4096
assert a["block_size_maximum"] == e["block_size_maximum"] == 1048576
assert a["block_size_from_server"] is True
assert a["structured_replies"] == n["structured"] == True
assert a["tls"] == n["TLS"] == False
assert a["handshake"] == "fixed newstyle"
assert sorted(a["contexts"]) == sorted(e["contexts"]), (a, e)
assert a["description"] == e["description"]
PY

# Missing export: non-zero exit, names it, lists the real ones.
expect_fail_with 'no export named "gamma".*exports on the server: "alpha", "beta"' \
  "$NBDFS" --info "$sock:gamma"
out=$("$NBDFS" --info "$sock:gamma" 2>&1) && fail "missing export succeeded"
[ "$(wc -l <<<"$out")" = 1 ] || fail "missing export: more than one line"

# ---- awkward names: text output escapes them (one line per export),
# JSON carries them exactly, so a script can open what it listed ----
wsock=$tmp/weird.sock
tab=$(printf 'tab\there')
start_nbdkit "$wsock" --filter=exportname memory 1M 'exportname=a"b\c' \
  "exportname=$tab" exportname=ünï exportname-list=explicit \
  exportdesc=fixed:"$(printf 'd\001e')"
out=$("$NBDFS" --list "$wsock")
echo "$out"
[ "$out" = "$(printf '%s\t%s\n' 'a"b\\c' 'd\x01e' 'tab\there' 'd\x01e' \
                       'ünï' 'd\x01e')" ] || fail "escaped --list"
"$NBDFS" --list --json "$wsock" > "$tmp/weird.json"
python3 - "$tmp/weird.json" "$tab" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert [e["name"] for e in j] == ['a"b\\c', sys.argv[2], "ünï"], j
assert all(e["description"] == "d\\x01e" for e in j), j
PY
"$NBDFS" --info --json "nbd+unix:///a%22b%5Cc?socket=$wsock" > "$tmp/w.json"
[ "$(json_get "$tmp/w.json" 'j["export"] == "a\x22b\x5cc" and j["size"]')" = 1048576 ] \
  || fail "--info --json of an awkward name"

# ---- nbdkit --no-sr: no structured replies, so no contexts ----
sock2=$tmp/nosr.sock
start_nbdkit "$sock2" --no-sr memory 2M
out=$("$NBDFS" --info "$sock2")
echo "$out"
grep -qx 'size: *2097152 (2.0 MiB)' <<<"$out" || fail "no-sr size"
grep -qx 'structured replies: *no' <<<"$out" || fail "no-sr structured"
grep -qx 'meta contexts: *none' <<<"$out" || fail "no-sr contexts"
# Block sizes are the server's choice (nbdkit 1.32 sent none without
# structured replies, 1.42 sends them): --info must report what nbdinfo
# sees, in the text and in the JSON.
"$NBDFS" --info --json "$sock2" > "$tmp/nosr.json"
nbdinfo --json "nbd+unix:///?socket=$sock2" > "$tmp/nosr-nbdinfo.json"
python3 - "$tmp/nosr.json" "$tmp/nosr-nbdinfo.json" "$out" <<'PY' || fail "no-sr block sizes"
import json, sys
a = json.load(open(sys.argv[1]))
e = json.load(open(sys.argv[2]))["exports"][0]
text = sys.argv[3].splitlines()
assert a["structured_replies"] is False, a
if "block_size_minimum" in e:
    want = (e["block_size_minimum"], e["block_size_preferred"],
            e["block_size_maximum"], True, "from the server")
else:
    # The spec's defaults ("Block size constraints"): minimum 1,
    # preferred 4096, and payloads of at most 32 MiB.
    want = (1, 4096, 32 << 20, False,
            "defaults: the server sent none")
got = (a["block_size_minimum"], a["block_size_preferred"],
       a["block_size_maximum"], a["block_size_from_server"])
assert got == want[:4], (got, want)
line = "block sizes:        minimum %d, preferred %d, maximum %d (%s)" % (
    want[0], want[1], want[2], want[4])
assert line in text, (line, text)
print("no-sr block sizes as nbdinfo sees them:", line)
PY
[ "$("$NBDFS" --list "$sock2")" = '""' ] || fail "default export listed as \"\""

# ---- nbdkit --oldstyle: --info from the greeting, --list impossible ----
sock3=$tmp/old.sock
start_nbdkit "$sock3" --oldstyle memory 3M
out=$("$NBDFS" --info "$sock3")
echo "$out"
grep -qx 'size: *3145728 (3.0 MiB)' <<<"$out" || fail "oldstyle size"
grep -qx 'handshake: *oldstyle' <<<"$out" || fail "oldstyle handshake"
grep -qx 'structured replies: *no' <<<"$out" || fail "oldstyle structured"
expect_fail_with 'oldstyle negotiation, which cannot list exports' \
  "$NBDFS" --list "$sock3"
expect_fail_with 'TLS is required but the server uses oldstyle' \
  "$NBDFS" --info --tls=require "$sock3"
# An oldstyle server has no export names: asking for one is refused with a
# hint, by --info and by the negotiator a mount uses.
expect_fail_with 'which has no export names: leave out the export name "disk"' \
  "$NBDFS" --info "$sock3:disk"
expect_fail_with 'which has no export names: leave out the export name "disk"' \
  "$TOOLS/nbdc-open" "$sock3:disk"

# ---- qemu-nbd: qcow2, named export with a description, read-only ----
qemu-img create -q -f qcow2 "$tmp/disk.qcow2" 10M
qsock=$tmp/qemu.sock
start_qemu_nbd "$qsock" -t -e 4 -A -f qcow2 -x disk1 -D "qemu's test disk" -r \
  "$tmp/disk.qcow2"
out=$("$NBDFS" --list "$qsock")
[ "$out" = "$(printf "disk1\tqemu's test disk")" ] || fail "qemu-nbd --list: $out"
out=$("$NBDFS" --info "$qsock:disk1")
echo "$out"
grep -qx 'export: *"disk1"' <<<"$out" || fail "qemu name"
grep -qx "description: *qemu's test disk" <<<"$out" || fail "qemu description"
grep -qx 'size: *10485760 (10.0 MiB)' <<<"$out" || fail "qemu size"
grep -q '^flags: .*read-only' <<<"$out" || fail "qemu read-only"
grep -qx 'meta contexts: *base:allocation, qemu:allocation-depth' <<<"$out" || fail "qemu contexts"
"$NBDFS" --info --json "$qsock:disk1" > "$tmp/q.json"
nbdinfo --json "nbd+unix:///disk1?socket=$qsock" > "$tmp/qn.json"
python3 - "$tmp/q.json" "$tmp/qn.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))["exports"][0]
assert a["size"] == e["export-size"] == 10485760
assert a["read_only"] is True and e["is_read_only"] is True
assert a["description"] == e["description"] == "qemu's test disk"
assert a["block_size_maximum"] == e["block_size_maximum"]
assert sorted(a["contexts"]) == sorted(e["contexts"])
PY
expect_fail_with "no export named \"nope\".*server reported: export 'nope' not present.*\"disk1\"" \
  "$NBDFS" --info "$qsock:nope"

# ---- nbd-server: config file, two exports, allowlist ----
truncate -s 1M "$tmp/a.img"
truncate -s 2M "$tmp/b.img"
nsock=$tmp/nbd-server.sock
cat > "$tmp/nbd-server.conf" <<EOF
[generic]
  allowlist = true
  unixsock = $nsock
[first]
  exportname = $tmp/a.img
[second]
  exportname = $tmp/b.img
  readonly = true
EOF
start_nbd_server "$tmp/nbd-server.conf"
wait_for test -S "$nsock" || fail "nbd-server socket"
out=$("$NBDFS" --list "$nsock")
[ "$out" = "$(printf 'first\nsecond')" ] || fail "nbd-server --list: $out"
out=$("$NBDFS" --info "$nsock:second")
echo "$out"
# nbd-server 3.24 says size 0 to NBD_OPT_INFO; we report NBD_OPT_GO's.
grep -qx 'size: *2097152 (2.0 MiB)' <<<"$out" || fail "nbd-server size"
grep -q '^flags: .*read-only' <<<"$out" || fail "nbd-server read-only"
out=$("$NBDFS" --info "$nsock:first")
grep -qx 'size: *1048576 (1.0 MiB)' <<<"$out" || fail "nbd-server size 1"
grep -q '^flags: .*read-only' <<<"$out" && fail "first is not read-only"
expect_fail_with 'no export named "third".*"first", "second"' \
  "$NBDFS" --info "$nsock:third"

# ---- user mistakes: one line each ----
for bad in 'host:10809' 'nbd://h/x?bogus=1' '[::1' 'nbd+unix:///x' ''; do
  rc=0
  out=$("$NBDFS" --info "$bad" 2>&1) || rc=$?
  echo "$out"
  [ "$rc" = 2 ] || fail "bad address '$bad': exit $rc"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "bad address '$bad': not one line"
  grep -q '^nbdfs: bad address' <<<"$out" || fail "bad address '$bad' message"
done
out=$("$NBDFS" --list "$tmp/no-such.sock" 2>&1) && fail "connect succeeded"
[ "$out" = "nbdfs: connecting to unix:$tmp/no-such.sock: No such file or directory" ] \
  || fail "missing socket message: $out"
refused_port     # bound and never listening: refuses until the test ends
out=$("$NBDFS" --info "nbd://127.0.0.1:$port/x" 2>&1) && fail "connect succeeded"
[ "$out" = "nbdfs: connecting to 127.0.0.1:$port: Connection refused" ] \
  || fail "refused message: $out"
echo OK
