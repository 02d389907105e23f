#!/usr/bin/env bash
# The program layer (nbdfs*.c) for every mode: output that cannot be
# written is an error, not a cut-off answer taken for a whole one; log
# lines have one format ("DOMAIN: [LEVEL: ]message") whichever mode
# speaks, and debug lines only with -v.
# timeout: 60
source "$SRCDIR/test/functions.sh"
requires nbdkit --version
requires_nbdkit_plugin memory

sock=$tmp/nbdkit.sock
start_nbdkit "$sock" memory 1M

# ---- stdout that cannot be written ----
expect_fail_with "^nbdfs: writing the export list failed$" \
  sh -c '"$0" --list "$1" > /dev/full' "$NBDFS" "$sock"
expect_fail_with "^nbdfs: writing the export information failed$" \
  sh -c '"$0" --info --json "$1" > /dev/full' "$NBDFS" "$sock"

# ---- one log format: --list and --info speak like FUSE mode ----
for mode in --list --info; do
  "$NBDFS" -v "$mode" "$sock" > "$tmp/out" 2> "$tmp/err" \
    || fail "nbdfs -v $mode failed"
  grep -q '^nbdfs-client: debug: ' "$tmp/err" \
    || fail "$mode -v: no 'nbdfs-client: debug:' line on stderr"
  # Every line is ours, in our format (no GLib default handler lines).
  if grep -v '^nbdfs-client: debug: \|^nbdfs-client: \|^nbdfs: ' "$tmp/err"; then
    fail "$mode -v: a stderr line in another format (above)"
  fi
  "$NBDFS" "$mode" "$sock" > "$tmp/out" 2> "$tmp/err" \
    || fail "nbdfs $mode failed"
  [ ! -s "$tmp/err" ] || { cat "$tmp/err"; fail "$mode without -v wrote to stderr"; }
done
echo "ok"
