#!/usr/bin/env bash
# Kernel mode over TLS in a real kernel: the relay between nbd.ko and the
# TLS sessions (kernelattach/relay.c), X.509 with 4 connections, PSK with
# --persist across a server restart, and the ioctl interface. Boots the
# Debian kernel under qemu (TCG) and runs test/vm/guest-kernel-tls.sh.
# timeout: 600
# asan: skip
source "$SRCDIR/test/functions.sh"
requires qemu-system-x86_64 --version
requires busybox true
requires cpio --version
requires nbdkit --version
requires certtool --version
requires psktool --version
ls /boot/vmlinuz-* >/dev/null 2>&1 || skip "no kernel image in /boot (linux-image-amd64)"

# Keys for the guest: run-vm.sh puts extra files flat in /test, so the
# untrusted CA goes as wrong-ca-cert.pem.
bash "$SRCDIR/scripts/make-pki.sh" "$tmp/pki" >/dev/null
bash "$SRCDIR/scripts/make-psk.sh" "$tmp/pki/keys.psk" alice >/dev/null
mkdir -p "$tmp/guest"
cp "$tmp/pki"/{ca-cert,server-cert,server-key,client-cert,client-key}.pem \
   "$tmp/pki/keys.psk" "$tmp/guest/"
cp "$tmp/pki/wrong/ca-cert.pem" "$tmp/guest/wrong-ca-cert.pem"

VM_TIMEOUT=540 bash "$SRCDIR/test/vm/run-vm.sh" \
  "$SRCDIR/test/vm/guest-kernel-tls.sh" "$tmp/guest"/*
