#!/usr/bin/env bash
# make-psk.sh FILE [USER]: add a random pre-shared key for USER (default: your
# login name) to FILE in psktool's "user:hexkey" format, as nbdkit --tls-psk,
# qemu-nbd tls-creds-psk (dir/keys.psk) and nbdfs --tls-psk-file read it.
# The key is a secret: keep FILE mode 0600 and never commit it.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  echo "usage: $0 FILE [USER]   (psktool from gnutls-bin)" >&2
  exit 2
fi
command -v psktool >/dev/null ||
  { echo "$0: psktool not found: apt-get install gnutls-bin" >&2; exit 1; }
file=$1
user=${2:-$(id -un)}
umask 077
psktool -u "$user" -p "$file" >/dev/null
echo "make-psk: key for '$user' in $file"
